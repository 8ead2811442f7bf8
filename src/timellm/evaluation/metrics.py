"""Forecast accuracy metrics on numpy arrays (CPU torch tensors are accepted too).

``mse`` and ``mae`` average over every element (windows, steps and channels), as the long-term
forecasting papers report them. ``smape``, ``mase`` and ``owa`` follow the M4 competition: a
per-series error averaged over the series.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor: leave autograd and the device behind
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _same_shape(pred: np.ndarray, true: np.ndarray) -> None:
    if pred.shape != true.shape:
        raise ValueError(f"pred and true must have the same shape, found {pred.shape} and {true.shape}")


def mse(pred, true) -> float:
    """Mean squared error over all elements of two same-shaped arrays."""
    pred, true = _array(pred), _array(true)
    _same_shape(pred, true)
    return float(np.mean((pred - true) ** 2))


def mae(pred, true) -> float:
    """Mean absolute error over all elements of two same-shaped arrays."""
    pred, true = _array(pred), _array(true)
    _same_shape(pred, true)
    return float(np.mean(np.abs(pred - true)))


def smape_per_series(pred, true) -> np.ndarray:
    """M4 sMAPE of each series, in percent: 200 * mean_h |y - ŷ| / (|y| + |ŷ|), 0/0 counted as 0.

    pred, true: (H,) or (n, H) -> () or (n,).
    """
    pred, true = _array(pred), _array(true)
    _same_shape(pred, true)
    denominator = np.abs(true) + np.abs(pred)
    ratio = np.divide(
        np.abs(true - pred), denominator, out=np.zeros_like(denominator), where=denominator != 0
    )
    return 200.0 * ratio.mean(axis=-1)


def smape(pred, true) -> float:
    """M4 sMAPE in percent, averaged over the series. pred, true: (H,) or (n, H)."""
    return float(np.mean(smape_per_series(pred, true)))


def seasonal_scale(insample, period: int) -> np.ndarray:
    """MASE denominator: mean |y_t - y_{t-period}| over each in-sample history.

    insample: one series (T,), a regular (n, T) array, or a sequence of n 1-D arrays of different
    lengths (the M4 training series). Returns () or (n,).
    """
    if not isinstance(period, (int, np.integer)) or period < 1:
        raise ValueError(f"period must be a positive integer, found {period!r}")
    if isinstance(insample, np.ndarray) or hasattr(insample, "detach"):
        array = _array(insample)
        if array.ndim == 1:
            return seasonal_scale([array], period)[0]
        rows: Sequence[Any] = list(array)
    else:
        rows = insample
    scales = np.empty(len(rows))
    for i, row in enumerate(rows):
        row = _array(row)
        if row.ndim != 1 or len(row) <= period:
            raise ValueError(
                f"in-sample series {i} must be 1-D and longer than the period {period}, found shape {row.shape}"
            )
        scales[i] = np.mean(np.abs(row[period:] - row[:-period]))
        if not scales[i] > 0:  # zero (a constant history) or NaN: MASE would be infinite or undefined
            raise ValueError(
                f"in-sample series {i} has no seasonal variation at period {period} (scale {scales[i]}): "
                "MASE is undefined for it"
            )
    return scales


def mase_per_series(pred, true, insample, period: int) -> np.ndarray:
    """MASE of each series: mean_h |y - ŷ| over the in-sample seasonal-naive scale.

    pred, true: (H,) or (n, H); insample: as for :func:`seasonal_scale` (one history per series).
    Returns () or (n,).
    """
    pred, true = _array(pred), _array(true)
    _same_shape(pred, true)
    scale = seasonal_scale(insample, period)
    if np.shape(scale) != pred.shape[:-1]:
        raise ValueError(
            f"insample must hold one history per forecast series: {pred.shape[:-1] or 1} series forecast, "
            f"{np.size(scale)} histories given"
        )
    return np.abs(true - pred).mean(axis=-1) / scale


def mase(pred, true, insample, period: int) -> float:
    """M4 MASE averaged over the series; see :func:`mase_per_series` for the shapes."""
    return float(np.mean(mase_per_series(pred, true, insample, period)))


def owa(smape: float, mase: float, smape_naive2: float, mase_naive2: float) -> float:
    """Overall weighted average of M4: ½ (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2); Naive2 scores 1."""
    return 0.5 * (smape / smape_naive2 + mase / mase_naive2)


def interval_score(lower, upper, true, level: float) -> np.ndarray:
    """The interval score of each element (Gneiting & Raftery 2007; M4's MSIS before scaling).

    ``(u - l) + 2/a (l - y) 1{y < l} + 2/a (y - u) 1{y > u}`` with ``a = 1 - level / 100``: the
    width, plus a penalty for every miss that grows with the distance to the interval and with
    the level. A narrower interval that still covers scores lower; one that misses pays for it.
    """
    lower, upper, true = _array(lower), _array(upper), _array(true)
    _same_shape(lower, true), _same_shape(upper, true)
    if not 0 < float(level) < 100:
        raise ValueError(f"level must be strictly between 0 and 100 (a coverage in percent), found {level!r}")
    alpha = 1.0 - float(level) / 100.0
    below = np.clip(lower - true, 0.0, None)
    above = np.clip(true - upper, 0.0, None)
    return (upper - lower) + (2.0 / alpha) * (below + above)


def msis(lower, upper, true, level: float, scale: float) -> float:
    """M4's mean scaled interval score: the mean :func:`interval_score` over ``scale``.

    ``scale`` is the series' MASE denominator (:func:`seasonal_scale`), so that MSIS, like MASE,
    compares across series of different magnitudes; lower is better.
    """
    return float(np.mean(interval_score(lower, upper, true, level)) / scale)
