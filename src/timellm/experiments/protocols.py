"""The paper's other protocols: M4 short-term forecasting and zero-shot transfer.

Few-shot is the ``percent`` of :func:`timellm.runs.train_and_test` (the first ``percent`` % of the
training windows). Zero-shot transfer trains and selects on one benchmark and tests on another's
test split (:func:`transfer`). M4 (:func:`run_m4`) trains one model per frequency on windows cut
from the training series, selects it on the last horizon of each training series and forecasts
from the end of each full training series; the official test file is read only for the score.
Every protocol writes a run folder like :func:`timellm.runs.train_and_test` does; ``timellm
report`` (:mod:`timellm.experiments.report`) gathers them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from timellm.data.benchmarks import DATA_ENV, DataError, benchmark, default_data_dir
from timellm.data.m4 import (
    NAIVE2_FILE,
    M4Data,
    get_frequency,
    load_m4,
    load_naive2,
    m4_file,
)
from timellm.evaluation.baselines import DLinear, last_value_forecast, seasonal_naive_forecast
from timellm.evaluation.m4 import score_m4
from timellm.experiments.folders import RunFolder
from timellm.experiments.planning import benchmark_plans, check_benchmark_memory, plan_run
from timellm.experiments.presets import Preset, get_preset
from timellm.experiments.runs import train_and_test
from timellm.model.adapter import TimeLLMBase
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.memory import MemoryPlan
from timellm.model.predict import predict
from timellm.model.variants import build_model
from timellm.plotting import plot_forecasts
from timellm.training.loop import FitResult, fit

logger = logging.getLogger(__name__)

FORECAST_FILE = "forecast.csv"  # M4 submission layout: id, V1..VH
TRANSFER_VARIANT = "cpu"  # the default variant of `timellm transfer`: a CPU-sized run of the protocol


# ------------------------------------------------------------------------------------------------
# M4


def _m4_data_dir(data_dir: str | Path | None) -> Path:
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if folder is None:
        raise DataError(
            f"M4 needs a data folder: give the folder holding m4/ as data_dir=FOLDER or {DATA_ENV}"
        )
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist (given as data_dir=FOLDER or by {DATA_ENV})")
    return folder


def check_m4_files(frequency: str, data_dir: str | Path | None) -> Path:
    """Fail fast, naming the file, unless the frequency's train and test files and Naive2 are there."""
    f = get_frequency(frequency)
    folder = _m4_data_dir(data_dir)
    for stem in (f"{f.name}-train", f"{f.name}-test", NAIVE2_FILE):
        m4_file(folder, stem)
    return folder


@torch.no_grad()
def _scores(table: pd.DataFrame, name: str) -> dict[str, float]:
    row = table.loc[name]
    return {"smape": float(row.SMAPE), "mase": float(row.MASE), "owa": float(row.OWA)}


def m4_references(data: M4Data, inputs: torch.Tensor, data_dir: Path) -> dict[str, dict[str, float]]:
    """SMAPE/MASE/OWA of the official Naive2 forecasts and of Naive1 and seasonal naive on ``inputs``."""
    f = data.frequency
    forecasts = {
        "naive2": load_naive2(f, data_dir, data.ids),
        "naive1": last_value_forecast(inputs, f.horizon).numpy(),
    }
    if f.period > 1 and inputs.shape[1] >= f.period:
        forecasts["seasonal_naive"] = seasonal_naive_forecast(inputs, f.horizon, f.period).numpy()
    return {name: _scores(score_m4({f.name: pred}, data_dir), f.name) for name, pred in forecasts.items()}


M4_REFERENCES = ("dlinear",)


def _m4_model(
    config: TimeLLMConfig, reference: str | None, execution: ExecutionSettings, seed: int
) -> nn.Module:
    """A fresh model of the run (Time-LLM, or the reference named), its initialisation drawn under ``seed``."""
    if reference is None:
        return build_model(config, execution, seed)
    if reference == "dlinear":
        torch.manual_seed(seed)
        # the series' moving average window cannot be longer than the look-back
        return DLinear(
            config.seq_len,
            config.pred_len,
            kernel_size=min(25, config.seq_len - 1) | 1,
            normalization=config.normalization,
            period=config.period,
            zero=config.zero_head,
        )
    raise ValueError(f"reference must be one of {', '.join(M4_REFERENCES)} or None, found {reference!r}")


def _variant(config: TimeLLMConfig, reference: str | None) -> str:
    """What trained: time-llm, w/o LLM (llm=none), another LLM setting, or a reference model."""
    if reference is not None:
        return reference
    return "time-llm" if config.llm == "pretrained" else f"llm={config.llm}"


def run_m4(
    preset: Preset,
    frequency: str,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    command: str | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """Train ``preset`` on one M4 frequency, forecast every series, score it, write the run folder.

    ``reference="dlinear"`` trains DLinear (with the model's instance normalisation, as M4's scales need) in
    the same pipeline, on the same windows, budget and loss, instead of Time-LLM: a reference row.

    Training windows come from the training series without their last horizon, which is the
    validation target of model selection (early stopping); with the run setting ``refit``, a fresh
    model then trains on the whole series for the number of epochs validation chose. The forecast
    is made from the last
    ``seq_len`` points of each full training series and scored against the official test file with
    SMAPE, MASE and OWA (relative to the official Naive2 forecasts).
    """
    f = get_frequency(frequency)
    refit = _check_m4_settings(preset, f.name)
    # read everything first: a missing file must not leave an empty run folder behind
    data_dir = check_m4_files(f.name, data_dir)
    data = load_m4(f, data_dir)
    if reference is None:  # and refuse what cannot fit before the backbone is loaded
        check_benchmark_memory(preset)

    folder = RunFolder(run_dir)
    record = {"protocol": "m4", "preset": preset.name, "dataset": "m4", "frequency": f.name}
    record |= {"test_dataset": "m4", "percent": 100, "command": command, **preset.settings_record()}
    folder.create(record)
    with folder.log():
        logger.info("run %s: %s", folder.path, command or preset.name)
        model, result, train_windows = _train_m4(preset, data, reference, refit)
        folder.write_history(result.history)
        if isinstance(model, TimeLLMBase):
            model.save_pretrained(folder.adapter_dir)
        inputs, pred, forecast_seconds = _forecast_m4(model, data, preset, folder.path)
        metrics = {
            **_m4_scores(data, inputs, pred, data_dir),
            "dataset": "m4",
            "test_dataset": "m4",
            "seq_len": preset.model.seq_len,
            "pred_len": f.horizon,
            "backbone": preset.model.backbone,
            "llm_layers": preset.model.llm_layers,
            "percent": 100,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "steps": result.steps,
            "series_windows": result.series_windows,
            "best_val_loss": result.best_val_loss,
            "refit": refit,
            "precision": result.precision,
            "train_windows": train_windows,
            "train_seconds": round(result.train_seconds, 1),
            "test_seconds": round(forecast_seconds, 1),
            "variant": _variant(preset.model, reference),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in model.parameters()),
            "command": command,
        }
        metrics = folder.write_metrics(metrics)
        _show_m4(data, inputs, pred, metrics, folder.path)
    return metrics


def _train_m4(
    preset: Preset, data: M4Data, reference: str | None, refit: bool
) -> tuple[nn.Module, FitResult, int]:
    """Train and select on every series but its last horizon, then (with ``refit``) train a fresh
    model on the whole series for the epochs validation chose. Returns the model kept, its training
    (the selection's epochs and losses; steps, seconds and history of both trainings, the refit's
    rows marked) and how many training windows selection saw."""
    model_config, train_config, f = preset.model, preset.train, data.frequency
    model = _m4_model(model_config, reference, preset.execution, train_config.seed)
    train_set = data.training_windows(model_config.seq_len, holdout=True)
    val_set = TensorDataset(*data.validation_set(model_config.seq_len))
    logger.info(
        "M4 %s: %d series, %d training windows, validation on the last %d steps of each training series",
        f.name,
        len(data.ids),
        len(train_set),
        f.horizon,
    )
    result = fit(model, train_set, val_set, train_config)
    if refit:
        # validation has chosen how long to train; the last horizon it held out is the most
        # recent data, next to the test horizon: train again with it
        logger.info(
            "refit: a fresh model on the whole training series for %d epochs (validation's choice)",
            result.best_epoch,
        )
        model = _m4_model(model_config, reference, preset.execution, train_config.seed)
        full_set = data.training_windows(model_config.seq_len, holdout=False)
        again = fit(model, full_set, None, train_config.replace(epochs=result.best_epoch))
        result = replace(
            result,
            history=result.history + [{**row, "refit": True} for row in again.history],
            steps=result.steps + again.steps,
            train_seconds=result.train_seconds + again.train_seconds,
        )
    return model, result, len(train_set)


def _forecast_m4(
    model: nn.Module, data: M4Data, preset: Preset, run_dir: Path
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Forecast every series from the end of its training series and write forecast.csv (M4's
    submission layout); returns the inputs (n, seq_len, 1), the forecasts (n, H, 1) and the seconds."""
    started = time.perf_counter()
    inputs = data.forecast_inputs(preset.model.seq_len)  # (n, seq_len, 1)
    pred = predict(model, inputs, batch_size=preset.train.eval_batch_size)  # (n, horizon, 1)
    seconds = time.perf_counter() - started
    columns = [f"V{i + 1}" for i in range(data.frequency.horizon)]
    frame = pd.DataFrame(pred[..., 0].numpy(), index=pd.Index(data.ids, name="id"), columns=columns)
    frame.to_csv(run_dir / FORECAST_FILE)
    return inputs, pred, seconds


def _m4_scores(data: M4Data, inputs: torch.Tensor, pred: torch.Tensor, data_dir: Path) -> dict[str, Any]:
    """The forecasts' SMAPE, MASE and OWA on the official test file, beside the references'."""
    f = data.frequency
    references = m4_references(data, inputs, data_dir)
    return {
        "protocol": "m4",
        "frequency": f.name,
        "series": len(data.ids),
        **_scores(score_m4({f.name: pred}, data_dir), f.name),
        "naive2_smape": references["naive2"]["smape"],
        "naive2_mase": references["naive2"]["mase"],
        "baselines": references,
    }


def _show_m4(data: M4Data, inputs: torch.Tensor, pred: torch.Tensor, metrics: dict, run_dir: Path) -> None:
    """forecast.png and the scores' log line."""
    f = data.frequency
    assert data.test is not None
    plot_forecasts(
        inputs.numpy(),
        pred.numpy(),
        data.test[..., None],
        run_dir / "forecast.png",
        channel=0,
        channel_name=f.name,
        title=f"M4 {f.name}: SMAPE {metrics['smape']:.2f}, MASE {metrics['mase']:.3f}, OWA {metrics['owa']:.3f}",
    )
    logger.info(
        "M4 %s: SMAPE %.3f MASE %.3f OWA %.3f (Naive2: SMAPE %.3f MASE %.3f)",
        f.name,
        metrics["smape"],
        metrics["mase"],
        metrics["owa"],
        metrics["naive2_smape"],
        metrics["naive2_mase"],
    )


def plan_m4(
    preset: Preset, frequency: str, *, data_dir: str | Path | None = None, reference: str | None = None
) -> list[MemoryPlan]:
    """The memory plan of :func:`run_m4` (its settings and files checked first; nothing is loaded):
    every window is one series. A reference model holds no language model: no plan."""
    _check_m4_settings(preset, frequency)
    check_m4_files(frequency, data_dir)
    return [] if reference is not None else benchmark_plans(preset, channels=1)


def _check_m4_settings(preset: Preset, frequency: str) -> bool:
    """Refuse settings that do not apply to M4's ``frequency``; returns the run setting ``refit``."""
    f = get_frequency(frequency)
    if preset.model.pred_len != f.horizon:
        raise ValueError(
            f"the M4 {f.name} horizon is fixed at {f.horizon} by the competition; found pred_len {preset.model.pred_len}"
        )
    if preset.run.get("max_test_windows") is not None:
        raise ValueError("max_test_windows does not apply to M4: every series is forecast and scored")
    refit = preset.run.get("refit", False)
    if not isinstance(refit, bool):
        raise ValueError(f"refit must be true or false, found {refit!r}")
    return refit


def transfer_preset(source: str, pred_len: int, variant: str | None = TRANSFER_VARIANT) -> Preset:
    """The preset of a transfer run: ``<source>-<pred_len>[-<variant>]`` (variant None or "paper": the paper's)."""
    name = f"{benchmark(source).name}-{pred_len}"
    if variant not in (None, "paper"):
        name += f"-{variant}"
    return get_preset(name)


def transfer(
    preset: Preset,
    target: str,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Zero-shot: train and select on ``preset``'s dataset, test on ``target``'s whole test split.

    The model keeps the source's prompt description: it is tested on data it has never seen
    described. The target is scaled with its own training statistics (as every benchmark is).
    """
    target = _transfer_target(preset, target)
    return train_and_test(preset, run_dir, data_dir=data_dir, test_dataset=target, command=command)


def plan_transfer(preset: Preset, target: str, *, data_dir: str | Path | None = None) -> list[MemoryPlan]:
    """The memory plan of :func:`transfer` (both data sets read, nothing loaded or written)."""
    return plan_run(preset, data_dir=data_dir, test_dataset=_transfer_target(preset, target))


def _transfer_target(preset: Preset, target: str) -> str:
    """The benchmark name of ``target``, refused where it is the source itself."""
    target = benchmark(target).name
    if target == benchmark(preset.dataset).name:
        raise ValueError(
            f"zero-shot transfer needs a target other than the source {preset.dataset}; "
            "train and test on one dataset with `timellm train`"
        )
    return target
