"""Every limit the server enforces: named, documented, overridable by flag or environment.

Each field becomes a `serve` flag (`--max-body-bytes`) and an environment
variable (`MLX_INTERP_MAX_BODY_BYTES`); the flag wins over the variable, the
variable over the default here.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields, replace

ENV_PREFIX = "MLX_INTERP_"


def _limit(default, doc: str):
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = _limit(4 * 1024 * 1024, "largest request body accepted on completion routes (413 above)")
    max_upload_bytes: int = _limit(64 * 1024 * 1024, "largest body of a vector or probe upload (413 above)")
    max_tokens: int = _limit(4096, "largest max_tokens / max_completion_tokens a request may ask for")
    default_max_tokens: int = _limit(512, "max_tokens used when a request gives none")
    max_prompt_tokens: int = _limit(16384, "longest prompt, in tokens, after the chat template")
    max_n: int = _limit(16, "most choices (n) per request")
    max_prompts: int = _limit(16, "most prompts in one /v1/completions request")
    max_stop: int = _limit(4, "most stop strings per request")
    max_stop_chars: int = _limit(128, "longest stop string, in characters")
    max_steer: int = _limit(16, "most steering entries per request (body and header together)")
    max_alpha: float = _limit(50.0, "largest |alpha| of an add (total shift in class-mean differences; per layer for imported control vectors)")
    # room to sweep past a single mirror; on the default model 4 and above break the text (bench/green_red_sweep)
    max_reflect_alpha: float = _limit(4.0, "largest |alpha| of a reflect (1 mirrors the component once)")
    max_ablate_alpha: float = _limit(1.5, "largest |alpha| of an ablate (1 removes the component)")
    max_clamp_value: float = _limit(10000.0, "largest |value| of a clamp or cap (and |max| of a guard's cap)")
    max_probes: int = _limit(64, "most probes one request may ask for")
    max_top_logprobs: int = _limit(20, "largest top_logprobs")
    max_logit_bias: int = _limit(300, "most entries in logit_bias")
    max_queue: int = _limit(64, "requests waiting for a batch slot before new ones get 429")
    max_batch: int = _limit(0, "rows (choices) decoded together in one forward pass; 0 (the default): fitted to the "
                               "memory and backend, each row's KV cache at the longest context (gateway/batch_size.py)")
    max_request_tokens: int = _limit(
        262144, "token budget of one request: prompts x n x (prompt tokens + max_tokens), summed over its rows"
    )
    prefill_chunk_tokens: int = _limit(512, "prompt tokens read per forward pass; decode steps run between chunks")
    prompt_cache_entries: int = _limit(8, "prompt KV caches kept for prefix reuse (least recently used dropped)")
    prompt_cache_bytes: int = _limit(256 * 1024 * 1024, "bytes of prompt KV caches kept for prefix reuse")
    max_header_chars: int = _limit(4096, "longest X-Steer / X-Probes header")
    max_layers_spec: int = _limit(1024, "longest steer layers spec (characters of a string, items of a list)")
    max_metadata_bytes: int = _limit(1024 * 1024, "largest metadata object of a vector or probe upload, as JSON")
    max_connections: int = _limit(1024, "open HTTP connections; more are closed at accept (mlx-lm raises the fd limit to 2048)")
    header_timeout_s: float = _limit(10.0, "seconds a connection may take to send a complete request head")
    keep_alive_s: float = _limit(5.0, "seconds an idle keep-alive connection stays open")
    drain_s: float = _limit(60.0, "seconds SIGTERM waits for running requests to finish before cancelling them")
    max_guard_rules: int = _limit(8, "most guard rules per request (body and preset together)")
    max_guard_tokens: int = _limit(64, "largest for_tokens of a guard rule (consecutive tokens above the threshold)")
    max_tools: int = _limit(64, "most function tools in one request")
    max_schema_chars: int = _limit(65536, "longest JSON Schema (response_format, one tool's parameters), as JSON text")


def limit_docs() -> list[tuple[str, object, str]]:
    return [(f.name, f.default, f.metadata["doc"]) for f in fields(Limits)]


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits (also settable as MLX_INTERP_<NAME> environment variables)")
    for f in fields(Limits):
        kind = float if isinstance(f.default, float) else int
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=None,
            metavar="N",
            help=f"{f.metadata['doc']} (default {f.default})",
        )


def limits_from(args: argparse.Namespace | None = None, environ: dict | None = None) -> Limits:
    """Defaults, then environment, then flags; every value must be positive."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in fields(Limits):
        kind = float if isinstance(f.default, float) else int
        raw = getattr(args, f.name, None) if args is not None else None
        source = "--" + f.name.replace("_", "-")
        if raw is None and (ENV_PREFIX + f.name.upper()) in environ:
            source = ENV_PREFIX + f.name.upper()
            try:
                raw = kind(environ[source])
            except ValueError:
                raise ValueError(f"{source} must be a number; got {environ[source]!r}") from None
        if raw is None:
            continue
        if not raw > 0:
            raise ValueError(f"{source} must be positive; got {raw}")
        values[f.name] = kind(raw)
    return replace(Limits(), **values)
