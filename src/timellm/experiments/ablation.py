"""Is the language model useful here? Time-LLM beside its ablations and classic baselines.

The question of Tan et al. (NeurIPS 2024), asked of the user's own data: every variant is trained
by :func:`timellm.training.fit` under one :class:`TrainConfig` (the same seed, hence the same
initialisation draws and the same training windows in the same order, and the same budget), tested
on the same test windows with the same metrics, timed, and set against full Time-LLM.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from timellm.evaluation.scoring import predict_windows
from timellm.evaluation.statistical import forecast_windows
from timellm.experiments.folders import RunFolder
from timellm.experiments.presets import Preset, execution_dict
from timellm.experiments.tables import markdown_table, plain_cell
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.modeling import TimeLLM
from timellm.training.loop import TrainConfig, fit, seed_everything

logger = logging.getLogger(__name__)

FULL = "time-llm"
TABLE_CSV = "ablation.csv"
TABLE_MD = "ablation.md"
SEEDS_CSV = "ablation_seeds.csv"  # run_ablation_seeds: one row per variant and seed


@dataclass(frozen=True)
class Variant:
    """One row of the table: a Time-LLM setting, a trained baseline or a naive reference."""

    name: str  # the key on the command line and in the CSV
    label: str  # the name the papers use
    about: str  # what it is, in a few words
    overrides: dict[str, Any] | None = None  # TimeLLMConfig settings: an ablation of our model
    baseline: Callable[[TimeLLMConfig], nn.Module] | None = None  # a trained baseline's factory
    naive: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None  # (past, pred_len, period)

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
        Variant(FULL, "Time-LLM", "prompt + reprogramming + frozen pretrained LLM", overrides={}),
        Variant(
            "random-llm",
            "random-init LLM",
            "same LLM architecture, fresh random weights, frozen",
            overrides={"llm": "random"},
        ),
        Variant("no-prompt", "w/o prompt", "no Prompt-as-Prefix", overrides={"use_prompt": False}),
        Variant(
            "no-statistics",
            "w/o input statistics",
            "prompt without min/max/median/trend/lags",
            overrides={"prompt_statistics": False},
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


def resolve_budget(train: TrainConfig, budget: str | None) -> TrainConfig:
    """Apply a named budget or ``WxE`` to a training configuration (None keeps it)."""
    if budget is None:
        return train
    if budget in BUDGETS:
        return train.replace(**BUDGETS[budget])
    match = re.fullmatch(r"(\d+)x(\d+)", budget.strip())
    if match is None:
        raise ValueError(
            f"unknown budget {budget!r}: use one of {', '.join(BUDGETS)} or WINDOWSxEPOCHS, e.g. 1500x2"
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


@dataclass
class _Context:
    """What the variants of one ablation share: the data, the settings and the loaded backbone."""

    splits: Splits
    model: TimeLLMConfig
    train: TrainConfig
    max_test_windows: int | None
    out_dir: Path
    record: dict[str, Any]
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    backbone: Backbone | None = None  # the pretrained backbone, loaded once for every variant using it
    test_windows: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def pretrained_backbone(self) -> Backbone:
        if self.backbone is None:
            c = self.model
            self.backbone = load_backbone(c.backbone, c.llm_layers, trust_remote_code=c.trust_remote_code)
        return self.backbone

    def test_arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(past (W, T, N), true (W, H, N)) of the test windows every variant is scored on."""
        if self.test_windows is None:
            s = self.splits
            data = WindowDataset(s.test, s.seq_len, s.pred_len, False, self.max_test_windows)
            past, true = zip(*(data[i] for i in range(len(data))), strict=True)
            self.test_windows = torch.stack(past), torch.stack(true)
        return self.test_windows


def _build(variant: Variant, ctx: _Context) -> nn.Module:
    if variant.baseline is not None:
        seed_everything(ctx.train.seed)  # the same initialisation draws for every run of a variant
        return variant.baseline(ctx.model)
    config = ctx.model.replace(**variant.overrides)
    # the pretrained backbone is loaded once and shared; the random-init LLM draws its own weights
    # under a fixed seed of its own, and the LLM-free ablations need none
    backbone = ctx.pretrained_backbone() if config.llm == "pretrained" else None
    seed_everything(ctx.train.seed)  # after loading: the adapter's draws never depend on the order
    return TimeLLM(config, backbone, execution=ctx.execution)


def _count(model: nn.Module, trainable: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def _run_variant(variant: Variant, ctx: _Context) -> dict[str, Any]:
    s = ctx.splits
    row: dict[str, Any] = {"variant": variant.name, "label": variant.label, "kind": variant.kind}
    if variant.naive is not None:
        past, true = ctx.test_arrays()
        started = time.perf_counter()
        pred = variant.naive(past, s.pred_len, s.period)
        row.update(trainable_params=0, total_params=0, train_seconds=0.0, epochs_run=0, steps=0)
        row["infer_seconds"] = time.perf_counter() - started
        row.update(mse=mse(pred, true), mae=mae(pred, true), test_windows=int(past.shape[0]))
        return row

    model = _build(variant, ctx)
    row.update(trainable_params=_count(model, True), total_params=_count(model, False))
    logger.info(
        "%s (%s): %s trainable of %s parameters",
        variant.name,
        variant.about,
        f"{row['trainable_params']:,}",
        f"{row['total_params']:,}",
    )
    train_set = WindowDataset(s.train, s.seq_len, s.pred_len)
    val_set = WindowDataset(s.val, s.seq_len, s.pred_len)
    result = fit(model, train_set, val_set, ctx.train)
    started = time.perf_counter()
    _, pred, true = predict_windows(
        model, s.test, s.seq_len, s.pred_len, ctx.train.eval_batch_size, max_windows=ctx.max_test_windows
    )
    row["infer_seconds"] = time.perf_counter() - started
    row.update(
        train_seconds=result.train_seconds,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        steps=result.steps,
        best_val_loss=result.best_val_loss,
        mse=mse(pred, true),
        mae=mae(pred, true),
        test_windows=int(pred.shape[0]),
    )
    folder = RunFolder(ctx.out_dir / variant.name)
    if isinstance(model, TimeLLM):  # a run folder that `timellm explain` and `evaluate` read
        folder.create({**ctx.record, "variant": variant.name, "model": model.config.to_dict()})
        model.save_pretrained(folder.adapter_dir)
    else:
        folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_history(result.history)
    row["commit"] = folder.write_metrics(row)["commit"]
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
    "epochs_run",
    "best_epoch",
    "steps",
    "best_val_loss",
    "test_windows",
    "commit",
]


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
}


def _ablation_cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if column.endswith("_pct"):
        return f"{value:+.1f}%"
    if column == "trainable_params":
        return f"{int(value):,}"
    if column == "train_seconds":
        return f"{value:.1f}"
    if column == "infer_seconds":
        return f"{value:.2f}"
    return plain_cell(value, column)


def ablation_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub Markdown: one row per variant, the difference to full Time-LLM in %;
    over several seeds, MSE and MAE are the mean ± the sample standard deviation."""
    table = table.copy()
    for metric in ("mse", "mae"):
        spread = table.get(f"{metric}_std")
        if spread is not None and spread.notna().any():
            table[metric] = [
                f"{m:.4f} ± {d:.4f}" if math.isfinite(d) else f"{m:.4f}"
                for m, d in zip(table[metric], spread.fillna(math.nan), strict=True)
            ]
    return markdown_table(
        table,
        list(ABLATION_HEADERS),
        headers=ABLATION_HEADERS,
        cell=_ablation_cell,
        right=[c for c in ABLATION_HEADERS if c != "label"],
    )


def run_ablation_seeds(
    preset: Preset, out_dir: str | Path, seeds: Sequence[int], **kwargs: Any
) -> pd.DataFrame:
    """:func:`run_ablation` once per seed (into ``out_dir/seed-<seed>``), then one table of the means.

    Every variant's ``mse`` and ``mae`` are the means over the seeds, ``mse_std`` and ``mae_std``
    their sample standard deviations (ddof 1; 0 for the deterministic naive forecasts), ``seeds``
    how many; times and counts are means too. Writes ``ablation.csv`` and ``.md`` to ``out_dir``
    and each seed's table as ``ablation_seeds.csv`` (one row per variant and seed).
    """
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"run_ablation_seeds needs at least two distinct seeds, found {list(seeds)}")
    out_dir = Path(out_dir)
    per_seed = []
    for seed in seeds:
        table = run_ablation(preset.with_overrides({"seed": seed}), out_dir / f"seed-{seed}", **kwargs)
        per_seed.append(table.assign(seed=seed))
    every = pd.concat(per_seed, ignore_index=True)
    order = list(dict.fromkeys(every["variant"]))
    grouped = every.groupby("variant", sort=False)
    numeric = [c for c in every.columns if c not in ("variant", "label", "kind", "commit", "seed")]
    summary = grouped[numeric].mean()
    summary["mse_std"] = grouped["mse"].std(ddof=1)
    summary["mae_std"] = grouped["mae"].std(ddof=1)
    summary["seeds"] = grouped["seed"].nunique()
    firsts = grouped[["label", "kind"]].first()
    summary["commit"] = grouped["commit"].agg(lambda c: ",".join(dict.fromkeys(map(str, c))))
    summary = summary.join(firsts).loc[order].reset_index()
    table = _table(summary.drop(columns=["mse_vs_full_pct", "mae_vs_full_pct"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    every.to_csv(out_dir / SEEDS_CSV, index=False)
    table.to_csv(out_dir / TABLE_CSV, index=False)
    (out_dir / TABLE_MD).write_text(ablation_markdown(table) + "\n")
    return table


def environment() -> dict[str, Any]:
    """What the timings depend on, recorded beside them."""
    return {
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
    }


def run_ablation(
    preset: Preset,
    out_dir: str | Path,
    *,
    variants: Sequence[str] | str | None = None,
    budget: str | None = None,
    data_dir: str | Path | None = None,
    source: DataSource | None = None,
    command: str | None = None,
) -> pd.DataFrame:
    """Train and test every variant under one budget; write ``ablation.csv``/``.md`` to ``out_dir``.

    ``source`` is the data (default: the preset's benchmark); the model and training settings come
    from ``preset`` with ``budget`` applied (see :data:`BUDGETS`). Returns the table (one row per
    variant, columns :data:`COLUMNS`). The CSV is rewritten after every variant, so an interrupted
    ablation keeps what finished.
    """
    chosen = resolve_variants(variants)
    train = resolve_budget(preset.train, budget)
    source = source or DataSource(benchmark=preset.dataset)
    model_config = preset.model
    if source.csv is not None and model_config.description is None:
        model_config = model_config.replace(dataset=None)  # a user's data: not the benchmark's text
    splits = source.load(model_config.seq_len, model_config.pred_len, data_dir)  # fail before writing
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir)
    max_test = preset.run.get("max_test_windows")
    total_test = splits.test.shape[0] - splits.seq_len - splits.pred_len + 1
    record = {
        "preset": preset.name,
        "dataset": splits.name,
        "test_dataset": splits.name,
        "data": source.to_dict(),
        "budget": budget or "preset",
        "variants": [v.name for v in chosen],
        "command": command,
        "model": model_config.to_dict(),
        "train": train.to_dict(),
        "execution": execution_dict(preset.execution),
        "run": dict(preset.run),
        "test_windows": min(max_test or total_test, total_test),
        "test_windows_total": total_test,
        "environment": environment(),
    }
    folder.create(record)
    ctx = _Context(splits, model_config, train, max_test, out_dir, record, preset.execution)
    rows: list[dict[str, Any]] = []
    with folder.log("ablation.log"):
        logger.info(
            "ablation of %s on %s: %d variants, budget %s (%s series-windows x %d epochs), %d of %d test windows",
            preset.name,
            splits.name,
            len(chosen),
            budget or "preset",
            train.max_train_windows or "all",
            train.epochs,
            record["test_windows"],
            total_test,
        )
        for variant in chosen:
            row = _run_variant(variant, ctx)
            logger.info(
                "%s: MSE %.4f MAE %.4f, train %.1f s, test %.1f s",
                variant.name,
                row["mse"],
                row["mae"],
                row["train_seconds"],
                row["infer_seconds"],
            )
            rows.append(row)
            table = _table(rows)
            table.to_csv(out_dir / TABLE_CSV, index=False)
            (out_dir / TABLE_MD).write_text(ablation_markdown(table) + "\n")
    return table
