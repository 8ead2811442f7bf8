"""Benchmark runs: train a preset on its dataset, test it, and write a run folder.

A run folder holds ``config.yaml`` (everything resolved), ``metrics.json``, ``history.csv``,
``train.log``, the trained ``adapter/`` and ``forecast.png``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from timellm.config import TimeLLMConfig
from timellm.data.benchmarks import Splits, load_splits
from timellm.data.windows import WindowDataset
from timellm.evaluation import naive_references, predict_windows
from timellm.metrics import mae, mse
from timellm.model import TimeLLM
from timellm.plotting import plot_forecasts
from timellm.presets import Preset
from timellm.training import TrainConfig, fit, seed_everything

logger = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
METRICS = "metrics.json"
ADAPTER_DIR = "adapter"


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Also write the package's log records to ``path`` while the block runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("timellm")
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def score_test_split(model, splits: Splits, batch_size: int, limit: int | None = None) -> tuple[dict, tuple]:
    """MSE/MAE on the test split (every window unless ``limit``), naive references beside them."""
    past, pred, true = predict_windows(
        model, splits.test, splits.seq_len, splits.pred_len, batch_size, max_windows=limit
    )
    total = splits.test.shape[0] - splits.seq_len - splits.pred_len + 1
    metrics = {
        "mse": mse(pred, true),
        "mae": mae(pred, true),
        "test_windows": int(pred.shape[0]),
        "test_windows_total": int(total),
        "channels": int(pred.shape[2]),
        "baselines": naive_references(past, true, splits.period),
    }
    return metrics, (past, pred, true)


def train_and_test(
    preset: Preset,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    percent: float = 100,
    test_dataset: str | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train ``preset`` (model and training settings) on its dataset, test, and write the run folder.

    ``test_dataset`` tests on another dataset's test split (zero-shot transfer); ``percent`` keeps
    the first ``percent`` % of the training windows (few-shot).
    """
    model_config, train_config = preset.model, preset.train
    # read the data first: a missing file must not leave an empty run folder behind
    splits = load_splits(preset.dataset, model_config.seq_len, model_config.pred_len, data_dir, percent)
    test_splits = splits
    if test_dataset is not None and test_dataset != preset.dataset:
        test_splits = load_splits(test_dataset, model_config.seq_len, model_config.pred_len, data_dir)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "preset": preset.name,
        "dataset": preset.dataset,
        "test_dataset": test_splits.name,
        "percent": percent,
        "command": command,
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "run": preset.run,
    }
    (run_dir / RUN_CONFIG).write_text(yaml.safe_dump(record, sort_keys=False))
    with log_to(run_dir / "train.log"):
        logger.info("run %s: %s", run_dir, command or preset.name)
        seed_everything(train_config.seed)
        model = TimeLLM(model_config)
        logger.info(
            "model: %s, %d of %d layers, trainable %s / total %s parameters",
            model_config.backbone,
            model_config.llm_layers or 0,
            model.backbone.total_layers if model.backbone else 0,
            f"{model.num_parameters(True):,}",
            f"{model.num_parameters():,}",
        )
        train_set = WindowDataset(splits.train, model_config.seq_len, model_config.pred_len)
        val_set = WindowDataset(splits.val, model_config.seq_len, model_config.pred_len)
        logger.info(
            "%s: %d training and %d validation series-windows", splits.name, len(train_set), len(val_set)
        )
        result = fit(model, train_set, val_set, train_config)
        pd.DataFrame(result.history).to_csv(run_dir / "history.csv", index=False)
        model.save_pretrained(run_dir / ADAPTER_DIR)

        started = time.perf_counter()
        metrics, (past, pred, true) = score_test_split(
            model, test_splits, train_config.eval_batch_size, preset.run.get("max_test_windows")
        )
        metrics.update(
            {
                "dataset": preset.dataset,
                "test_dataset": test_splits.name,
                "pred_len": model_config.pred_len,
                "backbone": model_config.backbone,
                "llm_layers": model_config.llm_layers,
                "percent": percent,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "steps": result.steps,
                "best_val_loss": result.best_val_loss,
                "train_seconds": round(result.train_seconds, 1),
                "test_seconds": round(time.perf_counter() - started, 1),
                "trainable_params": model.num_parameters(True),
                "total_params": model.num_parameters(),
                "command": command,
            }
        )
        (run_dir / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        plot_forecasts(
            past,
            pred,
            true,
            run_dir / "forecast.png",
            channel=-1,
            channel_name=test_splits.columns[-1],
            title=f"{test_splits.name}, horizon {model_config.pred_len}: test MSE {metrics['mse']:.3f}",
        )
        logger.info("test %s: MSE %.4f MAE %.4f", test_splits.name, metrics["mse"], metrics["mae"])
    return metrics


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], TimeLLM]:
    """The resolved record of a run folder and its trained model."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {RUN_CONFIG}")
    record = yaml.safe_load((run_dir / RUN_CONFIG).read_text())
    return record, TimeLLM.from_pretrained(run_dir / ADAPTER_DIR)


def evaluate_run(
    run_dir: str | Path, data_dir: str | Path | None = None, full: bool = True
) -> dict[str, Any]:
    """Re-test a run folder's adapter on its test split (all windows unless ``full`` is False)."""
    if (Path(run_dir) / RUN_CONFIG).is_file():
        protocol = (yaml.safe_load((Path(run_dir) / RUN_CONFIG).read_text()) or {}).get("protocol")
        if protocol == "m4":
            raise ValueError(
                f"{run_dir} is an M4 run: its scores are in {METRICS} and its forecasts in forecast.csv"
            )
    record, model = load_run(run_dir)
    config: TimeLLMConfig = model.config
    train = TrainConfig(**record["train"])
    splits = load_splits(record["test_dataset"], config.seq_len, config.pred_len, data_dir)
    limit = None if full else record.get("run", {}).get("max_test_windows")
    metrics, _ = score_test_split(model, splits, train.eval_batch_size, limit)
    return metrics
