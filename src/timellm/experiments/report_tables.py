"""A report's tables: one row per run, runs that differ only in their seed merged into one row
(mean and spread), and average rows over the horizons (M4: frequencies) beside the paper's
averages. A folder of tables an earlier report wrote is read back with the paper's cells
attached afresh, its numbers untouched."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from timellm.evaluation.m4 import weighted_m4
from timellm.experiments import paper
from timellm.experiments.ablation import trained_converged
from timellm.experiments.report_paper import M4_METRICS, attach_paper, relative
from timellm.experiments.report_runs import PROTOCOLS, Run

PAPER_M4_AVERAGE = paper.M4_AVERAGE
M4_ALL_SERIES = paper.M4_ALL_SERIES


def _name(run: Run, root: Path) -> str:
    return str(run.path.relative_to(root)) if run.path != root else run.path.name


def _budget(record: dict[str, Any]) -> str:
    """The training budget in a few words: layers, epochs, windows per epoch."""
    model, train = record.get("model", {}), record.get("train", {})
    parts = [f"{model.get('llm_layers') or 'all'} layers", f"<= {train.get('epochs')} epochs"]
    if trained_converged(record):  # an ablation's recipe
        parts.insert(0, f"converged recipe (lr {train.get('learning_rate'):g} chosen on validation)")
    if train.get("max_train_windows"):
        parts.append(f"<= {train['max_train_windows']} windows/epoch")
    return ", ".join(parts)


def _provenance(record: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The budget, batch, optimiser steps, series-windows seen, training time and command of a run:
    the last columns of every table (series-windows: steps x batch where a run did not count them)."""
    train = record.get("train") or {}
    batch, steps, windows = train.get("batch_size"), metrics.get("steps"), metrics.get("series_windows")
    if windows is None and batch and steps:
        windows = batch * train.get("grad_accum", 1) * steps
    return {
        "budget": _budget(record),
        "batch_size": batch,
        "steps": steps,
        "series_windows": windows,
        "train_seconds": metrics.get("train_seconds"),
        "command": metrics.get("command") or record.get("command"),
        "commit": metrics.get("commit"),
    }


def _normalization(record: dict[str, Any], metrics: dict[str, Any]) -> str | None:
    """The normalisation of the model tested; "chosen: ..." where the run chose it on validation
    (the run setting ``choose_normalization``: ``seasonal`` is then the correction to seasonal naive)."""
    used = metrics.get("normalization") or (record.get("model") or {}).get("normalization")
    return f"chosen: {used}" if (record.get("run") or {}).get("choose_normalization") else used


def _rate(metrics: dict[str, Any]) -> float | None:
    seconds, windows, channels = (metrics.get(k) for k in ("test_seconds", "test_windows", "channels"))
    if not seconds or not windows or not channels:
        return None
    return windows * channels / seconds


def _same_but_seed(record: dict[str, Any]) -> str:
    """What makes runs repeats of one experiment: every recorded setting except the seed."""
    settings = {k: v for k, v in record.items() if k not in ("command", "train")}
    settings["train"] = {k: v for k, v in (record.get("train") or {}).items() if k != "seed"}
    return json.dumps(settings, sort_keys=True, default=str)


def _merge_seeds(rows: list[dict[str, Any]], metrics: Sequence[str] = ("mse", "mae")) -> list[dict[str, Any]]:
    """Runs that differ only in their seed become one row: the mean of each metric and its spread.

    ``<metric>_std`` are sample standard deviations (ddof 1) over the seeds; ``seeds`` lists
    them. A single run keeps its row (no spread columns filled). M4 rows merge sMAPE, MASE and OWA.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["_same_but_seed"], []).append(row)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        merged = dict(group[0])
        for metric in metrics:
            values = np.array([g[metric] for g in group], dtype=np.float64)
            merged[metric] = float(values.mean())
            merged[f"{metric}_std"] = float(values.std(ddof=1))
        for metric in metrics:
            paper = merged.get(f"paper_{metric}")
            merged[f"rel_{metric}"] = relative(merged[metric], paper)
        ordered = sorted(group, key=lambda g: g["seed"] or 0)
        merged["seeds"] = ",".join(str(g["seed"]) for g in ordered)
        if len({g.get("normalization") for g in group}) > 1:  # chosen per seed: each seed's choice
            merged["normalization"] = "chosen: " + ", ".join(
                str(g.get("normalization")).removeprefix("chosen: ") for g in ordered
            )
        merged["run"] = " + ".join(g["run"] for g in group)
        seconds = [g["train_seconds"] for g in group if g.get("train_seconds") is not None]
        merged["train_seconds"] = float(np.mean(seconds)) if seconds else None
        for count in ("steps", "series_windows"):  # seeds stopped early at different epochs: the mean
            values = [g[count] for g in group if g.get(count) is not None]
            merged[count] = round(float(np.mean(values))) if len(values) == len(group) else None
        merged["commit"] = ",".join(sorted({str(g.get("commit")) for g in group}))
        merged["command"] = group[0]["command"]
        out.append(merged)
    return out


def _long_term_row(run: Run, root: Path, protocol: str) -> dict[str, Any]:
    r, m = run.record, run.metrics
    dataset, target = r.get("dataset"), r.get("test_dataset", r.get("dataset"))
    pred_len = m.get("pred_len", r.get("model", {}).get("pred_len"))
    baselines = m.get("baselines", {})
    row = {
        "run": _name(run, root),
        "dataset": dataset,
        "target": target,
        "pred_len": pred_len,
        "percent": r.get("percent", 100),
        "backbone": m.get("backbone", r.get("model", {}).get("backbone")),
        "llm_layers": m.get("llm_layers"),
        "normalization": _normalization(r, m),
        "mse": m.get("mse"),
        "mae": m.get("mae"),
        "last_value_mse": baselines.get("last_value", {}).get("mse"),
        "last_value_mae": baselines.get("last_value", {}).get("mae"),
        "seasonal_naive_mse": baselines.get("seasonal_naive", {}).get("mse"),
        "seasonal_naive_mae": baselines.get("seasonal_naive", {}).get("mae"),
        "test_windows": m.get("test_windows"),
        "test_windows_total": m.get("test_windows_total"),
        **_provenance(r, m),
        # evaluation throughput: series (windows x channels) forecast per second of testing
        "test_series_per_s": _rate(m) or m.get("test_series_per_s"),
        "precision": m.get("precision", r.get("precision", r.get("train", {}).get("precision"))),
        "seed": r.get("train", {}).get("seed"),
        "_same_but_seed": _same_but_seed(r),
        "_family": _family(r, pred_len),
    }
    return attach_paper(protocol, row)


def _family(record: dict[str, Any], part: Any) -> str:
    """The preset a run belongs to, without its horizon or M4 frequency ``part`` ("illness-48-cpu" ->
    "illness-cpu", "m4-Weekly-cpu" -> "m4-cpu"): the horizons (frequencies) of one shipped preset
    average together even where one of them is tuned."""
    preset = str(record.get("preset") or "")
    return preset.replace(f"-{part}", "", 1) if preset else _budget(record)


def _family_budget(group: pd.DataFrame, part: str, label: str) -> str:
    """The budget shared by most rows of an average, then each other row's: "...; at 48: ..."."""
    common = group["budget"].astype(str).mode().iloc[0]
    others = [
        f"{label}{p}: {b}"
        for p, b in zip(group[part], group["budget"].astype(str), strict=True)
        if b != common
    ]
    return "; ".join([common, *others])


def _horizon_averages(protocol: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One average row per dataset (transfer pair, share of data), backbone and preset whose
    horizons are all present: those the paper's own average covers (ETTh1 at 5 %: three).

    A preset tuned at one horizon (its own budget there) still averages with its other horizons;
    the average's budget is then the common one, followed by each other horizon's.
    """
    out = []
    frame = pd.DataFrame(rows)
    frame = frame[frame["test_windows"] == frame["test_windows_total"]]  # whole test splits only
    keys = ["dataset", "target", "percent", "backbone", "llm_layers", "_family"]
    for (dataset, target, percent, backbone, layers, _), group in frame.groupby(keys, dropna=False):
        wanted = paper.horizons(dataset)
        if protocol == "few_shot":  # the paper's 5 % averages of ETTh1 and ETTh2 have no 720
            wanted = tuple(h for h in wanted if (float(percent), dataset, h) in paper.FEW_SHOT) or wanted
        group = group.drop_duplicates("pred_len", keep="last")
        if sorted(group["pred_len"]) != sorted(wanted):
            continue
        group = group.sort_values("pred_len")
        row = {
            "run": "(average)",
            "dataset": dataset,
            "target": target,
            "pred_len": "avg",
            "percent": percent,
            "backbone": backbone,
            "llm_layers": layers,
            "mse": float(group["mse"].mean()),
            "mae": float(group["mae"].mean()),
            **{
                f"{ref}_{metric}": float(group[f"{ref}_{metric}"].mean())
                for ref in ("last_value", "seasonal_naive")
                for metric in ("mse", "mae")
            },
            "budget": _family_budget(group, "pred_len", "at "),
            "seeds": _common_seeds(group),
            "commit": ",".join(sorted({str(c) for c in group["commit"]})),
        }
        out.append(attach_paper(protocol, row))
    return out


def _common_seeds(group: pd.DataFrame) -> str | None:
    """The seeds every horizon of an average ran with, when they are the same for all."""
    seeds = set(group["seeds"].dropna()) if "seeds" in group else set()
    if len(seeds) == 1 and group["seeds"].notna().all():
        return seeds.pop()
    return None


def _m4_row(run: Run, root: Path) -> dict[str, Any]:
    r, m = run.record, run.metrics
    baselines = m.get("baselines", {})
    # seasonal naive with the frequency's period (period 1: the last value, Naive1)
    snaive = baselines.get("seasonal_naive", baselines.get("naive1", {}))
    row = {
        "run": _name(run, root),
        "frequency": m.get("frequency", r.get("frequency")),
        "variant": m.get("variant", "time-llm"),
        "series": m.get("series"),
        "backbone": m.get("backbone", r.get("model", {}).get("backbone")),
        "llm_layers": m.get("llm_layers"),
        "smape": m.get("smape"),
        "mase": m.get("mase"),
        "owa": m.get("owa"),
        "naive2_smape": m.get("naive2_smape"),
        "naive2_mase": m.get("naive2_mase"),
        "snaive_smape": snaive.get("smape"),
        "snaive_mase": snaive.get("mase"),
        "snaive_owa": snaive.get("owa"),
        **_provenance(r, m),
        "seed": r.get("train", {}).get("seed"),
        # a reference model (DLinear) trains from the same recorded settings: its variant tells it apart
        "_same_but_seed": _same_but_seed({**r, "variant": m.get("variant", "time-llm")}),
        "_family": _family(r, m.get("frequency", r.get("frequency"))),
    }
    return attach_paper("m4", row)


def _m4_average(group: pd.DataFrame, variant: Any, backbone: Any, layers: Any) -> dict[str, Any]:
    """The series-weighted row of the frequencies in ``group`` (one row per frequency)."""
    records = group.to_dict("records")
    total = weighted_m4(records)
    snaive = {"smape": None, "mase": None, "owa": None}
    if all(isinstance(x.get("snaive_smape"), float) and math.isfinite(x["snaive_smape"]) for x in records):
        snaive = weighted_m4([{**x, "smape": x["snaive_smape"], "mase": x["snaive_mase"]} for x in records])
    return {
        "variant": variant,
        "series": total["series"],
        "backbone": backbone,
        "llm_layers": layers,
        "smape": total["smape"],
        "mase": total["mase"],
        "owa": total["owa"],
        "naive2_smape": total["naive2_smape"],
        "naive2_mase": total["naive2_mase"],
        "snaive_smape": snaive["smape"],
        "snaive_mase": snaive["mase"],
        "snaive_owa": snaive["owa"],
        "budget": _family_budget(group, "frequency", ""),
    }


def _m4_averages(rows: list[dict[str, Any]], families: bool = True) -> list[dict[str, Any]]:
    """Per variant, backbone and preset: the series-weighted row of the frequencies present beside
    the paper's weighted average over all six, and of Weekly, Daily and Hourly present beside the
    paper's "Others" row, which pools those three.

    A preset tuned for one frequency still averages with the others; the budget column then
    lists that frequency's own budget after the common one. ``families`` False groups by variant,
    backbone and layers alone (tables read back, which keep no preset name).
    """
    out = []
    frame = pd.DataFrame(rows)
    frame = frame[~frame["frequency"].astype(str).str.startswith(("Average", "Others"))]
    if "variant" not in frame:
        frame["variant"] = "time-llm"
    if not families or "_family" not in frame:
        frame = frame.assign(_family="")
    for (variant, backbone, layers, _), group in frame.groupby(
        ["variant", "backbone", "llm_layers", "_family"], dropna=False, sort=False
    ):
        group = group.drop_duplicates("frequency", keep="last")
        others = group[group["frequency"].isin(paper.M4_OTHERS_FREQUENCIES)]
        if len(others):
            names = ", ".join(others["frequency"])
            row = _m4_average(others, variant, backbone, layers)
            missing = [f for f in paper.M4_OTHERS_FREQUENCIES if f not in set(others["frequency"])]
            note = "paper: Others, Weekly + Daily + Hourly pooled (4,999 series)"
            if missing:
                note += (
                    f"; ours without {', '.join(missing)} ({row['series']:,} series): not like for like, "
                    "no relative figure"
                )
            out.append(
                {
                    "run": "(weighted average)",
                    "frequency": f"Others ({names})",
                    **row,
                    **_paper_triple(paper.M4_OTHERS, row, like_for_like=not missing),
                    "paper_note": note,
                }
            )
        row = _m4_average(group, variant, backbone, layers)
        names = ", ".join(group["frequency"])
        note = "paper: weighted over all six frequencies"
        if row["series"] != M4_ALL_SERIES:
            note += f" (100,000 series); ours over {names} ({row['series']:,}): not like for like, no relative figure"
        out.append(
            {
                "run": "(weighted average)",
                "frequency": f"Average ({names})",
                **row,
                **_paper_triple(PAPER_M4_AVERAGE, row, like_for_like=row["series"] == M4_ALL_SERIES),
                "paper_note": note,
            }
        )
    return out


def _paper_triple(
    cell: tuple[float, float, float], row: dict[str, Any], like_for_like: bool
) -> dict[str, Any]:
    """The paper's figures beside an average row; the relative difference only where the average
    covers the same series as the paper's (another mix of frequencies is another quantity)."""
    return {
        **{f"paper_{m}": cell[i] for i, m in enumerate(M4_METRICS)},
        **{
            f"rel_{m}": relative(row[m], cell[i]) if like_for_like else None for i, m in enumerate(M4_METRICS)
        },
    }


def _horizon(row: dict[str, Any]) -> float:
    value = row.get("pred_len")
    return float(value) if isinstance(value, (int, float)) else math.inf


def build_tables(runs: Sequence[Run], root: str | Path) -> dict[str, pd.DataFrame]:
    """One table per protocol present, rows in run order (plus average rows where they apply)."""
    root = Path(root)
    rows: dict[str, list[dict[str, Any]]] = {p: [] for p in PROTOCOLS}
    for run in runs:
        protocol = run.protocol
        rows[protocol].append(_m4_row(run, root) if protocol == "m4" else _long_term_row(run, root, protocol))
    tables = {}
    for protocol, items in rows.items():
        if not items:
            continue
        if protocol == "m4":  # seeds merged, frequencies in run order
            items = _merge_seeds(items, M4_METRICS)
        else:  # seeds merged; datasets in name order, horizons in numeric order
            items = sorted(
                _merge_seeds(items),
                key=lambda r: (
                    str(r.get("dataset")),
                    str(r.get("target")),
                    r.get("percent") or 100,
                    _horizon(r),
                ),
            )
        if protocol != "m4":
            items = items + _horizon_averages(protocol, items)
        else:
            items = items + _m4_averages(items)
        # the grouping keys of seeds and averages ("_same_but_seed", "_family") are not columns
        items = [{k: v for k, v in r.items() if not k.startswith("_")} for r in items]
        tables[protocol] = _typed(protocol, pd.DataFrame(items))
    return tables


def read_tables(folder: str | Path) -> dict[str, pd.DataFrame]:
    """The tables a report wrote to ``folder`` (``<protocol>.csv``), with the paper's cells
    attached afresh: the numbers of every row stay as they are; M4's averages are recomputed
    from its frequency rows (they are series-weighted sums of them)."""
    folder = Path(folder)
    tables = {}
    for protocol in PROTOCOLS:
        path = folder / f"{protocol}.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(
            path, dtype={"seeds": str, "commit": str, "pred_len": str}, float_precision="round_trip"
        )
        columns = list(frame.columns)
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        if protocol == "m4":
            rows = [r for r in rows if not str(r["frequency"]).startswith(("Average", "Others"))]
            rows = [attach_paper(protocol, r) for r in rows]
            rows += _m4_averages(rows, families=False)
        else:
            for r in rows:
                r["pred_len"] = int(r["pred_len"]) if str(r["pred_len"]).isdigit() else r["pred_len"]
            rows = [attach_paper(protocol, r) for r in rows]
        table = pd.DataFrame(rows)
        table = table.reindex(columns=[*columns, *(c for c in table.columns if c not in columns)])
        tables[protocol] = _typed(protocol, table)
    return tables


def _typed(protocol: str, table: pd.DataFrame) -> pd.DataFrame:
    """Spread and seed columns always present; counts as integers beside empty cells."""
    spread = [f"{m}_std" for m in (M4_METRICS if protocol == "m4" else ("mse", "mae"))]
    for column in ("seeds", *spread):
        if column not in table:
            table[column] = None
    for column in (
        "steps",
        "series",
        "llm_layers",
        "test_windows",
        "test_windows_total",
        "batch_size",
        "series_windows",
    ):
        if column in table and table[column].map(lambda v: v is None or isinstance(v, (int, float))).all():
            table[column] = pd.to_numeric(table[column]).astype("Int64")
    return table


# what makes a row of a long-term, few-shot or zero-shot table the same experiment as another: a
# row run again (more seeds, a longer run of the same budget) replaces it under --update
SAME_ROW = ("dataset", "target", "pred_len", "percent", "backbone", "llm_layers", "budget")


def merge_tables(
    earlier: dict[str, pd.DataFrame], tables: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """``tables`` with the rows of ``earlier`` (the tables already in the output folder) that they
    do not replace, in the tables' order: datasets, then horizons, the averages last. M4 tables are
    replaced whole (their averages weigh the frequencies of one set of runs); a protocol without new
    rows is left out (its table stays as it is)."""
    merged = {}
    for protocol, table in tables.items():
        old = earlier.get(protocol)
        if protocol == "m4" or old is None:
            merged[protocol] = table
            continue
        old = _with_batches(old)
        key = lambda frame: frame[list(SAME_ROW)].astype(str).agg("|".join, axis=1)  # noqa: E731
        old = old[~key(old).isin(set(key(table)))]
        both = pd.DataFrame([*old.to_dict("records"), *table.to_dict("records")])
        both = both.reindex(columns=[*old.columns, *(c for c in table.columns if c not in old.columns)])
        average = both["pred_len"].astype(str) == "avg"
        horizon = pd.to_numeric(both["pred_len"], errors="coerce")
        order = both.assign(_avg=average, _h=horizon).sort_values(
            ["_avg", "dataset", "target", "percent", "_h"], kind="stable"
        )
        merged[protocol] = _typed(protocol, order.drop(columns=["_avg", "_h"]).reset_index(drop=True))
    return merged


def _with_batches(table: pd.DataFrame) -> pd.DataFrame:
    """A table written before rows recorded their batch and series-windows: both filled in where the
    row names the shipped preset it ran (``ETTh1-96-cpu``, ``v4/illness-48-cpu-s2022 + ...``),
    series-windows as steps x that preset's batch (none of them accumulates gradients)."""
    from timellm.experiments.presets import all_presets

    presets = all_presets()
    table = table.copy()
    for column in ("batch_size", "series_windows"):
        if column not in table:
            table[column] = None
    for i, row in table.iterrows():
        name = re.sub(r"-s\d+$", "", str(row["run"]).split(" + ")[0].rsplit("/", 1)[-1])
        if pd.isna(row["batch_size"]) and name in presets:
            table.at[i, "batch_size"] = presets[name].train.batch_size
        if pd.isna(row["series_windows"]) and pd.notna(row["steps"]) and pd.notna(table.at[i, "batch_size"]):
            table.at[i, "series_windows"] = int(row["steps"]) * int(table.at[i, "batch_size"])
    return table
