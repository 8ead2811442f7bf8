"""Where a run's data comes from: a benchmark by name or a user's CSV, both as :class:`Splits`.

:class:`Splits` (standardised train/validation/test arrays and a seasonal period) is the dataset
abstraction every harness works on. A user's CSV is read in one of two layouts:
- wide: one row per time step, one numeric column per series (``time_col`` optional);
- long: one row per (series id, time step) with ``id_col``, ``time_col`` and one target column,
  pivoted to wide (every series must have a value at every time step).

The rows are split chronologically 70/10/20 like the non-ETT benchmarks, the validation and test
splits starting ``seq_len`` rows early, and standardised with the training rows' statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from timellm.data.benchmarks import DataError, Splits, load_splits, standardised_splits


@dataclass(frozen=True)
class DataSource:
    """A benchmark (``benchmark``) or a user's CSV (``csv`` and its reading options), loadable again."""

    benchmark: str | None = None  # a benchmark name (ETTh1, weather, ...): standard splits
    csv: str | None = None  # path of a user's CSV: chronological 70/10/20 splits
    time_col: str | None = None  # column of time stamps (sorts the rows, infers the period)
    id_col: str | None = None  # long layout: column naming the series
    target_cols: tuple[str, ...] | None = None  # columns to forecast (long layout: exactly one)
    period: int | None = None  # seasonal period of the naive reference; None: from the time stamps

    def __post_init__(self) -> None:
        if (self.benchmark is None) == (self.csv is None):
            raise DataError("a data source is either a benchmark or a CSV file, not both or neither")

    @property
    def name(self) -> str:
        return self.benchmark if self.benchmark is not None else Path(self.csv).stem

    def load(self, seq_len: int, pred_len: int, data_dir: str | Path | None = None) -> Splits:
        if self.benchmark is not None:
            return load_splits(self.benchmark, seq_len, pred_len, data_dir)
        return csv_splits(
            self.csv,
            seq_len,
            pred_len,
            time_col=self.time_col,
            id_col=self.id_col,
            target_cols=list(self.target_cols) if self.target_cols else None,
            period=self.period,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSource:
        data = dict(data)
        if data.get("target_cols") is not None:
            data["target_cols"] = tuple(data["target_cols"])
        return cls(**data)


# steps per "day-like" season for the seasonal-naive reference, by the median spacing of the rows
_PERIODS = [
    (pd.Timedelta(minutes=1), 1440),
    (pd.Timedelta(minutes=5), 288),
    (pd.Timedelta(minutes=10), 144),
    (pd.Timedelta(minutes=15), 96),
    (pd.Timedelta(minutes=30), 48),
    (pd.Timedelta(hours=1), 24),
    (pd.Timedelta(days=1), 7),
    (pd.Timedelta(weeks=1), 52),
]


def infer_period(times: pd.Series) -> int | None:
    """The seasonal period implied by the rows' spacing (hourly: 24, daily: 7, ...), or None."""
    step = times.sort_values().diff().median()
    if pd.isna(step):
        return None
    for spacing, period in _PERIODS:
        if step == spacing:
            return period
    if pd.Timedelta(days=28) <= step <= pd.Timedelta(days=31):
        return 12
    if pd.Timedelta(days=89) <= step <= pd.Timedelta(days=92):
        return 4
    return None


def read_csv_frame(
    path: str | Path,
    time_col: str | None = None,
    id_col: str | None = None,
    target_cols: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.Series | None]:
    """The wide numeric table (rows in time order) and its time stamps (None without ``time_col``)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"CSV file {path} does not exist") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path} is not a readable CSV file: {err}") from None
    named = [c for c in [time_col, id_col, *(target_cols or [])] if c is not None]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise DataError(f"{path} has no column(s) {missing}; found {list(frame.columns)}")
    times = None
    if time_col is not None:
        try:
            frame[time_col] = pd.to_datetime(frame[time_col])
        except (ValueError, TypeError) as err:
            raise DataError(f"column {time_col!r} of {path} is not a time stamp: {err}") from None
    if id_col is not None:
        if time_col is None:
            raise DataError("a long CSV (--id-col) also needs --time-col to align its series")
        values = target_cols or [c for c in frame.columns if c not in (time_col, id_col)]
        if len(values) != 1:
            raise DataError(f"a long CSV needs exactly one target column (--target-col); found {values}")
        if frame.duplicated([id_col, time_col]).any():
            raise DataError(f"{path} repeats some ({id_col}, {time_col}) pairs")
        wide = frame.pivot(index=time_col, columns=id_col, values=values[0]).sort_index()
        gaps = wide.columns[wide.isna().any()].tolist()
        if gaps:
            raise DataError(
                f"series {gaps[:5]} of {path} lack values at some time stamps; every series must cover every time step"
            )
        wide.columns = [str(c) for c in wide.columns]
        return wide.reset_index(drop=True), pd.Series(wide.index)
    if time_col is not None:
        frame = frame.sort_values(time_col, kind="stable").reset_index(drop=True)
        times = frame[time_col]
    columns = target_cols or [
        c for c in frame.columns if c != time_col and pd.api.types.is_numeric_dtype(frame[c])
    ]
    if not columns:
        raise DataError(f"{path} has no numeric column to forecast; found {list(frame.columns)}")
    return frame[columns], times


def csv_splits(
    path: str | Path,
    seq_len: int,
    pred_len: int,
    *,
    time_col: str | None = None,
    id_col: str | None = None,
    target_cols: list[str] | None = None,
    period: int | None = None,
) -> Splits:
    """Read a wide or long CSV into standardised 70/10/20 splits (see the module docstring)."""
    wide, times = read_csv_frame(path, time_col, id_col, target_cols)
    try:
        values = wide.to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise DataError(f"the columns of {path} to forecast are not all numeric: {err}") from None
    if not np.isfinite(values).all():
        raise DataError(f"{path} has missing or non-numeric values in {list(wide.columns)}")
    if period is None:
        period = infer_period(times) if times is not None else None
        if period is None:
            raise DataError(
                f"cannot tell the seasonal period of {path} from its time stamps; pass --period (e.g. 24 for hourly rows)"
            )
    return standardised_splits(
        values,
        "ratio",
        seq_len,
        pred_len,
        name=Path(path).stem,
        columns=list(wide.columns),
        period=int(period),
        too_short=lambda part, rows: (
            f"the {part} split of {path} has {rows} rows, fewer than seq_len + pred_len = "
            f"{seq_len + pred_len}; the file has {len(values)} rows in all"
        ),
    )
