"""A report's tables as Markdown: the columns worth reading, each cell written for reading, and
the notes that say what the numbers are and where the paper's cell differs."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from timellm.experiments.tables import markdown_table

TITLES = {
    "long_term": "Long-term forecasting",
    "few_shot": "Few-shot forecasting",
    "zero_shot": "Zero-shot transfer",
    "m4": "M4 short-term forecasting",
}


def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column.startswith("rel_"):
        return f"{value:+.1%}"
    if isinstance(value, float):
        if column in ("train_seconds", "test_series_per_s", "percent", "pred_len", "series", "llm_layers"):
            return f"{value:g}" if column not in ("train_seconds", "test_series_per_s") else f"{value:.0f}"
        return f"{value:.3f}" if column.endswith("smape") else f"{value:.4f}"
    if column == "command":
        return f"`{value}`"
    return str(value).replace("|", "\\|")


MARKDOWN_COLUMNS = {
    "long_term": [
        "dataset", "pred_len", "backbone", "llm_layers", "mse", "mse_std", "mae", "mae_std", "seeds",
        "paper_mse", "paper_mae", "rel_mse", "rel_mae", "paper_patchtst_avg_mse", "paper_dlinear_avg_mse",
        "last_value_mse", "last_value_mae", "seasonal_naive_mse", "seasonal_naive_mae", "budget",
        "steps", "series_windows", "precision", "train_seconds", "test_series_per_s",
    ],
    "few_shot": [
        "dataset", "pred_len", "percent", "backbone", "llm_layers", "normalization", "mse", "mse_std", "mae", "mae_std",
        "seeds", "paper_mse",
        "paper_mae", "rel_mse", "rel_mae", "last_value_mse", "last_value_mae", "seasonal_naive_mse", "seasonal_naive_mae", "budget",
        "train_seconds",
    ],
    "zero_shot": [
        "dataset", "target", "pred_len", "backbone", "llm_layers", "normalization", "mse", "mse_std", "mae", "mae_std",
        "seeds", "paper_mse",
        "paper_mae", "rel_mse", "rel_mae", "last_value_mse", "last_value_mae", "seasonal_naive_mse", "seasonal_naive_mae", "budget",
        "train_seconds",
    ],
    "m4": [
        "frequency", "variant", "series", "backbone", "llm_layers", "smape", "mase", "owa", "owa_std",
        "seeds", "naive2_smape",
        "naive2_mase", "snaive_smape", "snaive_mase", "snaive_owa", "paper_smape", "paper_mase",
        "paper_owa", "rel_smape", "rel_mase", "rel_owa",
        "budget", "train_seconds",
    ],
}  # fmt: skip


def render_markdown(protocol: str, table: pd.DataFrame) -> str:
    """The Markdown section of one protocol: the table, the commands and the notes."""
    parts = [f"## {TITLES[protocol]}", "", markdown_table(table, MARKDOWN_COLUMNS[protocol], cell=_cell), ""]
    if protocol in ("long_term", "few_shot", "zero_shot"):
        parts.append(
            "MSE/MAE on the standardised scale over every test window and channel; the naive columns "
            "are the last-value and seasonal-naive forecasts of the same windows."
        )
        partial = table[
            table["test_windows"].notna() & (table["test_windows"] != table["test_windows_total"])
        ]
        if len(partial):
            parts.append(
                f"Runs tested on a subset of the test windows (not comparable to the paper): {', '.join(partial['run'])}."
            )
    else:
        parts.append(
            "SMAPE (%), MASE and OWA against the official test file; OWA relates SMAPE and MASE to the "
            "official Naive2 forecasts (Naive2 scores 1); snaive: the seasonal naive forecast from the same "
            "inputs (period 1: the last value). The average rows weigh each frequency by its series."
        )
    parts.append(
        "Paper columns: Time-LLM (LLaMA-7B) in the paper's own cell for each row, the same "
        + ("frequency" if protocol == "m4" else "dataset and horizon")
        + {"few_shot": " at the same share of training data", "zero_shot": " and transfer pair"}.get(
            protocol, ""
        )
        + "; average rows beside the paper's averages (the CSV's `paper_note` names each cell). "
        "Relative difference = (ours - paper) / paper. The CSV records the commit of every row."
    )
    caveats = sorted(
        {n for n in table["paper_note"].dropna() if "no " in n or "not like" in n or "printed" in n}
    )
    if caveats:
        parts.append("Where the cell differs: " + "; ".join(caveats) + ".")
    commands = [
        (r["run"], r["command"]) for r in table.to_dict("records") if isinstance(r.get("command"), str)
    ]
    if commands:
        parts += ["", "Commands:", ""] + [f"- `{run}`: `{command}`" for run, command in commands]
    return "\n".join(parts) + "\n"
