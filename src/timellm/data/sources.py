"""Where a run's data comes from: a benchmark by name or a user's CSV, both as :class:`Splits`.

:class:`Splits` (standardised train/validation/test arrays and a seasonal period) is the dataset
abstraction every harness works on. A user's file (CSV or Parquet) is read and validated by
:mod:`timellm.data.frames`, the one reader of user data, with its rules and its errors
(:class:`~timellm.data.errors.InputDataError`), in one of two layouts:
- wide: one row per time step, one column per series (``time_col`` optional: without it the rows
  are integer steps in file order);
- long: one row per (series id, time step) with ``id_col``, ``time_col`` and one target column.
Every series must then have a value at every time step of the others: the splits are one array.

The rows are split chronologically 70/10/20 like the non-ETT benchmarks, the validation and test
splits starting ``seq_len`` rows early, and standardised with the training rows' statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from timellm.data.benchmarks import Splits, load_splits, standardised_splits
from timellm.data.errors import ColumnError, DataError, TimestampError
from timellm.data.files import read_table
from timellm.data.frames import prepare_series
from timellm.data.frequency import infer_frequency, season_length
from timellm.data.series import FrameFormat


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


def infer_period(times: pd.Series) -> int | None:
    """The seasonal period of the rows' frequency (hourly: 24, daily: 7, ...), or None without one.

    The rule of :func:`timellm.data.frequency.season_length`, the one every command uses.
    """
    index = pd.DatetimeIndex(times.dropna()).sort_values()
    freq = infer_frequency(index)
    period = season_length(freq) if freq is not None else 1
    return period if period > 1 else None


ROW_STEP = "__row__"  # the time column of a wide file without one: the rows' positions


def read_csv_frame(
    path: str | Path,
    time_col: str | None = None,
    id_col: str | None = None,
    target_cols: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.Series | None]:
    """The wide numeric table (rows in time order) and its time stamps (None without ``time_col``).

    The file is read and every series validated by :func:`~timellm.data.frames.prepare_series`;
    the series must share one time grid.
    """
    path = Path(path)
    if id_col is not None and time_col is None:
        raise DataError("a long table (id_col=...) also needs time_col=... to align its series")
    fmt = FrameFormat(id_col or "unique_id", time_col or ROW_STEP, wide=id_col is None)
    frame = read_table(path, fmt)
    named = [c for c in [time_col, id_col, *(target_cols or [])] if c is not None]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise ColumnError(f"{path} has no column(s) {missing}; found {list(frame.columns)}")
    if id_col is not None:
        values = target_cols or [c for c in frame.columns if c not in (time_col, id_col)]
        if len(values) != 1:
            raise ColumnError(
                f"a long table needs exactly one target column (target_cols=[...]); found {values}"
            )
        fmt = FrameFormat(id_col, time_col, values[0])
        frame = frame[[id_col, time_col, values[0]]]
    else:
        if time_col is None:
            frame = frame.assign(**{ROW_STEP: np.arange(len(frame))})
        columns = target_cols or [c for c in frame.columns if c != fmt.time_col]
        frame = frame[[fmt.time_col, *columns]]
    data = prepare_series(frame, fmt)
    if id_col is not None:  # the series of a long table in the order of their ids, as a pivot gives them
        data.series.sort(key=lambda s: str(s.id))
    grid = data.series[0].timestamps
    uneven = [str(s.id) for s in data if not s.timestamps.equals(grid)]
    if uneven:
        raise TimestampError(
            f"series {uneven[:5]} of {path} lack values at some time stamps of series {str(data.ids[0])!r} "
            f"(or have others); every series must cover every time step ({len(grid)} from {grid[0]} to {grid[-1]})"
        )
    wide = pd.DataFrame({str(s.id): s.values for s in data})
    times = None if time_col is None else pd.Series(grid)
    return wide, times


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
    values = wide.to_numpy(dtype=np.float64)  # validated: finite numbers
    if period is None:
        period = infer_period(times) if times is not None else None
        if period is None:
            raise DataError(
                f"cannot tell the seasonal period of {path} from its time stamps; pass period=... "
                "(e.g. 24 for hourly rows)"
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
