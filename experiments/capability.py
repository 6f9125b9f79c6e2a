"""The capability cost of a steer: lm-eval against the server, plain and through a steering preset.

    mlx-interp experiment capability --model default --out results/

starts `mlx-interp serve` on a free local port with a preset file holding one
steering preset, and runs lm-evaluation-harness (`pip install
'mlx-interp[eval]'`) through its `local-completions` model twice: once naming
the plain model, once naming the preset. The two tasks are defined here over
files the project ships (stock lm-eval tasks download their datasets):

- `mlxi_facts_mc`: 40 four-way multiple-choice questions of everyday knowledge,
  scored by log-likelihood (the server's echo + logprobs of the prompt tokens);
- `mlxi_facts_qa`: 30 one-word questions answered by greedy generation,
  scored by exact match of the first word.

Neither task mentions a colour, so a drop under the `green_red` steer is a
cost to unrelated capability, not the steer doing its job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .common import EXPERIMENT_DATA, to_jsonable

EVAL_DATA = EXPERIMENT_DATA / "eval"
MC_DATA = EVAL_DATA / "capability_mc.jsonl"
QA_DATA = EVAL_DATA / "capability_qa.jsonl"
MC_TASK, QA_TASK = "mlxi_facts_mc", "mlxi_facts_qa"
PRESET_NAME = "steered"
SERVER_START_TIMEOUT_S = 300
QA_MAX_TOKENS = 8
# Two worked examples teach the one-word answer format (the same for every question).
QA_DESCRIPTION = "Q: What is the capital of Poland?\nA: Warsaw\n\nQ: How many ears does a person have?\nA: two\n\n"


@dataclass
class CapabilityConfig:
    steer: dict = field(default_factory=lambda: {"green_red": 1.5})  # the preset's steer: the design card's example
    limit: int | None = None  # items per task (None: all)
    batch_size: int = 8  # prompts per request lm-eval sends


def task_configs(data_dir: Path = EVAL_DATA) -> list[dict]:
    """lm-eval task configs over the shipped JSONL files (absolute paths: lm-eval may run from anywhere)."""
    data_dir = Path(data_dir).resolve()
    mc = {
        "task": MC_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_dir / MC_DATA.name)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1},
    }
    qa = {
        "task": QA_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_dir / QA_DATA.name)}},
        "test_split": "test",
        "output_type": "generate_until",
        "description": QA_DESCRIPTION,
        "doc_to_text": "Q: {{question}}\nA:",
        "doc_to_target": "{{answer}}",
        "target_delimiter": " ",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": QA_MAX_TOKENS, "do_sample": False, "temperature": 0.0},
        "filter_list": [{"name": "first_word", "filter": [{"function": "regex", "regex_pattern": r"([A-Za-z]+)"},
                                                          {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": True}],
        "metadata": {"version": 1},
    }
    return [mc, qa]


def evaluate(base_url: str, model: str, tokenizer_dir: Path, config: CapabilityConfig, api_key: str | None = None,
             samples: dict | None = None) -> dict:
    """Run both tasks through lm-eval's local-completions against base_url; returns {task: {metric: {value, stderr}}}.

    `samples`, if given, receives lm-eval's per-document records ({task: [{doc_id, resps, ...}]}).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    model_args = {
        "model": model,
        "base_url": base_url.rstrip("/") + "/v1/completions",
        "tokenizer_backend": "huggingface",
        "tokenizer": str(tokenizer_dir),
        "tokenized_requests": True,
        "num_concurrent": 1,
        "batch_size": config.batch_size,  # prompts per request (each is still prefilled alone: same numbers)
        "max_retries": 1,
        "timeout": 600,
    }
    if api_key:
        model_args["header"] = {"Authorization": f"Bearer {api_key}"}
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=model_args,
        tasks=task_configs(),
        task_manager=TaskManager(include_defaults=False),
        limit=config.limit,
        log_samples=samples is not None,
        bootstrap_iters=1000,
    )
    if samples is not None:
        samples.update(out.get("samples", {}))
    return _scores(out["results"])


def _scores(results: dict) -> dict:
    scores = {}
    for task, metrics in results.items():
        entry = {}
        for key, value in metrics.items():
            if "," not in key or key.startswith("alias"):
                continue
            name, filt = key.split(",", 1)
            if name.endswith("_stderr"):
                continue
            entry[name] = {"value": value, "stderr": metrics.get(f"{name}_stderr,{filt}"), "filter": filt}
        scores[task] = entry
    return scores


class _Server:
    """`mlx-interp serve` on a free local port, with one preset; stopped on exit."""

    def __init__(self, model: str, presets: Path, log: Path, vectors: Path | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")  # noqa: SIM115 - open for the server's life, closed in __exit__
        cmd = [sys.executable, "-m", "mlx_interp.cli", "serve", "--model", model, "--port", str(self.port), "--presets", str(presets)]
        if vectors is not None:
            cmd += ["--vectors", str(vectors)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def __enter__(self):
        import httpx

        deadline = time.time() + SERVER_START_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self._log.name}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"server did not come up in {SERVER_START_TIMEOUT_S}s; see {self._log.name}")

    def __exit__(self, *exc):
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run(model: str, out_dir: Path, config: CapabilityConfig | None = None, tokenizer_dir: Path | None = None,
        vectors: Path | None = None, samples: dict | None = None) -> dict:
    """Serve `model`, evaluate it plain and through the steering preset, write out_dir/capability.json.

    `vectors`: the server's vector library (default: the shipped one). `samples`, if given,
    receives lm-eval's per-document records as {"plain": {...}, "steered": {...}}.
    """
    import httpx

    from .common import write_results

    config = config or CapabilityConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    presets = out_dir / "capability_presets.json"
    presets.write_text(json.dumps({PRESET_NAME: {"model": "default", "steer": config.steer,
                                                 "description": "the capability study's steer"}}, indent=2) + "\n")
    with _Server(model, presets, out_dir / "capability_server.log", vectors) as server:
        facts = httpx.get(server.url + "/v1/models", timeout=30).json()["data"][0]
        tokenizer = Path(tokenizer_dir) if tokenizer_dir else _model_dir(model)
        check = httpx.post(server.url + "/v1/completions", timeout=300, json={"model": PRESET_NAME, "prompt": "Hi", "max_tokens": 1})
        if check.status_code != 200:
            raise RuntimeError(f"the steering preset {config.steer} is refused by the server: {check.text}")
        probe = check.json()
        kept = {"plain": {}, "steered": {}} if samples is not None else {"plain": None, "steered": None}
        plain = evaluate(server.url, "default", tokenizer, config, samples=kept["plain"])
        steered = evaluate(server.url, PRESET_NAME, tokenizer, config, samples=kept["steered"])
        if samples is not None:
            samples.update(kept)
    result = {
        "study": "capability",
        "model_id": facts.get("root", model),
        "model_fingerprint": facts.get("fingerprint"),
        "config": asdict(config),
        "tasks": {MC_TASK: str(MC_DATA.relative_to(EXPERIMENT_DATA.parents[1])), QA_TASK: str(QA_DATA.relative_to(EXPERIMENT_DATA.parents[1]))},
        "steering_applied": probe.get("steering", {}).get("applied"),
        "plain": plain,
        "steered": steered,
        "versions": _versions(),
    }
    write_results(out_dir, "capability", to_jsonable(result))
    return result


def _model_dir(model: str) -> Path:
    from mlx_interp.steering.model import resolve_model_path

    return Path(resolve_model_path(model, progress=False)[1])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _versions() -> dict:
    import lm_eval

    from .common import versions

    return {**versions(), "lm_eval": getattr(lm_eval, "__version__", None)}
