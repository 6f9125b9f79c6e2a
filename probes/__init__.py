"""Linear probes over the residual stream: the artifact, training with honest evaluation, batched scoring."""

import mlx_interp.steering  # noqa: F401  (loads OpenBLAS before anything imports mlx)

from .probe import Probe, ProbeLibrary

__all__ = ["Probe", "ProbeLibrary"]
