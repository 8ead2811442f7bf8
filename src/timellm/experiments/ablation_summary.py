"""Is the language model useful? One answer over several datasets.

:func:`write_ablation_summary` gathers the ablations under a folder (each a ``timellm ablate``
output folder, one per dataset and horizon, with its rows per variant and seed) into:

- ``ablation_summary.csv`` / ``.md``: datasets x variants, MSE and MAE as mean ± sample standard
  deviation over the seeds, each variant's change relative to Time-LLM, training seconds and test
  series per second, the learning rate and budget each trained with, the test windows scored;
- ``ablation_summary_seeds.csv``: every (dataset, variant, seed) row; ``ablation_summary_tuning.csv``:
  the learning rates tried on validation (budget ``converged``) and the one kept;
- ``ablation_paired.csv``: the paired reading of each variant against Time-LLM over the
  (dataset, seed) pairs where both ran: how often the variant is worse, a two-sided sign test, a
  Wilcoxon signed-rank test (scipy, where installed) and the median relative change;
- ``ablation_summary.png``: per dataset, each variant's MSE relative to Time-LLM, with error bars;
- ``learning_curve_<dataset>-<horizon>.csv`` / ``.png`` where the runs scored the test windows
  after every epoch (:mod:`timellm.experiments.curves`).

Every row carries its budget: optimiser steps, series-windows seen, batch, training seconds and the
machine. ``update=True`` keeps the rows of an earlier summary in the output folder that the runs
under the root do not replace (the same dataset, horizon, variant and seed), so that re-running
some rows does not need every earlier run folder. Within a dataset, the variants with a frozen LLM
are compared with Time-LLM only when trained by the same recipe (the same batch): rows of another
recipe move to ``ablation_superseded_seeds.csv`` instead of being paired across budgets.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from timellm.experiments.ablation import (
    FULL,
    RECIPES,
    SEEDS_CSV,
    TUNING_CSV,
    VARIANTS,
    ablation_cell,
    with_spread,
)
from timellm.experiments.curves import write_learning_curves
from timellm.experiments.folders import RUN_CONFIG, read_run_record
from timellm.experiments.tables import markdown_table

logger = logging.getLogger(__name__)

SUMMARY = "ablation_summary"
PAIRED_CSV = "ablation_paired.csv"
SUPERSEDED_CSV = "ablation_superseded_seeds.csv"  # rows of a recipe that Time-LLM no longer trains by
ROW_KEY = ["dataset", "pred_len", "variant", "seed"]
REMOVED_LLM = "no-llm"  # the variant whose paired reading answers "does removing the LLM hurt?"
TOP = 1.6  # the figure's ceiling (MSE relative to Time-LLM); taller bars are cut there and labelled


def find_ablations(root: str | Path) -> list[Path]:
    """Every ablation folder (one holding ``ablation_seeds.csv``) under ``root``, in path order."""
    return sorted(path.parent for path in Path(root).rglob(SEEDS_CSV))


def collect_ablation_rows(root: str | Path) -> pd.DataFrame:
    """Every (dataset, variant, seed) row of the ablations under ``root``, with the dataset, horizon,
    test windows and budget of the ablation it belongs to."""
    frames = []
    for folder in find_ablations(root):
        rows = pd.read_csv(folder / SEEDS_CSV)
        record = read_run_record(folder) if (folder / RUN_CONFIG).is_file() else {}
        budget = record.get("budget")
        frames.append(
            rows.assign(
                dataset=record.get("dataset", folder.name),
                pred_len=(record.get("model") or {}).get("pred_len"),
                test_windows_total=record.get("test_windows_total"),
                budget=next(iter(budget)) if isinstance(budget, dict) else budget,
                ablation=str(folder.relative_to(root)) if folder != Path(root) else folder.name,
                # each row's own command: the folder's settings with this variant and seed
                command=[
                    _command(record.get("command"), v, [s])
                    for v, s in zip(rows["variant"], rows["seed"], strict=True)
                ],
            )
        )
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _variant_order(names) -> list[str]:
    known = [v for v in VARIANTS if v in set(names)]
    return known + sorted(set(names) - set(known))


def summary_table(every: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset and variant: mean ± std over the seeds, and the change to Time-LLM.

    The change compares means over the seeds each ran (``reference_seeds`` says Time-LLM's): where
    a variant has more seeds than Time-LLM so far, the paired reading is the like-for-like one.
    """
    out = []
    for (dataset, pred_len), group in every.groupby(["dataset", "pred_len"], sort=False):
        full = group[group["variant"] == FULL]
        for variant in _variant_order(group["variant"].unique()):
            rows = group[group["variant"] == variant]
            mse, mae = rows["mse"].mean(), rows["mae"].mean()
            row: dict[str, Any] = {
                "dataset": dataset,
                "pred_len": pred_len,
                "variant": variant,
                "label": rows["label"].iloc[0],
                "mse": mse,
                "mse_std": rows["mse"].std(ddof=1) if len(rows) > 1 else None,
                "mae": mae,
                "mae_std": rows["mae"].std(ddof=1) if len(rows) > 1 else None,
                "seeds": len(rows),
                "mse_vs_time_llm_pct": 100 * (mse / full["mse"].mean() - 1) if len(full) else None,
                "mae_vs_time_llm_pct": 100 * (mae / full["mae"].mean() - 1) if len(full) else None,
                "reference_seeds": len(full),
                "train_seconds": rows["train_seconds"].mean(),
                "steps": rows["steps"].mean() if "steps" in rows else None,
                "series_windows": rows["series_windows"].mean() if "series_windows" in rows else None,
                "test_series_per_s": rows["test_series_per_s"].mean(),
                "learning_rate": _one(rows.get("learning_rate")),
                "batch_size": _one(rows.get("batch_size")),
                "epochs_run": rows["epochs_run"].mean(),
                "trainable_params": _one(rows.get("trainable_params")),
                "test_windows": _one(rows["test_windows"]),
                "machine": _one(rows.get("machine")),
                "test_windows_total": _one(rows["test_windows_total"]),
                "budget": _one(rows["budget"]),
                "commit": ",".join(dict.fromkeys(str(c) for c in rows["commit"].dropna())) or None,
                "command": _command(
                    _one(rows["command"].map(_without_seeds)), variant, sorted(rows["seed"].unique())
                ),
            }
            out.append(row)
    return pd.DataFrame(out)


def _command(command: str | None, variant: str, seeds: list) -> str | None:
    """The ablation's recorded command (its latest pass) for this variant's row: the same
    settings and folder, with this variant and its seeds (a resumed ablation adds rows to the
    same folder, pass by pass)."""
    if not command:
        return None
    command = _without_seeds(re.sub(r" --variants \S+", "", command))  # command line, not a message
    head, _, tail = command.partition(" --out ")  # command line, not a message
    listed = ",".join(str(int(s)) for s in seeds)
    seeds_part = f" --seeds {listed}" if len(seeds) else ""  # command line, not a message
    out_part = f" --out {tail}" if tail else ""  # command line, not a message
    return f"{head} --variants {variant}{seeds_part}{out_part}"  # command line, not a message


def _without_seeds(command: str | None) -> str | None:
    """A row's command without its seed, so that the rows of one folder share it."""
    return None if not command else re.sub(r" --seeds \S+", "", command)  # command line, not a message


def _one(values: pd.Series | None) -> Any:
    """The value all rows share, else None (e.g. a learning rate chosen once for every seed)."""
    if values is None:
        return None
    distinct = values.dropna().unique()
    return (
        distinct[0].item()
        if len(distinct) == 1 and hasattr(distinct[0], "item")
        else (distinct[0] if len(distinct) == 1 else None)
    )


def sign_test(worse: int, n: int) -> float:
    """Two-sided exact binomial test of ``worse`` of ``n`` against one half."""
    if n == 0:
        return math.nan
    k = min(worse, n - worse)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_reading(every: pd.DataFrame, variant: str, reference: str = FULL) -> dict[str, Any]:
    """``variant`` against ``reference`` over the (dataset, seed) pairs where both ran.

    ``worse``: pairs where the variant's MSE is higher (for ``no-llm``: removing the LLM hurts);
    ``median_change_pct``: the median of (variant - reference) / reference; ``sign_p``: two-sided
    exact sign test; ``wilcoxon_p``: two-sided Wilcoxon signed-rank test of the relative changes
    (None without scipy or with fewer than two pairs).
    """
    keys = ["dataset", "pred_len", "seed"]
    mine = every[every["variant"] == variant].set_index(keys)["mse"]
    theirs = every[every["variant"] == reference].set_index(keys)["mse"]
    both = pd.concat([mine.rename("variant"), theirs.rename("reference")], axis=1, join="inner")
    change = (both["variant"] - both["reference"]) / both["reference"]
    n, worse = len(change), int((change > 0).sum())
    budgets = {}
    for side, name in (("variant", variant), ("reference", reference)):
        seen = None
        if n and "series_windows" in every:
            seen = budget_counts(
                every[every["variant"] == name].set_index(keys)["series_windows"].reindex(both.index)
            )
        budgets[f"{side}_series_windows"] = seen
    wilcoxon = None
    if n >= 2 and (change != 0).any():
        try:
            from scipy.stats import wilcoxon as test
        except ImportError:  # scipy is optional: the sign test stands alone
            test = None
        if test is not None:
            wilcoxon = float(test(change.to_numpy()).pvalue)
    return {
        "variant": variant,
        "reference": reference,
        "pairs": n,
        "datasets": both.index.get_level_values("dataset").nunique() if n else 0,
        "worse": worse,
        "better": int((change < 0).sum()),
        "median_change_pct": 100 * float(change.median()) if n else None,
        "mean_change_pct": 100 * float(change.mean()) if n else None,
        "sign_p": sign_test(worse, int((change != 0).sum())),
        "wilcoxon_p": wilcoxon,
        **budgets,
    }


def budget_counts(series_windows: pd.Series) -> str | None:
    """The training series-windows of the rows of a paired test: up to three values, each with how
    many pairs trained with it, the largest first ("180,000 x1; 6,048 x15": a test over two budgets
    says so); more values (models stopped early at their own epochs) as their range; None where no
    row trained (the naive forecasts)."""
    if series_windows.isna().all():
        return None
    counts = series_windows.round().value_counts(dropna=False).sort_index(ascending=False)
    if len(counts) > 3:
        low, high = series_windows.min(), series_windows.max()
        return f"{int(low):,}-{int(high):,} ({len(series_windows)} pairs)"
    return "; ".join(
        f"{'unknown' if pd.isna(value) else f'{int(value):,}'} x{count}" for value, count in counts.items()
    )


def _with_budget(every: pd.DataFrame, dataset: str) -> str:
    """A tick label: the dataset, and under it the series-windows Time-LLM trained on, so that the
    figure is never read without the budget it compares."""
    if "series_windows" not in every:
        return dataset
    seen = every[(every["dataset"] == dataset) & (every["variant"] == FULL)]["series_windows"].dropna()
    return f"{dataset}\n{seen.mean():,.0f}" if len(seen) else dataset


def plot_relative(every: pd.DataFrame, path: str | Path) -> Path | None:
    """Per dataset, each variant's test MSE relative to Time-LLM's (mean over seeds, error bar: the
    standard deviation over seeds of the variant's MSE, relative to Time-LLM's mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(every["dataset"]))
    with_full = [d for d in datasets if (every[(every["dataset"] == d)]["variant"] == FULL).any()]
    if not with_full:
        return None
    variants = [v for v in _variant_order(every["variant"].unique()) if v != FULL]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(with_full)), 4))
    width = 0.8 / max(len(variants), 1)
    for i, variant in enumerate(variants):
        means, spreads = [], []
        for dataset in with_full:
            rows = every[every["dataset"] == dataset]
            reference = rows[rows["variant"] == FULL]["mse"].mean()
            mine = rows[rows["variant"] == variant]["mse"] / reference
            means.append(mine.mean() if len(mine) else np.nan)
            spreads.append(mine.std(ddof=1) if len(mine) > 1 else 0.0)
        x = np.arange(len(with_full)) + (i - (len(variants) - 1) / 2) * width
        label = VARIANTS[variant].label if variant in VARIANTS else variant
        shown = np.minimum(means, TOP)
        # an error bar stops at the ceiling too, like its bar
        above = np.nan_to_num(np.minimum(spreads, np.maximum(TOP - shown, 0.0)))
        ax.bar(x, shown, width, yerr=[spreads, above], capsize=2, label=label)
        # the last value can be 3x worse: say so, do not scale to it
        for xi, mean in zip(x, means, strict=True):
            if mean > TOP:  # neighbours' labels alternate in height so that they do not overlap
                ax.text(xi, TOP + 0.045 * (i % 2), f"{mean:.2f}", ha="center", va="bottom", fontsize=6)
    ax.axhline(1.0, color="black", lw=1, label="Time-LLM")
    ax.set_xticks(np.arange(len(with_full)), [_with_budget(every, dataset) for dataset in with_full])
    ax.set_xlabel(
        "dataset, and the series-windows each Time-LLM run trained on (mean over its seeds)", fontsize=8
    )
    ax.set_ylabel("test MSE / Time-LLM's")
    ax.set_ylim(0.5, TOP + 0.1)
    ax.grid(axis="y", alpha=0.3)
    # beside the axes, not over the bars
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Each variant's test MSE relative to Time-LLM (mean over seeds ± std)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summary_markdown(table: pd.DataFrame, paired: pd.DataFrame) -> str:
    shown = table.copy()
    for metric in ("mse", "mae"):
        shown[metric] = with_spread(shown[metric], shown[f"{metric}_std"].astype(float))
    shown["test"] = [
        "all" if w == t else f"{int(w)} of {int(t)}"
        for w, t in zip(shown["test_windows"], shown["test_windows_total"], strict=True)
    ]
    columns = [
        "dataset", "pred_len", "label", "mse", "mae", "seeds", "mse_vs_time_llm_pct", "mae_vs_time_llm_pct",
        "train_seconds", "batch_size", "steps", "series_windows", "test_series_per_s", "learning_rate",
        "epochs_run", "test",
    ]  # fmt: skip
    headers = {
        "pred_len": "horizon",
        "label": "variant",
        "mse": "MSE",
        "mae": "MAE",
        "mse_vs_time_llm_pct": "ΔMSE vs Time-LLM",
        "mae_vs_time_llm_pct": "ΔMAE vs Time-LLM",
        "train_seconds": "train s",
        "batch_size": "batch",
        "series_windows": "series-windows",
        "test_series_per_s": "test series/s",
        "learning_rate": "lr",
        "epochs_run": "epochs",
        "test": "test windows",
    }
    parts = [markdown_table(shown, columns, headers=headers, cell=ablation_cell)]
    if len(paired):
        parts += [
            "",
            "Paired over (dataset, seed): each variant against Time-LLM with the same seed; the last "
            "two columns give the training budgets the pairs were trained with.",
            "",
            markdown_table(
                paired,
                [
                    "variant",
                    "pairs",
                    "datasets",
                    "worse",
                    "better",
                    "median_change_pct",
                    "sign_p",
                    "wilcoxon_p",
                    "variant_series_windows",
                    "reference_series_windows",
                ],
                headers={
                    "worse": "worse than Time-LLM",
                    "median_change_pct": "median ΔMSE",
                    "variant_series_windows": "variant's series-windows (x pairs)",
                    "reference_series_windows": "Time-LLM's series-windows (x pairs)",
                },
                cell=ablation_cell,
            ),
        ]
    commands = [c for c in dict.fromkeys(table["command"].dropna()) if c]
    if commands:
        parts += [
            "",
            "Commands (resumable: run again to continue, or with more variants and seeds to add rows):",
            "",
        ]
        parts += [f"- `{c}`" for c in commands]
    return "\n".join(parts)


def series_windows_seen(every: pd.DataFrame) -> pd.Series:
    """Each row's training series-windows: as recorded, else (rows written before the count was
    recorded) optimiser steps x batch, an upper bound by at most one partial batch an epoch."""
    recorded = every["series_windows"] if "series_windows" in every else pd.Series(np.nan, every.index)
    estimate = every.get("steps", np.nan) * every.get("batch_size", np.nan)
    return recorded.fillna(estimate)


def merge_rows(earlier: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``new`` rows, and those of ``earlier`` that no new row replaces (same :data:`ROW_KEY`)."""
    if earlier.empty or new.empty:
        return new if earlier.empty else earlier
    replaced = earlier.set_index(ROW_KEY).index.isin(new.set_index(ROW_KEY).index)
    return pd.concat([earlier[~replaced], new], ignore_index=True)


def split_by_recipe(every: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows compared, rows superseded): per dataset and horizon, a row of a variant with a frozen LLM
    (recipe ``llm``, Time-LLM included) whose batch differs from that of Time-LLM's current recipe
    there was trained by another recipe and is not compared. Time-LLM's current recipe is the
    converged LLM recipe wherever one of its seeds has run by it (its other seeds, trained the older
    way, are set aside until they run again), else the recipe of its rows."""
    if "batch_size" not in every:
        return every, every.iloc[:0]
    llm_recipe = {name for name, v in VARIANTS.items() if v.recipe == "llm"}
    converged_batch = RECIPES["llm"].train["batch_size"]

    def current(batches: pd.Series) -> float:
        return converged_batch if (batches == converged_batch).any() else batches.iloc[0]

    full = every[every["variant"] == FULL].groupby(["dataset", "pred_len"])["batch_size"].agg(current)
    batch_of_full = [full.get((d, h)) for d, h in zip(every["dataset"], every["pred_len"], strict=True)]
    other = every["variant"].isin(llm_recipe) & pd.Series(
        [b is not None and mine != b for mine, b in zip(every["batch_size"], batch_of_full, strict=True)],
        index=every.index,
    )
    return every[~other].reset_index(drop=True), every[other].reset_index(drop=True)


def _tuning_rows(root: str | Path, earlier: Path | None) -> pd.DataFrame:
    """The learning-rate tries under ``root``; with ``earlier`` (a summary's tuning CSV), also its
    tries of the (dataset, variant) pairs that ``root`` did not search again."""
    # every ablation that has tried rates, also one whose first row is still training
    frames = [
        pd.read_csv(path).assign(dataset=path.parent.name) for path in sorted(Path(root).rglob(TUNING_CSV))
    ]
    new = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "variant"])
    if earlier is None or not earlier.is_file():
        return new
    old = pd.read_csv(earlier)
    searched = set(zip(new["dataset"], new["variant"], strict=True))
    kept = [(d, v) not in searched for d, v in zip(old["dataset"], old["variant"], strict=True)]
    return pd.concat([old[kept], new], ignore_index=True)


def write_ablation_summary(root: str | Path, out_dir: str | Path, update: bool = False) -> dict[str, Path]:
    """Write the summary files of the ablations under ``root`` to ``out_dir`` (none: {}).

    ``update``: the rows and learning-rate tries of the summary already in ``out_dir`` that the
    ablations under ``root`` do not replace are kept."""
    out_dir = Path(out_dir)
    every = collect_ablation_rows(root)
    earlier_seeds = out_dir / f"{SUMMARY}_seeds.csv"
    superseded = out_dir / SUPERSEDED_CSV
    if update and earlier_seeds.is_file():
        # the oldest first: rows set aside by an earlier update, then the summary's, then the new
        earlier = pd.read_csv(earlier_seeds)
        if superseded.is_file():
            earlier = merge_rows(pd.read_csv(superseded), earlier)
        every = merge_rows(earlier, every)
    if every.empty:
        return {}
    every = every.assign(series_windows=series_windows_seen(every))
    every, superseded_rows = split_by_recipe(every)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary_table(every)
    variants = [v for v in _variant_order(every["variant"].unique()) if v != FULL]
    paired = (
        pd.DataFrame([paired_reading(every, v) for v in variants])
        if (every["variant"] == FULL).any()
        else pd.DataFrame()
    )
    written = {
        "summary": out_dir / f"{SUMMARY}.csv",
        "seeds": earlier_seeds,
        "markdown": out_dir / f"{SUMMARY}.md",
    }
    table.to_csv(written["summary"], index=False)
    every.to_csv(written["seeds"], index=False)
    if len(superseded_rows):
        written["superseded"] = superseded
        superseded_rows.to_csv(superseded, index=False)
    else:
        superseded.unlink(missing_ok=True)
    if len(paired):
        paired.to_csv(out_dir / PAIRED_CSV, index=False)
        written["paired"] = out_dir / PAIRED_CSV
    tuning = _tuning_rows(root, out_dir / f"{SUMMARY}_tuning.csv" if update else None)
    if len(tuning):  # the learning rates each variant tried on validation, and the one kept
        written["tuning"] = out_dir / f"{SUMMARY}_tuning.csv"
        tuning.to_csv(written["tuning"], index=False)
    written["markdown"].write_text(summary_markdown(table, paired) + "\n")
    figure = plot_relative(every, out_dir / f"{SUMMARY}.png")
    if figure is not None:
        written["figure"] = figure
    written.update(write_learning_curves(find_ablations(root), out_dir))
    return written
