"""What a benchmark run holds in memory at its peak, known before anything is loaded.

One plan for every front door: :func:`timellm.experiments.runs.train_and_test` (``train``,
``transfer``) and :func:`timellm.experiments.protocols.run_m4` refuse by it, ``--dry-run`` prints it,
and ``timellm info`` shows it, so that none of them can promise what another refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from timellm.data.benchmarks import Splits, load_splits
from timellm.experiments.presets import Preset
from timellm.model.memory import MemoryBatch, MemoryPlan, plan_memory, refuse_what_cannot_fit
from timellm.training.config import TrainConfig


def benchmark_batches(
    train: TrainConfig, run: dict[str, Any], channels: int, test_windows: int | None = None
) -> tuple[MemoryBatch, MemoryBatch]:
    """A run's two peaks: a training step of ``batch_size`` series (every channel of a window is a
    series of its own; no more than an epoch's ``max_train_windows``), and its largest inference
    batch: ``eval_batch_size`` test windows with all ``channels`` (no more than the windows tested:
    the run setting ``max_test_windows``, the split's ``test_windows``), or ``eval_batch_size``
    validation series (no more than ``max_val_windows``) where that batch is the larger."""
    step = min(train.batch_size, _count(train.max_train_windows) or train.batch_size)
    tested = min(n for n in (train.eval_batch_size, _count(run.get("max_test_windows")), test_windows) if n)
    validated = min(train.eval_batch_size, _count(train.max_val_windows) or train.eval_batch_size)
    setting = "train.eval_batch_size"
    inference = (
        MemoryBatch(False, tested, channels, setting)
        if tested * channels >= validated
        else MemoryBatch(False, validated, 1, setting)
    )
    return MemoryBatch(True, step, 1, "train.batch_size"), inference


def _count(value: Any) -> int | None:
    """A cap on windows as a setting holds it: a positive integer, else none (checked where it is used)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def benchmark_plans(preset: Preset, channels: int, test_windows: int | None = None) -> list[MemoryPlan]:
    """The memory plan of ``preset`` on data of ``channels`` channels with ``test_windows`` test
    windows (None: as many as the batch takes); nothing is refused here."""
    return plan_memory(
        preset.model,
        preset.execution,
        precision=preset.train.precision,
        batches=benchmark_batches(preset.train, preset.run, channels, test_windows),
    )


def check_benchmark_memory(preset: Preset, test: Splits | None = None) -> list[MemoryPlan]:
    """Refuse a run of ``preset`` tested on ``test`` (None: one series a window, as M4's) that cannot
    fit (:class:`~timellm.model.memory.InsufficientMemoryError`, naming the settings that would),
    before the backbone is loaded or anything is written."""
    plans = benchmark_plans(preset, *_test_shape(test))
    refuse_what_cannot_fit(plans)
    return plans


def _test_shape(test: Splits | None) -> tuple[int, int | None]:
    """(channels, test windows) of a test split; (1, None) without one."""
    if test is None:
        return 1, None
    return test.channels, max(test.test.shape[0] - test.seq_len - test.pred_len + 1, 1)


def plan_run(
    preset: Preset,
    *,
    data_dir: str | Path | None = None,
    percent: float = 100,
    test_dataset: str | None = None,
) -> list[MemoryPlan]:
    """The memory plan of a run of ``preset`` (``--dry-run``, ``timellm info``): its data read as the
    run reads them (a missing or foreign file is an error), nothing loaded, nothing written; tested
    on ``test_dataset`` where it is given (zero-shot)."""
    c = preset.model
    test = load_splits(preset.dataset, c.seq_len, c.pred_len, data_dir, percent)
    if test_dataset is not None and test_dataset != test.name:
        test = load_splits(test_dataset, c.seq_len, c.pred_len, data_dir)
    return benchmark_plans(preset, *_test_shape(test))
