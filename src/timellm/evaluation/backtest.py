"""Scoring a backtest: each model's errors per series and overall, from a cross-validation frame.

The frame holds, per series and window, the truth and one column per model (statsforecast's
layout: ``TimeLLM``, ``AutoETS``, ... and their ``<model>-lo-80`` / ``<model>-hi-80`` intervals).
Point forecasts get MSE and MAE on the data's own scale and MASE (scaled by the in-sample seasonal
naive error before the first cutoff, M4's convention); intervals get their coverage, mean width
and M4's MSIS, which weighs the width against the misses so that two intervals can be ranked.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from timellm.data.series import FrameFormat
from timellm.evaluation import metrics
from timellm.evaluation.statistical import forecast_windows, interval_names

SUMMARY_ID = "overall"  # the id of the rows that summarise every series


def score_columns(levels: tuple[float, ...] = ()) -> tuple[str, ...]:
    """Every column of the scores table but the id column."""
    per_level = [f"{kind}-{lv:g}" for lv in levels for kind in ("coverage", "width", "MSIS")]
    best = [f"best-MSIS-{lv:g}" for lv in levels]
    return ("model", "MSE", "MAE", "MASE", *per_level, "seconds", "best", *best)


def baseline_columns(
    cv: pd.DataFrame,
    histories: list[np.ndarray],
    horizon: int,
    seasons: list[int],
    models: tuple[str, ...],
    levels: tuple[float, ...],
    labels: list[str],
    budget: float | None,
) -> dict[str, float]:
    """Forecast every window's history with statsforecast's ``models`` and add their columns to the
    cross-validation frame ``cv`` (one row per window step, in the order of ``histories``): the
    point forecast and the interval columns in TimeLLM's order. Returns the seconds of each model
    that ran within its ``budget`` (the others are left out, with a warning)."""
    seconds = {}
    for result in forecast_windows(
        histories, horizon, seasons, models, levels, labels, budget=budget
    ).values():
        name = result.model
        cv[name] = result.mean.reshape(-1)
        for lv in sorted(levels, reverse=True):  # the column order of TimeLLM's intervals
            cv[interval_names(name, lv)[0]] = result.lower[lv].reshape(-1)
        for lv in levels:
            cv[interval_names(name, lv)[1]] = result.upper[lv].reshape(-1)
        seconds[name] = result.seconds
    return seconds


def mase_scale(insample: np.ndarray, period: int) -> float:
    """MASE denominator of one series (:func:`metrics.seasonal_scale`); NaN where it is undefined.

    Undefined: a history no longer than the period, or without seasonal variation (a scale at
    rounding-noise level of the values counts as none).
    """
    try:
        scale = float(metrics.seasonal_scale(insample, period))
    except ValueError:
        return math.nan
    return scale if scale > 1e-9 * float(np.abs(insample).max(initial=0.0)) else math.nan


def score_backtest(
    cv: pd.DataFrame,
    fmt: FrameFormat,
    scales: dict[Any, float],
    models: tuple[str, ...],
    levels: tuple[float, ...] = (),
    seconds: dict[str, float] | None = None,
    scored: np.ndarray | None = None,
) -> pd.DataFrame:
    """MSE, MAE, MASE (and interval coverage, width and MSIS) of each model per series and overall.

    ``scales``: each series' MASE denominator (NaN: MASE and MSIS undefined for it); ``seconds``:
    each model's fit + forecast time, put on its overall row; ``scored``: a boolean per row of
    ``cv``, False for rows whose truth is not an observation (an interpolated value), which no
    score counts. ``best`` marks the model of lowest MASE per series (lowest MAE where MASE is
    undefined) and overall; ``best-MSIS-<level>`` the model of lowest MSIS at that level.
    """
    target = "y" if fmt.wide else fmt.target_col
    seconds = seconds or {}
    if scored is not None:
        cv = cv[np.asarray(scored, dtype=bool)]

    def row(sid, model, group, scale) -> dict[str, Any]:
        truth, pred = group[target].to_numpy(), group[model].to_numpy()
        mae = metrics.mae(pred, truth)
        out = {
            fmt.id_col: sid,
            "model": model,
            "MSE": metrics.mse(pred, truth),
            "MAE": mae,
            "MASE": mae / scale if math.isfinite(scale) else math.nan,
        }
        for lv in levels:
            if interval_names(model, lv)[0] not in group:  # a model without intervals (the combination)
                out.update({f"{kind}-{lv:g}": math.nan for kind in ("coverage", "width", "MSIS")})
                continue
            lo, hi = (group[c].to_numpy() for c in interval_names(model, lv))
            out[f"coverage-{lv:g}"] = float(np.mean((lo <= truth) & (truth <= hi)))
            out[f"width-{lv:g}"] = float(np.mean(hi - lo))
            out[f"MSIS-{lv:g}"] = metrics.msis(lo, hi, truth, lv, scale) if math.isfinite(scale) else math.nan
        return out

    rows = []
    for sid, group in cv.groupby(fmt.id_col, sort=False):
        rows += [row(sid, m, group, scales[sid]) for m in models]
    per_series = pd.DataFrame(rows)
    for m in models:
        overall = row(SUMMARY_ID, m, cv, math.nan)
        mine = per_series[per_series["model"] == m] if len(per_series) else per_series
        for key in ("MASE", *(f"MSIS-{lv:g}" for lv in levels)):  # M4: the mean of the per-series scores
            values = mine[key].to_numpy(dtype=np.float64) if key in mine else np.array([])
            overall[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        overall["seconds"] = seconds.get(m, math.nan)
        rows.append(overall)
    scores = pd.DataFrame(rows)
    if "seconds" not in scores:
        scores["seconds"] = math.nan
    scores["best"] = False
    for lv in levels:
        scores[f"best-MSIS-{lv:g}"] = False
    for _, group in scores.groupby(fmt.id_col, sort=False):
        key = "MASE" if group["MASE"].notna().any() else "MAE"
        if group[key].notna().any():
            scores.loc[group[key].idxmin(), "best"] = True
        for lv in levels:
            if group[f"MSIS-{lv:g}"].notna().any():
                scores.loc[group[f"MSIS-{lv:g}"].idxmin(), f"best-MSIS-{lv:g}"] = True
    return scores[[fmt.id_col, *score_columns(levels)]]
