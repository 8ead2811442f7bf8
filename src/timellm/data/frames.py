"""User data frames: read, validate and convert them into regular series.

A user gives either a *long* frame (one row per series and time step: an id column, a time
column and a value column; by default ``unique_id``, ``ds`` and ``y`` as in neuralforecast) or a
*wide* one (a time column and one column per series). :func:`prepare_series` turns either into a
:class:`SeriesSet`: one float array per series on a regular time grid, with the grid's frequency,
so that forecasts can be given future timestamps.

Nothing is dropped or repaired silently. Every problem raises :class:`InputDataError` with one
line saying what was found and what is expected: missing columns, non-numeric or missing values
(naming the series and rows), duplicated timestamps, timestamps without a frequency. Rows are
sorted by time within each series (that loses nothing); gaps and missing values are only filled
when the caller asks for it (``interpolate=True``), linearly in time.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
MAX_LISTED = 5  # rows or values quoted in one error message


class InputDataError(ValueError):
    """The user's data cannot be used as given; the message says what was wrong and what is expected."""


@dataclass(frozen=True)
class FrameFormat:
    """How a user's table is laid out: column names, long or wide."""

    id_col: str = "unique_id"  # long format: which series a row belongs to
    time_col: str = "ds"  # the timestamps (dates/times, or integer steps)
    target_col: str = "y"  # long format: the values to forecast
    wide: bool = False  # True: a time column and one column per series (column name = series id)


@dataclass
class Series:
    """One validated series on a regular grid."""

    id: Any  # the series' id as the user wrote it (a column name for wide input)
    values: np.ndarray  # (L,) float64, finite
    timestamps: pd.Index  # (L,) DatetimeIndex, or an integer Index
    freq: Any  # pandas offset (datetimes) or a positive int step (integers)

    def __len__(self) -> int:
        return len(self.values)

    def future(self, steps: int, after: int | None = None) -> pd.Index:
        """The ``steps`` timestamps following position ``after`` (default: the last observation)."""
        last = self.timestamps[-1 if after is None else after]
        if isinstance(self.timestamps, pd.DatetimeIndex):
            return pd.date_range(start=last, periods=steps + 1, freq=self.freq)[1:]
        return pd.Index(last + self.freq * np.arange(1, steps + 1))

    @property
    def freq_name(self) -> str:
        return getattr(self.freq, "freqstr", str(self.freq))


@dataclass
class SeriesSet:
    """The validated series of one user frame, in their order of first appearance."""

    series: list[Series]
    format: FrameFormat = field(default_factory=FrameFormat)

    def __len__(self) -> int:
        return len(self.series)

    def __iter__(self):
        return iter(self.series)

    @property
    def ids(self) -> list[Any]:
        return [s.id for s in self.series]

    def to_frame(self) -> pd.DataFrame:
        """The series as a long frame with the format's id, time and target column names."""
        f = self.format
        target = "y" if f.wide else f.target_col
        parts = [
            pd.DataFrame({f.id_col: [s.id] * len(s), f.time_col: s.timestamps, target: s.values})
            for s in self.series
        ]
        return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------------------------
# reading files


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (plain or compressed) or Parquet file into a DataFrame, with one-line errors."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"data file {path} does not exist; expected a CSV or Parquet file")
    if not path.is_file():
        raise InputDataError(f"{path} is not a file; expected a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise InputDataError(f"data file {path} is empty; expected a header line and rows of data")
    parquet = path.suffix.lower() in PARQUET_SUFFIXES
    try:
        frame = pd.read_parquet(path) if parquet else pd.read_csv(path)
    except ImportError:
        raise InputDataError(
            f"reading {path} needs pyarrow: pip install 'timellm[parquet]' (or save the data as CSV)"
        ) from None
    except pd.errors.EmptyDataError:
        raise InputDataError(f"data file {path} is empty; expected a header line and rows of data") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        kind = "Parquet" if parquet else "CSV"
        message = " ".join(str(err).split())
        raise InputDataError(f"{path} is not a readable {kind} file: {message}") from None
    if frame.empty:
        raise InputDataError(
            f"data file {path} has no data rows (columns: {_names(frame.columns)}); expected rows of data"
        )
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame as Parquet (``.parquet``/``.pq``) or CSV (anything else)."""
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------------
# validation and conversion


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
        times = _parse_times(group["ds"], rows, sid, fmt)
        values = _parse_values(group["y"], rows, sid, fmt)
        series.append(_regular_series(sid, times, values, rows, interpolate))
    return SeriesSet(series, fmt)


def _names(columns: Sequence[Any]) -> str:
    names = [str(c) for c in columns]
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


def _select_long(frame: pd.DataFrame, fmt: FrameFormat) -> pd.DataFrame:
    """The id, time and value columns of a long frame, renamed to unique_id, ds and y."""
    columns = list(frame.columns)
    hint = (
        "set the column names with id_col/time_col/target_col (--id-col/--time-col/--target-col), "
        "or pass wide=True (--wide) for a time column and one column per series"
    )
    for role, name in (("time", fmt.time_col), ("value", fmt.target_col)):
        if name not in columns:
            raise InputDataError(
                f"no {role} column {name!r} in the data; found columns: {_names(columns)}. "
                f"Expected a long table ({fmt.id_col}, {fmt.time_col}, {fmt.target_col}): {hint}"
            )
    if fmt.id_col in columns:
        ids = frame[fmt.id_col]
        if ids.isna().any():
            rows = _row_list(np.flatnonzero(ids.isna().to_numpy()))
            raise InputDataError(
                f"id column {fmt.id_col!r} is empty in rows {rows}; every row needs a series id"
            )
    elif len(columns) == 2:  # just a time and a value column: one series, named after its values
        ids = pd.Series(fmt.target_col, index=frame.index)
        logger.info("no id column %r: the data is one series, named %r", fmt.id_col, fmt.target_col)
    else:
        raise InputDataError(
            f"no id column {fmt.id_col!r} in the data; found columns: {_names(columns)}. "
            f"Expected a long table ({fmt.id_col}, {fmt.time_col}, {fmt.target_col}): {hint}"
        )
    ignored = [c for c in columns if c not in (fmt.id_col, fmt.time_col, fmt.target_col)]
    if ignored:
        logger.warning("ignoring column(s) %s: only %r is forecast", _names(ignored), fmt.target_col)
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
        raise InputDataError(
            f"no time column {fmt.time_col!r} in the data; found columns: {_names(columns)}. "
            "Expected a wide table: a time column (time_col / --time-col) and one column per series"
        )
    value_columns = [c for c in columns if c != fmt.time_col]
    if not value_columns:
        raise InputDataError(
            f"the data has only the time column {fmt.time_col!r}; a wide table needs one column per series"
        )
    parts = []
    for column in value_columns:
        cells = frame[column]
        present = np.flatnonzero(cells.notna().to_numpy())
        if len(present) == 0:
            raise InputDataError(f"series {column!r} (a column of the wide table) has no values")
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


def _row_list(rows: Sequence[int] | np.ndarray) -> str:
    rows = [int(r) for r in rows]
    shown = ", ".join(map(str, rows[:MAX_LISTED]))
    return shown + (f" ... ({len(rows)} in all)" if len(rows) > MAX_LISTED else "")


def _rows(rows: np.ndarray) -> str:
    """'rows 3, 4 (table positions from 0)' for the given positions; -1 marks an added timestamp."""
    given = rows[rows >= 0]
    if not len(given):
        return "at timestamps added to fill gaps"
    return f"in rows {_row_list(given)} (table positions, counting from 0)"


def _parse_times(ds: pd.Series, rows: np.ndarray, sid: Any, fmt: FrameFormat) -> pd.Index:
    """Timestamps of one series: datetimes, or integer steps; unparseable ones are an error."""
    column = f"time column {fmt.time_col!r}"
    if ds.isna().any():
        raise InputDataError(
            f"series {sid!r}: empty {column} {_rows(rows[ds.isna().to_numpy()])}; every row needs a timestamp"
        )
    if pd.api.types.is_bool_dtype(ds):
        raise InputDataError(f"{column} holds booleans; expected dates/times or integer steps")
    if pd.api.types.is_integer_dtype(ds):
        return pd.Index(ds.to_numpy(dtype=np.int64))
    if pd.api.types.is_float_dtype(ds):
        values = ds.to_numpy(dtype=np.float64)
        fractional = values != np.round(values)
        if not fractional.any():
            return pd.Index(values.astype(np.int64))
        raise InputDataError(
            f"series {sid!r}: {column} holds non-integer numbers ({values[fractional][0]!r}) "
            f"{_rows(rows[fractional])}; expected dates/times or integer steps"
        )
    if pd.api.types.is_datetime64_any_dtype(ds):
        return pd.DatetimeIndex(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": every value is checked below
        times = pd.to_datetime(ds, errors="coerce")  # the format of the first value, for all
        if (
            times.isna().any()
        ):  # ISO 8601 of several precisions ("2024-01-31", "2024-01-31 13:00"); never guessed
            times = pd.to_datetime(ds, errors="coerce", format="ISO8601")
    bad = times.isna().to_numpy()
    if bad.any():
        examples = ", ".join(repr(v) for v in ds.to_numpy()[bad][:3])
        raise InputDataError(
            f"series {sid!r}: {column} has values that are not dates or times ({examples}) "
            f"{_rows(rows[bad])}; expected dates/times such as 2024-01-31 or 2024-01-31 13:00, or integer steps"
        )
    return pd.DatetimeIndex(times)


def _parse_values(y: pd.Series, rows: np.ndarray, sid: Any, fmt: FrameFormat) -> np.ndarray:
    """Values of one series as floats; text that is not a number is an error (empty cells are NaN)."""
    column = "its column" if fmt.wide else f"column {fmt.target_col!r}"
    if pd.api.types.is_bool_dtype(y):
        raise InputDataError(f"series {sid!r}: {column} holds booleans; expected numbers")
    numbers = pd.to_numeric(y, errors="coerce")
    bad = (numbers.isna() & y.notna()).to_numpy()
    if bad.any():
        examples = ", ".join(repr(v) for v in y.to_numpy()[bad][:3])
        raise InputDataError(
            f"series {sid!r}: {column} has values that are not numbers ({examples}) {_rows(rows[bad])}; "
            "expected numbers (with a dot as the decimal mark)"
        )
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        raise InputDataError(
            f"series {sid!r}: {column} has infinite values {_rows(rows[infinite])}; expected finite numbers"
        )
    return values


def _regular_series(sid: Any, times: pd.Index, y: np.ndarray, rows: np.ndarray, interpolate: bool) -> Series:
    """Sort by time, reject duplicates, infer the frequency, handle missing values and gaps."""
    order = np.argsort(np.asarray(times), kind="stable")
    if not np.all(order == np.arange(len(order))):
        logger.info("series %r: rows were not in time order; sorted them", sid)
    times, y, rows = times[order], y[order], rows[order]

    duplicated = np.asarray(times.duplicated(keep=False))
    if duplicated.any():
        raise InputDataError(
            f"series {sid!r}: duplicated timestamps (first: {times[duplicated][0]}) {_rows(rows[duplicated])}; "
            "expected one row per series and time step (aggregate the duplicates, or give each series its own id)"
        )

    freq = _infer_frequency(times)
    if freq is None:
        step, grid = _gap_grid(times)
        if grid is None:
            diffs = pd.Series(np.diff(np.asarray(times))).value_counts().index[:3]
            shown = ", ".join(_step_text(d) if isinstance(times, pd.DatetimeIndex) else str(d) for d in diffs)
            raise InputDataError(
                f"series {sid!r}: irregular timestamps (steps of {shown}, ...): no frequency can be inferred; "
                "expected regularly spaced timestamps (hourly, daily, monthly, ...), one row per step"
            )
        missing = grid.difference(times)
        if not interpolate:
            shown = ", ".join(str(t) for t in missing[:3])
            raise InputDataError(
                f"series {sid!r}: {len(missing)} timestamp(s) missing from its grid of step {getattr(step, 'freqstr', step)} "
                f"(first: {shown}); add the rows, or pass interpolate=True (--interpolate) to fill them linearly"
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
            raise InputDataError(
                f"series {sid!r}: {int(nan.sum())} missing value(s) at {where} {_rows(rows[nan])}; "
                "fill them, or pass interpolate=True (--interpolate) to interpolate linearly"
            )
        if nan.all():
            raise InputDataError(f"series {sid!r} has no values; nothing to interpolate from")
        method = "time" if isinstance(times, pd.DatetimeIndex) else "index"
        y = pd.Series(y, index=times).interpolate(method=method, limit_direction="both").to_numpy()
        logger.warning("series %r: interpolated %d missing value(s)", sid, int(nan.sum()))
    return Series(sid, np.asarray(y, dtype=np.float64), times, freq)


def _step_text(step: Any) -> str:
    """A time step as pandas writes frequencies, with its count: '1h', '90min', '2D'."""
    step = pd.Timedelta(step)
    if step <= pd.Timedelta(0):
        return str(step)
    text = to_offset(step).freqstr
    return text if text[0].isdigit() else "1" + text


def _infer_frequency(times: pd.Index) -> Any:
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
    return None if inferred is None else to_offset(inferred)


def _gap_grid(times: pd.Index) -> tuple[Any, pd.Index | None]:
    """For timestamps on a fixed step with some steps missing: (step, the full grid); else (None, None).

    The step is the smallest difference between neighbours; every timestamp must lie on the grid
    it spans (calendar frequencies such as months have no fixed step and are not gap-filled), and
    at least half of the grid must be present: more gaps than observations are not a regular series.
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
        if not np.all(offsets == np.round(offsets)) or offsets[-1] + 1 > 2 * len(times):
            return None, None
        grid = pd.date_range(times[0], times[-1], freq=step)
        return to_offset(step), grid
    step = int(step)
    offsets = np.asarray(times) - times[0]
    if step <= 0 or np.any(offsets % step) or offsets[-1] // step + 1 > 2 * len(times):
        return None, None
    return step, pd.Index(np.arange(times[0], times[-1] + step, step))


# ------------------------------------------------------------------------------------------------
# seasonality of a frequency (seasonal naive and MASE)


def season_length(freq: Any) -> int:
    """The usual seasonal period for a frequency: a day of hours/minutes, a week of days, a year of months.

    Integer steps have no known calendar: 1 (the naive forecast).
    """
    if not isinstance(freq, pd.DateOffset):
        return 1
    code = freq.rule_code.split("-")[0].upper()
    n = max(int(freq.n), 1)
    per_day = {"H": 24, "T": 24 * 60, "MIN": 24 * 60, "S": 24 * 3600}
    if code in per_day:
        return max(per_day[code] // n, 1)
    table = {"D": 7, "B": 5, "C": 5, "W": 52, "M": 12, "MS": 12, "ME": 12, "BM": 12, "BMS": 12, "SM": 24}
    table.update({"SMS": 24, "BME": 12, "Q": 4, "QS": 4, "QE": 4, "BQ": 4, "BQS": 4, "BQE": 4})
    if code in table:
        return max(table[code] // n, 1)
    return 1  # yearly and anything rarer


# ------------------------------------------------------------------------------------------------
# a small real example


EXAMPLE_SERIES = ("OT", "HUFL")  # ETTh1's oil temperature and high useful load


def example_frame(rows: int = 1000) -> pd.DataFrame:
    """A small real data set in long format (``unique_id``, ``ds``, ``y``) from the packaged ETTh1.

    The last ``rows`` hours of the transformer's oil temperature (``OT``) and the last
    ``3 * rows // 4`` hours of its high useful load (``HUFL``): two hourly series of different
    lengths. ETTh1 is redistributed unmodified under CC BY-ND 4.0 (see ``data/ETTh1.md``); this
    extract is made on the user's machine.
    """
    from timellm.data.benchmarks import read_benchmark

    if not isinstance(rows, int) or rows < 2:
        raise InputDataError(f"rows must be an integer of at least 2, found {rows!r}")
    table = read_benchmark("ETTh1")
    rows = min(rows, len(table))
    parts = []
    for name, length in zip(EXAMPLE_SERIES, (rows, 3 * rows // 4), strict=True):
        part = table.tail(length)
        parts.append(
            pd.DataFrame({"unique_id": name, "ds": part["date"].to_numpy(), "y": part[name].to_numpy()})
        )
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------------------------
# the automatic look-back (seq_len="auto")

AUTO_SEQ_LEN_MAX = 512  # the paper's look-back for long-term forecasting: never more


def auto_seq_len(length: int, horizon: int, val_size: int, maximum: int = AUTO_SEQ_LEN_MAX) -> int:
    """The look-back ``seq_len="auto"`` picks for a series of ``length`` rows (the shortest one).

    The rule: the longest look-back T <= ``maximum`` that leaves at least T training windows. The
    training part has P = length - val_size rows and gives P - T - horizon + 1 windows, so
    T = min(maximum, (P - horizon + 1) // 2). A long series gets the paper's 512; a short one a
    look-back of about half its training part, so that it still yields as many windows as steps
    in its look-back. The result may be below what a model allows; the caller checks it.
    """
    return min(maximum, (length - val_size - horizon + 1) // 2)
