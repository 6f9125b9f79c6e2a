"""What every study shares: dataset paths and loading, the run record, result files."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from mlx_interp import paths
from mlx_interp.steering.artifacts import dataset_hash, utc_now

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_DATA = paths.EXPERIMENT_DATA
COLOUR_QUESTIONS = EXPERIMENT_DATA / "colour_questions.jsonl"
COLOUR_CONTROLS = EXPERIMENT_DATA / "colour_controls.jsonl"
CONTAMINATION = EXPERIMENT_DATA / "contamination.jsonl"
GREEN_RED_PAIRS = paths.STEERING_DATA / "green_red.jsonl"
SYCOPHANCY = paths.PROBE_DATA / "sycophancy.jsonl"
CONFOUND = paths.PROBE_DATA / "confound.jsonl"
VECTOR_LIBRARY = paths.SHIPPED_VECTORS
PROBE_LIBRARY = paths.SHIPPED_PROBES


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def versions() -> dict:
    import mlx.core as mx

    out = {"python": sys.version.split()[0], "platform": platform.platform(), "numpy": np.__version__, "mlx": mx.__version__}
    for pkg in ("mlx_lm", "sklearn", "scipy"):
        try:
            out[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001  (a missing optional package is just not reported)
            out[pkg] = None
    try:
        from mlx_interp import __version__

        out["mlx_interp"] = __version__
    except Exception:  # noqa: BLE001
        out["mlx_interp"] = None
    return out


def run_record(lm, study: str, seed: int, datasets: list[Path], config: dict) -> dict:
    """The header of every results file: enough to reproduce and to compare runs."""
    return {
        "study": study,
        "created": utc_now(),
        "seed": seed,
        "model_id": lm.model_id,
        "model_fingerprint": lm.fingerprint,
        "num_layers": lm.num_layers,
        "hidden_size": lm.hidden_size,
        "dtype": lm.dtype,
        "datasets": {str(Path(p).relative_to(ROOT)) if Path(p).is_relative_to(ROOT) else str(p): dataset_hash([p]) for p in datasets},
        "config": config,
        "versions": versions(),
    }


def to_jsonable(x):
    """Numpy scalars and arrays to plain JSON; NaN/Inf become null (results files are strict JSON)."""
    if is_dataclass(x):
        return to_jsonable(asdict(x))
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if np.isfinite(x) else None
    return x


def write_results(out_dir: Path, name: str, results: dict) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def balanced_subset(rows: list[dict], limit: int | None, key: str = "answer") -> list[dict]:
    """The first `limit` rows taking classes in turn, so a reduced run stays balanced."""
    if limit is None or limit >= len(rows):
        return list(rows)
    by_class: dict = {}
    for r in rows:
        by_class.setdefault(r[key], []).append(r)
    out: list[dict] = []
    queues = list(by_class.values())
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out
