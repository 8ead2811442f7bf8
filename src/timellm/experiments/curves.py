"""Learning curves: where each model of an ablation stops improving.

An ablation run with the run setting ``curve_test_windows`` scores that many evenly spaced test
windows after every epoch, beside the validation loss that chooses the epoch; each run's
``history.csv`` then holds, per epoch, the series-windows seen so far, the validation loss and the
test MSE and MAE. :func:`learning_curves` gathers them, one row per (dataset, variant, seed, epoch),
and :func:`plot_learning_curves` draws validation loss and test MSE against series-windows seen,
one line per variant, the epoch that validation kept marked. The test scores only report: nothing
is chosen on them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from timellm.experiments.ablation import VARIANTS
from timellm.experiments.folders import HISTORY, RUN_CONFIG, read_run_record
from timellm.plotting import plot_learning_curves

CURVE = "learning_curve"


def learning_curves(ablation: str | Path) -> pd.DataFrame:
    """Every epoch of every run of one ablation folder whose history has test scores.

    Columns: dataset, pred_len, variant, seed, epoch, series_windows, steps, val_loss, test_mse,
    test_mae, kept (the epoch whose adapter validation kept), test_windows (scored per epoch).
    """
    ablation = Path(ablation)
    record = read_run_record(ablation) if (ablation / RUN_CONFIG).is_file() else {}
    frames = []
    for history_file in sorted(ablation.glob(f"*/seed-*/{HISTORY}")):
        history = pd.read_csv(history_file)
        if "test_mse" not in history or "series_windows" not in history:
            continue
        history = history[history["epoch"] > 0]  # an untrained epoch 0 has seen nothing
        kept = history["val_loss"].idxmin()
        frames.append(
            history.assign(
                dataset=record.get("dataset", ablation.name),
                pred_len=(record.get("model") or {}).get("pred_len"),
                variant=history_file.parent.parent.name,
                seed=int(history_file.parent.name.removeprefix("seed-")),
                kept=history.index == kept,
                test_windows=(record.get("run") or {}).get("curve_test_windows"),
            )
        )
    if not frames:
        return pd.DataFrame()
    columns = ["dataset", "pred_len", "variant", "seed", "epoch", "series_windows", "steps", "val_loss"]
    columns += ["test_mse", "test_mae", "kept", "test_windows"]
    return pd.concat(frames, ignore_index=True)[columns]


def write_learning_curves(ablations: list[Path], out_dir: str | Path) -> dict[str, Path]:
    """``learning_curve_<dataset>-<horizon>.csv`` and ``.png`` for each ablation with test scores
    per epoch; several folders of one dataset and horizon share a curve."""
    frames = [learning_curves(folder) for folder in ablations]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return {}
    every = pd.concat(frames, ignore_index=True)
    written = {}
    out_dir = Path(out_dir)
    for (dataset, pred_len), curves in every.groupby(["dataset", "pred_len"], sort=False):
        name = f"{CURVE}_{dataset}-{int(pred_len)}"
        curves.to_csv(out_dir / f"{name}.csv", index=False)
        labels = {v: VARIANTS[v].label for v in VARIANTS if v in set(curves["variant"])}
        written[name] = plot_learning_curves(
            curves, labels, out_dir / f"{name}.png", f"{dataset}, horizon {int(pred_len)}: learning curves"
        )
    return written
