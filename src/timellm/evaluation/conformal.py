"""Split-conformal prediction intervals from held-out forecasts (Vovk et al. 2005; Lei et al. 2018).

A forecaster's held-out windows give, per horizon step h, conformity scores: the absolute error
divided by the spread (standard deviation) of the window's look-back, so that series of different
scales pool into one set (normalised conformal). The interval of step h is the forecast ± q_h
times the look-back spread of the forecast window, q_h being the ceil((n + 1) level)-th smallest
of the n scores of step h: coverage of at least ``level`` on average over windows exchangeable
with the held-out ones, for every level from the same scores.

A look-back without spread (a constant stretch) has no scale: it gives no score, and a window
forecast from one is its constant, exactly, with an interval of width zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from timellm.data.errors import InputDataError
from timellm.evaluation.statistical import interval_names

# held-out windows scored at most: beyond this many, an evenly spaced sample of them (their
# quantiles barely move, and forecasting every window of thousands of series costs minutes)
MAX_CALIBRATION_WINDOWS = 2000


def look_back_spread(pasts: np.ndarray) -> np.ndarray:
    """The scale of each window's intervals, from its look-back (n, T): its standard deviation, (n,)."""
    return np.std(np.asarray(pasts, dtype=np.float64), axis=1)


def conformity_scores(pasts: np.ndarray, forecasts: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int]:
    """|truth - forecast| / look-back spread of each window: ((n', H), windows without spread left out).

    pasts (n, T), forecasts and truth (n, H).
    """
    spread = look_back_spread(pasts)  # (n,)
    keep = spread > 0
    errors = np.abs(np.asarray(truth, dtype=np.float64) - np.asarray(forecasts, dtype=np.float64))
    return errors[keep] / spread[keep, None], int((~keep).sum())


def sample_windows(count: int, limit: int | None = None) -> np.ndarray:
    """Indices of at most ``limit`` (default :data:`MAX_CALIBRATION_WINDOWS`) evenly spaced
    windows out of ``count`` (all of them if fewer)."""
    limit = MAX_CALIBRATION_WINDOWS if limit is None else limit
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


def conformal_quantiles(scores: np.ndarray | None, level: float, constant: int = 0) -> np.ndarray:
    """Split-conformal quantile of each horizon step: the ceil((n + 1) level)-th smallest score, (H,).

    scores: (n, H) conformity scores of n held-out windows; ``constant``: held-out windows left
    out for a constant look-back (for the message). With fewer than level / (100 - level) windows
    the quantile would be infinite (19 for 95 %, 4 for 80 %): that is refused.
    """
    if scores is None:
        raise InputDataError(
            "this forecaster has no calibration scores for intervals (an adapter saved without them): "
            "fit it again to get prediction intervals"
        )
    n = len(scores)
    rank = math.ceil((n + 1) * level / 100 - 1e-9)
    if rank > n:
        needed = math.ceil(level / (100 - level) - 1e-9)
        if constant:
            raise InputDataError(
                f"a {level:g} % interval needs at least {needed} held-out validation windows with a varying "
                f"look-back to calibrate on; this forecaster has {n}, and {constant} more whose look-back "
                "was constant give no error scale (more validation steps of the same constant series "
                "cannot help): fit it on series that vary, or forecast without intervals"
            )
        raise InputDataError(
            f"a {level:g} % interval needs at least {needed} held-out validation windows to calibrate on, "
            f"this forecaster has {n}: fit it with a larger val_size=... (every step beyond the horizon "
            "adds one window per series), or ask for a lower level"
        )
    return np.sort(scores, axis=0)[rank - 1]


def interval_columns(
    model: str,
    pasts: np.ndarray,
    forecasts: Sequence[np.ndarray],
    levels: tuple[float, ...],
    scores: np.ndarray | None,
    constant: int = 0,
) -> list[dict[str, np.ndarray]]:
    """The interval columns of every forecast, ``<model>-lo-95`` ... ``<model>-hi-95``.

    pasts (n, T): each forecast's look-back; forecasts: n arrays (H,). A forecast from a constant
    look-back gets an interval of width zero and needs no scores.
    """
    if not levels:
        return [{} for _ in forecasts]
    spread = look_back_spread(pasts) if len(forecasts) else np.empty(0)
    horizon = len(forecasts[0]) if len(forecasts) else 0
    if (spread > 0).any():
        quantiles = {lv: conformal_quantiles(scores, lv, constant) for lv in levels}  # level -> (H,)
    else:  # every look-back constant: exact forecasts, no width to calibrate
        quantiles = {lv: np.zeros(horizon) for lv in levels}
    bands = []
    for pred, width in zip(forecasts, spread, strict=True):
        band = {}
        for lv in sorted(levels, reverse=True):
            band[interval_names(model, lv)[0]] = pred - width * quantiles[lv]
        for lv in levels:
            band[interval_names(model, lv)[1]] = pred + width * quantiles[lv]
        bands.append(band)
    return bands
