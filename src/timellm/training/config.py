"""What a training run is: optimiser, schedule, budget and precision.

One frozen, validated dataclass; presets and ``--set`` build it, run folders record it
(``config.yaml``), checkpoints compare it on resume. How the backbone executes (gradient
checkpointing, the attention kernel) is not a training setting: it belongs to the model
(:class:`timellm.model.config.ExecutionSettings`), which the caller builds with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from timellm.model.precision import PRECISIONS, spelled

Schedule = Literal["constant", "halving", "cosine", "onecycle"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # timellm.model.precision.PRECISIONS
# execution settings that earlier versions kept among the training settings; records and checkpoints
# written then still hold them under "train" (readers move them to the model's execution settings)
LEGACY_EXECUTION_KEYS = ("gradient_checkpointing", "attention")


def split_legacy_execution(train: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A recorded training section -> (its training settings, the execution settings of
    :data:`LEGACY_EXECUTION_KEYS` that earlier versions kept among them)."""
    kept = {k: v for k, v in train.items() if k not in LEGACY_EXECUTION_KEYS}
    return kept, {k: v for k, v in train.items() if k in LEGACY_EXECUTION_KEYS}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # upper bound: early stopping usually ends sooner
    batch_size: int = 24  # series per optimiser step and process (the released code: 24 per GPU)
    learning_rate: float = 0.001  # Adam's rate at the start (or the one-cycle peak)
    schedule: Schedule = "halving"  # constant | halving per epoch (released 'type1') | cosine | onecycle
    pct_start: float = 0.2  # one-cycle: share of steps spent warming up
    patience: int = 3  # epochs without validation improvement before stopping
    loss: Literal["mse", "mae", "smape"] = "mse"  # mae: median-seeking (ETTm2-96-cpu); smape for M4
    seed: int = 2021  # seeds python, numpy, torch and the data order
    # autocast through accelerate: auto = bf16 where the device runs it natively (GPUs with bf16,
    # CPUs with AMX / AVX-512 BF16), else fp32; bf16 or fp16 (GPU) explicitly; fp32 none
    precision: Precision = "auto"
    grad_accum: int = 1  # optimiser step every k batches
    max_train_windows: int | None = None  # per-epoch cap: a fresh random subset each epoch (CPU budgets)
    max_val_windows: int | None = None  # evenly spaced fixed subset of validation windows; None = all
    eval_batch_size: int = 32  # windows per evaluation batch (all channels at once)
    num_workers: int = 0  # DataLoader worker processes
    checkpoint_every: int | None = None  # also checkpoint every k optimiser steps, not only at epoch ends
    deterministic: bool = False  # torch's deterministic algorithms: bitwise-repeatable runs and resumes
    # seconds of training (validation included) after which no further epoch starts and the epoch in
    # progress ends early; the best epoch so far is kept. None: no limit (epochs and patience decide)
    time_budget: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "grad_accum", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, found {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, found {self.learning_rate}")
        if self.schedule not in ("constant", "halving", "cosine", "onecycle"):
            raise ValueError(
                f"schedule must be constant, halving, cosine or onecycle; found {self.schedule!r}"
            )
        if self.loss not in ("mse", "mae", "smape"):
            raise ValueError(f"loss must be mse, mae or smape, found {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be {spelled(PRECISIONS)}, found {self.precision!r}")
        for name in ("max_train_windows", "max_val_windows", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, found {value!r}")
        budget = self.time_budget
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0
        ):
            raise ValueError(f"time_budget must be a positive number of seconds or None, found {budget!r}")
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"deterministic must be true or false, found {self.deterministic!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown training setting(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)
