"""Training with early stopping on the validation split, on top of `accelerate`.

`accelerate` gives devices, processes (data parallel, DeepSpeed, FSDP, as its launcher is
configured) and mixed precision; the loop itself is the plain Adam-over-the-adapter recipe of the
released code with its learning-rate bookkeeping made clean (one scheduler, built only when chosen).

Runs survive faults: with a checkpoint folder, :func:`fit` writes a checkpoint (safetensors and
JSON, atomically; see :mod:`timellm.training.checkpoint`) at every epoch end and every
``checkpoint_every`` optimiser steps, and ``resume=True`` continues from it exactly where it
stopped — the same batches, dropout masks and learning rates as a run that was never interrupted.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from tqdm.auto import tqdm

from timellm.data.windows import WindowDataset
from timellm.evaluation.baselines import seasonal_naive_loss
from timellm.model.precision import ACCELERATE_PRECISION, PRECISION_OF_ACCELERATE, resolve_precision
from timellm.training import checkpoint as ckpt
from timellm.training.checkpoint import Progress, run_precision, trainable_state
from timellm.training.config import TrainConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOG_EVERY = 25  # batches between progress lines in the log when no progress bar is shown


class NonFiniteLossError(FloatingPointError):
    """Training diverged; the message names the step and the last good checkpoint, which is kept."""

    def __init__(self, message: str, step: int, epoch: int, checkpoint: Path | None):
        super().__init__(message)
        self.step, self.epoch, self.checkpoint = step, epoch, checkpoint


@dataclass
class FitResult:
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    steps: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    processes: int = 1  # data-parallel processes that trained
    replica_sha256: list[str] = field(default_factory=list)  # the final adapter's digest on each process
    precision: str = "fp32"  # what the run computed in (config precision auto resolved on the device)
    # the restored adapter's validation MSE and MAE (VALIDATION_SCORES), whatever the training loss
    val_scores: dict[str, float] = field(default_factory=dict)
    series_windows: int = 0  # training series-windows seen, on all processes together (the budget spent)
    stopped_by: str = "epochs"  # what ended the training: epochs, early stopping or time budget


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_deterministic_algorithms() -> None:
    """Switch this process to torch's deterministic kernels (cuBLAS needs its workspace setting too)."""
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def smape_elements(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Symmetric absolute percentage error of every element, in percent; 0/0 counts as 0."""
    denominator = pred.abs() + true.abs()
    ratio = (pred - true).abs() / denominator.clamp_min(1e-8)
    return 200.0 * torch.where(denominator > 0, ratio, torch.zeros_like(ratio))


def smape_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Symmetric MAPE in percent; 0/0 counts as 0."""
    return smape_elements(pred, true).mean()


LOSSES = {"mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss, "smape": smape_loss}
ELEMENT_LOSSES = {
    "mse": lambda pred, true: (pred - true).square(),
    "mae": lambda pred, true: (pred - true).abs(),
    "smape": smape_elements,
}
# what every long-term run reports on its validation windows after training, whatever its loss:
# runs trained with different losses are compared on these
VALIDATION_SCORES = ("mse", "mae")


def per_sample_loss(name: str, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(B, H, N) forecasts and targets -> (B,) losses; their mean is the batch loss."""
    return ELEMENT_LOSSES[name](pred, true).flatten(1).mean(1)


def make_adam(parameters, learning_rate: float) -> torch.optim.Adam:
    """Adam over the parameters that require grad, with torch's fused kernel where the device has one.

    The fused kernel does Adam's update in one pass per tensor instead of about seven (the
    mapping layer alone holds V' x V weights): the same update, a fraction of the time.
    """
    params = [p for p in parameters if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except RuntimeError as err:  # a device without the fused kernel: the per-tensor loop computes the same
        logger.debug("fused Adam unavailable (%s); using the per-tensor loop", err)
        return torch.optim.Adam(params, lr=learning_rate)


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


def make_accelerator(config: TrainConfig):
    """An ``Accelerator`` for ``config``: devices and processes from the launcher, precision from the run.

    The run's ``precision`` is what config.yaml records: ``auto`` resolves on the device
    (:func:`timellm.model.precision.resolve_precision`; :func:`run_precision` says to what) or
    takes the launcher's explicit mixed precision; a launcher that asks for another one than an
    explicit run setting (``accelerate launch --mixed_precision bf16`` with an fp32 run) is an
    error rather than a silent override.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if config.precision == "auto" and launched != "no":
        precision = PRECISION_OF_ACCELERATE.get(launched)  # the launcher's explicit choice
        if precision is None:
            raise ValueError(f"accelerate was launched with an unknown mixed precision {launched!r}")
        precision = resolve_precision(precision, _accelerator_device())
    else:
        precision = resolve_precision(config.precision, _accelerator_device())
    wanted = ACCELERATE_PRECISION[precision]
    if launched not in ("no", wanted):
        raise ValueError(
            f"accelerate was launched with mixed precision {launched!r} but the run's precision is "
            f"{config.precision!r}: set the training setting precision (auto, bf16, fp16 or fp32)"
        )
    _release_single_process_precision(wanted)
    accelerator = Accelerator(mixed_precision=wanted, gradient_accumulation_steps=config.grad_accum)
    if (
        precision == "fp16"
        and accelerator.scaler is None
        and accelerator.distributed_type != DistributedType.DEEPSPEED
    ):
        raise ValueError(
            f"precision fp16 needs a GPU (accelerate has no fp16 autocast on {accelerator.device.type}); "
            "use bf16 or fp32 here"
        )
    return accelerator


def _accelerator_device() -> torch.device:
    """The device kind the Accelerator about to be made will use, without making it: creating
    accelerate's process state here, before the Accelerator reads the launcher's settings
    (ACCELERATE_USE_CPU), would set it up without them."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    if PartialState._shared_state:  # already set up (a launcher script, an earlier run)
        return PartialState().device
    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _release_single_process_precision(wanted: str) -> None:
    """Let a single-process run choose its own precision after another run of the process chose
    another one: accelerate keeps one precision per process (its AcceleratorState) and refuses a
    second. Under a launcher (several processes) the launcher's state stays."""
    from accelerate.state import AcceleratorState, DistributedType

    state = AcceleratorState._shared_state
    if not state or state.get("_mixed_precision") in (None, wanted):
        return
    if state.get("distributed_type") != DistributedType.NO:
        return
    logger.info("switching this process's mixed precision from %s to %s", state["_mixed_precision"], wanted)
    AcceleratorState._reset_state()


class EpochSampler(Sampler[int]):
    """``num_samples`` distinct indices of ``size`` in an order fixed by (seed, epoch) alone.

    Deriving each epoch's permutation from the seed and the epoch number, rather than from a
    generator that runs on, lets a resumed run (and every process of a distributed one) draw the
    very same order without replaying earlier epochs. With ``num_samples < size`` every epoch
    sees a fresh random subset (the per-epoch cap ``max_train_windows``).
    """

    def __init__(self, size: int, num_samples: int, seed: int):
        self.size, self.num_samples, self.seed = size, min(num_samples, size), seed
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        entropy = np.random.SeedSequence([self.seed % 2**63, self.epoch]).generate_state(1, np.uint64)
        generator = torch.Generator().manual_seed(int(entropy[0] >> np.uint64(1)))
        return iter(torch.randperm(self.size, generator=generator)[: self.num_samples].tolist())


class WindowBatches:
    """Batches of a :class:`~timellm.data.windows.WindowDataset` (or an index subset of one) cut
    straight from its tensor: the items a ``DataLoader`` over ``order`` would collate, in the same
    order, without a Python call per item.

    For a small model (DLinear: two linear maps) fetching and collating items one by one costs far
    more than the step itself; a gather over the whole batch costs about what one item did.
    ``order`` is a sampler (iterated afresh every epoch) or None (every item once, in order).
    """

    def __init__(self, dataset: WindowDataset, batch_size: int, order: Sampler | None = None, indices=None):
        self.dataset, self.batch_size, self.order = dataset, batch_size, order
        self.indices = None if indices is None else torch.as_tensor(list(indices), dtype=torch.long)
        self.skip = 0
        d = dataset
        self._starts = torch.as_tensor(d.starts, dtype=torch.long)
        self._windows = d.data.unfold(0, d.seq_len + d.pred_len, 1)  # (windows, N, T + H), a view

    @classmethod
    def of(cls, dataset: Dataset, batch_size: int, order: Sampler | None = None) -> WindowBatches | None:
        """Batches of ``dataset`` when it is a WindowDataset or a Subset of one, else None."""
        if isinstance(dataset, WindowDataset):
            return cls(dataset, batch_size, order)
        if isinstance(dataset, Subset) and isinstance(dataset.dataset, WindowDataset):
            return cls(dataset.dataset, batch_size, order, dataset.indices)
        return None

    def __len__(self) -> int:
        count = len(self.order) if self.order is not None else len(self._items())
        return math.ceil(count / self.batch_size)

    def _items(self) -> torch.Tensor:
        return self.indices if self.indices is not None else torch.arange(len(self.dataset))

    def set_epoch(self, epoch: int) -> None:
        if self.order is not None and hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)

    def skip_first(self, batches: int) -> WindowBatches:
        """Resume mid-epoch: the next iteration starts after ``batches`` batches (once)."""
        self.skip = batches
        return self

    def gather(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item indices (B,) -> (past (B, T, C), future (B, H, C)) as the dataset's items stack."""
        d = self.dataset
        if d.channel_independent:
            window, channel = items // d.channels, items % d.channels
            values = self._windows[self._starts[window], channel].unsqueeze(-1)  # (B, T + H, 1)
        else:
            values = self._windows[self._starts[items]].transpose(1, 2).contiguous()  # (B, T + H, N)
        return values[:, : d.seq_len], values[:, d.seq_len :]

    def __iter__(self):
        items = self._items()
        if self.order is not None:
            items = items[torch.as_tensor(list(self.order), dtype=torch.long)]
        first, self.skip = self.skip * self.batch_size, 0
        for start in range(first, len(items), self.batch_size):
            yield self.gather(items[start : start + self.batch_size])


def evenly_spaced(dataset: Dataset, limit: int | None) -> Dataset:
    """A fixed, evenly spaced subset of at most ``limit`` items (all when None)."""
    n = len(dataset)
    if limit is None or limit >= n:
        return dataset
    return Subset(dataset, np.linspace(0, n - 1, limit).round().astype(int).tolist())


def seasonal_naive_val_loss(val_set: Dataset, pred_len: int, period: int, config: TrainConfig) -> float:
    """Seasonal naive's validation loss as :func:`fit` scores an adapter: on the same evenly spaced
    validation windows (``config.max_val_windows``) and in the training loss, so that it compares
    with a :class:`FitResult`'s ``best_val_loss``."""
    windows = evenly_spaced(val_set, config.max_val_windows)
    return seasonal_naive_loss(windows, pred_len, period, LOSSES[config.loss])


@dataclass(frozen=True)
class NormalizationChoice:
    """What choosing the normalisation weighed on validation (losses as :func:`fit` scores them):
    the RevIN adapter, seasonal naive, the correction to seasonal naive (None where none trained),
    and which adapter was ``kept`` (``revin`` or ``correction``)."""

    revin: float
    seasonal_naive: float
    correction: float | None = None
    kept: str = "revin"


def choose_normalization(
    revin_loss: float,
    val_set: Dataset,
    pred_len: int,
    period: int,
    config: TrainConfig,
    train_correction: Callable[[], tuple[T, float]],
) -> tuple[NormalizationChoice, T | None]:
    """Keep the RevIN adapter (validation loss ``revin_loss``) where it validates at or below seasonal
    naive (season ``period``); otherwise call ``train_correction``, which trains a correction to
    seasonal naive (normalisation ``seasonal``, a zero head, its untrained state competing as
    epoch 0) and returns it with its validation loss, and keep whichever validates better.

    Returns what was weighed (``kept`` says which adapter) and whatever ``train_correction``
    returned, None where no correction was trained. Only validation is read.
    """
    naive = seasonal_naive_val_loss(val_set, pred_len, period, config)
    if revin_loss <= naive:
        logger.info(
            "validation loss %.4f, at or below seasonal naive's %.4f (season %d): kept the RevIN adapter",
            revin_loss,
            naive,
            period,
        )
        return NormalizationChoice(revin_loss, naive), None
    logger.info(
        "validation loss %.4f, above seasonal naive's %.4f (season %d): training a correction to seasonal "
        "naive too (normalization=seasonal, period=%d, zero_head=true)",
        revin_loss,
        naive,
        period,
        period,
    )
    correction, corrected = train_correction()
    kept = "correction" if corrected < revin_loss else "revin"
    logger.info(
        "validation loss of the correction %.4f against the RevIN adapter's %.4f: kept the %s",
        corrected,
        revin_loss,
        "correction" if kept == "correction" else "RevIN adapter",
    )
    return NormalizationChoice(revin_loss, naive, corrected, kept), correction


def adapter_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of adapter weights (names, dtypes, shapes and bytes): equal iff the weights are."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(state[key].shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def replica_sha256(model: nn.Module, accelerator) -> list[str]:
    """The adapter's digest on every process, gathered (one entry when not distributed)."""
    own = adapter_sha256(trainable_state(model))
    if accelerator.num_processes == 1:
        return [own]
    raw = torch.tensor(list(bytes.fromhex(own)), dtype=torch.uint8, device=accelerator.device)
    gathered = accelerator.gather(raw.unsqueeze(0)).cpu()  # (processes, 32)
    return [bytes(row.tolist()).hex() for row in gathered]


def mean_loss(
    model: nn.Module, dataset: Dataset, config: TrainConfig, accelerator, desc: str = "validate"
) -> float:
    """Average loss over a dataset of (past, future) windows, each counted once across processes.

    Under several processes every one scores a shard; ``gather_for_metrics`` drops the windows
    that the sampler repeated to even out the shards.
    """
    return mean_losses(model, dataset, config, accelerator, (config.loss,), desc)[config.loss]


@torch.no_grad()
def mean_losses(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    accelerator,
    names: Sequence[str],
    desc: str = "validate",
) -> dict[str, float]:
    """:func:`mean_loss` of each loss in ``names`` (keys of :data:`LOSSES`), in one pass."""
    loader = _in_memory(dataset, config.eval_batch_size, config, accelerator)
    if loader is None:
        loader = accelerator.prepare_data_loader(
            DataLoader(
                dataset, batch_size=config.eval_batch_size, shuffle=False, num_workers=config.num_workers
            )
        )
    was_training = model.training
    model.eval()
    totals, count = dict.fromkeys(names, 0.0), 0
    for past, future in tqdm(
        loader, desc=desc, leave=False, disable=None if accelerator.is_local_main_process else True
    ):
        with accelerator.autocast():
            pred = model(past).float()
        for name in names:
            losses = accelerator.gather_for_metrics(per_sample_loss(name, pred, future))
            totals[name] += float(losses.double().sum())
        count += losses.numel()
    model.train(was_training)
    return {name: total / max(count, 1) for name, total in totals.items()}


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainConfig,
    accelerator=None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    validate_start: bool = False,
    monitor: Callable[[nn.Module], dict[str, float]] | None = None,
) -> FitResult:
    """Train the adapter with Adam; keep the best validation epoch and restore it at the end.

    ``val_set`` None trains all ``config.epochs`` epochs without validation and keeps the last
    (a refit on all the data once validation has chosen the epoch count).

    With ``checkpoint_dir``, a checkpoint is written there at every epoch end and every
    ``config.checkpoint_every`` optimiser steps (by the main process only), and ``resume``
    continues from it. A non-finite loss raises :class:`NonFiniteLossError` before anything
    else is written, so the last checkpoint stays the last good one.

    ``validate_start`` scores the adapter before any training too, as epoch 0: a model that starts
    as a baseline (a zero head over seasonal naive) is kept as it is where training only hurts.

    ``monitor`` is called with the model after each epoch's validation; what it returns (for
    example ``{"test_mse": ...}`` for a learning curve) is added to that epoch's history row. It
    only reports: nothing it returns chooses an epoch or stops training.
    """
    run = _prepare(model, train_set, val_set, config, accelerator, checkpoint_dir, resume)
    progress = run.progress
    if validate_start and run.validates and not resume:
        _validate_untrained(run)
    run.session_start = time.perf_counter()
    while progress.epoch <= config.epochs and not progress.stopped:
        epoch_start = time.perf_counter()
        train_loss = _train_epoch(run)
        _end_epoch(run, train_loss, _validate(run), monitor)
        _stop_at_time_budget(run, time.perf_counter() - epoch_start)
        progress.train_seconds += time.perf_counter() - run.session_start
        run.session_start = time.perf_counter()
        if run.checkpoint_dir is not None:
            _checkpoint(run)
    progress.train_seconds += time.perf_counter() - run.session_start
    return _restore_best(run)


# --------------------------------------------------------------------------------------------
# the steps of fit


@dataclass
class _Run:
    """What :func:`fit` prepares once and every step of its loop reads or moves on."""

    config: TrainConfig
    accelerator: Any
    model: nn.Module  # as accelerate prepared it (wrapped for processes and precision)
    unwrapped: nn.Module  # the model itself: what is checkpointed and restored
    adam: torch.optim.Adam  # the optimiser the scheduler steps and checkpoints hold
    optimizer: Any  # accelerate's wrapper of adam: what the loop steps
    scheduler: Any
    step_every: str  # "step" or "epoch": when the scheduler steps
    loader: Any  # WindowBatches or accelerate's DataLoader
    sampler: EpochSampler
    batches_per_epoch: int  # on each process, after sharding
    val_subset: Dataset | None  # fixed across epochs: comparable losses
    checkpoint_dir: Path | None
    progress: Progress
    best: dict[str, torch.Tensor]  # the best epoch's adapter so far
    last_good: str | None = None  # the last checkpoint written or resumed from, for error messages
    session_start: float = 0.0  # perf_counter when this process's share of train_seconds began
    stopped_by: str = "epochs"  # what ended the training: epochs, early stopping or time budget
    out_of_time: bool = False  # the time budget cut the epoch in progress short

    def spent(self) -> float:
        """Seconds of training so far, earlier sessions of a resumed run included."""
        return self.progress.train_seconds + time.perf_counter() - self.session_start

    @property
    def validates(self) -> bool:
        return self.val_subset is not None

    @property
    def training(self) -> ckpt.Training:
        """What a checkpoint saves the state of and restores into."""
        return ckpt.Training(self.unwrapped, self.adam, self.scheduler, self.accelerator, self.config)


def _prepare(model, train_set, val_set, config, accelerator, checkpoint_dir, resume) -> _Run:
    """Check the arguments, seed, and build what training needs: the accelerator, the sampler, Adam
    and its schedule, the batches and the validation windows; resumed from the checkpoint if asked."""
    if len(train_set) == 0:
        raise ValueError("the training split has no complete window; lower seq_len or pred_len")
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")
    if config.deterministic:
        use_deterministic_algorithms()
    seed_everything(config.seed)
    if accelerator is None:
        accelerator = make_accelerator(config)
    logger.info("precision %s (setting: %s)", run_precision(accelerator), config.precision)
    checkpoint_dir = _checkpointing(accelerator, checkpoint_dir, config, resume)

    per_epoch = min(config.max_train_windows or len(train_set), len(train_set))
    sampler = EpochSampler(len(train_set), per_epoch, config.seed)
    adam = make_adam(model.parameters(), config.learning_rate)
    loader = _in_memory(train_set, config.batch_size, config, accelerator, sampler)
    if loader is None:
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.num_workers,
            drop_last=False,
            # its own generator: starting an epoch must not draw from the global one (dropout's)
            generator=torch.Generator().manual_seed(config.seed),
        )
        model, optimizer, loader = accelerator.prepare(model, adam, loader)
    else:
        model, optimizer = accelerator.prepare(model, adam)
    batches_per_epoch = len(loader)
    scheduler, step_every = make_scheduler(adam, config, math.ceil(batches_per_epoch / config.grad_accum))
    val_subset = evenly_spaced(val_set, config.max_val_windows) if val_set is not None else None
    unwrapped = accelerator.unwrap_model(model)
    run = _Run(
        config=config,
        accelerator=accelerator,
        model=model,
        unwrapped=unwrapped,
        adam=adam,
        optimizer=optimizer,
        scheduler=scheduler,
        step_every=step_every,
        loader=loader,
        sampler=sampler,
        batches_per_epoch=batches_per_epoch,
        val_subset=val_subset,
        checkpoint_dir=checkpoint_dir,
        progress=Progress(),
        best=trainable_state(unwrapped),
    )
    if resume:
        run.progress, run.best = ckpt.restore_training_state(checkpoint_dir, run.training)
        run.last_good = ckpt.describe(checkpoint_dir, run.progress)
        logger.info("resumed from %s", run.last_good)
    return run


def _validate_untrained(run: _Run) -> None:
    """Score the adapter before any training, as epoch 0 (``validate_start``)."""
    progress = run.progress
    scores = _validation_scores(run)
    progress.best_loss = scores[run.config.loss]
    progress.history.append(
        {"epoch": 0, "val_loss": progress.best_loss, "steps": 0, **_score_columns(scores)}
    )
    logger.info("epoch 0 (untrained): val %.4f", progress.best_loss)


def _train_epoch(run: _Run) -> float:
    """Train the epoch in progress from where it stands (a resumed run mid-epoch skips the batches
    it has trained); returns its mean training loss over every process."""
    progress, accelerator = run.progress, run.accelerator
    epoch = progress.epoch
    if isinstance(run.loader, WindowBatches):
        batches = run.loader.skip_first(progress.batch)
    else:
        batches = accelerator.skip_first_batches(run.loader, progress.batch) if progress.batch else run.loader
    # accelerate's loaders re-number epochs on every iteration (their own count, which a
    # resumed run restarts): give them ours, and the sampler too, wherever it sits
    batches.set_epoch(epoch)
    run.sampler.set_epoch(epoch)
    run.model.train()
    bar = tqdm(
        batches,
        desc=f"epoch {epoch}/{run.config.epochs}",
        initial=progress.batch,
        total=run.batches_per_epoch,
        disable=None if accelerator.is_local_main_process else True,
    )
    epoch_start, seen_before = time.perf_counter(), progress.seen
    for past, future in bar:
        _train_step(run, past, future)
        if run.config.time_budget and run.spent() >= run.config.time_budget:
            run.out_of_time = True  # the epoch ends here: it is validated, and the best epoch kept
            break
        rate = (progress.seen - seen_before) / max(time.perf_counter() - epoch_start, 1e-9)
        _show_progress(run, bar, rate)
    train_loss = _epoch_train_loss(progress, accelerator)
    if accelerator.num_processes > 1:
        _check_replicas(run.unwrapped, accelerator, progress)
    return train_loss


def _train_step(run: _Run, past: torch.Tensor, future: torch.Tensor) -> None:
    """One batch: forward, backward and (every ``grad_accum`` batches) an optimiser step, with the
    per-step schedule and the ``checkpoint_every`` checkpoint that falls due."""
    progress, accelerator, config = run.progress, run.accelerator, run.config
    with accelerator.accumulate(run.model):
        with accelerator.autocast():
            pred = run.model(past)
        loss = LOSSES[config.loss](pred.float(), future)
        _stop_unless_finite(loss, accelerator, progress, run.checkpoint_dir, run.last_good)
        accelerator.backward(loss)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    progress.batch += 1
    progress.running += loss.item() * past.shape[0]
    progress.seen += past.shape[0]
    if accelerator.sync_gradients:
        progress.global_step += 1
        if run.step_every == "step":
            run.scheduler.step()
        due = config.checkpoint_every and progress.global_step % config.checkpoint_every == 0
        # the epoch's last batch is followed by the epoch-end checkpoint anyway
        if run.checkpoint_dir is not None and due and progress.batch < run.batches_per_epoch:
            _checkpoint(run)


def _show_progress(run: _Run, bar: tqdm, rate: float) -> None:
    """The running loss, learning rate and series per second on the bar, or in the log every
    LOG_EVERY batches where no bar is shown."""
    progress = run.progress
    status = {
        "loss": f"{progress.running / max(progress.seen, 1):.4f}",
        "lr": f"{run.optimizer.param_groups[0]['lr']:.2e}",
        "series_s": f"{rate:.1f}",
    }
    bar.set_postfix(status)
    if bar.disable and run.accelerator.is_local_main_process and progress.batch % LOG_EVERY == 0:
        # no bar when the output is not a terminal (logs, CI): progress goes to the log
        logger.info(
            "epoch %d batch %d/%d: %s",
            progress.epoch,
            progress.batch,
            run.batches_per_epoch,
            ", ".join(f"{k} {v}" for k, v in status.items()),
        )


def _validation_scores(run: _Run) -> dict[str, float]:
    """The adapter's validation scores as it stands, in one pass: the training loss (the one that
    chooses the epoch) and :data:`VALIDATION_SCORES` (what the kept epoch reports)."""
    names = tuple(dict.fromkeys((run.config.loss, *VALIDATION_SCORES)))
    return mean_losses(run.model, run.val_subset, run.config, run.accelerator, names)


def _score_columns(scores: dict[str, float]) -> dict[str, float]:
    """The history columns of an epoch's :data:`VALIDATION_SCORES` (``val_mse``, ``val_mae``)."""
    return {f"val_{name}": scores[name] for name in VALIDATION_SCORES}


def _validate(run: _Run) -> dict[str, float]:
    """The epoch's validation scores (empty without validation); a non-finite loss stops training."""
    if not run.validates:
        return {}
    progress = run.progress
    scores = _validation_scores(run)
    val_loss = scores[run.config.loss]
    # as a non-finite training loss: never select such an epoch
    if not math.isfinite(val_loss):
        kept = f"the last good checkpoint is {run.last_good}" if run.last_good else "no checkpoint kept"
        message = (
            f"non-finite validation loss ({val_loss:g}) after epoch {progress.epoch} "
            f"(step {progress.global_step}); training stopped ({kept}): "
            "the adapter diverged, or the data's scale overflows"
        )
        logger.error(message)
        raise NonFiniteLossError(
            message, progress.global_step, progress.epoch, run.checkpoint_dir if run.last_good else None
        )
    return scores


def _end_epoch(run: _Run, train_loss: float, val_scores: dict[str, float], monitor) -> None:
    """The epoch's bookkeeping: the per-epoch schedule step, its history row (with its validation
    scores and what ``monitor`` reports), the best adapter so far, early stopping, and the next
    epoch's counters."""
    progress, epoch = run.progress, run.progress.epoch
    val_loss = val_scores[run.config.loss] if run.validates else math.nan
    lr = run.optimizer.param_groups[0]["lr"]
    if run.step_every == "epoch":
        run.scheduler.step()
    improved = val_loss < progress.best_loss if run.validates else True  # without validation: the last
    seen_so_far = progress.history[-1].get("series_windows", 0) if progress.history else 0
    progress.history.append(
        {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": lr,
            "steps": progress.global_step,
            "series_windows": int(seen_so_far + progress.seen * run.accelerator.num_processes),
            **(_score_columns(val_scores) if run.validates else {}),
            **(_monitored(monitor, run.model, run.accelerator) if monitor is not None else {}),
        }
    )
    logger.info(
        "epoch %d: train %.4f, val %s, lr %.2e%s",
        epoch,
        train_loss,
        f"{val_loss:.4f}" if run.validates else "not run",
        lr,
        " (best)" if improved and run.validates else "",
    )
    if improved:
        progress.best_loss, progress.best_epoch, progress.bad_epochs = val_loss, epoch, 0
        run.best = trainable_state(run.unwrapped)
    else:
        progress.bad_epochs += 1
        if progress.bad_epochs >= run.config.patience:
            logger.info("early stopping: no validation improvement for %d epochs", progress.bad_epochs)
            progress.stopped, run.stopped_by = True, "early stopping"
    progress.epoch, progress.batch, progress.running, progress.seen = epoch + 1, 0, 0.0, 0


def _stop_at_time_budget(run: _Run, epoch_seconds: float) -> None:
    """Stop where the time budget is spent, or too little of it is left for another epoch like the
    last; the best epoch so far is what training hands back."""
    budget, progress = run.config.time_budget, run.progress
    if progress.stopped or not budget:
        return
    spent = run.spent()
    if run.out_of_time or spent + epoch_seconds > budget:
        logger.info(
            "time budget: %.0f of %g s spent after epoch %d%s; the best epoch so far (%d) is kept",
            spent,
            budget,
            progress.epoch - 1,
            " (cut short)" if run.out_of_time else ", too little left for another",
            progress.best_epoch,
        )
        progress.stopped, run.stopped_by = True, "time budget"


def _checkpoint(run: _Run) -> None:
    """Write the training state (refused for non-finite weights); it becomes the last good one."""
    _stop_unless_finite_weights(run.unwrapped, run.progress, run.checkpoint_dir)
    ckpt.save_training_state(run.checkpoint_dir, run.training, run.progress, run.best)
    run.last_good = ckpt.describe(run.checkpoint_dir, run.progress)


def _kept_scores(run: _Run) -> dict[str, float]:
    """The kept adapter's :data:`VALIDATION_SCORES`: its epoch's history row has them, from the
    pass that chose it; a row without them (a checkpoint written before the rows carried them) is
    scored again."""
    row = next((row for row in run.progress.history if row.get("epoch") == run.progress.best_epoch), {})
    if all(f"val_{name}" in row for name in VALIDATION_SCORES):
        return {name: row[f"val_{name}"] for name in VALIDATION_SCORES}
    logger.info("scoring the kept adapter on validation again: its epoch's record has no MSE and MAE")
    return mean_losses(
        run.model, run.val_subset, run.config, run.accelerator, VALIDATION_SCORES, "validation scores"
    )


def _restore_best(run: _Run) -> FitResult:
    """Load the best epoch's adapter back, with its validation scores, and say what training did."""
    progress, accelerator, model = run.progress, run.accelerator, run.model
    run.unwrapped.load_state_dict(copy.deepcopy(run.best), strict=False)  # the best epoch's adapter
    val_scores = _kept_scores(run) if run.validates else {}
    # prepare() wrapped the model's forward in the run's autocast: the model handed back computes
    # in its own precision again, as the same adapter loaded from disk does
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if run.validates:
        logger.info(
            "restored the adapter of epoch %d (validation loss %.4f)", progress.best_epoch, progress.best_loss
        )
    else:
        logger.info("kept the adapter of the last epoch, %d (no validation)", progress.best_epoch)
    digests = replica_sha256(run.unwrapped, accelerator)
    if accelerator.num_processes > 1:
        logger.info(
            "adapter identical on all %d processes after %d steps (sha256 %s)",
            accelerator.num_processes,
            progress.global_step,
            digests[0][:16],
        )
    return FitResult(
        progress.best_loss,
        progress.best_epoch,
        progress.epoch - 1,
        progress.global_step,
        progress.train_seconds,
        progress.history,
        accelerator.num_processes,
        digests,
        run_precision(accelerator),
        val_scores,
        int(progress.history[-1].get("series_windows", 0)) if progress.history else 0,
        "early stopping" if progress.stopped and run.stopped_by == "epochs" else run.stopped_by,
    )


# --------------------------------------------------------------------------------------------
# helpers of the loop


def _monitored(
    monitor: Callable[[nn.Module], dict[str, float]], model: nn.Module, accelerator
) -> dict[str, float]:
    """What ``monitor`` reports of the model after an epoch, computed in eval mode without gradients,
    in the run's precision (as validation and the final test: fp32 would cost bf16's time several
    times over on a CPU with native bf16); the model goes back to training mode."""
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        values = {name: float(value) for name, value in monitor(model).items()}
    model.train()
    return values


def _in_memory(dataset: Dataset, batch_size: int, config: TrainConfig, accelerator, order=None):
    """:class:`WindowBatches` where they serve: one process, no loader workers asked for."""
    if accelerator.num_processes > 1 or config.num_workers:
        return None
    batches = WindowBatches.of(dataset, batch_size, order)
    if batches is not None and accelerator.device.type != "cpu":
        return None  # accelerate's loader moves batches to the device
    return batches


def _checkpointing(accelerator, checkpoint_dir: Path | None, config: TrainConfig, resume: bool):
    """The checkpoint folder to use; None under DeepSpeed/FSDP, whose optimiser state is sharded."""
    from accelerate.utils import DistributedType

    sharded = (DistributedType.DEEPSPEED, DistributedType.FSDP)
    if checkpoint_dir is None or accelerator.distributed_type not in sharded:
        return checkpoint_dir
    if resume or config.checkpoint_every:
        raise ValueError(
            f"checkpoints and resuming need the whole optimiser state on every process, which "
            f"{accelerator.distributed_type.value} shards: train data parallel (accelerate launch --multi_gpu)"
        )
    logger.warning(
        "no checkpoints under %s (its optimiser state is sharded): this run cannot be resumed",
        accelerator.distributed_type.value,
    )
    return None


def _stop_unless_finite(loss, accelerator, progress: Progress, checkpoint_dir, last_good) -> None:
    """Raise NonFiniteLossError on every process as soon as one of them sees a non-finite loss."""
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:  # all must stop together, or the others wait forever
        finite = accelerator.gather(finite).min().reshape(1)
    if bool(finite.item()):
        return
    step = progress.global_step + 1
    if checkpoint_dir is None:
        kept = "no checkpoint folder was given"
    elif last_good is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last good checkpoint is {last_good}"
    message = (
        f"non-finite training loss ({float(loss.detach()):g}) at step {step} "
        f"(epoch {progress.epoch}, batch {progress.batch + 1}); training stopped, {kept}"
    )
    logger.error(message)
    raise NonFiniteLossError(message, step, progress.epoch, checkpoint_dir if last_good else None)


def _stop_unless_finite_weights(model: nn.Module, progress: Progress, directory: Path) -> None:
    """A finite loss can still leave inf/nan weights behind: never checkpoint them."""
    current = trainable_state(model)
    bad = [k for k, v in current.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        message = (
            f"non-finite adapter weights ({', '.join(bad[:3])}) after step {progress.global_step}; "
            f"training stopped, the last good checkpoint {directory} is kept"
        )
        logger.error(message)
        raise NonFiniteLossError(message, progress.global_step, progress.epoch, directory)


def _epoch_train_loss(progress: Progress, accelerator) -> float:
    if accelerator.num_processes == 1:
        return progress.running / max(progress.seen, 1)
    sums = torch.tensor([progress.running, progress.seen], dtype=torch.float64, device=accelerator.device)
    running, seen = accelerator.reduce(sums, "sum").tolist()
    return running / max(seen, 1)


def _check_replicas(model: nn.Module, accelerator, progress: Progress) -> None:
    digests = replica_sha256(model, accelerator)
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"the adapter differs between processes after step {progress.global_step}: "
            f"sha256 {', '.join(d[:12] for d in digests)}; data-parallel training is out of sync"
        )
