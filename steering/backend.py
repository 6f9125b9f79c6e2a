"""Per-backend runtime choices: which BLAS mlx uses on Linux CPU, and the compute dtype.

The Linux `mlx[cpu]` wheel links the reference BLAS (~4 GFLOP/s for a float32
matmul). Debian's OpenBLAS (`libopenblas0-pthread`) is ~50x faster, and mlx picks
it up if it is loaded into the global symbol scope *before* `mlx.core` is
imported. That is why `steering/__init__.py` calls `prefer_fast_blas()` first.

On Metal we keep the model's own (usually 4-bit) weights: the GPU kernels are
fast and memory is the constraint. On CPU, mlx's quantized matmul is slow, so the
default is to dequantize to float32 and use OpenBLAS.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass

# Environment switches, documented in the README.
ENV_BLAS = "MLX_INTERP_BLAS"  # "auto" (default), "reference" to keep mlx's own, or a path to a BLAS .so
ENV_DTYPE = "MLX_INTERP_DTYPE"  # "auto", "float32", "float16", "bfloat16", "native" (keep checkpoint dtype/quantization)
ENV_GEMV = "MLX_INTERP_GEMV"  # "auto" (default): decode-sized products go through the shim (gemv_shim.c); "0" keeps sgemm for all
ENV_GEMV_ROWS = "MLX_INTERP_GEMV_ROWS"  # products of up to N rows (at most 8) skip sgemm (see gemv_shim.c)
ENV_GEMV_THREADS = "MLX_INTERP_GEMV_THREADS"  # threads the shim's kernel uses (default: every core); read by gemv_shim.c
# Decode batches of up to 8 rows read each weight once in the shim's own kernel; OpenBLAS's sgemm packed
# the weights on every call (bench/README.md has the paired-step numbers).
DEFAULT_GEMV_ROWS = 8
SHIM_FLAGS = ("-O3", "-march=native", "-pthread")
SHIM_FLAGS_PORTABLE = ("-O2", "-pthread")
SHIM_KEEP_S = 86400  # builds of other sources or CPUs older than this are removed when a new one is made

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
)


@dataclass(frozen=True)
class BlasChoice:
    path: str | None  # the library loaded, or None when mlx's own is used
    reason: str
    gemv: str | None = None  # the gemv shim loaded in front of it, or None (see gemv_shim.c)


_blas_choice: BlasChoice | None = None  # process-wide fact, set once before mlx loads


def prefer_fast_blas() -> BlasChoice:
    """Load OpenBLAS into the global symbol scope if we are on Linux and mlx is not loaded yet."""
    global _blas_choice
    if _blas_choice is not None:
        return _blas_choice
    wanted = os.environ.get(ENV_BLAS, "auto")
    if platform.system() != "Linux":
        _blas_choice = BlasChoice(None, "not Linux: mlx uses Accelerate/Metal")
    elif wanted == "reference":
        _blas_choice = BlasChoice(None, f"{ENV_BLAS}=reference")
    elif "mlx.core" in sys.modules:
        _blas_choice = BlasChoice(None, "mlx.core was imported before steering; BLAS left as is")
    else:
        candidates = OPENBLAS_CANDIDATES if wanted == "auto" else (wanted,)
        _blas_choice = BlasChoice(None, "OpenBLAS not found (apt-get install libopenblas0-pthread)")
        for path in candidates:
            if os.path.exists(path):
                shim = _gemv_shim() if os.environ.get(ENV_GEMV, "auto") not in ("0", "off", "no") else None
                try:
                    blas = ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
                except OSError as exc:
                    _blas_choice = BlasChoice(None, f"could not load {path}: {exc}")
                    continue
                loaded = None
                if shim is not None and hasattr(blas, "cblas_sgemv"):
                    shim.mlx_interp_gemv_shim_init(ctypes.cast(blas.cblas_sgemm, ctypes.c_void_p),
                                                   ctypes.cast(blas.cblas_sgemv, ctypes.c_void_p))
                    loaded = shim._name
                    try:
                        shim.mlx_interp_gemv_shim_rows(gemv_rows())
                    except ValueError:
                        shim.mlx_interp_gemv_shim_rows(1)  # not a number: one row only
                _blas_choice = BlasChoice(path, "loaded before mlx", loaded)
                break
    return _blas_choice


def gemv_rows() -> int:
    """How many rows a product may have and still go to sgemv (MLX_INTERP_GEMV_ROWS, default DEFAULT_GEMV_ROWS)."""
    return max(1, int(os.environ.get(ENV_GEMV_ROWS) or DEFAULT_GEMV_ROWS))


def _gemv_shim():
    """Build (once, into the model cache) and load gemv_shim.c ahead of OpenBLAS; None if there is no C compiler.

    Loaded first with RTLD_GLOBAL, its cblas_sgemm is the one mlx binds to.
    """
    import hashlib
    import shutil
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from mlx_interp import paths

    source = Path(__file__).with_name("gemv_shim.c")
    try:
        code = source.read_bytes()
        # Built for this machine's CPU (AVX2 + FMA where it has them: the kernel's inner loop); the
        # hash covers the source, the flags and the CPU's features, so a home shared with another kind
        # of machine never hands this one a build with instructions its CPU lacks.
        key = hashlib.sha256(code + " ".join(SHIM_FLAGS).encode() + _cpu_flags()).hexdigest()[:16]
        target = paths.model_cache() / "lib" / f"gemv_shim-{key}.so"
        if not target.exists():
            compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
            if compiler is None:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                out = Path(tmp) / target.name
                for flags in (SHIM_FLAGS, SHIM_FLAGS_PORTABLE):  # a compiler without -march=native: portable
                    built = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", str(out), str(source)],
                                           capture_output=True, timeout=60)
                    if built.returncode == 0:
                        break
                else:
                    return None
                os.replace(out, target)  # atomic: a concurrent process sees the whole file or none
            # Other builds would pile up; one a day old is no other process's fresh build (two checkouts
            # or kinds of CPU sharing a home would otherwise delete each other's before they load them).
            for old in target.parent.glob("gemv_shim-*.so"):
                try:
                    if old != target and time.time() - old.stat().st_mtime > SHIM_KEEP_S:
                        old.unlink()
                except OSError:
                    pass  # another process removed it first
        return ctypes.CDLL(str(target), mode=os.RTLD_GLOBAL)
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_flags() -> bytes:
    """The CPU's feature flags as Linux lists them (the machine's name where there is no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if line.startswith((b"flags", b"Features")):
                    return line
    except OSError:
        pass
    return platform.machine().encode()


def blas_choice() -> BlasChoice:
    return prefer_fast_blas()


def default_device_kind() -> str:
    """'gpu' when mlx has a Metal or CUDA device, else 'cpu'."""
    import mlx.core as mx

    try:
        return "gpu" if mx.default_device() == mx.gpu else "cpu"
    except Exception:  # very old mlx without device query
        return "cpu"


def resolve_dtype(requested: str | None = None) -> str:
    """The compute dtype to load weights in.

    'native' keeps the checkpoint's dtype and quantization (the Metal default).
    On CPU the default is float32: dequantized weights through OpenBLAS are
    ~2x faster to decode and ~10x faster at prompt processing than 4-bit.
    """
    choice = (requested or os.environ.get(ENV_DTYPE) or "auto").lower()
    valid = ("auto", "native", "float32", "float16", "bfloat16")
    if choice not in valid:
        raise ValueError(f"dtype must be one of {', '.join(valid)}; got {choice!r}")
    if choice != "auto":
        return choice
    return "native" if default_device_kind() == "gpu" else "float32"


def prime_compiler() -> None:
    """Run one compiled mlx function now, so mlx's one-time compiler probe happens before serving.

    On its first compiled function mlx's CPU backend checks its C++ compiler once per process with
    libc's system("g++ --version"), and system() sets SIGINT to SIG_IGN in the whole process while
    the child runs: a Ctrl-C that arrived then was dropped (seen as a server that streamed on after
    SIGINT right after its first request, 3-4 times in 10; traced with strace). Every path reaches a
    compiled function sooner or later (mlx's nn.silu is one), so the probe is run here, at start.
    """
    import mlx.core as mx

    mx.eval(mx.compile(lambda x: x * 2.0 + 1.0)(mx.zeros((2,))))
