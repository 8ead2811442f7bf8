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

This is the one reader of user data: :mod:`timellm.data.sources` builds its splits on it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from timellm.data.errors import (
    ColumnError,
    DataFileError,
    InputDataError,
    SeriesLengthError,
    TimestampError,
    ValueDataError,
)

__all__ = [
    "ColumnError",
    "DataFileError",
    "FrameFormat",
    "InputDataError",
    "Series",
    "SeriesLengthError",
    "SeriesSet",
    "TimestampError",
    "ValueDataError",
    "check_not_input",
    "check_output_path",
    "check_table_path",
    "infer_frequency",
    "max_seq_len",
    "prepare_series",
    "read_table",
    "season_length",
    "write_table",
]

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd"}
# how compressed files and Parquet begin, to read a file whose name does not say what it holds
MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bz2",
    b"PK\x03\x04": "zip",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PAR1": "parquet",
}
MAX_LISTED = 5  # rows or values quoted in one error message
# Each series is standardised with its mean and standard deviation in float64: the squared
# deviations must stay finite (float64 ends at 1.8e308) for series of up to 1e8 rows.
MAX_ABS_VALUE = 1e150
# ... and the squared deviations of a series must not underflow (float64's smallest normal number
# is 2.2e-308): a series whose largest magnitude is below this cannot be standardised either
MIN_ABS_VALUE = 1e-150
# pandas' default markers of a missing cell (read_csv's documentation), kept for every column but ids
MISSING_MARKERS = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
    *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)
OFFSET_SUFFIX = r"(?:Z|[+-]\d\d:?\d\d)$"  # a timestamp's UTC offset, as ISO 8601 writes it
UNNAMED = re.compile(r"^Unnamed: \d+$")  # pandas' name for a CSV column without a header


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
    # (L,) bool, False where a value was filled by interpolation; None: every value was observed
    observed: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def head(self, rows: int) -> Series:
        """The first ``rows`` rows of the series."""
        observed = None if self.observed is None else self.observed[:rows]
        return Series(self.id, self.values[:rows], self.timestamps[:rows], self.freq, observed)

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


def read_table(path: str | Path, fmt: FrameFormat | None = None) -> pd.DataFrame:
    """Read a CSV (plain or compressed) or Parquet file into a DataFrame, with one-line errors.

    With ``fmt`` (a long table's column names) the id column of a CSV is read as text, exactly as
    written: ``007`` stays ``007``, ``1`` and ``1.0`` stay two ids, ``NA`` is an id. A file whose
    content is compressed or Parquet is read as such whatever its name says.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"data file {path} does not exist; expected a CSV or Parquet file")
    if not path.is_file():
        raise DataFileError(f"{path} is not a file; expected a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise DataFileError(f"data file {path} is empty; expected a header line and rows of data")
    content = _sniff(path)
    named = "parquet" if path.suffix.lower() in PARQUET_SUFFIXES else COMPRESSIONS.get(path.suffix.lower())
    if content != named and content is not None:
        logger.info("%s holds %s data although its name does not say so; read it as such", path, content)
    parquet = content == "parquet" or (content is None and named == "parquet")
    try:
        if parquet:
            if not parquet_available():
                raise ImportError
            frame = pd.read_parquet(path)
        else:
            frame = _read_csv(path, content or "infer", fmt)
    except ImportError:
        raise DataFileError(
            f"reading {path} needs pyarrow: pip install 'timellm[parquet]' (or save the data as CSV)"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataFileError(f"data file {path} is empty; expected a header line and rows of data") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, EOFError) as err:
        kind = "Parquet" if parquet else "CSV"
        message = " ".join(str(err).split())
        hint = ""
        if isinstance(err, UnicodeDecodeError):
            hint = "; expected UTF-8 text (save the file as UTF-8 CSV, or gzip-compress it as .csv.gz)"
        raise DataFileError(f"{path} is not a readable {kind} file: {message}{hint}") from None
    if frame.empty:
        raise DataFileError(
            f"data file {path} has no data rows (columns: {_names(frame.columns)}); expected rows of data"
        )
    return frame


def _sniff(path: Path) -> str | None:
    """What a file's first bytes say it holds: a compression, 'parquet', or None (plain text)."""
    with path.open("rb") as file:
        head = file.read(8)
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def _read_csv(path: Path, compression: str, fmt: FrameFormat | None) -> pd.DataFrame:
    """pandas' CSV reader; a long table's id column as text, empty or not (never 'missing')."""
    id_col = None if fmt is None or fmt.wide else fmt.id_col
    if id_col is None:
        return pd.read_csv(path, compression=compression)
    columns = pd.read_csv(path, compression=compression, nrows=0).columns
    if id_col not in columns:
        return pd.read_csv(path, compression=compression)
    return pd.read_csv(
        path,
        compression=compression,
        dtype={id_col: str},
        keep_default_na=False,
        na_values={c: list(MISSING_MARKERS) for c in columns if c != id_col},
    )


def parquet_available() -> bool:
    """Whether pandas can read and write Parquet here (it needs pyarrow or fastparquet)."""
    return any(importlib.util.find_spec(name) is not None for name in ("pyarrow", "fastparquet"))


def check_not_input(
    path: str | Path, inputs: Sequence[str | Path], what: str = "output", writes: Sequence[str] = ()
) -> None:
    """Refuse an output that is one of the command's inputs, which writing would destroy.

    ``writes``: for an output folder, the names of the files written into it; an input among
    them is refused too. Paths are compared after resolving links and ``..``.
    """
    path = Path(path)
    targets = [path, *(path / name for name in writes)]
    for given in inputs:
        source = Path(given)
        for target in targets:
            same = target.resolve() == source.resolve()
            if not same and target.exists() and source.exists():
                same = os.path.samefile(target, source)
            if same:
                raise DataFileError(
                    f"cannot write the {what} {path}: it would overwrite the input {source}; "
                    "choose another name for the output"
                )


def check_output_path(path: str | Path, what: str = "output", folder: bool = False) -> Path:
    """Refuse, before any work is done, a path that cannot be written: its folder or itself.

    A missing folder is fine when it can be made (``write_table`` and ``save_pretrained`` make
    it); the nearest existing folder above must then be writable. ``folder``: the path is a
    folder to write files into (an adapter folder), not a file.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise DataFileError(f"cannot write the {what} {path}: it is {kind}")
    if path.exists() and not os.access(path, os.W_OK):
        raise DataFileError(f"cannot write the {what} {path}: it exists and is not writable")
    if folder and path.is_dir():
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataFileError(f"cannot write the {what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataFileError(
            f"cannot write the {what} {path}: the folder {parent} is not writable; choose another place"
        )
    return path


def check_table_path(path: str | Path, what: str = "output file") -> Path:
    """Refuse an output table path whose format is unknown or unavailable, or that cannot be written."""
    path = Path(path)
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind not in (".csv", *PARQUET_SUFFIXES):
        raise DataFileError(
            f"cannot write the {what} {path}: unknown format {path.suffix or '(no suffix)'!r}; "
            "expected a name ending in .csv (or .csv.gz, .csv.bz2, .csv.zip, .csv.xz) or .parquet"
        )
    if kind in PARQUET_SUFFIXES:
        if len(path.suffixes) > 1 and path.suffixes[-1].lower() in COMPRESSIONS:
            raise DataFileError(
                f"cannot write the {what} {path}: Parquet compresses itself; drop the {path.suffixes[-1]}"
            )
        if not parquet_available():
            raise DataFileError(
                f"writing the {what} {path} needs pyarrow: pip install 'timellm[parquet]' (or name it .csv)"
            )
    return check_output_path(path, what)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame as Parquet (``.parquet``/``.pq``) or CSV (``.csv``, optionally compressed)."""
    path = check_table_path(path)
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
    """Column names for a message; quoted when a name has spaces around it (they are invisible)."""
    names = [repr(c) if isinstance(c, str) and c != c.strip() else str(c) for c in columns]
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


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
        f"no {role} column {name!r} in the data; found columns: {_names(columns)}{hint}. {expected}"
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
            rows = _row_list(np.flatnonzero(empty))
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
        raise TimestampError(
            f"series {sid!r}: empty {column} {_rows(rows[ds.isna().to_numpy()])}; every row needs a timestamp"
        )
    if pd.api.types.is_bool_dtype(ds):
        raise TimestampError(f"{column} holds booleans; expected dates/times or integer steps")
    if pd.api.types.is_integer_dtype(ds):
        return pd.Index(ds.to_numpy(dtype=np.int64))
    if pd.api.types.is_float_dtype(ds):
        values = ds.to_numpy(dtype=np.float64)
        fractional = values != np.round(values)
        if not fractional.any():
            return pd.Index(values.astype(np.int64))
        raise TimestampError(
            f"series {sid!r}: {column} holds non-integer numbers ({values[fractional][0]!r}) "
            f"{_rows(rows[fractional])}; expected dates/times or integer steps"
        )
    if pd.api.types.is_datetime64_any_dtype(ds):
        return pd.DatetimeIndex(ds)
    periods = ds.map(lambda v: isinstance(v, pd.Period)).to_numpy(dtype=bool)
    if periods.all():  # pandas Periods (a PeriodIndex's values): each period's first instant
        try:
            return pd.PeriodIndex(ds.to_numpy()).to_timestamp(how="start")
        except (ValueError, TypeError) as err:  # periods of several frequencies
            raise TimestampError(
                f"series {sid!r}: {column} holds pandas Periods that cannot be read as one grid ({err}); "
                "convert them with .dt.to_timestamp() to dates of one frequency"
            ) from None
    try:
        times = _to_datetime(ds)
        # pandas 2 (statsforecast needs pandas < 3) returns timestamps of several offsets as objects,
        # and reads timestamps without an offset beside ones with an offset in that offset
        with_offset = ds.astype(str).str.strip().str.contains(OFFSET_SUFFIX)
        mixed = times.dtype == object or (with_offset.any() and not with_offset.all())
    except ValueError as err:  # pandas 3 refuses timestamps of several UTC offsets (a DST change)
        if "mixed timezones" not in str(err).lower():
            raise
        mixed = True
    if mixed:
        text = ds.astype(str).str.strip()
        naive = ~text.str.contains(OFFSET_SUFFIX).to_numpy()
        if naive.any():
            raise TimestampError(
                f"series {sid!r}: {column} mixes timestamps with a UTC offset and without one "
                f"(such as {ds.to_numpy()[naive][0]!r}) {_rows(rows[naive])}; give every timestamp an "
                "offset, or none"
            ) from None
        times = _to_datetime(ds, utc=True)
        offsets = ", ".join(sorted(set(text.str.extract(f"({OFFSET_SUFFIX})", expand=False).dropna()))[:4])
        local = _to_datetime(text.str.replace(OFFSET_SUFFIX, "", regex=True))  # the wall-clock times
        if _regular(local) and not _regular(times):
            # daily (or coarser) data across a daylight-saving change: regular on the local calendar,
            # not in UTC (a day of 23 or 25 hours); the dates are what the data means
            logger.info(
                "series %r: timestamps have several UTC offsets (%s); kept their local times, which are "
                "regular (in UTC they are not, across a daylight-saving change)",
                sid,
                offsets,
            )
            return pd.DatetimeIndex(local)
        logger.info(
            "series %r: timestamps have several UTC offsets (%s); converted them to UTC", sid, offsets
        )
    bad = times.isna().to_numpy()
    if bad.any():
        examples = ", ".join(repr(v) for v in ds.to_numpy()[bad][:3])
        hint = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if pd.to_datetime(ds, errors="coerce", dayfirst=True, format="mixed").notna().all():
                hint = (
                    " (they read as day-first dates, such as 31/01/2024; dates are never guessed day-first: "
                    "write them as 2024-01-31, or parse them with pandas.to_datetime(..., dayfirst=True))"
                )
        raise TimestampError(
            f"series {sid!r}: {column} has values that are not dates or times ({examples}) "
            f"{_rows(rows[bad])}{hint}; expected dates/times such as 2024-01-31 or 2024-01-31 13:00, "
            "or integer steps"
        )
    return pd.DatetimeIndex(times)


def _regular(times: pd.Series) -> bool:
    """Whether parsed timestamps lie on one frequency (sorted, without gaps)."""
    index = pd.DatetimeIndex(times.dropna()).sort_values()
    return len(index) == len(times) and not index.has_duplicates and infer_frequency(index) is not None


def _to_datetime(ds: pd.Series, utc: bool = False) -> pd.Series:
    """Parse in the format of the first value, else as ISO 8601 of several precisions; NaT if neither."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": every value is checked by the caller
        times = pd.to_datetime(ds, errors="coerce", utc=utc)
        if times.isna().any():  # ISO 8601 of several precisions ("2024-01-31", "2024-01-31 13:00")
            iso = pd.to_datetime(ds, errors="coerce", format="ISO8601", utc=utc)
            if iso.isna().sum() <= times.isna().sum():  # else the first value's format names fewer
                times = iso
    return times


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
            f"series {sid!r}: {column} has values that are not numbers ({examples}) {_rows(rows[bad])}; "
            "expected numbers (with a dot as the decimal mark)"
        )
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        raise ValueDataError(
            f"series {sid!r}: {column} has infinite values {_rows(rows[infinite])}; expected finite numbers"
        )
    huge = np.abs(values) > MAX_ABS_VALUE
    if huge.any():
        largest = float(np.nanmax(np.abs(values)))
        raise ValueDataError(
            f"series {sid!r}: {column} has values as large as {largest:.3g} {_rows(rows[huge])}; "
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


def _regular_series(sid: Any, times: pd.Index, y: np.ndarray, rows: np.ndarray, interpolate: bool) -> Series:
    """Sort by time, reject duplicates, infer the frequency, handle missing values and gaps."""
    order = np.argsort(np.asarray(times), kind="stable")
    if not np.all(order == np.arange(len(order))):
        logger.info("series %r: rows were not in time order; sorted them", sid)
    times, y, rows = times[order], y[order], rows[order]

    if len(times) < 2:
        raise SeriesLengthError(
            f"series {sid!r} has a single row {_rows(rows)}; a series needs at least two time steps "
            "(and look-back + horizon rows to be forecast)"
        )
    duplicated = np.asarray(times.duplicated(keep=False))
    if duplicated.any():
        raise TimestampError(
            f"series {sid!r}: duplicated timestamps (first: {times[duplicated][0]}) {_rows(rows[duplicated])}; "
            "expected one row per series and time step (aggregate the duplicates, or give each series its own id)"
        )

    freq = infer_frequency(times)
    if freq is None:
        step, grid = _gap_grid(times)
        if grid is None:
            diffs = pd.Series(np.diff(np.asarray(times))).value_counts().index[:3]
            shown = ", ".join(_step_text(d) if isinstance(times, pd.DatetimeIndex) else str(d) for d in diffs)
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
                f"series {sid!r}: {int(nan.sum())} missing value(s) at {where} {_rows(rows[nan])}; "
                "fill them, or pass interpolate=True to interpolate linearly"
            )
        if nan.all():
            raise ValueDataError(f"series {sid!r} has no values; nothing to interpolate from")
        method = "time" if isinstance(times, pd.DatetimeIndex) else "index"
        y = pd.Series(y, index=times).interpolate(method=method, limit_direction="both").to_numpy()
        logger.warning("series %r: interpolated %d missing value(s)", sid, int(nan.sum()))
    observed = ~nan if nan.any() else None
    return Series(sid, np.asarray(y, dtype=np.float64), times, freq, observed)


def _step_text(step: Any) -> str:
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
    months = _month_steps(times)
    if months is not None and len(np.unique(np.diff(months))) == 1 and months[1] > months[0]:
        return pd.DateOffset(months=int(months[1] - months[0]))
    return None


def _month_steps(times: pd.DatetimeIndex) -> np.ndarray | None:
    """Months since year 0 of each timestamp when all fall on one day of the month (up to the
    28th) at one time of day, the calendar of monthly data dated mid-month; else None."""
    if len(times) < 2 or times[0].day > 28:
        return None
    if not (times.day == times[0].day).all() or not (times.time == times[0].time()).all():
        return None
    return np.asarray(times.year, dtype=np.int64) * 12 + np.asarray(times.month, dtype=np.int64) - 1


def _gap_grid(times: pd.Index) -> tuple[Any, pd.Index | None]:
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


def _month_grid(times: pd.DatetimeIndex) -> tuple[Any, pd.Index | None]:
    """A grid of whole months from the first timestamp's day, holding every timestamp; else (None, None)."""
    months = _month_steps(times)
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


# ------------------------------------------------------------------------------------------------
# how long a look-back the series allow


def max_seq_len(
    lengths: Sequence[int],
    horizon: int,
    val_size: int | None = None,
    *,
    n_windows: int | None = None,
    step_size: int | None = None,
) -> int:
    """The longest look-back (``seq_len``) that series of these lengths allow; 0 or less: none.

    Forecasting (``val_size`` None, ``n_windows`` None) needs ``seq_len`` rows in every series.
    Training (``val_size`` given) needs ``seq_len + horizon`` rows in every series and
    ``seq_len + horizon + val_size`` in at least one: its training windows end before the last
    ``val_size`` steps, which are held out for validation. Cross-validation (``n_windows``) needs
    ``seq_len + horizon + (n_windows - 1) * step_size`` rows in every series, and with ``val_size``
    it trains on the rows before the first cutoff, which one series must have enough of.
    """
    if not lengths:
        return 0
    shortest, longest = min(lengths), max(lengths)
    span = (
        0 if n_windows is None else horizon + (n_windows - 1) * (horizon if step_size is None else step_size)
    )
    if n_windows is None and val_size is None:
        return shortest
    largest = shortest - (span or horizon)  # every series: the windows (or one training window)
    if val_size is not None:
        largest = min(largest, longest - span - val_size - horizon)  # one series trains
    return largest


# ------------------------------------------------------------------------------------------------
# seasonality of a frequency (seasonal naive and MASE)


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
