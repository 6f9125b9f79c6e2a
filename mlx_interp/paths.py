"""Where mlx-interp reads and writes files: the one place for every path and its environment variable.

Two kinds of place (contract section 9):

- **shipped**: the data and libraries inside the installed package (read-only:
  a wheel's site-packages may not even be writable). Computed once, here.
- **the user's**: `MLX_INTERP_HOME` (default `$XDG_CACHE_HOME/mlx-interp`, i.e.
  `~/.cache/mlx-interp`). Vectors and probes that a user builds, trains or
  uploads go under it, never into the package. The converted default model
  lives there too unless `MLX_INTERP_CACHE` moves the model cache elsewhere.

Functions, not constants, for the user's paths: the environment is read when a
path is needed, so a test (or a service unit) that sets it is honoured.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ENV_HOME = "MLX_INTERP_HOME"
ENV_CACHE = "MLX_INTERP_CACHE"  # the model cache only (converted default model, GGUF conversions)


def _package_dir(package: str) -> Path:
    """The folder of an installed subpackage, found without importing it (steering loads mlx)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


# -- shipped with the package (read-only) -------------------------------------------------------

STEERING_PACKAGE = _package_dir("mlx_interp.steering")
PROBES_PACKAGE = _package_dir("mlx_interp.probes")
EXPERIMENTS_PACKAGE = _package_dir("mlx_interp.experiments")

SHIPPED_VECTORS = STEERING_PACKAGE / "library"
SHIPPED_PROBES = PROBES_PACKAGE / "library"
STEERING_DATA = STEERING_PACKAGE / "data"
PROBE_DATA = PROBES_PACKAGE / "data"
EXPERIMENT_DATA = EXPERIMENTS_PACKAGE / "data"


# -- the user's (writable) ---------------------------------------------------------------------


def home() -> Path:
    """The user's data directory: MLX_INTERP_HOME, else $XDG_CACHE_HOME/mlx-interp, else ~/.cache/mlx-interp."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mlx-interp"


def model_cache() -> Path:
    """Converted models (the default model, GGUF conversions): MLX_INTERP_CACHE, else home()."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    return home()


def user_library() -> Path:
    """Vectors and probes the user built, trained or uploaded."""
    return home() / "library"


def user_vectors() -> Path:
    return user_library() / "vectors"


def user_probes() -> Path:
    return user_library() / "probes"
