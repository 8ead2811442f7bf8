"""The paper's cell beside each row of a report: the same dataset and horizon, share of training
data, transfer pair or M4 frequency (:mod:`timellm.experiments.paper`), and our relative
difference to it. No row is ever set against an average of other rows."""

from __future__ import annotations

import math
from typing import Any

from timellm.experiments import paper

M4_METRICS = ("smape", "mase", "owa")  # an M4 row's scores, in the paper's order


def relative(ours: float | None, paper: float | None) -> float | None:
    """(ours - paper) / paper; None when either is missing."""
    if ours is None or paper is None or not math.isfinite(ours):
        return None
    return (ours - paper) / paper


def paper_cell(protocol: str, row: dict[str, Any]) -> tuple[tuple[float, ...] | None, str]:
    """The paper's cell for one row of ``protocol`` (``pred_len`` "avg" for an average row) and
    its label: always the same dataset, horizon, share and transfer pair, never another row's."""
    if protocol == "m4":
        return paper.m4_cell(str(row.get("frequency")))
    dataset, horizon = row.get("dataset"), row.get("pred_len")
    if protocol == "few_shot":
        return paper.few_shot_cell(float(row.get("percent") or 100), dataset, horizon)
    if protocol == "zero_shot":
        return paper.zero_shot_cell(dataset, row.get("target"), horizon)
    return paper.long_term_cell(dataset, horizon)


def attach_paper(protocol: str, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the paper's cell, its label and our relative difference to it."""
    metrics = M4_METRICS if protocol == "m4" else ("mse", "mae")
    cell, note = paper_cell(protocol, row)
    out = dict(row, paper_note=note)
    for i, metric in enumerate(metrics):
        out[f"paper_{metric}"] = cell[i] if cell else None
        out[f"rel_{metric}"] = relative(row.get(metric), cell[i] if cell else None)
    if protocol != "m4":
        # the baselines' published figures are four-horizon averages: beside average rows only
        average = protocol == "long_term" and row.get("pred_len") == "avg"
        for name, table in paper.BASELINES_AVERAGE.items():
            for i, metric in enumerate(("mse", "mae")):
                figure = table.get(row.get("dataset"), (None, None))[i] if average else None
                out[f"paper_{name}_avg_{metric}"] = figure
    return out
