"""mlx-interp: steer and monitor MLX language models at the activation level."""

__version__ = "0.1.0"
