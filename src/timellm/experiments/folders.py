"""The run folder: one writer for every run the harness makes (benchmarks, M4, ablations).

A run folder holds ``config.yaml`` (every setting, resolved), ``metrics.json`` (the scores and
where they came from: the source commit, the allocator), ``history.csv`` (one row per epoch),
a log, the trained ``adapter/`` and ``forecast.png``; while training, also ``checkpoint/``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from timellm._malloc import allocator_setting
from timellm._records import check_known_keys
from timellm.training.config import TrainConfig, split_legacy_execution

RUN_CONFIG = "config.yaml"
METRICS = "metrics.json"
HISTORY = "history.csv"
# `timellm evaluate --save`: the adapter re-tested on its whole test split, beside a run's own scores
# (an ablation's run is scored on the ablation's test windows, often a subset)
WHOLE_TEST = "metrics_whole_test.json"
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoint"


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Also write the package's log records to ``path`` while the block runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("timellm")
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


@functools.cache
def source_commit() -> str | None:
    """The git commit the package runs from (``<sha>-dirty`` with uncommitted changes), else None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", str(here.parent)],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed wheel) or no git
    return f"{sha}-dirty" if dirty else sha


def cpu_model() -> str:
    """This machine's processor as ``/proc/cpuinfo`` names it ("AMD EPYC"), for beside a timing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def as_recorded(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as a run folder's config.yaml reads back (tuples as lists, numpy scalars as
    numbers), so that it compares equal to a recorded one with the same settings."""
    return yaml.safe_load(yaml.safe_dump(_jsonable(record), sort_keys=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class RunFolder:
    """Writes the files of one run folder; ``main=False`` (a non-main process) writes nothing."""

    def __init__(self, path: str | Path, main: bool = True):
        self.path, self.main = Path(path), main

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def create(self, record: dict[str, Any]) -> None:
        """Make the folder and write ``config.yaml``: every setting the run was started with."""
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / RUN_CONFIG).write_text(yaml.safe_dump(_jsonable(record), sort_keys=False))

    def log(self, name: str = "train.log") -> contextlib.AbstractContextManager:
        return log_to(self.path / name) if self.main else contextlib.nullcontext()

    def write_history(self, history: list[dict[str, float]]) -> None:
        if self.main:
            pd.DataFrame(history).to_csv(self.path / HISTORY, index=False)

    def write_metrics(self, metrics: dict[str, Any], name: str = METRICS) -> dict[str, Any]:
        """Write ``metrics.json`` (or ``name``: :data:`WHOLE_TEST`) with the provenance every run
        records; returns what was written."""
        metrics = {**metrics, "commit": source_commit(), "malloc": metrics.get("malloc", allocator_setting())}
        if self.main:
            (self.path / name).write_text(json.dumps(_jsonable(metrics), indent=2) + "\n")
        return metrics


# every key a run folder's config.yaml may hold (runs, M4 protocol runs, ablation folders)
RUN_RECORD_KEYS = frozenset(
    {
        "protocol",
        "preset",
        "dataset",
        "frequency",
        "test_dataset",
        "percent",
        "command",
        "model",
        "train",
        "execution",
        "run",
        "precision",
        "data",
        "budget",
        "variants",
        "variant",
        "test_windows",
        "test_windows_total",
        "environment",
    }
)


def read_run_record(folder: str | Path) -> dict[str, Any]:
    """A run folder's config.yaml, checked: an unknown key (a newer or foreign record) is an error,
    never dropped; its training settings are checked as TrainConfig reads them.

    Records of earlier versions, which kept the execution settings among the training settings,
    are read with those settings in their own ``execution`` section.
    """
    path = Path(folder) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a run folder: it has no {RUN_CONFIG}")
    try:
        record = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a run record: expected a mapping, found {type(record).__name__}")
    check_known_keys(record, RUN_RECORD_KEYS, path)
    if isinstance(record.get("train"), dict):
        train, legacy = split_legacy_execution(record["train"])
        if legacy:
            record["train"] = train
            record["execution"] = {**legacy, **(record.get("execution") or {})}
        try:
            TrainConfig.from_dict(train)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return record


def read_run_files(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``config.yaml`` (:func:`read_run_record`) and ``metrics.json`` (None while unfinished) of a run folder."""
    folder = Path(folder)
    record = read_run_record(folder)
    try:
        metrics = json.loads((folder / METRICS).read_text()) if (folder / METRICS).is_file() else None
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / METRICS} is not valid JSON: {err}") from None
    return record, metrics
