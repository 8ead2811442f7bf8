"""Training with early stopping on the validation split, on top of `accelerate`.

`accelerate` gives devices, processes and mixed precision; the loop itself is the plain
Adam-over-the-adapter recipe of the released code with its learning-rate bookkeeping made
clean (one scheduler, built only when chosen).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

Schedule = Literal["constant", "halving", "cosine", "onecycle"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # upper bound: early stopping usually ends sooner
    batch_size: int = 24  # series per optimiser step (the released code: 24 per GPU)
    learning_rate: float = 0.001  # Adam's rate at the start (or the one-cycle peak)
    schedule: Schedule = "halving"  # constant | halving per epoch (released 'type1') | cosine | onecycle
    pct_start: float = 0.2  # one-cycle: share of steps spent warming up
    patience: int = 3  # epochs without validation improvement before stopping
    loss: Literal["mse", "smape"] = "mse"  # smape for M4
    seed: int = 2021  # seeds python, numpy, torch and the data order
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast through accelerate (CPU and GPU)
    grad_accum: int = 1  # optimiser step every k batches
    max_train_windows: int | None = None  # per-epoch cap: a fresh random subset each epoch (CPU budgets)
    max_val_windows: int | None = None  # evenly spaced fixed subset of validation windows; None = all
    eval_batch_size: int = 32  # windows per evaluation batch (all channels at once)
    num_workers: int = 0  # DataLoader worker processes

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
        if self.loss not in ("mse", "smape"):
            raise ValueError(f"loss must be mse or smape, found {self.loss!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, found {self.precision!r}")
        for name in ("max_train_windows", "max_val_windows"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, found {value!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    steps: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def smape_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Symmetric MAPE in percent; 0/0 counts as 0."""
    denominator = pred.abs() + true.abs()
    ratio = (pred - true).abs() / denominator.clamp_min(1e-8)
    return 200.0 * torch.where(denominator > 0, ratio, torch.zeros_like(ratio)).mean()


LOSSES = {"mse": nn.functional.mse_loss, "smape": smape_loss}


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """Return (scheduler, steps per epoch or 1 for per-step stepping): only the chosen one is built."""
    if config.schedule == "onecycle":
        total = max(1, config.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.learning_rate, total_steps=total, pct_start=config.pct_start
        ), "step"
    if config.schedule == "halving":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), "epoch"
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=1e-8
        ), "epoch"
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0), "epoch"


def evenly_spaced(dataset: Dataset, limit: int | None) -> Dataset:
    """A fixed, evenly spaced subset of at most ``limit`` items (all when None)."""
    n = len(dataset)
    if limit is None or limit >= n:
        return dataset
    return Subset(dataset, np.linspace(0, n - 1, limit).round().astype(int).tolist())


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of everything but the frozen backbone (registered as ``llm``)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("llm.")}


@torch.no_grad()
def mean_loss(
    model: nn.Module, dataset: Dataset, config: TrainConfig, accelerator, desc: str = "validate"
) -> float:
    """Average loss over a dataset of (past, future) windows."""
    loader = DataLoader(
        dataset, batch_size=config.eval_batch_size, shuffle=False, num_workers=config.num_workers
    )
    loss_fn = LOSSES[config.loss]
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for past, future in tqdm(
        loader, desc=desc, leave=False, disable=None if accelerator.is_local_main_process else True
    ):
        past, future = past.to(accelerator.device), future.to(accelerator.device)
        with accelerator.autocast():
            pred = model(past)
        total += float(loss_fn(pred.float(), future)) * past.shape[0]
        count += past.shape[0]
    model.train(was_training)
    return total / max(count, 1)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    accelerator=None,
) -> FitResult:
    """Train the adapter with Adam; keep the best validation epoch and restore it at the end."""
    from accelerate import Accelerator

    if len(train_set) == 0:
        raise ValueError("the training split has no complete window; lower seq_len or pred_len")
    seed_everything(config.seed)
    if accelerator is None:
        accelerator = Accelerator(
            mixed_precision="bf16" if config.precision == "bf16" else "no",
            gradient_accumulation_steps=config.grad_accum,
        )
    generator = torch.Generator().manual_seed(config.seed)
    per_epoch = (
        len(train_set) if config.max_train_windows is None else min(config.max_train_windows, len(train_set))
    )
    sampler = RandomSampler(train_set, num_samples=per_epoch, generator=generator)
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=False,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    scheduler, step_every = make_scheduler(optimizer, config, steps_per_epoch)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    val_subset = evenly_spaced(val_set, config.max_val_windows)  # fixed across epochs: comparable losses
    loss_fn = LOSSES[config.loss]

    best = trainable_state(accelerator.unwrap_model(model))
    best_loss, best_epoch, bad_epochs, steps = math.inf, 0, 0, 0
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        running, seen = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=None if accelerator.is_local_main_process else True,
        )
        epoch_start = time.perf_counter()
        for past, future in bar:
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    pred = model(past)
                loss = loss_fn(pred.float(), future)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {steps}")
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                steps += 1
                if step_every == "step":
                    scheduler.step()
            running += loss.item() * past.shape[0]
            seen += past.shape[0]
            rate = seen / max(time.perf_counter() - epoch_start, 1e-9)
            bar.set_postfix(
                loss=f"{running / seen:.4f}",
                lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                series_s=f"{rate:.1f}",
            )
        train_loss = running / max(seen, 1)
        val_loss = mean_loss(model, val_subset, config, accelerator)
        lr = optimizer.param_groups[0]["lr"]
        if step_every == "epoch":
            scheduler.step()
        improved = val_loss < best_loss
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr, "steps": steps}
        )
        logger.info(
            "epoch %d: train %.4f, val %.4f, lr %.2e%s",
            epoch,
            train_loss,
            val_loss,
            lr,
            " (best)" if improved else "",
        )
        if improved:
            best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
            best = trainable_state(accelerator.unwrap_model(model))
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                logger.info("early stopping: no validation improvement for %d epochs", bad_epochs)
                break
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(copy.deepcopy(best), strict=False)  # restore the best epoch's adapter
    logger.info("restored the adapter of epoch %d (validation loss %.4f)", best_epoch, best_loss)
    return FitResult(best_loss, best_epoch, epoch, steps, time.perf_counter() - started, history)
