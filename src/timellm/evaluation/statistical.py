"""Statistical baselines from ``statsforecast``: what a practitioner compares a new model with.

AutoETS, AutoTheta and AutoARIMA (automatic model selection per series, Hyndman & Khandakar), and
the SeasonalNaive and Naive references, each forecast from exactly the history a Time-LLM window
saw, with their own prediction intervals. ``statsforecast`` is imported here only, when a baseline
runs, so that ``import timellm`` stays fast.

Every baseline finishes: above a season of :data:`LONG_SEASON` steps (weekly 52, hourly 168)
AutoETS and AutoARIMA run as MSTL models (an STL decomposition, the trend fitted non-seasonally)
and are named so, and each model has a time budget over all windows past which it is dropped
with a warning. A line per model and window reports progress (throttled beyond 20 windows).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

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
    """Interval levels in percent, each at least 1 and below 100, sorted, without repeats; a
    level below 1 is refused as a fraction written for a percentage (0.8 for 80)."""
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
        if float(level) < 1:  # a fraction written for a percentage: 0.8 would be a 0.8 % interval
            raise ValueError(
                f"level {level!r} reads as a fraction: levels are coverages in percent, e.g. "
                f"{float(level) * 100:g} for a {float(level) * 100:g} % interval (at least 1)"
            )
        checked.append(int(level) if float(level).is_integer() else float(level))
    return tuple(sorted(set(checked)))


def interval_names(model: str, level: float) -> tuple[str, str]:
    """The statsforecast / neuralforecast column names of one interval: ``model-lo-80``, ``model-hi-80``."""
    return f"{model}-lo-{level:g}", f"{model}-hi-{level:g}"


@dataclass
class WindowForecasts:
    """One model's forecasts of n windows: ``mean`` (n, H), ``lower``/``upper`` level -> (n, H).

    ``model`` is what ran, as the score tables name it: the name asked for, or its long-season
    form (``MSTL-AutoARIMA`` for ``AutoARIMA`` at a season above :data:`LONG_SEASON`).
    """

    model: str
    mean: np.ndarray
    lower: dict[float, np.ndarray] = field(default_factory=dict)
    upper: dict[float, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0  # fit + forecast time over all windows
    failures: int = 0  # windows the model could not fit (forecast as NaN, with a warning)


# statsforecast's ETS estimates no seasonal component above 24 steps (it silently fits a
# non-seasonal model), and AutoARIMA's seasonal search grows so fast with the period that one fit
# at a weekly season of 52 can run for an hour (Nixtla/statsforecast #444). Above this season both
# are run on the seasonally adjusted series of an STL decomposition (statsforecast's MSTL, the
# season forecast by repeating it), and named for what they are.
LONG_SEASON = 24
LONG_SEASON_MODELS = {"AutoETS": "MSTL-AutoETS", "AutoARIMA": "MSTL-AutoARIMA"}
# seconds of fitting and forecasting one baseline may take over all windows before it is dropped
DEFAULT_BUDGET = 60.0
PROGRESS_SECONDS = 5.0  # beyond this many windows, a progress line at most this often


def model_name(name: str, season: int) -> str:
    """The name of what runs for baseline ``name`` at seasonal period ``season``."""
    return LONG_SEASON_MODELS.get(name, name) if season > LONG_SEASON else name


def _model(name: str, season: int):
    from statsforecast import models

    if season > LONG_SEASON and name in LONG_SEASON_MODELS:
        trend = models.AutoETS(model="ZZN") if name == "AutoETS" else models.AutoARIMA(season_length=1)
        return models.MSTL(season_length=season, trend_forecaster=trend)
    if name in ("AutoETS", "AutoTheta", "AutoARIMA"):
        return getattr(models, name)(season_length=season)
    if name == "SeasonalNaive":
        return models.SeasonalNaive(season_length=season)
    return models.Naive()


class BudgetExceeded(BaseException):
    """A baseline ran past its time budget (raised inside a fit by the budget's timer).

    A BaseException, as KeyboardInterrupt is: statsforecast's model search catches Exception
    around each candidate fit, and would otherwise swallow it and search on.
    """


@contextmanager
def _deadline(seconds: float | None):
    """Raise :class:`BudgetExceeded` in this thread after ``seconds``, inside a running fit too.

    A timer signal interrupts a fit between two of its Python steps (statsforecast's model search
    is a Python loop over compiled fits). Only the main thread of a process that has no other use
    for SIGALRM can take it; elsewhere the budget is checked between windows only.
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    )
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise BudgetExceeded

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def forecast_windows(
    histories: Sequence[np.ndarray],
    horizon: int,
    seasons: Sequence[int],
    models: Sequence[str] = STATISTICAL_MODELS,
    levels: Sequence[float] = (),
    labels: Sequence[str] | None = None,
    budget: float | None = None,
) -> dict[str, WindowForecasts]:
    """Fit each model on each history and forecast ``horizon`` steps after it.

    ``histories[i]`` is everything window i may see (1-D, oldest first), ``seasons[i]`` its
    seasonal period and ``labels[i]`` its name in warnings. A model that cannot fit a history
    (too short for it, say) forecasts that window as NaN, with a warning naming the window.
    Returns the models asked for by name; each result's ``model`` names what ran.

    ``budget``: seconds each model may spend over all windows (None or 0: no limit). A model past it
    is stopped, inside a fit where possible, and left out of the result with a warning that says
    how to keep it.
    """
    if len(seasons) != len(histories):
        raise ValueError(
            f"one season per history expected: {len(histories)} histories, {len(seasons)} seasons"
        )
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0
    ):
        raise ValueError(f"budget must be a number of seconds (0 or None: no limit), found {budget!r}")
    budget = budget or None
    levels = check_levels(levels)
    results = {}
    for name in parse_baselines(models):
        result = _fit_windows(name, histories, horizon, seasons, levels, labels, budget)
        if result is not None:
            results[name] = result
    return results


def _fit_windows(
    name: str,
    histories: Sequence[np.ndarray],
    horizon: int,
    seasons: Sequence[int],
    levels: tuple[float, ...],
    labels: Sequence[str] | None,
    budget: float | None,
) -> WindowForecasts | None:
    """One model over every window, or None when it ran past ``budget`` seconds."""
    import warnings

    n = len(histories)
    names = {model_name(name, int(season)) for season in seasons}
    shown = names.pop() if len(names) == 1 else name
    if names:  # several seasons, some long: the row keeps the plain name
        logger.info("%s: series with a season above %d use %s", name, LONG_SEASON, LONG_SEASON_MODELS[name])
    result = WindowForecasts(shown, np.full((n, horizon), np.nan))
    for level in levels:
        result.lower[level] = np.full((n, horizon), np.nan)
        result.upper[level] = np.full((n, horizon), np.nan)
    start = last_line = time.perf_counter()
    bar = tqdm(total=n, desc=shown, leave=False, disable=None)  # a bar on terminals only
    done = 0
    try:
        for i, (history, season) in enumerate(zip(histories, seasons, strict=True)):
            y = np.asarray(history, dtype=np.float64)
            where = labels[i] if labels is not None else f"window {i + 1}"
            left = None if budget is None else budget - (time.perf_counter() - start)
            try:
                if left is not None and left <= 0:
                    raise BudgetExceeded
                with warnings.catch_warnings(), _deadline(left):
                    warnings.simplefilter("ignore")  # statsforecast's numerical warnings on short series
                    out = _model(name, int(season)).forecast(y=y, h=horizon, level=list(levels) or None)
            except BudgetExceeded:
                _dropped(shown, budget, done, n)
                return None
            except Exception as err:  # statsforecast raises many types for series it cannot fit
                result.failures += 1
                logger.warning(
                    "%s could not fit %s (%d rows): %s; forecast as NaN", shown, where, len(y), err
                )
            else:
                result.mean[i] = np.asarray(out["mean"], dtype=np.float64)
                for level in levels:
                    result.lower[level][i] = np.asarray(out[f"lo-{level}"], dtype=np.float64)
                    result.upper[level][i] = np.asarray(out[f"hi-{level}"], dtype=np.float64)
            done += 1
            bar.update()
            now = time.perf_counter()
            if n <= 20 or now - last_line >= PROGRESS_SECONDS or done == n:
                logger.info("%s: window %d/%d (%s) done, %.1f s so far", shown, done, n, where, now - start)
                last_line = now
    finally:
        bar.close()
    result.seconds = time.perf_counter() - start
    logger.info("%s: %d window(s) fitted and forecast in %.1f s", shown, n, result.seconds)
    return result


def _dropped(model: str, budget: float | None, done: int, total: int) -> None:
    logger.warning(
        "%s dropped: it ran past its time budget of %g s after %d of %d window(s); to keep it, raise "
        "the budget with baseline_budget=SECONDS (0: no limit), or forecast fewer windows",
        model,
        budget,
        done,
        total,
    )
