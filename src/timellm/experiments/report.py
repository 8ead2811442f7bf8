"""The reproduction report: run folders gathered into one table per protocol, beside the paper.

Every folder under a root that holds ``config.yaml`` and ``metrics.json`` is a run. Its protocol:
``m4`` (an M4 run), ``zero_shot`` (tested on another dataset than it was trained on), ``few_shot``
(trained on less than 100 % of the training windows) or ``long_term``. For each protocol present
:func:`write_report` writes ``<protocol>.csv`` (the numbers) and ``report_<protocol>.md`` (the
same table for reading, with notes).

Each row stands beside the paper's own cell (:mod:`timellm.experiments.paper`): the same dataset
and horizon, share of training data, transfer pair or M4 frequency. Averages over horizons
(frequencies) are rows of their own, beside the paper's averages; no row is ever set against an
average of other rows. A folder of tables this command wrote before (and no run folders) is
rendered again with the paper's cells attached afresh, its numbers untouched.

The steps: :mod:`~timellm.experiments.report_runs` finds the runs and their protocols,
:mod:`~timellm.experiments.report_tables` makes their rows and averages (or reads earlier tables),
:mod:`~timellm.experiments.report_paper` sets the paper's cell beside each row, and
:mod:`~timellm.experiments.report_markdown` writes the tables for reading; this module writes the
files and the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from timellm.experiments.ablation_summary import SUMMARY, write_ablation_summary
from timellm.experiments.depth import write_depth
from timellm.experiments.folders import HISTORY, METRICS, RUN_CONFIG
from timellm.experiments.report_markdown import TITLES, render_markdown
from timellm.experiments.report_runs import PROTOCOLS, Run, collect_runs, converged_runs
from timellm.experiments.report_tables import build_tables, merge_tables, read_tables


def write_report(
    root: str | Path, out_dir: str | Path | None = None, update: bool = False
) -> tuple[dict[str, Path], str]:
    """Write ``<protocol>.csv`` and ``report_<protocol>.md`` for each protocol found under ``root``.

    ``root`` holds run folders, or (none of them) the tables of an earlier report, which are
    rendered again beside the paper's cells (:func:`read_tables`). ``update`` keeps the ablation
    rows already in ``out_dir`` that the ablations under ``root`` do not replace. Returns the
    written Markdown files by protocol and the whole report as Markdown.
    """
    root = Path(root)
    runs = collect_runs(root) + converged_runs(root)
    tables = build_tables(runs, root) if runs else read_tables(root)
    out_dir = Path(out_dir) if out_dir is not None else root
    if update and runs:
        tables = merge_tables(read_tables(out_dir), tables)
    ablations = write_ablation_summary(root, out_dir, update=update)
    if ablations and not tables:
        return {"ablation": ablations["markdown"]}, ablations["markdown"].read_text()
    if not tables:
        raise FileNotFoundError(
            f"no run folder (with {RUN_CONFIG} and {METRICS}) and no report table "
            f"({', '.join(p + '.csv' for p in PROTOCOLS)}) under {root}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written, sections = ({"ablation": ablations["markdown"]} if ablations else {}), []
    for protocol, table in tables.items():
        table.to_csv(out_dir / f"{protocol}.csv", index=False)
        section = render_markdown(protocol, table)
        path = out_dir / f"report_{protocol}.md"
        path.write_text(f"# Time-LLM reproduction: {TITLES[protocol].lower()}\n\n" + section)
        written[protocol] = path
        sections.append(section)
    _data_curves(tables, out_dir)
    _zero_shot_curves(runs, out_dir)
    summary_seeds = out_dir / f"{SUMMARY}_seeds.csv"
    write_depth(runs, pd.read_csv(summary_seeds) if summary_seeds.is_file() else None, out_dir)
    if ablations:
        sections.append("## Ablation\n\n" + ablations["markdown"].read_text())
    return written, "\n".join(sections)


ZERO_SHOT_CURVES = "zero_shot_curves.png"


def _zero_shot_curves(runs: Sequence[Run], out_dir: Path) -> Path | None:
    """``zero_shot_curves.png``: each zero-shot run's training and source-validation loss by step,
    one panel per source, target and horizon, titled with the target's test scores beside its
    seasonal naive: how far training on the source went, and what that gave on the target."""
    from timellm.plotting import plot_training_curves

    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.protocol == "zero_shot" and (run.path / HISTORY).is_file():
            r = run.record
            key = (r.get("dataset"), r.get("test_dataset"), run.metrics.get("pred_len"))
            groups.setdefault(key, []).append(run)
    if not groups:
        return None
    panels = []
    for (source, target, horizon), group in sorted(groups.items(), key=lambda item: str(item[0])):
        group = sorted(group, key=lambda run: run.record.get("train", {}).get("seed") or 0)
        mse = np.mean([run.metrics["mse"] for run in group])
        mae = np.mean([run.metrics["mae"] for run in group])
        naive = group[0].metrics.get("baselines", {}).get("seasonal_naive", {})
        seeds = "" if len(group) == 1 else f" (mean of {len(group)} seeds)"
        loss = group[0].record.get("train", {}).get("loss", "mse")
        title = f"{source} -> {target}, {horizon}, {loss.upper()} loss\n{target} test {mse:.3f} / {mae:.3f}{seeds}"
        if naive:
            title += f"; seasonal naive {naive['mse']:.3f} / {naive['mae']:.3f}"
        curves = []
        for run in group:
            seed, history = run.record.get("train", {}).get("seed"), pd.read_csv(run.path / HISTORY)
            # a run that chose its normalisation trained a correction to seasonal naive too: its own curve
            correction = history.get("candidate", pd.Series(index=history.index)).notna()
            kept = run.metrics.get("normalization_choice", {}).get("kept")
            first = " (not kept)" if kept == "correction" else ""
            curves.append((f"seed {seed}{first}", history[~correction]))
            if correction.any():
                second = "" if kept == "correction" else " (not kept)"
                curves.append((f"seed {seed}, correction{second}", history[correction]))
        panels.append({"title": title, "runs": curves})
    return plot_training_curves(
        panels,
        out_dir / ZERO_SHOT_CURVES,
        "Zero-shot: loss on the source by step (test MSE / MAE on the target)",
    )


def _data_curves(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """``few_shot_<dataset>-<horizon>.png``: test error against the share of training data, for
    every dataset and horizon with few-shot runs and a full run of their budget (the learning curve
    over data)."""
    from timellm.plotting import plot_data_curve

    few, full = tables.get("few_shot"), tables.get("long_term")
    if few is None or full is None or few.empty:
        return []
    full = full[full["pred_len"].astype(str) != "avg"].assign(percent=100.0)
    paths = []
    for (dataset, horizon), group in few.groupby(["dataset", "pred_len"]):
        whole = full[(full["dataset"] == dataset) & (full["pred_len"].astype(str) == str(horizon))]
        whole = whole[whole["budget"].isin(set(group["budget"]))]  # the full run of the same budget
        if whole.empty:
            continue
        columns = ["percent", "mse", "mae"]
        columns += [f"{n}_{m}" for n in ("seasonal_naive", "last_value") for m in ("mse", "mae")]
        rows = pd.DataFrame([*group[columns].to_dict("records"), *whole[columns].to_dict("records")])
        path = out_dir / f"few_shot_{dataset}-{horizon}.png"
        paths.append(
            plot_data_curve(rows, path, f"{dataset}, horizon {horizon}: test error by training data")
        )
    return paths
