"""The M4 short-term forecasting protocol: data files and training windows (scores: :mod:`timellm.evaluation.m4`).

Files (the M4 competition's layout, gzip-compressed or not) live in ``<data_dir>/m4/``:
``{Frequency}-train.csv[.gz]`` (one series per row, an id then the history, padded with empty
cells at the end), ``{Frequency}-test.csv[.gz]`` (the id then exactly ``horizon`` values) and
``submission-Naive2.csv[.gz]`` (the official Naive2 forecasts, the reference of OWA).

Protocol (SPEC §3):

* the test set is the official test file, forecast from the last ``seq_len`` points of each full
  training series (:func:`forecast_inputs`);
* model selection uses the last ``horizon`` points of each training series as the validation target
  (:func:`validation_set`), never the test file; training windows then come from the series with
  that holdout removed (:class:`M4WindowDataset`, ``holdout=True``);
* scores: sMAPE and MASE per series, averaged per frequency; the overall row averages over all
  series (weights = series counts, as the competition does); OWA relates both to Naive2.

Windows shorter than ``seq_len`` (early cut points, short series) are padded at the front by
repeating the first observed value. The released code pads with zeros and a mask; our models take
no mask, and a constant level keeps the instance normalisation (mean/std of the window) and the
prompt statistics close to those of the real observations, where a block of zeros would dominate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class M4Frequency:
    name: str  # file prefix: "Hourly" -> Hourly-train.csv.gz
    letter: str  # first letter of every series id of this frequency ("H123")
    horizon: int  # forecast length fixed by the competition
    period: int  # seasonal period: the MASE scale's lag
    num_series: int  # series in the official files: the weight of the frequency in the overall average
    history_size: float  # training cut points come from the last history_size × horizon steps (N-BEATS)

    @property
    def seq_len(self) -> int:
        """The look-back window of the short-term setting: 2 × horizon (SPEC §3)."""
        return 2 * self.horizon


FREQUENCIES: dict[str, M4Frequency] = {
    f.name: f
    for f in (
        M4Frequency("Yearly", "Y", 6, 1, 23_000, 1.5),
        M4Frequency("Quarterly", "Q", 8, 4, 24_000, 1.5),
        M4Frequency("Monthly", "M", 18, 12, 48_000, 1.5),
        M4Frequency("Weekly", "W", 13, 1, 359, 10.0),
        M4Frequency("Daily", "D", 14, 1, 4_227, 10.0),
        M4Frequency("Hourly", "H", 48, 24, 414, 10.0),
    )
}

NAIVE2_FILE = "submission-Naive2"


class M4FileNotFoundError(FileNotFoundError):
    """An M4 data file is missing; the message names it and says where it comes from."""


def get_frequency(frequency: str | M4Frequency) -> M4Frequency:
    """A frequency by name or id letter, case-insensitive: "Hourly", "hourly", "H"."""
    if isinstance(frequency, M4Frequency):
        return frequency
    for f in FREQUENCIES.values():
        if str(frequency).lower() in (f.name.lower(), f.letter.lower()):
            return f
    names = ", ".join(f"{f.name} ({f.letter})" for f in FREQUENCIES.values())
    raise ValueError(f"unknown M4 frequency {frequency!r}; expected one of {names}")


# ------------------------------------------------------------------------------------------------
# files


def m4_folder(data_dir: str | Path) -> Path:
    """The M4 folder: ``<data_dir>/m4`` when it exists, else ``data_dir`` itself."""
    data_dir = Path(data_dir)
    return data_dir / "m4" if (data_dir / "m4").is_dir() else data_dir


def m4_file(data_dir: str | Path, stem: str) -> Path:
    """Path of ``<stem>.csv.gz`` (or the uncompressed ``<stem>.csv``) in the M4 folder."""
    folder = m4_folder(data_dir)
    for suffix in (".csv.gz", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise M4FileNotFoundError(
        f"M4 file {folder / stem}.csv.gz (or .csv) not found; the M4 train files of Yearly, Quarterly, "
        "Monthly and Daily (and Monthly-test) must be supplied by the user: take them from the M4 "
        f"competition (github.com/Mcompetitions/M4-methods, Dataset/) and put them in {folder}"
    )


def read_train(path: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """A ragged M4 train file -> (ids, histories), each history a 1-D float64 array without the padding."""
    frame = pd.read_csv(path, index_col=0, dtype={0: str})
    values = frame.to_numpy(dtype=np.float64)
    observed = ~np.isnan(values)
    lengths = observed.sum(axis=1)
    series = []
    for i, (row, length) in enumerate(zip(values, lengths, strict=True)):
        if length == 0 or not observed[i, :length].all():
            raise ValueError(
                f"{path}: series {frame.index[i]} must be a run of values followed only by empty cells; "
                f"found {length} values with gaps"
            )
        series.append(row[:length].copy())
    return [str(i) for i in frame.index], series


def read_test(path: str | Path, horizon: int) -> tuple[list[str], np.ndarray]:
    """An M4 test file -> (ids, values of shape (n_series, horizon))."""
    frame = pd.read_csv(path, index_col=0, dtype={0: str})
    values = frame.to_numpy(dtype=np.float64)
    if values.shape[1] != horizon or np.isnan(values).any():
        raise ValueError(
            f"{path}: expected {horizon} values on every row, found {values.shape[1]} columns"
            f"{' with empty cells' if np.isnan(values).any() else ''}"
        )
    return [str(i) for i in frame.index], values


def _check_ids(frequency: M4Frequency, ids: Sequence[str], source: str) -> None:
    wrong = [i for i in ids if not i.startswith(frequency.letter)]
    if wrong:
        raise ValueError(
            f"{source}: ids of {frequency.name} start with {frequency.letter!r}, found {wrong[:3]}"
        )


@dataclass
class M4Data:
    """The series of one M4 frequency; ``train`` and ``test`` share the order of ``ids``."""

    frequency: M4Frequency
    ids: list[str]
    train: list[np.ndarray] | None  # ragged in-sample histories, 1-D each; None when not loaded
    test: np.ndarray | None  # (n_series, horizon); None when not loaded

    def training_windows(self, seq_len: int | None = None, holdout: bool = True) -> M4WindowDataset:
        """Training windows (seq_len default 2 × horizon) from the last history_size × horizon cut points.

        ``holdout=True`` keeps the validation target (the last horizon) out of them: use it while
        selecting a model on :meth:`validation_set`; ``False`` trains on the full histories.
        """
        return M4WindowDataset(
            self._train(),
            self._seq_len(seq_len),
            self.frequency.horizon,
            holdout=holdout,
            max_windows_per_series=math.ceil(self.frequency.history_size * self.frequency.horizon),
        )

    def validation_set(self, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """See :func:`validation_set`: (n, seq_len, 1) inputs, (n, horizon, 1) targets."""
        return validation_set(self._train(), self._seq_len(seq_len), self.frequency.horizon)

    def forecast_inputs(self, seq_len: int | None = None) -> torch.Tensor:
        """See :func:`forecast_inputs`: (n, seq_len, 1), the inputs whose forecasts meet the test file."""
        return forecast_inputs(self._train(), self._seq_len(seq_len))

    def _seq_len(self, seq_len: int | None) -> int:
        return self.frequency.seq_len if seq_len is None else seq_len

    def _train(self) -> list[np.ndarray]:
        if self.train is None:
            raise ValueError(f"the {self.frequency.name} training series were not loaded (train=False)")
        return self.train


def load_m4(
    frequency: str | M4Frequency, data_dir: str | Path, *, train: bool = True, test: bool = True
) -> M4Data:
    """Load one frequency's train and/or test file, checking that their ids agree row by row."""
    f = get_frequency(frequency)
    if not (train or test):
        raise ValueError("load_m4 needs train=True or test=True")
    ids: list[str] | None = None
    train_series = test_values = None
    if train:
        path = m4_file(data_dir, f"{f.name}-train")
        ids, train_series = read_train(path)
        _check_ids(f, ids, str(path))
        too_short = [i for i, s in zip(ids, train_series, strict=True) if len(s) <= f.horizon]
        if too_short:
            raise ValueError(
                f"{path}: every history must be longer than the horizon {f.horizon} (its last horizon is "
                f"the validation target); too short: {too_short[:3]}"
            )
    if test:
        path = m4_file(data_dir, f"{f.name}-test")
        test_ids, test_values = read_test(path, f.horizon)
        _check_ids(f, test_ids, str(path))
        if ids is not None and ids != test_ids:
            mismatch = next(
                (k for k, (a, b) in enumerate(zip(ids, test_ids, strict=False)) if a != b),
                min(len(ids), len(test_ids)),
            )
            raise ValueError(
                f"{f.name} train and test files disagree: {len(ids)} vs {len(test_ids)} series, "
                f"first difference at row {mismatch}"
            )
        ids = test_ids
    assert ids is not None
    if len(ids) != f.num_series:
        logger.info("%s: %d series (the official files hold %d)", f.name, len(ids), f.num_series)
    return M4Data(f, ids, train_series, test_values)


def load_naive2(frequency: str | M4Frequency, data_dir: str | Path, ids: Sequence[str]) -> np.ndarray:
    """The official Naive2 forecasts of the given series, in that order: (len(ids), horizon)."""
    return _select_naive2(_read_naive2(data_dir), get_frequency(frequency), ids)


def _read_naive2(data_dir: str | Path) -> pd.DataFrame:
    path = m4_file(data_dir, NAIVE2_FILE)
    return pd.read_csv(path, index_col=0, dtype={0: str})


def _select_naive2(frame: pd.DataFrame, f: M4Frequency, ids: Sequence[str]) -> np.ndarray:
    rows = frame[frame.index.str.startswith(f.letter)]
    missing = [i for i in ids if i not in rows.index]
    if missing:
        raise ValueError(
            f"the Naive2 file has no forecast for {len(missing)} {f.name} series, e.g. {missing[:3]}"
        )
    values = rows.loc[list(ids)].to_numpy(dtype=np.float64)[:, : f.horizon]
    if values.shape[1] != f.horizon or np.isnan(values).any():
        raise ValueError(f"the Naive2 file lacks some of the {f.horizon} {f.name} forecast values")
    return values


# ------------------------------------------------------------------------------------------------
# windows


def _front_padded_windows(
    flat: np.ndarray, offsets: np.ndarray, ends: np.ndarray, seq_len: int
) -> np.ndarray:
    """Rows flat[offset + end - seq_len : offset + end], indices before a series' start clamped to it.

    offsets, ends: (n,) -> (n, seq_len); clamping repeats each series' first value at the front.
    """
    steps = ends[:, None] - seq_len + np.arange(seq_len)[None, :]  # (n, seq_len), may be negative
    return flat[offsets[:, None] + np.maximum(steps, 0)]


def _flatten(series: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = np.concatenate([np.asarray(s, dtype=np.float64) for s in series]) if len(series) else np.zeros(0)
    return flat, offsets, lengths


def _check_sizes(seq_len: int, horizon: int) -> None:
    for name, value in (("seq_len", seq_len), ("horizon", horizon)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, found {value!r}")


class M4WindowDataset(Dataset):
    """Training windows cut from ragged histories: item i -> (x (seq_len, 1), y (horizon, 1)) float32.

    A window is a cut point c of a series s: x = s[c - seq_len : c] (front-padded with s[0] when
    c < seq_len), y = s[c : c + horizon], which always lies wholly inside the series. Cut points go
    with stride 1 from ``min_context`` (the fewest real observations in x) to the end; with
    ``max_windows_per_series`` only the most recent ones are kept — recent history matters most
    and long series do not outweigh short ones (the released code samples cut points from the
    last ``history_size × horizon`` steps of each series).

    ``holdout=True`` first removes the last ``horizon`` values of every series: they are the
    validation target (:func:`validation_set`) and no training target may overlap them.
    """

    def __init__(
        self,
        series: Sequence[np.ndarray],
        seq_len: int,
        horizon: int,
        *,
        holdout: bool = True,
        max_windows_per_series: int | None = None,
        min_context: int = 1,
    ):
        _check_sizes(seq_len, horizon)
        if min_context < 1 or min_context > seq_len:
            raise ValueError(f"min_context must be in [1, seq_len={seq_len}], found {min_context}")
        if max_windows_per_series is not None and max_windows_per_series < 1:
            raise ValueError(
                f"max_windows_per_series must be positive or None, found {max_windows_per_series}"
            )
        self.seq_len, self.horizon = seq_len, horizon
        if holdout:
            series = [s[:-horizon] for s in series]
        self.flat, self.offsets, lengths = _flatten(series)

        last_cut = lengths - horizon  # (n,) the target ends exactly at the series' end
        first_cut = np.full_like(last_cut, min_context)
        if max_windows_per_series is not None:
            first_cut = np.maximum(first_cut, last_cut - max_windows_per_series + 1)
        counts = np.maximum(last_cut - first_cut + 1, 0)  # (n,) series too short give none
        self.series_index = np.repeat(np.arange(len(series)), counts)  # (W,)
        starts = np.repeat(np.cumsum(counts) - counts, counts)  # (W,) first window id of its series
        self.cut = first_cut[self.series_index] + np.arange(len(self.series_index)) - starts  # (W,)
        skipped = int((counts == 0).sum())
        if skipped:
            logger.info(
                "%d of %d series are too short for a training window (need %d + %d values)",
                skipped,
                len(series),
                min_context,
                horizon,
            )

    def __len__(self) -> int:
        return len(self.cut)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, c = self.series_index[index], self.cut[index]
        offset = self.offsets[s : s + 1]
        x = _front_padded_windows(self.flat, offset, np.array([c]), self.seq_len)[0]  # (seq_len,)
        y = self.flat[offset[0] + c : offset[0] + c + self.horizon]  # (horizon,)
        return (
            torch.from_numpy(x.astype(np.float32))[:, None],
            torch.from_numpy(y.astype(np.float32))[:, None],
        )


def validation_set(
    series: Sequence[np.ndarray], seq_len: int, horizon: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ending ``horizon`` steps before each series' end and those last ``horizon`` values.

    -> x (n, seq_len, 1) front-padded as the training windows, y (n, horizon, 1); float32.
    Only the training series are read: the test file is never part of model selection.
    """
    _check_sizes(seq_len, horizon)
    flat, offsets, lengths = _flatten(series)
    if (lengths <= horizon).any():
        raise ValueError(f"every series needs more than horizon={horizon} values for a validation window")
    x = _front_padded_windows(flat, offsets, lengths - horizon, seq_len)  # (n, seq_len)
    y = _front_padded_windows(flat, offsets, lengths, horizon)  # (n, horizon)
    return (
        torch.from_numpy(x.astype(np.float32))[..., None],
        torch.from_numpy(y.astype(np.float32))[..., None],
    )


def forecast_inputs(series: Sequence[np.ndarray], seq_len: int) -> torch.Tensor:
    """The last ``seq_len`` points of each full training series: (n, seq_len, 1) float32."""
    _check_sizes(seq_len, 1)
    flat, offsets, lengths = _flatten(series)
    if (lengths == 0).any():
        raise ValueError("every series needs at least one value to forecast from")
    x = _front_padded_windows(flat, offsets, lengths, seq_len)  # (n, seq_len)
    return torch.from_numpy(x.astype(np.float32))[..., None]
