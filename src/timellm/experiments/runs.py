"""Benchmark runs: train a preset on its dataset, test it, and write a run folder.

A run folder holds ``config.yaml`` (everything resolved), ``metrics.json``, ``history.csv``,
``train.log``, the trained ``adapter/`` and ``forecast.png``; while training, also ``checkpoint/``
(removed once the run has finished), from which :func:`resume_run` continues an interrupted run.
Under several processes (``accelerate launch``) only the main process writes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
from accelerate import PartialState

from timellm._malloc import allocator_setting
from timellm.data.benchmarks import Splits, load_splits
from timellm.data.sources import DataSource
from timellm.data.windows import WindowDataset
from timellm.evaluation.scoring import evaluate
from timellm.experiments.folders import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    METRICS,
    RUN_CONFIG,
    RunFolder,
    as_recorded,
    read_run_record,
)
from timellm.experiments.planning import check_benchmark_memory
from timellm.experiments.presets import Preset
from timellm.model.adapter import TimeLLMBase
from timellm.model.config import TimeLLMConfig
from timellm.model.variants import build_model, load_model
from timellm.plotting import plot_forecasts
from timellm.settings import execution_settings
from timellm.training.checkpoint import CheckpointError, find_checkpoint, remove_checkpoint
from timellm.training.loop import (
    FitResult,
    TrainConfig,
    choose_normalization,
    fit,
    make_accelerator,
    run_precision,
)

logger = logging.getLogger(__name__)


def score_splits(model, splits: Splits, batch_size: int, limit: int | None = None, accelerator=None):
    """:func:`~timellm.evaluation.scoring.evaluate` on the test split of a benchmark's ``splits``."""
    return evaluate(
        model,
        splits.test,
        splits.seq_len,
        splits.pred_len,
        splits.period,
        batch_size,
        autocast=accelerator.autocast if accelerator is not None else None,
        max_windows=limit,
        accelerator=accelerator,
    )


def train_and_test(
    preset: Preset,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    percent: float = 100,
    test_dataset: str | None = None,
    command: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``preset`` (model and training settings) on its dataset, test, and write the run folder.

    ``test_dataset`` tests on another dataset's test split (zero-shot transfer); ``percent`` keeps
    the first ``percent`` % of the training windows (few-shot). ``resume`` continues from the run
    folder's checkpoint (see :func:`resume_run`, which also restores the recorded settings).
    """
    # read the data first: a missing file must not leave an empty run folder behind
    splits, test_splits, choose = _read_run_data(preset, data_dir, percent, test_dataset)
    # refuse a run that cannot fit before the backbone is loaded or the run folder is written:
    # training a batch of series, and testing a batch of windows with all their channels
    check_benchmark_memory(preset, test_splits)
    accelerator = make_accelerator(preset.train)
    folder = RunFolder(run_dir, accelerator.is_main_process)
    record = {
        "preset": preset.name,
        "dataset": preset.dataset,
        "test_dataset": test_splits.name,
        "percent": percent,
        "command": command,
        **preset.settings_record(),
        "precision": run_precision(accelerator),  # what train.precision (auto) resolved to here
    }
    if not resume and find_checkpoint(folder.checkpoint_dir) is not None:
        resume = _same_run(folder.path, record)  # the same command again continues it
    if not resume:
        folder.create(record)
    with folder.log():
        logger.info("run %s: %s (allocator: %s)", folder.path, command or preset.name, allocator_setting())
        model, result, choice = _train_run(preset, splits, accelerator, folder, resume, choose)
        metrics = _test_run(model, result, choice, preset, test_splits, accelerator, folder, percent, command)
    if not folder.main:
        return metrics
    # finished: the adapter and metrics are written, the checkpoint (optimiser state too) is not needed
    remove_checkpoint(folder.checkpoint_dir)
    return metrics


def _read_run_data(
    preset: Preset, data_dir: str | Path | None, percent: float, test_dataset: str | None
) -> tuple[Splits, Splits, bool]:
    """The run's splits and the test splits (another dataset's for a transfer), with the run
    settings checked; returns them and the run setting ``choose_normalization``."""
    model_config = preset.model
    if preset.run.get("refit"):
        raise ValueError(
            "refit applies to M4 runs only: the long-term protocols select and test on fixed splits"
        )
    choose = preset.run.get("choose_normalization", False)
    if not isinstance(choose, bool):
        raise ValueError(f"choose_normalization must be true or false, found {choose!r}")
    splits = load_splits(preset.dataset, model_config.seq_len, model_config.pred_len, data_dir, percent)
    if choose and not model_config.correctable(splits.period):
        raise ValueError(
            "choose_normalization weighs a RevIN adapter against a correction to seasonal naive: it "
            f"needs normalization=revin and zero_head=false (found {model_config.normalization}, "
            f"zero_head={str(model_config.zero_head).lower()}) and {splits.name}'s season "
            f"({splits.period} steps) above one step and within the look-back ({model_config.seq_len})"
        )
    test_splits = splits
    if test_dataset is not None and test_dataset != preset.dataset:
        test_splits = load_splits(test_dataset, model_config.seq_len, model_config.pred_len, data_dir)
    return splits, test_splits, choose


def _train_run(
    preset: Preset, splits: Splits, accelerator, folder: RunFolder, resume: bool, choose: bool
) -> tuple[TimeLLMBase, FitResult, dict[str, Any]]:
    """Build the model and train it (from the checkpoint with ``resume``), then choose the
    normalisation where the run asks; writes the history and the adapter. Returns the model kept,
    its training and what choosing the normalisation weighed (empty where not asked)."""
    model_config, train_config = preset.model, preset.train
    if accelerator.num_processes > 1:
        logger.info(
            "%d processes (%s), %d series per process and step",
            accelerator.num_processes,
            accelerator.distributed_type.value,
            train_config.batch_size,
        )
    model = build_model(model_config, preset.execution, train_config.seed, precision=train_config.precision)
    logger.info(
        "model: %s, %d of %d layers, trainable %s / total %s parameters",
        model_config.backbone,
        model.backbone.num_layers if model.backbone else 0,
        model.backbone.total_layers if model.backbone else 0,
        f"{model.num_parameters(True):,}",
        f"{model.num_parameters():,}",
    )
    train_set = WindowDataset(splits.train, model_config.seq_len, model_config.pred_len)
    val_set = WindowDataset(splits.val, model_config.seq_len, model_config.pred_len)
    logger.info("%s: %d training and %d validation series-windows", splits.name, len(train_set), len(val_set))
    result = fit(
        model,
        train_set,
        val_set,
        train_config,
        accelerator,
        checkpoint_dir=folder.checkpoint_dir,
        resume=resume,
    )
    history, choice = result.history, {}
    if choose:
        model, result, choice, correction_history = _choose_normalization(
            model, result, train_set, val_set, splits.period, preset, accelerator
        )
        # both trainings, the correction's epochs marked as such
        history = history + [{**row, "candidate": "correction"} for row in correction_history]
    folder.write_history(history)
    if folder.main:
        model.save_pretrained(folder.adapter_dir)
    return model, result, choice


def _test_run(
    model: TimeLLMBase,
    result: FitResult,
    choice: dict[str, Any],
    preset: Preset,
    test_splits: Splits,
    accelerator,
    folder: RunFolder,
    percent: float,
    command: str | None,
) -> dict[str, Any]:
    """Test the trained model and write metrics.json (and, on the main process, forecast.png)."""
    model_config, started = model.config, time.perf_counter()
    metrics, (past, pred, true) = score_splits(
        model,
        test_splits,
        preset.train.eval_batch_size,
        preset.run.get("max_test_windows"),
        accelerator=accelerator,
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
            "series_windows": result.series_windows,
            "best_val_loss": result.best_val_loss,
            "normalization": model_config.normalization,
            **({"normalization_choice": choice} if choice else {}),
            # the selected adapter on the validation windows, comparable across losses
            **{f"val_{name}": value for name, value in result.val_scores.items()},
            "train_seconds": round(result.train_seconds, 1),
            "test_seconds": round(time.perf_counter() - started, 1),
            "trainable_params": model.num_parameters(True),
            "total_params": model.num_parameters(),
            "processes": result.processes,
            "precision": result.precision,
            "adapter_sha256": result.replica_sha256,
            "command": command,
        }
    )
    metrics = folder.write_metrics(metrics)
    if not folder.main:
        return metrics
    plot_forecasts(
        past,
        pred,
        true,
        folder.path / "forecast.png",
        channel=-1,
        channel_name=test_splits.columns[-1],
        title=f"{test_splits.name}, horizon {model_config.pred_len}: test MSE {metrics['mse']:.3f}",
    )
    logger.info("test %s: MSE %.4f MAE %.4f", test_splits.name, metrics["mse"], metrics["mae"])
    return metrics


def _choose_normalization(model, result, train_set, val_set, period, preset, accelerator):
    """The run setting ``choose_normalization`` (see :func:`choose_normalization`): the RevIN adapter
    or, where it validates worse than seasonal naive and a correction to seasonal naive trained on
    the same backbone validates better, that correction. Chosen on validation only.

    Returns the model kept, its training, what was weighed (validation losses and the choice), and
    the correction's training history (empty where none trained).
    """
    train_config = preset.train

    def train_correction() -> tuple[tuple[TimeLLMBase, FitResult], float]:
        correction = build_model(
            model.config.seasonal_correction(period),
            preset.execution,
            train_config.seed,
            backbone=getattr(model, "backbone", None),
            precision=train_config.precision,
        )
        corrected = fit(correction, train_set, val_set, train_config, accelerator, validate_start=True)
        return (correction, corrected), corrected.best_val_loss

    choice, trained = choose_normalization(
        result.best_val_loss, val_set, model.config.pred_len, period, train_config, train_correction
    )
    if trained is None:
        return model, result, asdict(choice), []
    correction, corrected = trained
    history = corrected.history
    if choice.kept != "correction":
        return model, result, asdict(choice), history
    # the two trainings' steps and seconds are both spent on the run
    corrected = replace(
        corrected,
        steps=corrected.steps + result.steps,
        train_seconds=corrected.train_seconds + result.train_seconds,
    )
    return correction, corrected, asdict(choice), history


# what must agree for the same command to continue an interrupted run folder
SAME_RUN_KEYS = ("preset", "dataset", "test_dataset", "percent", "model", "train", "execution", "run")


def _same_run(run_dir: Path, record: dict[str, Any]) -> bool:
    """True where ``run_dir`` holds the checkpoint of an unfinished run with ``record``'s settings
    (the same command ran there and was interrupted): the run continues from it. A checkpoint of
    other settings is an error rather than a mixed run."""
    earlier = read_run_record(run_dir) if (run_dir / RUN_CONFIG).is_file() else {}
    mine = as_recorded(record)
    differs = [k for k in SAME_RUN_KEYS if earlier.get(k) != mine.get(k)]
    if differs:
        raise CheckpointError(
            f"{run_dir} holds the checkpoint of an unfinished run with other settings "
            f"({', '.join(differs)} differ): continue it with resume_run({run_dir}), "
            f"or delete {run_dir / CHECKPOINT_DIR} to start over"
        )
    logger.info("%s holds the checkpoint of this run, interrupted: continuing from it", run_dir)
    return True


def _finished(run_dir: Path, preset: Preset, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of ``run_dir`` where the same run has finished there (an interrupted
    ``--seeds`` command, run again, keeps the seeds it has done), else None."""
    if not (run_dir / METRICS).is_file() or find_checkpoint(run_dir / CHECKPOINT_DIR) is not None:
        return None
    earlier = read_run_record(run_dir)
    mine = {"preset": preset.name, "dataset": preset.dataset, "percent": kwargs.get("percent", 100)}
    mine |= preset.settings_record()
    mine = as_recorded(mine)
    if any(earlier.get(k) != v for k, v in mine.items()):
        return None
    logger.info("%s has finished with these settings: its metrics are kept", run_dir)
    return json.loads((run_dir / METRICS).read_text())


SEEDS_TABLE = "seeds.csv"


def train_seeds(
    preset: Preset,
    run_dir: str | Path,
    seeds: list[int],
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`train_and_test` once per seed (into ``run_dir/seed-<seed>``): repeats of one experiment.

    Returns (and writes to ``run_dir/seeds.csv``) one row per seed with test MSE/MAE and the naive
    references, then a ``mean`` and a ``std`` row (sample standard deviation, ddof 1).
    """
    if not seeds:
        raise ValueError("train_seeds needs at least one seed")
    run_dir = Path(run_dir)
    rows = []
    for seed in seeds:
        seeded, folder = preset.with_overrides({"seed": seed}), run_dir / f"seed-{seed}"
        metrics = _finished(folder, seeded, kwargs) or train_and_test(seeded, folder, **kwargs)
        rows.append(
            {
                "seed": str(seed),
                "mse": metrics["mse"],
                "mae": metrics["mae"],
                **{
                    f"{name}_{metric}": values[metric]
                    for name, values in metrics["baselines"].items()
                    for metric in ("mse", "mae")
                },
            }
        )
    table = pd.DataFrame(rows)
    numbers = table.drop(columns="seed")
    spread = numbers.std(ddof=1) if len(rows) > 1 else numbers.iloc[0] * float("nan")
    table = pd.concat(
        [table, pd.DataFrame([{"seed": "mean", **numbers.mean()}, {"seed": "std", **spread}])],
        ignore_index=True,
    )
    if PartialState().is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(run_dir / SEEDS_TABLE, index=False)
    return table


def resume_run(run_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Continue an interrupted run from its checkpoint, with the settings its config.yaml records."""
    run_dir = Path(run_dir)
    preset, record = recorded_preset(run_dir)
    if find_checkpoint(run_dir / CHECKPOINT_DIR) is None:
        done = " (it has finished: see its metrics.json)" if (run_dir / METRICS).is_file() else ""
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from{done}")
    return train_and_test(
        preset,
        run_dir,
        data_dir=data_dir,
        percent=record.get("percent", 100),
        test_dataset=record.get("test_dataset"),
        command=record.get("command"),
        resume=True,
    )


def recorded_preset(run_dir: str | Path) -> tuple[Preset, dict[str, Any]]:
    """The settings a run folder's config.yaml records, as a preset, and the record itself."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {RUN_CONFIG}")
    record = read_run_record(run_dir)
    try:
        preset = Preset(
            record["preset"],
            record["dataset"],
            TimeLLMConfig.from_dict(record["model"]),
            TrainConfig.from_dict(record["train"]),
            dict(record.get("run") or {}),
            execution_settings(record.get("execution")),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{run_dir / RUN_CONFIG} is not a complete run record: {err}") from None
    return preset, record


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], TimeLLMBase]:
    """The resolved record of a run folder and its trained model, run as the record says
    (its execution settings: the attention kernel rounds differently from another one)."""
    record = read_run_record(run_dir)
    return record, _run_model(run_dir, record)


def _run_model(run_dir: str | Path, record: dict[str, Any]) -> TimeLLMBase:
    model = load_model(Path(run_dir) / ADAPTER_DIR)  # loaded with default execution settings
    model.execution = execution_settings(record.get("execution"))
    return model


def evaluate_run(
    run_dir: str | Path, data_dir: str | Path | None = None, full: bool = True
) -> dict[str, Any]:
    """Re-test a run folder's adapter on its test split (all windows unless ``full`` is False)."""
    record = read_run_record(run_dir)
    if record.get("protocol") == "m4":
        raise ValueError(
            f"{run_dir} is an M4 run: its scores are in {METRICS} and its forecasts in forecast.csv"
        )
    model = _run_model(run_dir, record)
    config: TimeLLMConfig = model.config
    train = TrainConfig.from_dict(record["train"])
    if record.get("data") and record.get("test_dataset") == record.get("dataset"):  # where it trained
        splits = DataSource.from_dict(record["data"]).load(config.seq_len, config.pred_len, data_dir)
    else:  # a benchmark, or another one's test split (zero-shot)
        splits = load_splits(record["test_dataset"], config.seq_len, config.pred_len, data_dir)
    limit = None if full else record.get("run", {}).get("max_test_windows")
    # the precision the run was tested in (what its auto resolved to there), not this machine's auto
    accelerator = make_accelerator(train.replace(precision=record.get("precision", train.precision)))
    metrics, _ = score_splits(model, splits, train.eval_batch_size, limit, accelerator=accelerator)
    metrics["precision"] = run_precision(accelerator)
    return metrics
