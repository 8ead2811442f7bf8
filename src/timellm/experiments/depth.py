"""Depth: does a deeper frozen LLM forecast better? The paper says so; this draws our answer.

Time-LLM trained by the converged recipe (the ablation's Time-LLM runs, and ``timellm train
--preset <dataset>-<h>-converged --set llm_layers=N`` for other depths) at each number of frozen
layers it ran with, beside the w/o-LLM model of the same dataset and horizon under its own
converged recipe (0 frozen layers: the patch embedding straight into the output head). Every depth
trains at the learning rate the preset holds, the one validation chose at 2 layers, so a depth
changes one thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from timellm.experiments.report_runs import Run
from timellm.plotting import plot_depth

DEPTH = "depth"
CONVERGED_SUFFIX = "-converged"
COLUMNS = [
    "dataset", "pred_len", "model", "llm_layers", "seed", "mse", "mae", "learning_rate", "steps",
    "series_windows", "test_windows", "test_windows_total", "run",
]  # fmt: skip


def depth_rows(runs: Sequence[Run], ablation_seeds: pd.DataFrame | None) -> pd.DataFrame:
    """One row per converged Time-LLM run (``model`` "Time-LLM") on a whole test split, and one per
    converged w/o-LLM seed of the same datasets and horizons (``model`` "w/o LLM", 0 layers)."""
    rows = []
    for run in runs:
        record, metrics = run.record, run.metrics
        model = record.get("model") or {}
        whole = metrics.get("test_windows") == metrics.get("test_windows_total")
        if not str(record.get("preset", "")).endswith(CONVERGED_SUFFIX) or model.get("llm") in (None, "none"):
            continue
        if not whole:  # a subset of the test windows is another quantity than a whole split
            continue
        rows.append(
            {
                "dataset": record.get("dataset"),
                "pred_len": model.get("pred_len"),
                "model": "Time-LLM",
                "llm_layers": model.get("llm_layers"),
                "seed": (record.get("train") or {}).get("seed"),
                "mse": metrics.get("mse"),
                "mae": metrics.get("mae"),
                "learning_rate": (record.get("train") or {}).get("learning_rate"),
                "steps": metrics.get("steps"),
                "series_windows": metrics.get("series_windows"),
                "test_windows": metrics.get("test_windows"),
                "test_windows_total": metrics.get("test_windows_total"),
                "run": str(run.path),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty or ablation_seeds is None or ablation_seeds.empty:
        return frame
    seeds = ablation_seeds
    wanted = {(d, int(h)) for d, h in zip(frame["dataset"], frame["pred_len"], strict=True)}
    same = pd.Series(
        [(d, int(h)) in wanted for d, h in zip(seeds["dataset"], seeds["pred_len"], strict=True)],
        index=seeds.index,
    )
    free = seeds[
        (seeds["variant"] == "no-llm")
        & (seeds["budget"] == "converged")
        & (seeds["test_windows"] == seeds["test_windows_total"])
        & same
    ]
    free = free.assign(model="w/o LLM", llm_layers=0, run=free["ablation"])
    return pd.DataFrame([*frame.to_dict("records"), *free.reindex(columns=COLUMNS).to_dict("records")])


def write_depth(
    runs: Sequence[Run], ablation_seeds: pd.DataFrame | None, out_dir: str | Path
) -> dict[str, Path]:
    """``depth_<dataset>-<horizon>.csv`` and ``.png`` for each dataset and horizon where converged
    Time-LLM ran at two depths or more."""
    frame = depth_rows(runs, ablation_seeds)
    written: dict[str, Path] = {}
    for (dataset, horizon), group in frame.groupby(["dataset", "pred_len"], sort=True):
        llm = group[group["model"] == "Time-LLM"]
        if llm["llm_layers"].nunique() < 2:
            continue
        name = f"{DEPTH}_{dataset}-{int(horizon)}"
        group = group.sort_values(["llm_layers", "seed"])
        group.to_csv(Path(out_dir) / f"{name}.csv", index=False)
        rate = ", ".join(f"{r:g}" for r in sorted(llm["learning_rate"].dropna().unique()))
        written[name] = plot_depth(
            group,
            Path(out_dir) / f"{name}.png",
            f"{dataset}, horizon {int(horizon)}: test MSE against frozen LLM layers "
            f"(converged recipe, lr {rate}; whole test split)",
        )
    return written
