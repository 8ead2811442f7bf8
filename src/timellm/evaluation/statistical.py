"""Statistical baselines from ``statsforecast``: what a practitioner compares a new model with.

AutoETS, AutoTheta and AutoARIMA (automatic model selection per series, Hyndman & Khandakar), and
the SeasonalNaive and Naive references, each forecast from exactly the history a Time-LLM window
saw, with their own prediction intervals. ``statsforecast`` is imported here only, when a baseline
runs, so that ``import timellm`` stays fast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

STATISTICAL_MODELS = ("AutoETS", "AutoTheta", "AutoARIMA", "SeasonalNaive", "Naive")


def parse_baselines(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """Baseline names from ``"all"``, ``"none"``, a comma-separated string or a list; case-insensitive."""
    if names is None:
        return ()
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [str(n).strip() for n in items if str(n).strip()]
    lowered = [n.lower() for n in items]
    if lowered in (["none"], []):
        return ()
    if lowered == ["all"]:
        return STATISTICAL_MODELS
    known = {m.lower(): m for m in STATISTICAL_MODELS}
    unknown = [n for n in items if n.lower() not in known]
    if unknown:
        raise ValueError(
            f"unknown baseline(s) {', '.join(map(repr, unknown))}: expected 'all', 'none' or a list of "
            f"{', '.join(STATISTICAL_MODELS)}"
        )
    chosen = [known[n] for n in lowered]
    return tuple(dict.fromkeys(chosen))  # each once, in the order given


def check_levels(levels: Iterable[float] | None) -> tuple[float, ...]:
    """Interval levels in percent, each strictly between 0 and 100, sorted, without repeats."""
    if levels is None:
        return ()
    checked = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, (int, float, np.integer, np.floating)):
            raise ValueError(f"level must be a number between 0 and 100 (a percentage), found {level!r}")
        if not 0 < float(level) < 100:
            raise ValueError(
                f"level must be strictly between 0 and 100 (a coverage in percent, e.g. 80 or 95), found {level!r}"
            )
        checked.append(int(level) if float(level).is_integer() else float(level))
    return tuple(sorted(set(checked)))


def interval_names(model: str, level: float) -> tuple[str, str]:
    """The statsforecast / neuralforecast column names of one interval: ``model-lo-80``, ``model-hi-80``."""
    return f"{model}-lo-{level:g}", f"{model}-hi-{level:g}"


@dataclass
class WindowForecasts:
    """One model's forecasts of n windows: ``mean`` (n, H), ``lower``/``upper`` level -> (n, H)."""

    model: str
    mean: np.ndarray
    lower: dict[float, np.ndarray] = field(default_factory=dict)
    upper: dict[float, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0  # fit + forecast time over all windows
    failures: int = 0  # windows the model could not fit (forecast as NaN, with a warning)


def _model(name: str, season: int):
    from statsforecast import models

    if name in ("AutoETS", "AutoTheta", "AutoARIMA"):
        return getattr(models, name)(season_length=season)
    if name == "SeasonalNaive":
        return models.SeasonalNaive(season_length=season)
    return models.Naive()


def forecast_windows(
    histories: Sequence[np.ndarray],
    horizon: int,
    seasons: Sequence[int],
    models: Sequence[str] = STATISTICAL_MODELS,
    levels: Sequence[float] = (),
    labels: Sequence[str] | None = None,
) -> dict[str, WindowForecasts]:
    """Fit each model on each history and forecast ``horizon`` steps after it.

    ``histories[i]`` is everything window i may see (1-D, oldest first), ``seasons[i]`` its
    seasonal period and ``labels[i]`` its name in warnings. A model that cannot fit a history
    (too short for it, say) forecasts that window as NaN, with a warning naming the window.
    """
    if len(seasons) != len(histories):
        raise ValueError(
            f"one season per history expected: {len(histories)} histories, {len(seasons)} seasons"
        )
    levels = check_levels(levels)
    import warnings

    results = {}
    for name in parse_baselines(models):
        result = WindowForecasts(name, np.full((len(histories), horizon), np.nan))
        for level in levels:
            result.lower[level] = np.full((len(histories), horizon), np.nan)
            result.upper[level] = np.full((len(histories), horizon), np.nan)
        start = time.perf_counter()
        for i, (history, season) in enumerate(zip(histories, seasons, strict=True)):
            y = np.asarray(history, dtype=np.float64)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # statsforecast's numerical warnings on short series
                    out = _model(name, int(season)).forecast(y=y, h=horizon, level=list(levels) or None)
            except Exception as err:  # statsforecast raises many types for series it cannot fit
                result.failures += 1
                where = labels[i] if labels is not None else f"window {i}"
                logger.warning("%s could not fit %s (%d rows): %s; forecast as NaN", name, where, len(y), err)
                continue
            result.mean[i] = np.asarray(out["mean"], dtype=np.float64)
            for level in levels:
                result.lower[level][i] = np.asarray(out[f"lo-{level}"], dtype=np.float64)
                result.upper[level][i] = np.asarray(out[f"hi-{level}"], dtype=np.float64)
        result.seconds = time.perf_counter() - start
        logger.info("%s: %d window(s) fitted and forecast in %.1f s", name, len(histories), result.seconds)
        results[name] = result
    return results
