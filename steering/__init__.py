"""Model loading, layer hooks, capture, interventions and steering vectors.

OpenBLAS must be loaded before mlx.core on Linux CPU (see backend.py), so this
happens before anything else in the package imports mlx.
"""

from .backend import prefer_fast_blas

prefer_fast_blas()
