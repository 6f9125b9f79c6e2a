"""Shared test helpers: a real server process, OpenAI schema validation, random tiny-model artifacts."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
# OpenAI's full published description where CI lays shared/ beside the clone (or
# MLX_INTERP_OPENAPI names it); a fresh clone validates against the extract of it
# kept in tests/gateway/openapi/ (same schemas, byte-for-byte; see make_extract.py).
OPENAPI_FULL = Path(os.environ.get("MLX_INTERP_OPENAPI", ROOT.parent / "shared" / "reference" / "openai-openapi" / "openapi.json"))
OPENAPI_EXTRACT = Path(__file__).resolve().parent / "openapi" / "openai-extract.json"
STARTUP_TIMEOUT_S = 120


# -- server process -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m mlx_interp.cli serve ...` on an ephemeral port; waits for /health; killed by stop()."""

    def __init__(self, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mlx_interp.cli", "serve", "--port", str(self.port), *args]
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlx-interp-test-server-{self.port}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self._wait()

    def _wait(self) -> None:
        deadline = time.time() + STARTUP_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server did not come up in {STARTUP_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- OpenAI schema ----------------------------------------------------------------------------------


def _openapi_to_jsonschema(node):
    """OpenAPI 3.0 `nullable: true` means 'or null'; jsonschema needs that spelled out."""
    if isinstance(node, dict):
        node = {k: _openapi_to_jsonschema(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


def openapi_source() -> Path:
    """The full description when present, the extract otherwise."""
    return OPENAPI_FULL if OPENAPI_FULL.is_file() else OPENAPI_EXTRACT


@lru_cache(maxsize=2)
def _components(source: Path) -> dict:
    return _openapi_to_jsonschema(json.loads(source.read_text(encoding="utf-8"))["components"])


def validate(obj: dict, schema_name: str, streamed_completion: bool = False, source: Path | None = None) -> None:
    """Raise jsonschema.ValidationError unless obj matches components/schemas/schema_name.

    A streamed /v1/completions chunk uses CreateCompletionResponse, whose
    finish_reason OpenAI itself sends as null before the last chunk.
    `source` picks the description (default: openapi_source()).
    """
    import jsonschema

    source = source or openapi_source()
    components = _components(source)
    if schema_name not in components["schemas"]:
        raise KeyError(f"{schema_name!r} is not in {source}; add it to ROOTS in tests/gateway/openapi/make_extract.py and regenerate")
    if streamed_completion:
        components = copy.deepcopy(components)
        item = components["schemas"]["CreateCompletionResponse"]["properties"]["choices"]["items"]
        item["properties"]["finish_reason"] = {"anyOf": [item["properties"]["finish_reason"], {"type": "null"}]}
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
    jsonschema.Draft202012Validator(schema).validate(obj)


def sse_events(text: str) -> list:
    """Parse an SSE body into JSON objects (and the string '[DONE]')."""
    out = []
    for block in text.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


# -- artifacts for the tiny model ------------------------------------------------------------------


def make_vector(lm, name: str, root: Path, seed: int = 0, layers=(1, 2), alpha: float = 8.0):
    from mlx_interp.steering.vectors import SteeringVector, build_metadata

    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    meta = build_metadata(
        name,
        hidden_size=lm.hidden_size,
        num_layers=lm.num_layers,
        method="random",
        recommended_layers=list(layers),
        default_alpha=alpha,
        model_id=lm.model_id,
        model_fingerprint=lm.fingerprint,
        description="random test direction",
    )
    vector = SteeringVector(name=name, directions=directions, metadata=meta)
    vector.save(root)
    return vector


def make_probe(lm, name: str, root: Path | None, seed: int = 0, layers=(1, 2, 3), best: int = 2, threshold: float = 0.5):
    from mlx_interp.probes.probe import Probe

    rng = np.random.default_rng(seed)
    K, D = len(layers), lm.hidden_size
    probe = Probe(
        name=name,
        layers=tuple(layers),
        weights=(rng.standard_normal((K, D)) * 0.05).astype(np.float32),
        bias=np.zeros(K, np.float32),
        mean=np.zeros((K, D), np.float32),
        scale=np.ones((K, D), np.float32),
        metadata={
            "format_version": 1,
            "name": name,
            "labels": ["negative", "positive"],
            "method": "logistic",
            "best_layer": best,
            "threshold": threshold,
            "aggregation": "mean",
            "hidden_size": D,
            "num_layers": lm.num_layers,
            "model_fingerprint": lm.fingerprint,
        },
    )
    if root is not None:
        probe.save(root)
    return probe
