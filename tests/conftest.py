import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx_interp.steering  # noqa: E402,F401  (loads OpenBLAS before anything imports mlx)

FAMILIES = ("llama", "qwen2", "gemma", "phi3")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    from tiny_models import make_tiny_model_dir

    root = tmp_path_factory.mktemp("tiny-models")
    return {f: make_tiny_model_dir(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_lm(request, tiny_model_dirs):
    """A LoadedModel for each tiny family (float32)."""
    from mlx_interp.steering.model import load_model

    return load_model(str(tiny_model_dirs[request.param]), dtype="float32", progress=False)


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_dirs):
    from mlx_interp.steering.model import load_model

    return load_model(str(tiny_model_dirs["llama"]), dtype="float32", progress=False)


@pytest.fixture(scope="session")
def default_lm():
    """The real default model (SmolLM2-135M-Instruct), converted once into the user's cache."""
    from mlx_interp.steering.model import load_model

    return load_model("default", progress=False)
