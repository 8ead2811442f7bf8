"""Forecast accuracy metrics, averaged over every element (windows, steps and channels)."""

from __future__ import annotations

import numpy as np


def mse(pred, true) -> float:
    """Mean squared error over all elements of two same-shaped arrays."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return float(np.mean((pred - true) ** 2))


def mae(pred, true) -> float:
    """Mean absolute error over all elements of two same-shaped arrays."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return float(np.mean(np.abs(pred - true)))
