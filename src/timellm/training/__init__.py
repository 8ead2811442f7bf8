"""Training the adapter: the run's configuration, the loop (on `accelerate`) and its checkpoints."""

from timellm.training.config import TrainConfig
from timellm.training.loop import (
    FitResult,
    NonFiniteLossError,
    adapter_sha256,
    evenly_spaced,
    fit,
    make_accelerator,
    make_adam,
    make_scheduler,
    mean_loss,
    seed_everything,
)

__all__ = [
    "FitResult",
    "NonFiniteLossError",
    "TrainConfig",
    "adapter_sha256",
    "evenly_spaced",
    "fit",
    "make_accelerator",
    "make_adam",
    "make_scheduler",
    "mean_loss",
    "seed_everything",
]
