"""Is the language model useful here? Time-LLM beside its ablations and classic baselines.

The question of Tan et al. (NeurIPS 2024), asked of the user's own data: every variant is trained
by :func:`timellm.training.fit` (the same seed, hence the same initialisation draws and the same
training windows in the same order), tested on the same test windows with the same metrics, timed,
and set against full Time-LLM.

Two kinds of budget. An equal budget (``preset``, ``cpu``, ``WxE``) gives every variant the same
training settings. ``converged`` lets every variant train to its own validation optimum: each
follows its :class:`Recipe` (batch, epochs, early stopping), and where the recipe names several
learning rates the one with the best validation loss of the first seed is kept for every seed
(``tuning.csv``); the test split is never looked at before that choice.

Resumable: one row per variant and seed is appended to ``ablation_seeds.csv`` as soon as it is
scored; run again with the same settings, the ablation skips what is there.

Variants are data, not forks of the model: a Time-LLM ablation is a set of :class:`TimeLLMConfig`
overrides, a baseline a factory of a module with the same ``forward(past_values (B, T, N)) ->
(B, H, N)``, a naive reference a function of the look-back window.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from timellm.backbones.loading import Backbone, load_backbone
from timellm.data.benchmarks import Splits
from timellm.data.sources import DataSource
from timellm.data.windows import WindowDataset
from timellm.evaluation.baselines import DLinear, PatchTST, last_value_forecast, seasonal_naive_forecast
from timellm.evaluation.metrics import mae, mse
from timellm.evaluation.scoring import naive_references, predict_windows
from timellm.evaluation.statistical import forecast_windows
from timellm.experiments.folders import (
    CHECKPOINT_DIR,
    RUN_CONFIG,
    RunFolder,
    as_recorded,
    cpu_model,
    read_run_record,
)
from timellm.experiments.presets import Preset, execution_dict
from timellm.experiments.tables import markdown_table, plain_cell
from timellm.model.adapter import TimeLLMBase
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.memory import refuse_what_cannot_fit
from timellm.model.precision import LOW_PRECISIONS
from timellm.model.variants import build_model
from timellm.training.checkpoint import find_checkpoint, remove_checkpoint
from timellm.training.loop import TrainConfig, fit, seed_everything

logger = logging.getLogger(__name__)

FULL = "time-llm"
TABLE_CSV = "ablation.csv"
TABLE_MD = "ablation.md"
SEEDS_CSV = "ablation_seeds.csv"  # one row per variant and seed, appended as each finishes
TUNING_CSV = "tuning.csv"  # the learning rates tried on validation (converged budget) and the choice


@dataclass(frozen=True)
class Variant:
    """One row of the table: a Time-LLM setting, a trained baseline or a naive reference."""

    name: str  # the key on the command line and in the CSV
    label: str  # the name the papers use
    about: str  # what it is, in a few words
    overrides: dict[str, Any] | None = None  # TimeLLMConfig settings: an ablation of our model
    baseline: Callable[[TimeLLMConfig], nn.Module] | None = None  # a trained baseline's factory
    naive: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None  # (past, pred_len, period)
    recipe: str = "small"  # how it trains under the converged budget: a key of RECIPES
    # an ablation of one part of another variant: under the converged budget it trains at the rate
    # that variant chose on validation (one thing changed at a time), instead of searching its own
    rate_of: str | None = None

    @property
    def kind(self) -> str:
        if self.overrides is not None:
            return "time-llm"
        return "baseline" if self.baseline is not None else "naive"


def _patchtst(c: TimeLLMConfig) -> nn.Module:
    # the paper's ETTh1 sizes (the wrapper's defaults) on Time-LLM's own patching
    return PatchTST(c.seq_len, c.pred_len, patch_len=c.patch_len, stride=c.stride)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            FULL, "Time-LLM", "prompt + reprogramming + frozen pretrained LLM", overrides={}, recipe="llm"
        ),
        Variant(
            "random-llm",
            "random-init LLM",
            "same LLM architecture, fresh random weights, frozen",
            overrides={"llm": "random"},
            recipe="llm",
            rate_of=FULL,
        ),
        Variant(
            "minilm",
            "MiniLM backbone",
            "all-MiniLM-L6-v2 (BERT encoder, hidden 384) in place of the preset's LLM",
            overrides={"backbone": "minilm-l6"},
            recipe="llm",
            rate_of=FULL,
        ),
        Variant(
            "no-prompt",
            "w/o prompt",
            "no Prompt-as-Prefix",
            overrides={"use_prompt": False},
            recipe="llm",
            rate_of=FULL,
        ),
        Variant(
            "no-statistics",
            "w/o input statistics",
            "prompt without min/max/median/trend/lags",
            overrides={"prompt_statistics": False},
            recipe="llm",
            rate_of=FULL,
        ),
        Variant("no-llm", "w/o LLM", "patch embedding -> linear head", overrides={"llm": "none"}),
        Variant(
            "llm2attn", "LLM2Attn", "LLM -> 1 self-attention layer (trained)", overrides={"llm": "attention"}
        ),
        Variant(
            "llm2trsf",
            "LLM2Trsf",
            "LLM -> 1 transformer encoder layer (trained)",
            overrides={"llm": "transformer"},
        ),
        Variant(
            "dlinear",
            "DLinear",
            "trend/seasonal decomposition, two linear maps",
            baseline=lambda c: DLinear(c.seq_len, c.pred_len),
        ),
        Variant("patchtst", "PatchTST", "transformers' PatchTST, 3 layers", baseline=_patchtst),
        Variant(
            "last-value",
            "last value",
            "repeat the last observation",
            naive=lambda past, h, period: last_value_forecast(past, h),
        ),
        Variant("seasonal-naive", "seasonal naive", "repeat the last season", naive=seasonal_naive_forecast),
    ]
}


def _statistical(model: str) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """A statsforecast model as a reference: fitted on each window's look-back, channel by channel."""

    def forecast(past: torch.Tensor, pred_len: int, period: int) -> torch.Tensor:
        w, t, n = past.shape
        histories = list(past.permute(0, 2, 1).reshape(w * n, t).double().numpy())  # (W*N) x (T,)
        labels = [f"test window {i // n}, channel {i % n}" for i in range(w * n)]
        result = forecast_windows(histories, pred_len, [period] * (w * n), (model,), labels=labels)[model]
        return torch.as_tensor(result.mean).reshape(w, n, pred_len).permute(0, 2, 1)  # (W, H, N)

    return forecast


# statsforecast's models on the same test windows (each fitted on the window's look-back only, as
# every variant sees it): on request only (--variants autoets,...), since one fit per window and
# channel takes from a tenth of a second (AutoTheta) to minutes (AutoARIMA at a daily season of hours)
STATISTICAL_VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            "autoets", "AutoETS", "statsforecast AutoETS on each look-back", naive=_statistical("AutoETS")
        ),
        Variant(
            "autotheta",
            "AutoTheta",
            "statsforecast AutoTheta on each look-back",
            naive=_statistical("AutoTheta"),
        ),
        Variant(
            "autoarima",
            "AutoARIMA",
            "statsforecast AutoARIMA on each look-back",
            naive=_statistical("AutoARIMA"),
        ),
    ]
}

# Named training budgets: TrainConfig overrides on top of the preset's settings. "WxE" (e.g.
# 1500x2) means W training series-windows per epoch for E epochs. Test windows are not a budget:
# the test split is evaluated whole unless the preset's run setting max_test_windows says otherwise.
BUDGETS: dict[str, dict[str, Any]] = {
    "preset": {},  # the preset's own epochs and caps
    "cpu": {"epochs": 1, "max_train_windows": 960, "max_val_windows": 140},  # SmolLM2 on 2 cores
    "tiny": {"epochs": 1, "max_train_windows": 32, "max_val_windows": 8},  # tests, smoke checks
}


CONVERGED = "converged"  # every variant to its own validation optimum (its Recipe)


@dataclass(frozen=True)
class Recipe:
    """How a variant trains under the ``converged`` budget: TrainConfig overrides on top of the
    preset's settings, the learning rates among which validation chooses (none: the preset's), and
    the overrides of a learning-rate try (none: each try is the full recipe, and the first seed's
    run at the chosen rate is that try)."""

    name: str
    train: dict[str, Any]
    learning_rates: tuple[float, ...] = ()
    trial: dict[str, Any] = field(default_factory=dict)
    # where the best try is the grid's lowest or highest rate, also try the next rate beyond it (the
    # grid's own step, rounded to 1 or 3 x 10^k), once: the optimum is then inside what was tried
    beyond_edge: bool = False


# what both recipes share: batches of 256 series-windows, a fresh random subset of at most 30,000
# series-windows each epoch, up to 10 epochs with the released code's halving schedule and early
# stopping (patience 3), validated on the same (at most 20,000 evenly spaced) validation windows
CONVERGED_TRAINING: dict[str, Any] = {
    "batch_size": 256,
    "epochs": 10,
    "patience": 3,
    "schedule": "halving",
    "max_train_windows": 30_000,
    "max_val_windows": 20_000,
}

RECIPES: dict[str, Recipe] = {
    # models of a few hundred thousand weights: fp32 (bf16 autocast costs more than it saves on
    # matrices this small), and the learning rate chosen on validation over three decades
    # (DLinear's published rates span 1e-4 to 5e-2 across datasets)
    "small": Recipe(
        "small",
        {**CONVERGED_TRAINING, "eval_batch_size": 256, "precision": "fp32"},
        (1e-4, 1e-3, 1e-2),
    ),
    # a frozen LLM in the loop: the same budget in the preset's precision (bf16 where the CPU runs it
    # natively). Batch 256 trains 1.28x the series a second of the preset's 24 in bf16 on a
    # 2-core AMD EPYC (results/speed.md). The rate is chosen among three around the one that still improved at
    # 3 epochs (1e-3); the paper's 1e-2 diverged at this batch without warm-up. Each rate is tried
    # for 2 epochs of 15,000 series-windows (a fifth of the full budget), the same for every rate
    "llm": Recipe(
        "llm",
        dict(CONVERGED_TRAINING),
        (3e-4, 1e-3, 3e-3),
        trial={"epochs": 2, "max_train_windows": 15_000},
        beyond_edge=True,
    ),
}


def resolve_budget(train: TrainConfig, budget: str | None) -> TrainConfig:
    """Apply a named budget or ``WxE`` to a training configuration (None keeps it).

    ``converged`` is per variant (:func:`variant_training`); here it keeps ``train``."""
    if budget is None or budget == CONVERGED:
        return train
    if budget in BUDGETS:
        return train.replace(**BUDGETS[budget])
    match = re.fullmatch(r"(\d+)x(\d+)", budget.strip())
    if match is None:
        raise ValueError(
            f"unknown budget {budget!r}: use one of {', '.join([*BUDGETS, CONVERGED])} or WINDOWSxEPOCHS, "
            "e.g. 1500x2"
        )
    return train.replace(max_train_windows=int(match.group(1)), epochs=int(match.group(2)))


def resolve_variants(names: Sequence[str] | str | None) -> list[Variant]:
    """Variants by name (a list or a comma-separated string), in the table's order.

    None: every variant of :data:`VARIANTS`; the statistical ones (:data:`STATISTICAL_VARIANTS`)
    run when named.
    """
    if names is None:
        return list(VARIANTS.values())
    if isinstance(names, str):
        names = names.split(",")
    known = {**VARIANTS, **STATISTICAL_VARIANTS}
    wanted = [n.strip() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        found = f"unknown variant(s) {unknown}" if unknown else "no variant named"
        raise ValueError(f"{found}; known: {', '.join(known)}")
    return [v for v in known.values() if v.name in wanted]


def variant_training(
    variant: Variant, train: TrainConfig, budget: str | None
) -> tuple[TrainConfig, Recipe | None]:
    """The training settings of ``variant`` under ``budget``, and its recipe under ``converged``
    (None: an equal budget, ``train``'s own learning rate)."""
    if budget != CONVERGED:
        return resolve_budget(train, budget), None
    recipe = RECIPES[variant.recipe]
    return train.replace(**recipe.train), recipe


@dataclass
class _Context:
    """What the variants of one ablation share: the data, the settings and the loaded backbones."""

    splits: Splits
    model: TimeLLMConfig
    train: TrainConfig
    budget: str | None
    max_test_windows: int | None
    out_dir: Path
    record: dict[str, Any]
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    curve_test_windows: int | None = None  # run setting: test scores after every epoch (a learning curve)
    backbones: dict[tuple[str, int | None], Backbone] = field(default_factory=dict)  # loaded once each
    test_windows: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def pretrained_backbone(self, config: TimeLLMConfig) -> Backbone:
        key = (config.backbone, config.llm_layers)
        if key not in self.backbones:
            self.backbones[key] = load_backbone(
                config.backbone, config.llm_layers, trust_remote_code=config.trust_remote_code
            )
        return self.backbones[key]

    def test_arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(past (W, T, N), true (W, H, N)) of the test windows every variant is scored on."""
        if self.test_windows is None:
            s = self.splits
            data = WindowDataset(s.test, s.seq_len, s.pred_len, False, self.max_test_windows)
            past, true = zip(*(data[i] for i in range(len(data))), strict=True)
            self.test_windows = torch.stack(past), torch.stack(true)
        return self.test_windows


def _build(variant: Variant, ctx: _Context, seed: int) -> nn.Module:
    if variant.baseline is not None:
        seed_everything(seed)  # the same initialisation draws for every run of a variant
        return variant.baseline(ctx.model)
    config = ctx.model.replace(**variant.overrides)
    # a pretrained backbone is loaded once and shared; the random-init LLM draws its own weights
    # under a fixed seed of its own, and the LLM-free ablations need none
    backbone = ctx.pretrained_backbone(config) if config.llm == "pretrained" else None
    # build_model seeds torch after loading, as for every variant (fit seeds the rest of the run)
    return build_model(config, ctx.execution, seed, backbone)


def _count(model: nn.Module, trainable: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def _series_per_second(windows: int, channels: int, seconds: float) -> float | None:
    return windows * channels / seconds if seconds > 0 else None


def _naive_row(variant: Variant, ctx: _Context) -> dict[str, Any]:
    s = ctx.splits
    past, true = ctx.test_arrays()
    started = time.perf_counter()
    pred = variant.naive(past, s.pred_len, s.period)
    seconds = time.perf_counter() - started
    return {
        "trainable_params": 0,
        "total_params": 0,
        "train_seconds": 0.0,
        "epochs_run": 0,
        "steps": 0,
        "infer_seconds": seconds,
        "test_series_per_s": _series_per_second(past.shape[0], past.shape[2], seconds),
        "mse": mse(pred, true),
        "mae": mae(pred, true),
        "test_windows": int(past.shape[0]),
    }


def _curve_monitor(ctx: _Context) -> Callable[[nn.Module], dict[str, float]] | None:
    """The run setting ``curve_test_windows``: after every epoch, the test MSE and MAE on that many
    evenly spaced test windows, for a learning curve (reported in the history, never chosen on)."""
    windows = ctx.curve_test_windows
    if not windows:
        return None
    s = ctx.splits

    def scores(model: nn.Module) -> dict[str, float]:
        _, pred, true = predict_windows(
            model, s.test, s.seq_len, s.pred_len, 32, desc="curve", max_windows=windows
        )
        return {"test_mse": mse(pred, true), "test_mae": mae(pred, true)}

    return scores


def _fit(
    variant: Variant, ctx: _Context, train: TrainConfig, seed: int, folder: Path
) -> tuple[nn.Module, Any]:
    """Train one variant once. Its checkpoint lives in ``folder/checkpoint`` while it trains: a run
    killed mid-epoch continues from there when the ablation runs again (losing at most the epoch in
    progress), and the checkpoint is removed once the run has finished."""
    s = ctx.splits
    model = _build(variant, ctx, seed)
    train_set = WindowDataset(s.train, s.seq_len, s.pred_len)
    val_set = WindowDataset(s.val, s.seq_len, s.pred_len)
    checkpoint = folder / CHECKPOINT_DIR
    resume = find_checkpoint(checkpoint) is not None
    if resume:
        logger.info("%s: continuing from the checkpoint in %s", variant.name, checkpoint)
    result = fit(
        model,
        train_set,
        val_set,
        train.replace(seed=seed),
        checkpoint_dir=checkpoint,
        resume=resume,
        monitor=_curve_monitor(ctx),
    )
    return model, result


def _choose_learning_rate(
    variant: Variant, ctx: _Context, train: TrainConfig, recipe: Recipe, seed: int
) -> tuple[float, tuple[nn.Module, Any] | None]:
    """The learning rate of the recipe's grid with the lowest validation loss (seed ``seed``).

    Each try trains ``train`` with the recipe's ``trial`` overrides and is appended to
    ``tuning.csv`` as soon as it has run, so an interrupted search continues with the rates not yet
    tried (a try itself resumes from its checkpoint). With the recipe's ``beyond_edge``, a best rate at
    an end of the grid is followed by one try beyond it. Where the tries are full runs (no ``trial``
    overrides), the chosen try's model and result are handed back, so the seed need not train again.
    """
    path = ctx.out_dir / TUNING_CSV
    rows = pd.read_csv(path).to_dict("records") if path.is_file() else []
    mine = pd.DataFrame([r for r in rows if r["variant"] == variant.name], columns=TUNING_COLUMNS)
    chosen = mine[mine["chosen"].astype(bool)] if len(mine) else mine
    if len(chosen):
        return float(chosen["learning_rate"].iloc[0]), None
    tried = {float(r) for r in mine["learning_rate"]} if len(mine) else set()
    trial_train = train.replace(**recipe.trial)
    best: tuple[float, float, Any] | None = None  # (loss, rate, (model, result) of a full-run try)
    for row in mine.to_dict("records") if len(mine) else []:
        if best is None or row["best_val_loss"] < best[0]:
            best = (float(row["best_val_loss"]), float(row["learning_rate"]), None)

    def try_rate(rate: float) -> None:
        nonlocal best
        folder = ctx.out_dir / variant.name / "tuning" / f"lr-{rate:g}"
        model, result = _fit(variant, ctx, trial_train.replace(learning_rate=rate), seed, folder)
        folder.mkdir(parents=True, exist_ok=True)
        RunFolder(folder).write_history(result.history)
        remove_checkpoint(folder / CHECKPOINT_DIR)
        rows.append(
            {
                "variant": variant.name,
                "seed": seed,
                "learning_rate": rate,
                "best_val_loss": result.best_val_loss,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "steps": result.steps,
                "series_windows": result.series_windows,
                "train_seconds": result.train_seconds,
                "chosen": False,
            }
        )
        # each try as it finishes: an interruption loses at most the try in progress
        pd.DataFrame(rows).reindex(columns=TUNING_COLUMNS).to_csv(path, index=False)
        logger.info("%s at lr %g: validation loss %.4f", variant.name, rate, result.best_val_loss)
        tried.add(rate)
        if best is None or result.best_val_loss < best[0]:
            best = (result.best_val_loss, rate, None if recipe.trial else (model, result))

    for rate in recipe.learning_rates:
        if rate not in tried:
            try_rate(rate)
    beyond = _beyond_edge(recipe, best[1])
    if beyond is not None and beyond not in tried:
        logger.info("the best rate, %g, is at an end of the grid: trying %g beyond it", best[1], beyond)
        try_rate(beyond)
    for row in rows:
        if row["variant"] == variant.name:
            row["chosen"] = float(row["learning_rate"]) == best[1]
    pd.DataFrame(rows).reindex(columns=TUNING_COLUMNS).to_csv(path, index=False)
    logger.info("%s: learning rate %g chosen on validation", variant.name, best[1])
    return best[1], best[2]


def trained_converged(record: dict[str, Any]) -> bool:
    """Whether a run folder's record is of an ablation run under the converged budget (its
    ``budget`` holds the recipes, :func:`_ablation_record`)."""
    return isinstance(record.get("budget"), dict) and CONVERGED in record["budget"]


def check_borrowed_rates(out_dir: str | Path, variants: Sequence[Variant], budget: str | None) -> None:
    """Under the converged budget, every variant that trains at another's rate (``rate_of``) finds it:
    that variant runs in the same ablation before it, or has chosen its rate in ``out_dir``
    already. A ValueError that says which otherwise, before anything trains."""
    if budget != CONVERGED:
        return
    names = {v.name for v in variants}
    for variant in variants:
        if variant.rate_of is not None and variant.rate_of not in names:
            _chosen_rate(Path(out_dir), variant)


def _chosen_rate(out_dir: Path, variant: Variant) -> float:
    """The learning rate that ``variant.rate_of`` chose on validation in ``out_dir``'s ``tuning.csv``;
    an error where it has not chosen one yet (run it first, or name it before ``variant``)."""
    path = out_dir / TUNING_CSV
    tuning = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=TUNING_COLUMNS)
    chosen = tuning[(tuning["variant"] == variant.rate_of) & tuning["chosen"].astype(bool)]
    if chosen.empty:
        raise ValueError(
            f"{variant.name} trains at the learning rate {variant.rate_of} chose on validation, and "
            f"{path} has none chosen yet: run {variant.rate_of} into {out_dir} first, or both in one "
            f"ablation ({variant.rate_of} before {variant.name})"
        )
    rate = float(chosen["learning_rate"].iloc[0])
    logger.info("%s: learning rate %g, the one %s chose on validation", variant.name, rate, variant.rate_of)
    return rate


def _beyond_edge(recipe: Recipe, best: float) -> float | None:
    """With ``beyond_edge``, the rate one grid step beyond the end of the grid where ``best`` lies
    (None where ``best`` is inside the grid)."""
    grid = sorted(recipe.learning_rates)
    if not recipe.beyond_edge or len(grid) < 2:
        return None
    if best == grid[0]:
        return _round_rate(grid[0] ** 2 / grid[1])
    if best == grid[-1]:
        return _round_rate(grid[-1] ** 2 / grid[-2])
    return None


def _round_rate(rate: float) -> float:
    """The nearest of 1 and 3 x 10^k to ``rate`` on a log scale (9e-5 -> 1e-4, 9e-3 -> 1e-2)."""
    exponent = math.floor(math.log10(rate))
    candidates = [m * 10.0**e for e in (exponent, exponent + 1) for m in (1, 3)]
    return float(f"{min(candidates, key=lambda c: abs(math.log(c / rate))):.0e}")


def _run_variant(variant: Variant, ctx: _Context, seed: int) -> dict[str, Any]:
    """Train (if it trains), test and time one variant with one seed: one row of the table."""
    s = ctx.splits
    row: dict[str, Any] = {
        "variant": variant.name,
        "label": variant.label,
        "kind": variant.kind,
        "seed": seed,
    }
    if variant.naive is not None:
        return {**row, **_naive_row(variant, ctx)}

    train, recipe = variant_training(variant, ctx.train, ctx.budget)
    grid = recipe.learning_rates if recipe is not None else ()
    trained = None
    if len(grid) > 1 and variant.rate_of is not None:
        train = train.replace(learning_rate=_chosen_rate(ctx.out_dir, variant))
    elif len(grid) > 1:
        rate, trained = _choose_learning_rate(variant, ctx, train, recipe, seed)
        train = train.replace(learning_rate=rate)
    elif grid:
        train = train.replace(learning_rate=grid[0])
    run_folder = ctx.out_dir / variant.name / f"seed-{seed}"
    model, result = trained or _fit(variant, ctx, train, seed, run_folder)
    row.update(trainable_params=_count(model, True), total_params=_count(model, False))
    logger.info(
        "%s (%s), seed %d: %s trainable of %s parameters, lr %g",
        variant.name,
        variant.about,
        seed,
        f"{row['trainable_params']:,}",
        f"{row['total_params']:,}",
        train.learning_rate,
    )
    model.eval()
    device = next(model.parameters()).device.type
    autocast = None  # tested in the precision it trained in (what the run's auto resolved to)
    if result.precision in LOW_PRECISIONS:
        dtype = LOW_PRECISIONS[result.precision]
        autocast = lambda: torch.autocast(device, dtype=dtype)  # noqa: E731
    started = time.perf_counter()
    past, pred, true = predict_windows(
        model,
        s.test,
        s.seq_len,
        s.pred_len,
        train.eval_batch_size,
        autocast=autocast,
        max_windows=ctx.max_test_windows,
    )
    seconds = time.perf_counter() - started
    row.update(
        train_seconds=result.train_seconds,
        infer_seconds=seconds,
        test_series_per_s=_series_per_second(pred.shape[0], pred.shape[2], seconds),
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        steps=result.steps,
        series_windows=result.series_windows,
        best_val_loss=result.best_val_loss,
        learning_rate=train.learning_rate,
        batch_size=train.batch_size,
        precision=result.precision,
        mse=mse(pred, true),
        mae=mae(pred, true),
        test_windows=int(pred.shape[0]),
    )
    row["machine"] = ctx.record["environment"].get("cpu")
    folder = RunFolder(run_folder)
    if isinstance(model, TimeLLMBase):  # a run folder that `timellm explain` and `evaluate` read
        folder.create(
            {
                **ctx.record,
                "variant": variant.name,
                "model": model.config.to_dict(),
                "train": train.replace(seed=seed).to_dict(),
            }
        )
        model.save_pretrained(folder.adapter_dir)
    else:
        folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_history(result.history)
    # the seed folder also records the naive references on the same windows (the long-term table's
    # columns beside a converged row); the ablation's table has them as rows of their own
    baselines = naive_references(past, true, s.period)
    row["commit"] = folder.write_metrics({**row, "baselines": baselines})["commit"]
    remove_checkpoint(run_folder / CHECKPOINT_DIR)
    return row


COLUMNS = [
    "variant",
    "label",
    "kind",
    "mse",
    "mae",
    "mse_std",
    "mae_std",
    "seeds",
    "mse_vs_full_pct",
    "mae_vs_full_pct",
    "trainable_params",
    "total_params",
    "train_seconds",
    "infer_seconds",
    "test_series_per_s",
    "learning_rate",
    "batch_size",
    "precision",
    "epochs_run",
    "best_epoch",
    "steps",
    "series_windows",
    "best_val_loss",
    "test_windows",
    "machine",
    "commit",
]
TUNING_COLUMNS = [
    "variant",
    "seed",
    "learning_rate",
    "best_val_loss",
    "best_epoch",
    "epochs_run",
    "steps",
    "series_windows",
    "train_seconds",
    "chosen",
]
# one row per variant and seed: the table's columns less the spread, plus the seed
SEED_COLUMNS = [
    c for c in COLUMNS if c not in ("mse_std", "mae_std", "seeds", "mse_vs_full_pct", "mae_vs_full_pct")
]
SEED_COLUMNS.insert(3, "seed")


def summarize_seeds(every: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (in first-seen order) from rows per variant and seed: the mean of each
    metric, time and count, ``mse_std``/``mae_std`` the sample standard deviations (ddof 1; empty
    for one seed, 0 for the deterministic naive forecasts), ``seeds`` how many, and each variant's
    difference to Time-LLM in % (means over the seeds each ran)."""
    order = list(dict.fromkeys(every["variant"]))
    grouped = every.groupby("variant", sort=False)
    numeric = [
        c
        for c in every.columns
        if c not in ("variant", "label", "kind", "commit", "seed", "precision", "machine")
    ]
    summary = grouped[numeric].mean()
    summary["mse_std"] = grouped["mse"].std(ddof=1)
    summary["mae_std"] = grouped["mae"].std(ddof=1)
    summary["seeds"] = grouped["seed"].nunique()
    summary = summary.join(grouped[["label", "kind"]].first())
    summary["precision"] = grouped["precision"].first() if "precision" in every else None
    summary["machine"] = grouped["machine"].first() if "machine" in every else None
    summary["commit"] = grouped["commit"].agg(lambda c: ",".join(dict.fromkeys(map(str, c))))
    return _table(summary.loc[order].reset_index())


def _table(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    full = table[table["variant"] == FULL]
    for metric in ("mse", "mae"):
        reference = float(full[metric].iloc[0]) if len(full) else math.nan
        table[f"{metric}_vs_full_pct"] = 100.0 * (table[metric] - reference) / reference
    return table.reindex(columns=COLUMNS)


ABLATION_HEADERS = {
    "label": "variant",
    "mse": "MSE",
    "mae": "MAE",
    "mse_vs_full_pct": "ΔMSE vs Time-LLM",
    "mae_vs_full_pct": "ΔMAE vs Time-LLM",
    "trainable_params": "trainable params",
    "train_seconds": "train s",
    "infer_seconds": "infer s",
    "test_series_per_s": "test series/s",
    "learning_rate": "lr",
}


def ablation_cell(value: Any, column: str) -> str:
    """A cell of an ablation table: one preset's here, the summary across datasets
    (:mod:`timellm.experiments.ablation_summary`) and its paired tests."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if column.endswith("_pct"):
        return f"{value:+.1f}%"
    if column == "trainable_params":
        return f"{int(value):,}"
    if column in ("sign_p", "wilcoxon_p"):
        return f"{value:.3g}"
    if column == "train_seconds" or (column == "epochs_run" and isinstance(value, float)):
        return f"{value:.1f}"
    if column == "infer_seconds":
        return f"{value:.2f}"
    if column in ("test_series_per_s", "steps", "series_windows", "batch_size"):
        return f"{value:,.0f}"
    if column == "learning_rate":
        return f"{value:g}"
    return plain_cell(value, column)


def with_spread(means: Iterable[float], spreads: Iterable[float | None]) -> list[str]:
    """Each mean beside its sample standard deviation over seeds ("0.4012 ± 0.0031"); the mean
    alone where there is none (one seed)."""
    return [
        f"{m:.4f} ± {s:.4f}" if s is not None and math.isfinite(s) else f"{m:.4f}"
        for m, s in zip(means, spreads, strict=True)
    ]


def ablation_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub Markdown: one row per variant, the difference to full Time-LLM in %;
    over several seeds, MSE and MAE are the mean ± the sample standard deviation."""
    table = table.copy()
    for metric in ("mse", "mae"):
        spread = table.get(f"{metric}_std")
        if spread is not None and spread.notna().any():
            table[metric] = with_spread(table[metric], spread.fillna(math.nan))
    return markdown_table(
        table,
        list(ABLATION_HEADERS),
        headers=ABLATION_HEADERS,
        cell=ablation_cell,
        right=[c for c in ABLATION_HEADERS if c != "label"],
    )


def run_ablation_seeds(
    preset: Preset, out_dir: str | Path, seeds: Sequence[int], **kwargs: Any
) -> pd.DataFrame:
    """:func:`run_ablation` over several seeds: each variant's mean and sample standard deviation."""
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"run_ablation_seeds needs at least two distinct seeds, found {list(seeds)}")
    return run_ablation(preset, out_dir, seeds=seeds, **kwargs)


def environment() -> dict[str, Any]:
    """What the timings depend on, recorded beside them."""
    return {
        "cpu": f"{cpu_model()}, {torch.get_num_threads()} threads",
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
    }


# what must agree for a resumed ablation to add rows to the same table
RESUME_KEYS = ("preset", "dataset", "data", "budget", "model", "train", "execution", "run", "test_windows")


def _resumable(folder: Path, record: dict[str, Any]) -> pd.DataFrame:
    """The rows an earlier run of this ablation wrote to ``folder`` (none if it is new); an
    ablation with other settings there is an error rather than a mixed table."""
    rows = folder / SEEDS_CSV
    if not rows.is_file():
        return pd.DataFrame(columns=SEED_COLUMNS)
    if (folder / RUN_CONFIG).is_file():
        earlier = read_run_record(folder)
        mine = as_recorded(record)
        for settings in (earlier, mine):  # the seeds of each invocation may differ
            settings["train"] = {k: v for k, v in (settings.get("train") or {}).items() if k != "seed"}
        # an execution setting added since the folder was written ran there at its default
        if isinstance(earlier.get("execution"), dict):
            earlier["execution"] = execution_dict(ExecutionSettings()) | earlier["execution"]
        # a recipe field added since the folder was written: the folder goes on under the recipe as
        # it is now (such fields only add to what a recipe does: a further learning-rate try)
        recipes, now = (earlier.get("budget") or {}), (mine.get("budget") or {})
        if isinstance(recipes, dict) and isinstance(now, dict) and "converged" in recipes:
            for name, recipe in (recipes.get("converged") or {}).items():
                added = {
                    k: v for k, v in (now.get("converged") or {}).get(name, {}).items() if k not in recipe
                }
                recipe.update(added)
        differs = [k for k in RESUME_KEYS if earlier.get(k) != mine.get(k)]
        if differs:
            raise ValueError(
                f"{folder} holds an ablation with other settings ({', '.join(differs)} differ): "
                "continue it with the same preset, budget and settings, or choose another output folder"
            )
    return pd.read_csv(rows)


def variant_preset(variant: Variant, preset: Preset, budget: str | None) -> Preset:
    """``preset`` as ``variant`` trains under ``budget``: its model overrides and its training
    settings (the recipe's, with its first learning rate, under ``converged``)."""
    train, recipe = variant_training(variant, preset.train, budget)
    if recipe is not None and recipe.learning_rates:
        train = train.replace(learning_rate=recipe.learning_rates[0])
    return Preset(
        preset.name,
        preset.dataset,
        preset.model.replace(**(variant.overrides or {})),
        train,
        preset.run,
        preset.execution,
    )


def plan_ablation(
    preset: Preset, variants: Sequence[Variant], budget: str | None, splits: Splits
) -> list[tuple[Variant, list]]:
    """The memory plan (:mod:`timellm.experiments.planning`) of every variant with a language model:
    its training step and its largest inference batch on ``splits``. Nothing is loaded."""
    from timellm.experiments.planning import benchmark_plans

    test_windows = max(splits.test.shape[0] - splits.seq_len - splits.pred_len + 1, 1)
    return [
        (v, benchmark_plans(variant_preset(v, preset, budget), splits.channels, test_windows))
        for v in variants
        if v.overrides is not None and preset.model.replace(**v.overrides).llm in ("pretrained", "random")
    ]


def run_ablation(
    preset: Preset,
    out_dir: str | Path,
    *,
    variants: Sequence[str] | str | None = None,
    budget: str | None = None,
    data_dir: str | Path | None = None,
    source: DataSource | None = None,
    command: str | None = None,
    seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Train and test every variant once per seed; write the tables to ``out_dir``.

    ``source`` is the data (default: the preset's benchmark); the model and training settings come
    from ``preset`` with ``budget`` applied (see :data:`BUDGETS`; ``converged``: :data:`RECIPES`).
    ``seeds`` default to the preset's. Every (variant, seed) row is appended to
    ``ablation_seeds.csv`` as it finishes, and ``ablation.csv``/``.md`` (the means, columns
    :data:`COLUMNS`) rewritten; a variant and seed already there is skipped, so an interrupted
    ablation continues where it stopped. Returns the table of means.
    """
    chosen = resolve_variants(variants)
    seeds = list(seeds) if seeds else [preset.train.seed]
    train = resolve_budget(preset.train, budget)
    source = source or DataSource(benchmark=preset.dataset)
    model_config = preset.model
    if source.csv is not None and model_config.description is None:
        model_config = model_config.replace(dataset=None)  # a user's data: not the benchmark's text
    splits = source.load(model_config.seq_len, model_config.pred_len, data_dir)  # fail before writing
    # refuse a variant that cannot fit before any backbone is loaded or anything is written
    for _, plans in plan_ablation(preset, chosen, budget, splits):
        refuse_what_cannot_fit(plans)
    out_dir = Path(out_dir)
    check_borrowed_rates(out_dir, chosen, budget)
    folder = RunFolder(out_dir)
    max_test = preset.run.get("max_test_windows")
    record = _ablation_record(preset, splits, source, model_config, train, budget, chosen, seeds, command)
    total_test = record["test_windows_total"]
    done = _resumable(out_dir, record)
    folder.create(record)
    ctx = _Context(
        splits,
        model_config,
        train,
        budget,
        max_test,
        out_dir,
        record,
        preset.execution,
        preset.run.get("curve_test_windows"),
    )
    finished = {(str(v), int(s)) for v, s in zip(done["variant"], done["seed"], strict=True)}
    every, rows = done, done.to_dict("records")
    with folder.log("ablation.log"):
        logger.info(
            "ablation of %s on %s: %d variants x %d seeds, budget %s, %d of %d test windows%s",
            preset.name,
            splits.name,
            len(chosen),
            len(seeds),
            budget or "preset",
            record["test_windows"],
            total_test,
            f"; {len(finished)} rows already there" if finished else "",
        )
        for variant in chosen:
            for seed in seeds:
                if (variant.name, seed) in finished:
                    continue
                row = _run_variant(variant, ctx, seed)
                logger.info(
                    "%s seed %d: MSE %.4f MAE %.4f, train %.1f s, test %.1f s",
                    variant.name,
                    seed,
                    row["mse"],
                    row["mae"],
                    row["train_seconds"],
                    row["infer_seconds"],
                )
                rows.append(row)
                every = pd.DataFrame(rows).reindex(columns=SEED_COLUMNS)
                every.to_csv(out_dir / SEEDS_CSV, index=False)
                _write_tables(every, out_dir)
    wanted = {v.name for v in chosen}
    return summarize_seeds(every[every["variant"].isin(wanted) & every["seed"].isin(seeds)])


def _ablation_record(preset, splits, source, model_config, train, budget, chosen, seeds, command):
    """What an ablation folder's config.yaml records: every setting a resumed ablation must share
    (:data:`RESUME_KEYS`), its variants, command, test windows and the machine."""
    max_test = preset.run.get("max_test_windows")
    total_test = splits.test.shape[0] - splits.seq_len - splits.pred_len + 1
    return {
        "preset": preset.name,
        "dataset": splits.name,
        "test_dataset": splits.name,
        "data": source.to_dict(),
        # the converged budget's recipes are part of its settings: a resumed ablation must share them
        "budget": {"converged": {k: asdict(r) for k, r in RECIPES.items()}}
        if budget == CONVERGED
        else budget or "preset",
        "variants": [v.name for v in chosen],
        "command": command,
        "model": model_config.to_dict(),
        "train": train.replace(seed=seeds[0]).to_dict(),
        "execution": execution_dict(preset.execution),
        "run": dict(preset.run),
        "test_windows": min(max_test or total_test, total_test),
        "test_windows_total": total_test,
        "environment": environment(),
    }


def _write_tables(every: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    table = summarize_seeds(every)
    table.to_csv(out_dir / TABLE_CSV, index=False)
    (out_dir / TABLE_MD).write_text(ablation_markdown(table) + "\n")
    return table
