"""User data frames: read, validate and convert them into regular series.

A user gives either a *long* frame (one row per series and time step: an id column, a time
column and a value column; by default ``unique_id``, ``ds`` and ``y`` as in neuralforecast) or a
*wide* one (a time column and one column per series). :func:`prepare_series` turns either into a
:class:`SeriesSet`: one float array per series on a regular time grid, with the grid's frequency,
so that forecasts can be given future timestamps.

Nothing is dropped or repaired silently. Every problem raises an :class:`InputDataError` (see
:mod:`timellm.data.errors`) with one line saying what was found and what is expected: missing or
unnamed columns, non-numeric, missing or too large values (naming the series and rows),
duplicated timestamps, timestamps without a frequency. Rows are sorted by time within each series
(that loses nothing); gaps and missing values are only filled when the caller asks for it
(``interpolate=True``), linearly in time. Series ids are kept exactly as written: a CSV's id
column is read as text, so ``007`` stays ``007`` and ``NA`` is an id, not a missing value.

This is the one reader of user data: :mod:`timellm.data.sources` builds its splits on it. The
steps live beside it: :mod:`~timellm.data.files` reads the file, :mod:`~timellm.data.timestamps`
the time column, :mod:`~timellm.data.grid` puts each series on its grid (with
:mod:`~timellm.data.frequency`), and :mod:`~timellm.data.series` holds the result.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from timellm.data.errors import (
    ColumnError,
    InputDataError,
    ValueDataError,
    quote_columns,
    quote_rows,
    row_list,
)
from timellm.data.grid import regular_series
from timellm.data.series import FrameFormat, SeriesSet
from timellm.data.timestamps import parse_times

logger = logging.getLogger(__name__)

# Each series is standardised with its mean and standard deviation in float64: the squared
# deviations must stay finite (float64 ends at 1.8e308) for series of up to 1e8 rows.
MAX_ABS_VALUE = 1e150
# ... and the squared deviations of a series must not underflow (float64's smallest normal number
# is 2.2e-308): a series whose largest magnitude is below this cannot be standardised either
MIN_ABS_VALUE = 1e-150
UNNAMED = re.compile(r"^Unnamed: \d+$")  # pandas' name for a CSV column without a header


def prepare_series(
    frame: pd.DataFrame, fmt: FrameFormat | None = None, *, interpolate: bool = False
) -> SeriesSet:
    """Validate a long or wide user frame and return its series on regular grids.

    Raises :class:`InputDataError` for every problem; with ``interpolate`` missing values and
    missing timestamps inside a series are filled linearly in time instead (missing values at a
    series' ends take the nearest observed value).
    """
    fmt = fmt or FrameFormat()
    if not isinstance(frame, pd.DataFrame):
        raise InputDataError(f"expected a pandas DataFrame, found {type(frame).__name__}")
    if frame.empty:
        raise InputDataError("the data has no rows; expected at least one series")
    long = _wide_to_long(frame, fmt) if fmt.wide else _select_long(frame, fmt)
    ids = pd.unique(long["unique_id"])
    groups = dict(tuple(long.groupby("unique_id", sort=False)))
    series = []
    for sid in ids:
        group = groups[sid]
        rows = group["row"].to_numpy()  # positions in the user's table, for the error messages
        times = parse_times(group["ds"], rows, sid, fmt)
        values = _parse_values(group["y"], rows, sid, fmt)
        series.append(regular_series(sid, times, values, rows, interpolate))
    return SeriesSet(series, fmt)


def _no_column(role: str, name: str, columns: Sequence[Any], expected: str) -> ColumnError:
    """The error for a missing column, with a hint when it exists with spaces around its name."""
    spaced = [c for c in columns if isinstance(c, str) and c != name and c.strip() == name]
    hint = (
        f" (column {spaced[0]!r} has spaces around its name: remove them from the header, "
        "e.g. the spaces after its commas)"
        if spaced
        else ""
    )
    return ColumnError(
        f"no {role} column {name!r} in the data; found columns: {quote_columns(columns)}{hint}. {expected}"
    )


def _refuse_unnamed(columns: Sequence[Any], used: Sequence[Any]) -> None:
    """A used column without a header name is most often a DataFrame index saved with to_csv."""
    unnamed = [c for c in used if isinstance(c, str) and UNNAMED.match(c)]
    if unnamed:
        position = list(columns).index(unnamed[0])
        raise ColumnError(
            f"column {position} of the data has no name in the header (read as {unnamed[0]!r}): "
            "it is most likely a DataFrame index saved with to_csv; save the table with index=False, "
            "or drop that column"
        )


def _select_long(frame: pd.DataFrame, fmt: FrameFormat) -> pd.DataFrame:
    """The id, time and value columns of a long frame, renamed to unique_id, ds and y."""
    columns = list(frame.columns)
    hint = (
        "name the columns with id_col=..., time_col=... and target_col=..., "
        "or pass wide=True for a time column and one column per series"
    )
    expected = f"Expected a long table ({fmt.id_col}, {fmt.time_col}, {fmt.target_col}): {hint}"
    for role, name in (("time", fmt.time_col), ("value", fmt.target_col)):
        if name not in columns:
            raise _no_column(role, name, columns, expected)
    if fmt.id_col in columns:
        ids = frame[fmt.id_col]
        empty = (ids.isna() | ids.map(lambda v: isinstance(v, str) and not v.strip())).to_numpy()
        if empty.any():
            rows = row_list(np.flatnonzero(empty))
            raise ColumnError(
                f"id column {fmt.id_col!r} is empty in rows {rows}; every row needs a series id"
            )
    elif len(columns) == 2:  # just a time and a value column: one series, named after its values
        ids = pd.Series(fmt.target_col, index=frame.index)
        logger.info("no id column %r: the data is one series, named %r", fmt.id_col, fmt.target_col)
    else:
        raise _no_column("id", fmt.id_col, columns, expected)
    ignored = [c for c in columns if c not in (fmt.id_col, fmt.time_col, fmt.target_col)]
    if ignored:
        logger.warning("ignoring column(s) %s: only %r is forecast", quote_columns(ignored), fmt.target_col)
    long = pd.DataFrame({"unique_id": ids.to_numpy(), "ds": frame[fmt.time_col].to_numpy()})
    long["y"] = frame[fmt.target_col].to_numpy()
    long["row"] = np.arange(len(frame))
    return long


def _wide_to_long(frame: pd.DataFrame, fmt: FrameFormat) -> pd.DataFrame:
    """A wide frame (time column + one column per series) as unique_id, ds, y rows.

    Leading and trailing empty cells of a column are where that series has not started or has
    ended (series of different lengths); they are not missing values and are left out.
    """
    columns = list(frame.columns)
    if fmt.time_col not in columns:
        expected = (
            "Expected a wide table: a time column (name it with time_col=...) and one column per series"
        )
        raise _no_column("time", fmt.time_col, columns, expected)
    value_columns = [c for c in columns if c != fmt.time_col]
    _refuse_unnamed(columns, value_columns)
    if not value_columns:
        raise ColumnError(
            f"the data has only the time column {fmt.time_col!r}; a wide table needs one column per series"
        )
    parts = []
    for column in value_columns:
        cells = frame[column]
        present = np.flatnonzero(cells.notna().to_numpy())
        if len(present) == 0:
            raise ValueDataError(f"series {column!r} (a column of the wide table) has no values")
        keep = slice(present[0], present[-1] + 1)
        parts.append(
            pd.DataFrame(
                {
                    "unique_id": column,
                    "ds": frame[fmt.time_col].to_numpy()[keep],
                    "y": cells.to_numpy()[keep],
                    "row": np.arange(len(frame))[keep],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _parse_values(y: pd.Series, rows: np.ndarray, sid: Any, fmt: FrameFormat) -> np.ndarray:
    """Values of one series as floats; text that is not a number is an error (empty cells are NaN)."""
    column = "its column" if fmt.wide else f"column {fmt.target_col!r}"
    if pd.api.types.is_bool_dtype(y):
        raise ValueDataError(f"series {sid!r}: {column} holds booleans; expected numbers")
    numbers = pd.to_numeric(y, errors="coerce")
    bad = (numbers.isna() & y.notna()).to_numpy()
    if bad.any():
        examples = ", ".join(repr(v) for v in y.to_numpy()[bad][:3])
        raise ValueDataError(
            f"series {sid!r}: {column} has values that are not numbers ({examples}) {quote_rows(rows[bad])}; "
            "expected numbers (with a dot as the decimal mark)"
        )
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        raise ValueDataError(
            f"series {sid!r}: {column} has infinite values {quote_rows(rows[infinite])}; expected finite numbers"
        )
    huge = np.abs(values) > MAX_ABS_VALUE
    if huge.any():
        largest = float(np.nanmax(np.abs(values)))
        raise ValueDataError(
            f"series {sid!r}: {column} has values as large as {largest:.3g} {quote_rows(rows[huge])}; "
            f"expected magnitudes of at most {MAX_ABS_VALUE:.0e}, beyond which the mean and standard "
            "deviation that standardise a series overflow: rescale the series (divide it by a power "
            "of ten), or correct the values if they are errors"
        )
    finite = values[np.isfinite(values)]
    largest = float(np.abs(finite).max(initial=0.0))
    if 0 < largest < MIN_ABS_VALUE:
        raise ValueDataError(
            f"series {sid!r}: {column} has values no larger than {largest:.3g} in magnitude; expected "
            f"magnitudes of at least {MIN_ABS_VALUE:.0e} somewhere in the series, below which the variance "
            "that standardises it underflows to zero: rescale the series (multiply it by a power of ten)"
        )
    return values
