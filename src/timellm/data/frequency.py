"""The time grid of a series: its frequency, the full grid of a series with gaps, its season.

:func:`infer_frequency` reads the step of regular timestamps (a pandas offset, or an integer step);
:func:`gap_grid` finds the grid that timestamps with some steps missing lie on, fixed steps first,
then calendar ones (months, quarters, years, business days); :func:`season_length` is the one
season rule (seasonal naive and MASE) for every command.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

MONTHS_FROM_ANY_DAY = "months"  # months counted from the day of the first timestamp (the 15th, ...)
CALENDAR_STEPS = (
    "YS",
    "YE",
    "QS",
    "QE",
    "MS",
    "ME",
    MONTHS_FROM_ANY_DAY,
    "SMS",
    "SME",
    "B",
)  # coarsest first


def step_text(step: Any) -> str:
    """A time step as pandas writes frequencies, with its count: '1h', '90min', '2D'."""
    step = pd.Timedelta(step)
    if step <= pd.Timedelta(0):
        return str(step)
    text = to_offset(step).freqstr
    return text if text[0].isdigit() else "1" + text


def infer_frequency(times: pd.Index) -> Any:
    """The grid's step: a pandas offset for datetimes, an int for integer steps; None if irregular."""
    if len(times) < 2:
        return None
    if not isinstance(times, pd.DatetimeIndex):
        steps = np.unique(np.diff(np.asarray(times)))
        return int(steps[0]) if len(steps) == 1 and steps[0] > 0 else None
    if len(times) == 2:
        return to_offset(times[1] - times[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 announces a future return type; to_offset takes both
        inferred = pd.infer_freq(times)
    if inferred is not None:
        return to_offset(inferred)
    months = month_steps(times)
    if months is not None and len(np.unique(np.diff(months))) == 1 and months[1] > months[0]:
        return pd.DateOffset(months=int(months[1] - months[0]))
    return None


def month_steps(times: pd.DatetimeIndex) -> np.ndarray | None:
    """Months since year 0 of each timestamp when all fall on one day of the month (up to the
    28th) at one time of day, the calendar of monthly data dated mid-month; else None."""
    if len(times) < 2 or times[0].day > 28:
        return None
    if not (times.day == times[0].day).all() or not (times.time == times[0].time()).all():
        return None
    return np.asarray(times.year, dtype=np.int64) * 12 + np.asarray(times.month, dtype=np.int64) - 1


def gap_grid(times: pd.Index) -> tuple[Any, pd.Index | None]:
    """For timestamps on a fixed step with some steps missing: (step, the full grid); else (None, None).

    The step is the smallest difference between neighbours; every timestamp must lie on the grid
    it spans; calendar frequencies without a fixed step (months, quarters, years, business days)
    are tried next, coarsest first. At least half of the grid must be present: more gaps than
    observations are not a regular series.
    """
    diffs = np.diff(np.asarray(times))
    if len(diffs) == 0:
        return None, None
    step = diffs.min()
    if isinstance(times, pd.DatetimeIndex):
        step = pd.Timedelta(step)
        if step <= pd.Timedelta(0):
            return None, None
        offsets = (times - times[0]) / step
        if np.all(offsets == np.round(offsets)) and offsets[-1] + 1 <= 2 * len(times):
            return to_offset(step), pd.date_range(times[0], times[-1], freq=step)
        return _calendar_grid(times)
    step = int(step)
    offsets = np.asarray(times) - times[0]
    if step <= 0 or np.any(offsets % step) or offsets[-1] // step + 1 > 2 * len(times):
        return None, None
    return step, pd.Index(np.arange(times[0], times[-1] + step, step))


def _month_grid(times: pd.DatetimeIndex) -> tuple[Any, pd.Index | None]:
    """A grid of whole months from the first timestamp's day, holding every timestamp; else (None, None)."""
    months = month_steps(times)
    if months is None:
        return None, None
    step = int(np.gcd.reduce(np.diff(months)))
    if step <= 0:
        return None, None
    offset = pd.DateOffset(months=step)
    grid = pd.date_range(times[0], times[-1], freq=offset)
    if len(grid) <= 2 * len(times) and times.isin(grid).all():
        return offset, grid
    return None, None


def _calendar_grid(times: pd.DatetimeIndex) -> tuple[Any, pd.Index | None]:
    """The coarsest calendar grid holding every timestamp with at most as many gaps as observations.

    Monthly data dated on another day than the first or last (the 15th, say) lies on a grid of
    months from that day, tried before the half-monthly grids, which would hold it too but with
    every other step missing.
    """
    for name in CALENDAR_STEPS:
        if name == MONTHS_FROM_ANY_DAY:
            offset, grid = _month_grid(times)
            if grid is not None:
                return offset, grid
            continue
        offset = to_offset(name)
        if not all(offset.is_on_offset(t) for t in times[:: max(len(times) // 64, 1)]):
            continue
        grid = pd.date_range(times[0], times[-1], freq=offset)
        if len(grid) <= 2 * len(times) and times.isin(grid).all():
            return offset, grid
    return None, None


def season_length(freq: Any) -> int:
    """The usual seasonal period for a frequency: a day of hours/minutes, a week of days, a year of months.

    Integer steps have no known calendar, nor steps that do not divide a day (7 minutes): 1 (the
    naive forecast). This is the one season rule: :mod:`timellm.data.sources` uses it too.
    """
    if not isinstance(freq, pd.offsets.BaseOffset):
        return 1
    if type(freq) is pd.DateOffset:  # months from a day other than the first or last (monthly on the 15th)
        months = int(freq.kwds.get("months", 0)) + 12 * int(freq.kwds.get("years", 0))
        return 12 // months if months > 0 and 12 % months == 0 else 1
    code = freq.rule_code.split("-")[0].upper()
    n = max(int(freq.n), 1)
    per_day = {"H": 24, "T": 24 * 60, "MIN": 24 * 60, "S": 24 * 3600}
    if code in per_day:  # a day of steps, where a day is a whole number of them
        return per_day[code] // n if per_day[code] % n == 0 and per_day[code] > n else 1
    table = {"D": 7, "B": 5, "C": 5, "W": 52, "M": 12, "MS": 12, "ME": 12, "BM": 12, "BMS": 12, "SM": 24}
    table.update({"SMS": 24, "BME": 12, "Q": 4, "QS": 4, "QE": 4, "BQ": 4, "BQS": 4, "BQE": 4})
    if code in table:
        return max(table[code] // n, 1)
    return 1  # yearly and anything rarer
