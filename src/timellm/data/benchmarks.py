"""The long-term forecasting benchmarks, their standard splits and train-only scaling.

Borders follow the literature (and every published number): ETT hourly 12/4/4 months, ETT
15-minute the same months at 4x the rows, the others 70/10/20 chronologically. The validation
and test splits start ``seq_len`` rows before their border so that the first forecast starts
exactly at it. The scaler is fit on the training rows only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from timellm.data.errors import DataError

logger = logging.getLogger(__name__)

DATA_ENV = "TIMELLM_DATA"


@dataclass(frozen=True)
class Benchmark:
    name: str
    file: str  # path inside the data folder
    sha256: str | None  # of the uncompressed CSV
    split: str  # "ett_hour", "ett_minute" or "ratio" (70/10/20)
    period: int  # steps per day (seasonal-naive reference); ILI is weekly: one year
    description: str  # name of the packaged prompt description


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "ETTh1",
            "ETT-small/ETTh1.csv",
            "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
            "ett_hour",
            24,
            "ETTh1",
        ),
        Benchmark(
            "ETTh2",
            "ETT-small/ETTh2.csv",
            "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
            "ett_hour",
            24,
            "ETTh2",
        ),
        Benchmark(
            "ETTm1",
            "ETT-small/ETTm1.csv",
            "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
            "ett_minute",
            96,
            "ETTm1",
        ),
        Benchmark(
            "ETTm2",
            "ETT-small/ETTm2.csv",
            "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd",
            "ett_minute",
            96,
            "ETTm2",
        ),
        Benchmark(
            "weather",
            "weather/weather.csv",
            "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63",
            "ratio",
            144,
            "weather",
        ),
        Benchmark(
            "illness",
            "illness/national_illness.csv",
            "8594cecb98c6f2f9dc014eca11c4d5d1e38ad5ce6ed0592d4abe65b146fce395",
            "ratio",
            52,
            "illness",
        ),
        Benchmark(
            "electricity",
            "electricity/electricity.csv",
            "7e45845d54c5219bad0ae6bc1b5316cf8ff9cead5d33fa998a5a51c2e4a497ad",
            "ratio",
            24,
            "electricity",
        ),
        Benchmark(
            "traffic",
            "traffic/traffic.csv",
            "cb06463d56fa17d87f47027cd9389ceae82a69eddee51cdb61480e120dab0b16",
            "ratio",
            24,
            "traffic",
        ),
    ]
}
ALIASES = {"ILI": "illness", "ECL": "electricity", "Weather": "weather", "Traffic": "traffic"}


def benchmark(name: str) -> Benchmark:
    name = ALIASES.get(name, name)
    if name not in BENCHMARKS:
        raise DataError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def default_data_dir() -> Path | None:
    """The data folder from ``$TIMELLM_DATA``, or None (then only the packaged ETTh1 is found)."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


def find_file(name: str, data_dir: str | Path | None = None) -> Path:
    """Locate a benchmark's CSV (plain or .gz, in its sub-folder or directly in the folder)."""
    info = benchmark(name)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    tried: list[Path] = []
    if folder is not None:
        if not folder.is_dir():
            raise DataError(
                f"data folder {folder} does not exist (given as data_dir=FOLDER or by {DATA_ENV})"
            )
        relative = Path(info.file)
        for candidate in (relative, Path(relative.name)):
            for suffix in (".gz", ""):
                path = folder / (str(candidate) + suffix)
                tried.append(path)
                if path.is_file():
                    return path
    if info.name == "ETTh1":
        return Path(str(resources.files("timellm.data") / "ETTh1.csv.gz"))
    where = (
        ", ".join(map(str, tried))
        if tried
        else f"nowhere: no data folder given (data_dir=FOLDER or {DATA_ENV})"
    )
    raise DataError(
        f"{info.name} data not found; looked in {where}. Give the folder holding {info.file}[.gz] "
        f"as data_dir=FOLDER or {DATA_ENV}"
    )


def read_benchmark(name: str, data_dir: str | Path | None = None, verify: bool = True) -> pd.DataFrame:
    """The raw benchmark table (a ``date`` column and numeric columns), checksum-verified."""
    info = benchmark(name)
    path = find_file(name, data_dir)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path} is not a readable gzip file: {err}") from None
    if verify and info.sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != info.sha256:
            raise DataError(
                f"{path} is not the standard {info.name} file: its sha256 is {digest}, expected {info.sha256}. "
                "Use the unmodified distribution (or pass verify=False knowingly)."
            )
    frame = pd.read_csv(io.BytesIO(raw))
    if "date" not in frame.columns:
        raise DataError(f"{path} has no 'date' column; found {list(frame.columns)[:5]}")
    return frame


@dataclass
class Splits:
    """Scaled train/val/test arrays of one benchmark, each (rows, channels), float32."""

    name: str
    columns: list[str]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mean: np.ndarray  # (channels,) of the training rows
    std: np.ndarray
    seq_len: int
    pred_len: int
    period: int

    @property
    def channels(self) -> int:
        return self.train.shape[1]


def borders(split: str, rows: int, seq_len: int) -> tuple[list[int], list[int]]:
    """Start and end row of train, val and test (val/test start seq_len rows early)."""
    if split in ("ett_hour", "ett_minute"):
        month = 30 * 24 * (4 if split == "ett_minute" else 1)
        ends = [12 * month, 16 * month, 20 * month]
    elif split == "ratio":
        train, test = int(rows * 0.7), int(rows * 0.2)
        ends = [train, rows - test, rows]
    else:
        raise DataError(f"unknown split kind {split!r}")
    starts = [0, ends[0] - seq_len, ends[1] - seq_len]
    return starts, ends


def load_splits(
    name: str,
    seq_len: int,
    pred_len: int,
    data_dir: str | Path | None = None,
    percent: float = 100,
) -> Splits:
    """Load a benchmark, split it the standard way and standardise with train statistics.

    ``percent`` < 100 keeps only the first ``percent`` % of the training windows (few-shot, at least
    one window): the validation and test splits and the scaler are unchanged.
    """
    if not 0 < percent <= 100:
        raise DataError(f"percent must be in (0, 100], found {percent}")
    info = benchmark(name)
    frame = read_benchmark(info.name, data_dir)
    columns = [c for c in frame.columns if c != "date"]
    values = frame[columns].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{info.name} has missing or non-numeric values")
    return standardised_splits(
        values,
        info.split,
        seq_len,
        pred_len,
        name=info.name,
        columns=columns,
        period=info.period,
        percent=percent,
        too_short=lambda part, rows: (
            f"{info.name} {part} split has {rows} rows, fewer than seq_len + pred_len = {seq_len + pred_len}"
        ),
    )


def standardised_splits(
    values: np.ndarray,
    kind: str,
    seq_len: int,
    pred_len: int,
    *,
    name: str,
    columns: list[str],
    period: int,
    too_short: Callable[[str, int], str],
    percent: float = 100,
) -> Splits:
    """Cut (rows, channels) values into train/val/test (``borders``), standardised with the
    training rows; ``too_short(part, rows)`` words the error for a split shorter than one window.
    """
    starts, ends = borders(kind, len(values), seq_len)
    train_rows = values[starts[0] : ends[0]]
    mean, std = train_rows.mean(axis=0), train_rows.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    scaled = ((values - mean) / std).astype(np.float32)
    train_end = ends[0]
    if percent < 100:
        # few-shot (SPEC §3): the first `percent` % of the training windows, val/test/scaler unchanged.
        # The released code cuts (rows - seq_len) * percent // 100 start rows, ignoring pred_len, so
        # its "10%" keeps 717 of ETTh1's 8033 windows at 512/96; we keep 803.
        windows = ends[0] - starts[0] - seq_len - pred_len + 1
        kept = max(1, int(windows * percent // 100))
        train_end = min(ends[0], starts[0] + kept + seq_len + pred_len - 1)
    split = Splits(
        name=name,
        columns=columns,
        train=scaled[starts[0] : train_end],
        val=scaled[starts[1] : ends[1]],
        test=scaled[starts[2] : ends[2]],
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        seq_len=seq_len,
        pred_len=pred_len,
        period=period,
    )
    for part in ("train", "val", "test"):
        rows = getattr(split, part).shape[0]
        if rows < seq_len + pred_len:
            raise DataError(too_short(part, rows))
    return split
