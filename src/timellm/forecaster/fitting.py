"""Training a forecaster's adapters on a user's series: the windows (each series standardised by
its training part, its last ``val`` steps held out), the step budget as epochs, an ensemble's
members on one shared backbone, and, where the adapter validates worse than seasonal naive, a
correction to seasonal naive trained too (:class:`AdapterTraining`)."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
from torch.utils.data import ConcatDataset

from timellm.backbones.loading import Backbone
from timellm.data.errors import SeriesLengthError
from timellm.data.frequency import season_length
from timellm.data.series import Series, SeriesSet
from timellm.data.windows import WindowDataset
from timellm.model.adapter import TimeLLMBase
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.memory import MemoryBatch, MemoryPlan, plan_memory, refuse_what_cannot_fit
from timellm.model.variants import build_model
from timellm.training.loop import FitResult, TrainConfig, choose_normalization, fit

logger = logging.getLogger(__name__)

# validation windows that early stopping reads at most (about; at least one per series): enough to
# rank a few epochs; the intervals read up to MAX_CALIBRATION_WINDOWS
MAX_EARLY_STOPPING_WINDOWS = 500
EVALUATION_ROUNDS = 4  # a step budget is split into at least this many epochs (validation rounds)
# training to the validation optimum (no step budget): an epoch holds at most EPOCH_STEPS optimiser
# steps (a fresh random subset of the windows where a pass is longer), so that validation, early
# stopping and the time budget act every few seconds to minutes, whatever the data's size
EPOCH_STEPS = 25


class AdapterTraining:
    """One fit: ``run(data, val)`` trains the adapter(s) of ``config`` for ``max_steps`` optimiser
    steps (shared by ``ensemble`` members of consecutive seeds), and with ``choose_normalization``
    a correction to seasonal naive where the adapter validates worse than seasonal naive."""

    def __init__(
        self,
        config: TimeLLMConfig,
        train_config: TrainConfig,
        execution: ExecutionSettings,
        *,
        max_steps: int | None,
        ensemble: int,
        choose_normalization: bool,
        backbone: Backbone | None = None,
        validate_start: bool = False,
        time_budget: float | None = None,
    ):
        self.config = config
        self.train_config = train_config
        self.execution = execution
        self.max_steps = max_steps
        self.time_budget = time_budget  # seconds for the whole fit, shared by an ensemble's members
        self.ensemble = ensemble
        self.choose_normalization = choose_normalization
        self.backbone = backbone  # an already loaded backbone to train on (else loaded once here)
        # the untrained adapters compete with their epochs (fit's validate_start); set once a
        # correction to seasonal naive is kept, so that refits of it train the same way
        self.validate_start = validate_start
        self.models: list[TimeLLMBase] = []
        self.results: list[FitResult] = []

    def run(
        self, data: SeriesSet, val: int, context: str = ""
    ) -> tuple[TimeLLMConfig, list[TimeLLMBase], list[FitResult], list[Series]]:
        """Train on ``data``, the last ``val`` steps of each series held out: (the config kept, its
        adapters, their training, the series whose held-out windows calibrate the intervals)."""
        c = self.config
        t, h = c.seq_len, c.pred_len
        train_sets, val_sets, held_out = [], [], []
        for s in data:
            if len(s) < t + h:
                logger.info(
                    "series %r: %d rows %s, too few for a window; not trained on", s.id, len(s), context
                )
                continue
            train_rows = len(s) - val
            mean, std = _scaling(s.values[:train_rows] if train_rows > 0 else s.values)
            scaled = ((s.values - mean) / std).astype(np.float32)[:, None]  # (L, 1)
            if train_rows >= t + h:
                train_sets.append(WindowDataset(scaled[:train_rows], t, h))
            else:
                logger.info("series %r: too short for training windows; used for validation only", s.id)
            val_sets.append(scaled[-(t + val) :])
            held_out.append(s)
        if not train_sets:  # the callers' length checks make this unreachable; never train on nothing
            raise SeriesLengthError(f"no series is long enough to train on {context}".strip())
        # early stopping reads at most about MAX_EARLY_STOPPING_WINDOWS validation windows, evenly spaced in
        # every series (at least one each): it compares a few epochs, and with thousands of series x 20
        # windows every epoch's validation would cost more than the training; the intervals calibrate
        # on a larger sample (the forecaster's _conformity_scores)
        per_series = max(1, math.ceil(MAX_EARLY_STOPPING_WINDOWS / len(val_sets)))
        val_sets = [WindowDataset(part, t, h, max_windows=per_series) for part in val_sets]
        train_set, val_set = ConcatDataset(train_sets), ConcatDataset(val_sets)
        members = self.ensemble
        steps = None if self.max_steps is None else max(self.max_steps // members, 1)
        seconds = None if self.time_budget is None else self.time_budget / members
        train_config = budget(self.train_config, steps, len(train_set), seconds)
        # refuse what cannot fit before the backbone is loaded: a training batch, and a forecast batch
        refuse_what_cannot_fit(fit_plans(c, self.execution, train_config))
        describe = {
            "windows": len(train_set),
            "series": len(train_sets),
            "val_windows": len(val_set),
            "val": val,
            "steps": steps or 0,
        }
        self.models, self.results = self._train(
            c,
            train_set,
            val_set,
            train_config,
            members,
            describe,
            backbone=self.backbone,
            validate_start=self.validate_start,
        )
        period = self._correction_period(data)
        if period:
            self._choose_normalization(c, period, train_set, val_set, train_config, members)
        return self.config, self.models, self.results, held_out

    def _train(
        self,
        config: TimeLLMConfig,
        train_set: ConcatDataset,
        val_set: ConcatDataset,
        train_config: TrainConfig,
        members: int,
        describe: dict[str, int] | None = None,
        backbone: Backbone | None = None,
        validate_start: bool = False,
    ) -> tuple[list[TimeLLMBase], list[FitResult]]:
        """Train ``members`` adapters of ``config`` with consecutive seeds on one shared backbone
        (loaded here unless given); ``describe`` announces the training once it is loaded;
        ``validate_start``: the untrained adapters compete with their epochs (see :func:`fit`)."""
        c = config
        models, results = [], []
        for k in range(members):
            member = train_config.replace(seed=train_config.seed + k)
            model = build_model(
                c, self.execution, seed=member.seed, backbone=backbone, precision=member.precision
            )
            if k == 0 and describe:  # the backbone loaded and the prompt checked against it: training starts
                logger.info(
                    "training on %d windows of %d series (validation: %d windows, the last %d steps of "
                    "each), %s%s",
                    describe["windows"],
                    describe["series"],
                    describe["val_windows"],
                    describe["val"],
                    _budget_note(train_config, describe["steps"]),
                    _ensemble_note(members, train_config.seed, describe["steps"]),
                )
            backbone = model.backbone
            results.append(fit(model, train_set, val_set, member, validate_start=validate_start))
            models.append(model)
        return models, results

    def _correction_period(self, data: SeriesSet) -> int | None:
        """The season of a correction to seasonal naive worth trying: with ``choose_normalization``
        and the default RevIN, the season that every series shares (from its frequency), when it
        is above one step and fits in the look-back; else None."""
        c = self.config
        if not self.choose_normalization:
            return None
        periods = {season_length(s.freq) for s in data}
        if len(periods) != 1:
            return None
        period = periods.pop()
        return period if c.correctable(period) else None

    def _choose_normalization(
        self,
        config: TimeLLMConfig,
        period: int,
        train_set: ConcatDataset,
        val_set: ConcatDataset,
        train_config: TrainConfig,
        members: int,
    ) -> None:
        """Where the trained adapters do not beat seasonal naive on the validation windows, also
        train a correction to it (normalisation ``seasonal``, a zero head: the untrained forecast is
        seasonal naive, and it stays where training does not improve on it on validation) and keep
        whichever validates better."""
        alternative = config.seasonal_correction(period)

        def train_correction() -> tuple[tuple[list[TimeLLMBase], list[FitResult]], float]:
            models, results = self._train(
                alternative,
                train_set,
                val_set,
                train_config,
                members,
                backbone=self.models[0].backbone,
                validate_start=True,
            )
            return (models, results), float(np.mean([r.best_val_loss for r in results]))

        trained = float(np.mean([r.best_val_loss for r in self.results]))
        choice, corrected = choose_normalization(
            trained, val_set, config.pred_len, period, train_config, train_correction
        )
        if choice.kept == "correction":
            self.config, (self.models, self.results) = alternative, corrected
            self.validate_start = True


def fit_plans(
    config: TimeLLMConfig, execution: ExecutionSettings, train_config: TrainConfig
) -> list[MemoryPlan]:
    """The memory plan of a fit (nothing refused here): a training step of ``batch_size`` windows and
    a forecast batch of ``eval_batch_size`` windows, one series each."""
    batches = (
        MemoryBatch(True, train_config.batch_size, 1, "train_config.batch_size"),
        MemoryBatch(False, train_config.eval_batch_size, 1, "train_config.eval_batch_size"),
    )
    return plan_memory(config, execution, precision=train_config.precision, batches=batches)


def forecast_plans(
    config: TimeLLMConfig, execution: ExecutionSettings, train_config: TrainConfig
) -> list[MemoryPlan]:
    """The memory plan of forecasting with a trained adapter of ``config``: a batch of
    ``eval_batch_size`` windows; its layers are the adapter's (fewer is no option)."""
    batch = MemoryBatch(False, train_config.eval_batch_size, 1, "train_config.eval_batch_size")
    return plan_memory(
        config, execution, precision=train_config.precision, batches=[batch], layers_fixed=True
    )


def budget(
    config: TrainConfig, max_steps: int | None, windows: int, time_budget: float | None = None
) -> TrainConfig:
    """The training settings of a fit on ``windows`` training windows.

    With ``max_steps``, a step budget becomes epochs: every epoch ends with a validation, so the
    budget is split into at least :data:`EVALUATION_ROUNDS` epochs (early stopping and the
    best-epoch restore need several) and into more when one pass over the windows takes fewer
    steps than that; an epoch is a fresh random subset of the windows when it is shorter than a
    pass. The steps run are at most ``max_steps`` and at least ``max_steps - epochs + 1``.

    Without (``None``), the fit trains to its validation optimum: up to ``config.epochs`` epochs
    of at most :data:`EPOCH_STEPS` steps each, until ``config.patience`` epochs bring no
    validation improvement or ``time_budget`` seconds have passed (``TrainConfig.time_budget``).
    """
    per_step = config.batch_size * config.grad_accum  # windows per optimiser step
    if max_steps is None:
        cap = EPOCH_STEPS * per_step
        return replace(config, max_train_windows=cap if cap < windows else None, time_budget=time_budget)
    steps_per_pass = math.ceil(windows / per_step)
    epochs = min(max_steps, max(EVALUATION_ROUNDS, math.ceil(max_steps / steps_per_pass)))
    per_epoch = (max_steps // epochs) * per_step  # at most one pass
    return replace(
        config,
        epochs=epochs,
        max_train_windows=per_epoch if per_epoch < windows else None,
        time_budget=time_budget,
    )


def _budget_note(config: TrainConfig, steps: int | None) -> str:
    """The training log's words on the budget: what ends the training."""
    cap = config.max_train_windows
    epochs = f"{config.epochs} epoch(s){f' of <= {cap} windows' if cap else ''}"
    limit = f", within a time budget of {config.time_budget:g} s" if config.time_budget else ""
    if steps:
        return f"a budget of {steps} optimiser steps in {epochs}{limit}"
    return (
        f"to the validation optimum: up to {epochs}, early stopping after {config.patience} "
        f"epoch(s) without improvement{limit}"
    )


def _ensemble_note(members: int, seed: int, steps: int) -> str:
    """The training log's words on an ensemble ("" for one adapter)."""
    if members == 1:
        return ""
    each = f", {steps} steps each" if steps else ""
    return f"; an ensemble of {members} adapters (seeds {seed} to {seed + members - 1}{each}), their forecasts averaged"


def _scaling(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a series part; a constant part gets std 1."""
    mean, std = float(np.mean(values)), float(np.std(values))
    return mean, std if std > 0 else 1.0
