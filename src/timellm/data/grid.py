"""One series put on its regular time grid: sorted, checked for duplicates, and its gaps and
missing values filled linearly in time when the caller asks for it (``interpolate=True``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from timellm.data.errors import SeriesLengthError, TimestampError, ValueDataError, quote_rows
from timellm.data.frequency import gap_grid, infer_frequency, step_text
from timellm.data.series import Series

logger = logging.getLogger(__name__)


def regular_series(sid: Any, times: pd.Index, y: np.ndarray, rows: np.ndarray, interpolate: bool) -> Series:
    """Sort by time, reject duplicates, infer the frequency, handle missing values and gaps."""
    order = np.argsort(np.asarray(times), kind="stable")
    if not np.all(order == np.arange(len(order))):
        logger.info("series %r: rows were not in time order; sorted them", sid)
    times, y, rows = times[order], y[order], rows[order]

    if len(times) < 2:
        raise SeriesLengthError(
            f"series {sid!r} has a single row {quote_rows(rows)}; a series needs at least two time steps "
            "(and look-back + horizon rows to be forecast)"
        )
    duplicated = np.asarray(times.duplicated(keep=False))
    if duplicated.any():
        raise TimestampError(
            f"series {sid!r}: duplicated timestamps (first: {times[duplicated][0]}) {quote_rows(rows[duplicated])}; "
            "expected one row per series and time step (aggregate the duplicates, or give each series its own id)"
        )

    freq = infer_frequency(times)
    if freq is None:
        step, grid = gap_grid(times)
        if grid is None:
            diffs = pd.Series(np.diff(np.asarray(times))).value_counts().index[:3]
            shown = ", ".join(step_text(d) if isinstance(times, pd.DatetimeIndex) else str(d) for d in diffs)
            raise TimestampError(
                f"series {sid!r}: irregular timestamps (steps of {shown}, ...): no frequency can be inferred; "
                "expected regularly spaced timestamps (hourly, daily, monthly, ...), one row per step"
            )
        missing = grid.difference(times)
        if not interpolate:
            shown = ", ".join(str(t) for t in missing[:3])
            raise TimestampError(
                f"series {sid!r}: {len(missing)} timestamp(s) missing from its grid of step {getattr(step, 'freqstr', step)} "
                f"(first: {shown}); add the rows, or pass interpolate=True to fill them linearly"
            )
        logger.warning("series %r: filled %d missing timestamp(s) by interpolation", sid, len(missing))
        position = grid.get_indexer(times)
        filled_y, filled_rows = np.full(len(grid), np.nan), np.full(len(grid), -1)
        filled_y[position], filled_rows[position] = y, rows
        times, y, rows, freq = grid, filled_y, filled_rows, step

    nan = np.isnan(y)
    if nan.any():
        if not interpolate:
            where = ", ".join(str(t) for t in times[nan][:3]) + (" ..." if nan.sum() > 3 else "")
            raise ValueDataError(
                f"series {sid!r}: {int(nan.sum())} missing value(s) at {where} {quote_rows(rows[nan])}; "
                "fill them, or pass interpolate=True to interpolate linearly"
            )
        if nan.all():
            raise ValueDataError(f"series {sid!r} has no values; nothing to interpolate from")
        method = "time" if isinstance(times, pd.DatetimeIndex) else "index"
        y = pd.Series(y, index=times).interpolate(method=method, limit_direction="both").to_numpy()
        logger.warning("series %r: interpolated %d missing value(s)", sid, int(nan.sum()))
    observed = ~nan if nan.any() else None
    return Series(sid, np.asarray(y, dtype=np.float64), times, freq, observed)
