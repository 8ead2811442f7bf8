"""The validated series of a user's table, and how that table is laid out.

:class:`FrameFormat` names a table's columns (long or wide); :class:`Series` is one series on a
regular time grid; :class:`SeriesSet` holds the series of one table, as
:func:`timellm.data.frames.prepare_series` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


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
