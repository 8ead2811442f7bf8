"""The practitioner tables of results/practitioner.md from the backtests' score files.

    python scripts/practitioner_summary.py results/practitioner/optimum

reads ``<set>_seed<S>_scores.csv`` (the ``overall`` rows that ``timellm backtest --scores`` writes)
for each set and seed, and prints, per set: Time-LLM's MASE (mean ± sample std over the seeds, and
each seed), the best statistical model's, their ratio, the Combination's, Time-LLM's training
seconds, and the interval columns (coverage and MSIS at 80 % and 95 %, means over the seeds).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from timellm.evaluation.statistical import LONG_SEASON_MODELS, STATISTICAL_MODELS

# the backtest's statistical models; above a long season, AutoETS and AutoARIMA run inside MSTL
STATISTICAL = (*STATISTICAL_MODELS, *LONG_SEASON_MODELS.values())


def overall(folder: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(folder.glob("*_scores.csv")):
        match = re.fullmatch(r"(.+?)_(seed(\d+)|W\d+)_scores\.csv", path.name)
        if match is None:
            continue
        rows = pd.read_csv(path)
        rows = rows[rows["unique_id"] == "overall"]
        seed = int(match.group(3)) if match.group(3) else 2021
        frames.append(rows.assign(set=match.group(1), seed=seed))
    if not frames:
        raise SystemExit(f"no <set>_seed<S>_scores.csv in {folder}")
    return pd.concat(frames, ignore_index=True)


def main(folder: str) -> None:
    every = overall(Path(folder))
    print(
        "| set | Time-LLM MASE, seeds | best statistical | Time-LLM / best | Combination | Time-LLM seconds |"
    )
    print("|---|---|---|---|---|---|")
    for name, rows in every.groupby("set", sort=False):
        llm = rows[rows["model"] == "TimeLLM"].sort_values("seed")
        stats = rows[rows["model"].isin(STATISTICAL) & (rows["seed"] == llm["seed"].iloc[0])]
        best = stats.loc[stats["MASE"].idxmin()]
        combination = rows[rows["model"] == "Combination"]["MASE"]
        spread = f" ± {llm['MASE'].std(ddof=1):.3f}" if len(llm) > 1 else ""
        seeds = ", ".join(f"{v:.3f}" for v in llm["MASE"])
        print(
            f"| {name} | {llm['MASE'].mean():.3f}{spread} ({seeds}) | {best['model']} {best['MASE']:.3f} "
            f"| {llm['MASE'].mean() / best['MASE']:.2f} | {combination.mean():.3f} "
            f"| {llm['seconds'].min():.0f}-{llm['seconds'].max():.0f} |"
        )
    print()
    print(
        "| set | Time-LLM cov-80 / MSIS-80 | best MSIS-80 (its coverage) | Time-LLM cov-95 / MSIS-95 | best MSIS-95 |"
    )
    print("|---|---|---|---|---|")
    for name, rows in every.groupby("set", sort=False):
        llm = rows[rows["model"] == "TimeLLM"]
        stats = rows[rows["model"].isin(STATISTICAL) & (rows["seed"] == llm["seed"].iloc[0])]
        b80, b95 = stats.loc[stats["MSIS-80"].idxmin()], stats.loc[stats["MSIS-95"].idxmin()]
        print(
            f"| {name} | {llm['coverage-80'].mean():.3f} / {llm['MSIS-80'].mean():.2f} "
            f"| {b80['model']} {b80['MSIS-80']:.2f} ({b80['coverage-80']:.2f}) "
            f"| {llm['coverage-95'].mean():.3f} / {llm['MSIS-95'].mean():.2f} | {b95['model']} {b95['MSIS-95']:.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/practitioner/optimum")
