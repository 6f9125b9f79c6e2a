"""Response aggregates of per-token probe readings: mean, max, last, and an EMA over a window.

`ema` is the highest value of the exponential moving average of the readings
(smoothing factor 2 / (window + 1), started at the first reading): it flags a
sustained stretch of high readings, where `max` would flag one spike. Training
sets a threshold for each aggregate on held-out negative responses, and the
server computes the same aggregate from the same readings, so the two agree.
"""

from __future__ import annotations

import numpy as np

AGGREGATIONS = ("mean", "max", "last", "ema")
RESPONSE_AGGREGATIONS = ("mean", "max", "ema")  # the ones training sets thresholds for
DEFAULT_EMA_WINDOW = 8


def ema_trace(values: np.ndarray, window: int) -> np.ndarray:
    """The exponential moving average along axis 0 (same shape as values)."""
    values = np.asarray(values, dtype=np.float64)
    alpha = 2.0 / (window + 1.0)
    out = np.empty_like(values)
    acc = values[0]
    out[0] = acc
    for t in range(1, values.shape[0]):
        acc = alpha * values[t] + (1.0 - alpha) * acc
        out[t] = acc
    return out


def aggregate(values: np.ndarray, how: str, window: int = DEFAULT_EMA_WINDOW):
    """Aggregate readings over tokens (axis 0): (T,) -> scalar, (T, L) -> (L,). NaN stays NaN."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        raise ValueError("no readings to aggregate")
    if how == "mean":
        return values.mean(axis=0)
    if how == "max":
        return values.max(axis=0)
    if how == "last":
        return values[-1]
    if how == "ema":
        return ema_trace(values, window).max(axis=0)
    raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
