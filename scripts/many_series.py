"""How long a default fit takes on many short series, and what its validation costs.

    python scripts/many_series.py [--series 500] [--out results/many_series]

The series are 120-hour segments of M4 Hourly (``$TIMELLM_DATA/m4/Hourly-train.csv.gz``: the
last 120 hours of every series, then the 120 before them, until there are ``--series``), forecast
24 hours ahead. Three fits of the same forecaster (every default, the same seed), each timed:

- ``default``: validation on the last horizon + 19 steps of every series (20 windows each), early
  stopping on an even sample of about 500 of those windows, interval calibration on one of 2,000;
- ``every window``: the same validation part, all its windows read (the sample's cap lifted);
- ``one window``: validation on the last horizon only (one window per series; intervals at 95 %
  need 19 windows, so they come from the pooled windows of all series).

Writes OUT.csv and OUT.md and prints the table.
"""

import argparse
import logging
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import timellm.evaluation.conformal as conformal
import timellm.forecaster.fitting as fitting
from timellm import TimeLLMForecaster

SEGMENT = 120  # hours per series
HORIZON = 24


def segments(count: int) -> pd.DataFrame:
    """``count`` series of SEGMENT hours from M4 Hourly, latest segments first."""
    path = Path(os.environ.get("TIMELLM_DATA", "../shared/datasets")) / "m4" / "Hourly-train.csv.gz"
    table = pd.read_csv(path, index_col=0)
    frames, k = [], 0
    while len(frames) < count:
        for name, row in table.iterrows():
            values = row.dropna().to_numpy(dtype=np.float64)
            end = len(values) - k * SEGMENT
            if end - SEGMENT < 0:
                continue
            ds = pd.date_range("2020-01-01", periods=SEGMENT, freq="h")
            frames.append(
                pd.DataFrame({"unique_id": f"{name}-{k}", "ds": ds, "y": values[end - SEGMENT : end]})
            )
            if len(frames) == count:
                break
        k += 1
    return pd.concat(frames, ignore_index=True)


class Recorder(logging.Handler):
    """Keeps the forecaster's log messages of one fit."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def timed_fit(df: pd.DataFrame, caps: tuple[int, int], val_size: int | None) -> dict:
    """One default fit, timed; ``caps``: the early-stopping and calibration samples' sizes."""
    fitting.MAX_EARLY_STOPPING_WINDOWS, conformal.MAX_CALIBRATION_WINDOWS = caps
    recorder = Recorder()
    log = logging.getLogger("timellm")
    log.addHandler(recorder)
    log.setLevel(logging.INFO)
    fc = TimeLLMForecaster(HORIZON, val_size=val_size, max_steps=100)  # the budget many_series.* measured
    start = time.perf_counter()
    try:
        fc.fit(df)
    finally:
        log.removeHandler(recorder)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "validation_steps": val_size or HORIZON + 19,
        "calibration_windows": len(fc.calibration),
        "steps": fc.fit_result.steps,
        "epochs": fc.fit_result.epochs_run,
        # a second adapter, a correction to seasonal naive, is trained where the first validates worse
        "adapters_trained": 1 + sum("training a correction" in m for m in recorder.messages),
        "normalization": fc.config.normalization,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=500)
    parser.add_argument("--out", default="results/many_series")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    df = segments(args.series)
    defaults = (fitting.MAX_EARLY_STOPPING_WINDOWS, conformal.MAX_CALIBRATION_WINDOWS)
    rows = []
    for setting, caps, val_size in (
        ("default", defaults, None),
        ("every window", (10**9, 10**9), None),
        ("one window", defaults, HORIZON),
    ):
        row = {"setting": setting, "series": args.series, **timed_fit(df, caps, val_size)}
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    table["vs_default"] = table["seconds"] / table.loc[0, "seconds"]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    table["cpu"] = cpu
    table["threads"] = torch.get_num_threads()
    table["commit"] = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    shown = ["setting", "series", "validation_steps", "calibration_windows", "adapters_trained", "seconds"]
    lines = ["| " + " | ".join([*shown, "vs default"]) + " |", "|" + "---|" * (len(shown) + 1)]
    for row in table.itertuples(index=False):
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in (getattr(row, c) for c in shown)]
        lines.append("| " + " | ".join([*cells, f"{row.vs_default:.2f}x"]) + " |")
    markdown = "\n".join(lines)
    out.with_suffix(".md").write_text(
        f"# A default fit on {args.series} short series\n\n"
        f"`python scripts/many_series.py --series {args.series}` on {cpu}, {torch.get_num_threads()} thread(s).\n\n"
        f"{markdown}\n"
    )
    print(markdown)


if __name__ == "__main__":
    main()
