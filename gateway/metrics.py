"""Prometheus text-format metrics, kept by the event loop (the model thread only exposes gauges)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

PREFIX = "mlx_interp_"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def route_label(path: str) -> str:
    """Collapse per-name paths so labels stay few."""
    for prefix in ("/v1/models/", "/v1/steering/vectors/", "/v1/probes/"):
        if path.startswith(prefix) and len(path) > len(prefix):
            return prefix + "{name}"
    known = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/steering/vectors", "/v1/probes", "/health", "/metrics"}
    return path if path in known else "other"


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """A fixed label set: made-up methods (one label each) used to grow /metrics without bound."""
    return method if method in METHODS else "other"


@dataclass
class Metrics:
    requests: Counter = field(default_factory=Counter)  # (route, method, status)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    steering: Counter = field(default_factory=Counter)  # vector name
    probes: Counter = field(default_factory=Counter)  # probe name

    def observe_request(self, path: str, method: str, status: int) -> None:
        self.requests[(route_label(path), method_label(method), status)] += 1

    def observe_generation(self, spec, completion_tokens: int) -> None:
        self.prompt_tokens += spec.prompt_tokens
        self.completion_tokens += completion_tokens
        for applied in spec.steering_applied:
            self.steering[applied["vector"]] += 1
        for r in spec.probes:
            self.probes[r.name] += 1

    def render(self, engine) -> str:
        lines = []

        def metric(name, kind, help_text, samples):
            lines.append(f"# HELP {PREFIX}{name} {help_text}")
            lines.append(f"# TYPE {PREFIX}{name} {kind}")
            for labels, value in samples:
                label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                lines.append(f"{PREFIX}{name}{{{label_text}}} {value}" if label_text else f"{PREFIX}{name} {value}")

        metric("requests_total", "counter", "HTTP requests by route, method and status",
               [({"route": r, "method": m, "status": s}, c) for (r, m, s), c in sorted(self.requests.items())])
        metric("prompt_tokens_total", "counter", "prompt tokens processed", [({}, self.prompt_tokens)])
        metric("completion_tokens_total", "counter", "tokens generated", [({}, self.completion_tokens)])
        metric("queue_depth", "gauge", "requests waiting for a batch slot", [({}, engine.queue_depth)])
        metric("batch_size", "gauge", "rows in the running decode batch", [({}, engine.batch_size)])
        metric("decode_steps_total", "counter", "batched decode steps run", [({}, engine.steps)])
        metric("prefill_chunks_total", "counter", "prompt chunks read (decode steps run between them)",
               [({}, getattr(engine, "prefill_chunks", 0))])
        metric("steering_requests_total", "counter", "requests steered, by vector",
               [({"vector": v}, c) for v, c in sorted(self.steering.items())])
        metric("probe_requests_total", "counter", "requests probed, by probe",
               [({"probe": p}, c) for p, c in sorted(self.probes.items())])
        return "\n".join(lines) + "\n"
