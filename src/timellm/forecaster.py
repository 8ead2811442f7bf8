"""Forecast your own data: a DataFrame API in the conventions of neuralforecast and Hugging Face.

>>> fc = TimeLLMForecaster(horizon=24, description="Hourly oil temperature of a transformer.")
>>> fc.fit(df)                      # long frame: unique_id, ds, y (or wide=True)
>>> fc.predict()                    # unique_id, ds, TimeLLM: the next 24 steps of every series
>>> fc.cross_validation(df, n_windows=3)   # adds cutoff and the true y
>>> fc.save_pretrained("adapter/"); TimeLLMForecaster.from_pretrained("adapter/").predict(df)

Scaling. Series of very different magnitudes share one adapter. For training, each series is
standardised by the mean and standard deviation of its training part before windows are cut, so
that the loss is not dominated by the series with the largest values (the benchmarks' train-split
scaling, per series). For forecasting, each look-back window is standardised by its own statistics,
so a forecast depends on the last ``seq_len`` rows only. The model's RevIN normalises every window
again either way; the outer scaling only keeps RevIN's epsilon negligible against every series.
Forecasts are returned on the data's own scale. A window whose look-back is constant is forecast
as that constant, exactly (RevIN cannot divide by its zero spread).

Validation. The last ``val_size`` steps of every series (default: one horizon) are held out for
early stopping; the forecaster then forecasts from the end of the whole series.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset

from timellm.backbones.loading import Backbone
from timellm.data.frames import (
    ColumnError,
    FrameFormat,
    InputDataError,
    Series,
    SeriesLengthError,
    SeriesSet,
    max_seq_len,
    prepare_series,
    season_length,
)
from timellm.data.windows import WindowDataset
from timellm.model.config import TimeLLMConfig
from timellm.model.modeling import CONFIG_FILE, AdapterLoadError, TimeLLM
from timellm.model.predict import predict
from timellm.training.loop import FitResult, TrainConfig, fit, seed_everything

logger = logging.getLogger(__name__)

FORECASTER_FILE = "forecaster.json"
FORECASTER_FORMAT = "timellm-forecaster"
FORECASTER_VERSION = 1

# Model settings for user data: the paper's architecture on the offline SmolLM2, truncated to two
# layers with 100 text prototypes as in the project's CPU presets, so that a few hundred training
# steps fit a laptop. Every setting can be changed (keyword arguments or a TimeLLMConfig).
DEFAULT_MODEL = TimeLLMConfig(backbone="smollm2-135m", llm_layers=2, num_prototypes=100, seq_len=512)
# Training for a step budget: Adam at 1e-3 with a cosine decay over the budget's rounds.
DEFAULT_TRAIN = TrainConfig(learning_rate=0.001, schedule="cosine", patience=3)
DEFAULT_MAX_STEPS = 100
EVALUATION_ROUNDS = 4  # a step budget is split into at least this many epochs (validation rounds)


class TimeLLMForecaster:
    """Time-LLM for long or wide DataFrames: ``fit``, ``predict``, ``cross_validation``, save/load.

    Args:
        horizon: steps to forecast (H, the model's ``pred_len``).
        seq_len: look-back T (default 512; every series needs at least T + H rows to train).
        backbone: the frozen LLM (alias, folder, .gguf file or hub id); default ``smollm2-135m``.
        description: one or two sentences about the data; they go into every prompt.
        config: a full :class:`TimeLLMConfig` to start from (default :data:`DEFAULT_MODEL`);
            ``horizon`` and the arguments above replace its fields.
        train_config: batch size, learning rate, schedule, seed, ... (default :data:`DEFAULT_TRAIN`).
        max_steps: the training budget in optimiser steps (None: ``train_config.epochs`` full passes).
        val_size: steps at the end of every series held out for validation (default: the horizon).
        id_col, time_col, target_col: column names of a long frame.
        wide: the frames are wide (``time_col`` and one column per series).
        interpolate: fill missing values and missing timestamps linearly instead of refusing them.
        **model_settings: further :class:`TimeLLMConfig` fields (``llm_layers=4``, ``llm="none"``, ...).
    """

    alias = "TimeLLM"  # the forecast column, one column per model as in neuralforecast
    # columns the forecasts add beside the id, time and target columns: no input column may be named so
    output_columns = (alias, "cutoff", "SeasonalNaive")

    def __init__(
        self,
        horizon: int,
        *,
        seq_len: int | None = None,
        backbone: str | None = None,
        description: str | None = None,
        config: TimeLLMConfig | None = None,
        train_config: TrainConfig | None = None,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        val_size: int | None = None,
        id_col: str = "unique_id",
        time_col: str = "ds",
        target_col: str = "y",
        wide: bool = False,
        interpolate: bool = False,
        **model_settings: Any,
    ):
        _check_positive("horizon", horizon)
        if max_steps is not None:
            _check_positive("max_steps", max_steps)
        if val_size is not None and (not _is_int(val_size) or val_size < horizon):
            raise InputDataError(
                f"val_size must be an integer of at least the horizon ({horizon}), found {val_size!r}: "
                "validation forecasts the last val_size steps of every series"
            )
        changes: dict[str, Any] = {"pred_len": horizon, **model_settings}
        if seq_len is not None:
            _check_positive("seq_len", seq_len)
            changes["seq_len"] = seq_len
        if backbone is not None:
            changes["backbone"] = backbone
        if description is not None:
            changes["description"] = description
        self.config: TimeLLMConfig = (config or DEFAULT_MODEL).replace(**changes)
        self.train_config: TrainConfig = train_config or DEFAULT_TRAIN
        self.max_steps = max_steps
        self.val_size = val_size
        self.format = FrameFormat(id_col, time_col, target_col, wide)
        self._check_format()
        self.interpolate = interpolate
        self.model: TimeLLM | None = None
        self.fit_result: FitResult | None = None
        self.history: SeriesSet | None = None  # the series of the last fit, predict(df=None) continues them

    # -------------------------------------------------------------------------------------------
    # properties

    @property
    def horizon(self) -> int:
        return self.config.pred_len

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    def __repr__(self) -> str:
        state = "fitted" if self.model is not None else "not fitted"
        return (
            f"TimeLLMForecaster(horizon={self.horizon}, seq_len={self.seq_len}, "
            f"backbone={self.config.backbone!r}, {state})"
        )

    # -------------------------------------------------------------------------------------------
    # the API

    def fit(self, df: pd.DataFrame, val_size: int | None = None) -> TimeLLMForecaster:
        """Train a new adapter on every series of ``df``; returns ``self``.

        Every series needs at least ``seq_len + horizon`` rows; the last ``val_size`` steps of each
        (default: the horizon) are its validation part.
        """
        data = self.prepare(df)
        val = self._val_size(val_size)
        largest = max_seq_len([len(s) for s in data], self.horizon, val)
        self._require_length(
            data,
            self.seq_len + self.horizon,
            "training",
            f"look-back {self.seq_len} + horizon {self.horizon}",
            largest,
        )
        self._require_training_rows(data, [len(s) for s in data], val, largest)
        self._fit_series(data, val)
        self.history = data
        return self

    def predict(self, df: pd.DataFrame | None = None, h: int | None = None) -> pd.DataFrame:
        """Forecast the next ``horizon`` steps after each series of ``df`` (default: the fitted data).

        Returns a long frame: id column, time column (future timestamps at each series' own
        frequency) and ``TimeLLM``. Only the last ``seq_len`` rows of each series are read.
        """
        self._require_model()
        if h is not None:
            self._check_horizon(h)
        if df is None:
            if self.history is None:
                raise InputDataError(
                    "no data to forecast: this forecaster was loaded, not fitted; pass df=... with the series"
                )
            data = self.history
        else:
            data = self.prepare(df)
        self._require_length(
            data,
            self.seq_len,
            "forecasting",
            f"the look-back {self.seq_len}",
            max_seq_len([len(s) for s in data], 0),
        )
        ends = [len(s) for s in data]
        forecasts = self._forecast(data, ends)
        parts = [
            self._frame(s, s.future(self.horizon), pred) for s, pred in zip(data, forecasts, strict=True)
        ]
        return pd.concat(parts, ignore_index=True)

    def _frame(self, s: Series, times, pred, cutoff=None, truth=None) -> pd.DataFrame:
        """One forecast as a long frame: id, time, [cutoff,] forecast[, the true target values]."""
        f = self.format
        columns = {f.id_col: [s.id] * self.horizon, f.time_col: times}
        if cutoff is not None:
            columns["cutoff"] = [cutoff] * self.horizon
        columns[self.alias] = pred
        if truth is not None:
            columns["y" if f.wide else f.target_col] = truth
        return pd.DataFrame(columns)

    def cross_validation(
        self,
        df: pd.DataFrame,
        n_windows: int = 1,
        step_size: int | None = None,
        val_size: int | None = None,
        refit: bool = True,
    ) -> pd.DataFrame:
        """Backtest: forecast the last ``n_windows`` windows of each series, ``step_size`` apart.

        The last window ends at the end of each series; each earlier one ``step_size`` (default:
        the horizon) steps before. With ``refit`` (default) a new adapter is first trained on the
        data before each series' first cutoff only, so no forecast has seen its future; with
        ``refit=False`` the current adapter is used as it is. Returns a long frame: id, time,
        ``cutoff`` (the last timestamp the forecast saw), ``TimeLLM`` and the true target values.
        """
        if not refit:
            self._require_model()
        data = self.prepare(df)
        val = self._val_size(val_size) if refit else None
        windows = self._windows(data, n_windows, step_size, val)
        if refit:
            first = {i: cutoffs[0] for i, cutoffs in windows.items()}
            before = SeriesSet(
                [
                    Series(s.id, s.values[: first[i]], s.timestamps[: first[i]], s.freq)
                    for i, s in enumerate(data)
                ],
                data.format,
            )
            self._fit_series(before, val, context="before the first cutoff")
        self.history = data
        order = [(i, c) for i, cutoffs in windows.items() for c in cutoffs]
        forecasts = self._forecast([data.series[i] for i, _ in order], [c for _, c in order])
        parts = []
        for (i, c), pred in zip(order, forecasts, strict=True):
            s, future = data.series[i], slice(c, c + self.horizon)
            parts.append(self._frame(s, s.timestamps[future], pred, s.timestamps[c - 1], s.values[future]))
        return pd.concat(parts, ignore_index=True)

    def backtest(
        self,
        df: pd.DataFrame,
        n_windows: int = 1,
        step_size: int | None = None,
        val_size: int | None = None,
        refit: bool = True,
        season: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Cross-validate beside the seasonal naive forecast and score both.

        Returns (the cross-validation frame with an added ``SeasonalNaive`` column, the scores):
        one row per series and model and an ``overall`` row per model, with MSE and MAE on the
        data's own scale and MASE (the mean absolute error over that of the in-sample seasonal
        naive forecast before the first cutoff; undefined, NaN, for a series without seasonal
        variation). ``season`` is the seasonal period (default: from each series' frequency: 24
        for hourly data, 7 for daily, 12 for monthly, ...).
        """
        if season is not None:
            _check_positive("season", season)
            data = self.prepare(df)
            history = [c[0] for c in self._windows(data, n_windows, step_size).values()]
            if season >= max(history):
                raise SeriesLengthError(
                    f"season={season} is not shorter than the history before the first cutoff of any series "
                    f"(at most {max(history)} rows): the seasonal naive forecast and MASE need more than one "
                    "season of history; lower season=..., or give longer series"
                )
        cv = self.cross_validation(df, n_windows, step_size, val_size, refit)
        data = self.history
        windows = self._windows(data, n_windows, step_size)
        naive, scales, periods = [], {}, {}
        for i, cutoffs in windows.items():
            s = data.series[i]
            period = season or season_length(s.freq)
            periods[s.id] = period
            if cutoffs[0] <= period:
                logger.warning(
                    "series %r: %d rows before the first cutoff, not more than one season (%d): its MASE "
                    "is n/a, and so is the seasonal naive forecast of a window with under a season of history",
                    s.id,
                    cutoffs[0],
                    period,
                )
            insample = s.values[: cutoffs[0]]
            diffs = np.abs(insample[period:] - insample[:-period]) if len(insample) > period else np.array([])
            scale = float(diffs.mean()) if len(diffs) else math.nan
            # a scale at rounding-noise level means no seasonal variation: MASE is undefined
            negligible = 1e-9 * float(np.abs(insample).max(initial=0.0))
            scales[s.id] = scale if scale > negligible else math.nan
            for c in cutoffs:
                if c < period:
                    naive.append(np.full(self.horizon, math.nan))
                else:
                    naive.append(s.values[c - period + np.arange(self.horizon) % period])
        cv["SeasonalNaive"] = np.concatenate(naive)
        scores = score_backtest(cv, self.format, scales, models=(self.alias, "SeasonalNaive"))
        scores.attrs["season"] = periods
        return cv, scores

    def prepare(self, df: pd.DataFrame) -> SeriesSet:
        """Validate ``df`` with this forecaster's column names and interpolation choice."""
        self._check_format()
        return prepare_series(df, self.format, interpolate=self.interpolate)

    # -------------------------------------------------------------------------------------------
    # persistence

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the adapter (``config.json``, ``adapter.safetensors``) and ``forecaster.json``.

        The frozen backbone is never saved: loading rebuilds it from the name in the config.
        """
        self._require_model()
        directory = self.model.save_pretrained(directory)
        record = {
            "format": FORECASTER_FORMAT,
            "version": FORECASTER_VERSION,
            "horizon": self.horizon,
            "seq_len": self.seq_len,
            "columns": {
                "id_col": self.format.id_col,
                "time_col": self.format.time_col,
                "target_col": self.format.target_col,
                "wide": self.format.wide,
            },
            "interpolate": self.interpolate,
            "val_size": self.val_size,
            "max_steps": self.max_steps,
            "train": self.train_config.to_dict(),
        }
        (directory / FORECASTER_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        horizon: int | None = None,
        seq_len: int | None = None,
        backbone: Backbone | None = None,
    ) -> TimeLLMForecaster:
        """Load a saved forecaster (or any saved Time-LLM adapter folder) without training.

        ``horizon`` and ``seq_len``, when given, must be the ones the adapter was trained for: an
        adapter forecasts exactly its own horizon from exactly its own look-back.
        """
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{directory} is not an adapter folder: it holds no {CONFIG_FILE} "
                "(save one with save_pretrained or `timellm forecast --save DIR`)"
            )
        config = TimeLLMConfig.load(directory / CONFIG_FILE)
        wrong = []
        if horizon is not None and horizon != config.pred_len:
            _check_positive("horizon", horizon)
            wrong.append(f"horizon {horizon}")
        if seq_len is not None and seq_len != config.seq_len:
            _check_positive("seq_len", seq_len)
            wrong.append(f"look-back {seq_len}")
        if wrong:
            raise AdapterLoadError(
                f"the adapter in {directory} was trained for horizon {config.pred_len} and look-back "
                f"{config.seq_len}, not {' and '.join(wrong)}: an adapter forecasts only its own horizon from "
                f"its own look-back; ask for horizon={config.pred_len} and "
                "leave the look-back out, or train a new adapter"
            )
        record: dict[str, Any] = {}
        if (directory / FORECASTER_FILE).is_file():
            try:
                record = json.loads((directory / FORECASTER_FILE).read_text())
            except json.JSONDecodeError as err:
                raise AdapterLoadError(f"{directory / FORECASTER_FILE} is not valid JSON: {err}") from None
            if record.get("format") != FORECASTER_FORMAT:
                raise AdapterLoadError(f"{directory / FORECASTER_FILE} is not a timellm forecaster file")
        known_train = {f.name for f in fields(TrainConfig)}
        train = TrainConfig(**{k: v for k, v in record.get("train", {}).items() if k in known_train})
        forecaster = cls(
            config.pred_len,
            config=config,
            train_config=train,
            max_steps=record.get("max_steps", DEFAULT_MAX_STEPS),
            val_size=record.get("val_size"),
            interpolate=record.get("interpolate", False),
            **record.get("columns", {}),
        )
        forecaster.model = TimeLLM.from_pretrained(directory, backbone)
        return forecaster

    # -------------------------------------------------------------------------------------------
    # internals

    def _require_model(self) -> None:
        if self.model is None:
            raise InputDataError("this forecaster has no trained adapter yet: call fit(df) first")

    def _check_horizon(self, h: int) -> None:
        _check_positive("h", h)
        if h != self.horizon:
            raise InputDataError(
                f"this forecaster was trained for horizon {self.horizon}, not h={h}; "
                f"ask for h={self.horizon}, or fit a new one with horizon={h}"
            )

    def _check_format(self) -> None:
        """Refuse column names that clash with each other or with the columns forecasts add."""
        f = self.format
        inputs = {"id_col": f.id_col, "time_col": f.time_col}
        inputs["target_col" if not f.wide else "the target column of the output"] = (
            "y" if f.wide else f.target_col
        )
        names = list(inputs.values())
        for setting, name in inputs.items():
            if name in self.output_columns:
                raise ColumnError(
                    f"{setting}={name!r} clashes with the column {name!r} that forecasts are written to "
                    f"({', '.join(self.output_columns)}); rename that column of the data"
                )
            if names.count(name) > 1:
                clash = [k for k, v in inputs.items() if v == name]
                raise ColumnError(
                    f"{' and '.join(clash)} are both {name!r}; the id, time and target columns must differ"
                )

    def _val_size(self, val_size: int | None) -> int:
        """The validation steps per series: the argument, else the forecaster's, else the horizon."""
        h = self.horizon
        val = val_size if val_size is not None else (self.val_size or h)
        if not _is_int(val) or val < h:
            raise InputDataError(
                f"val_size must be an integer of at least the horizon ({h}), found {val!r}: "
                "validation forecasts the last val_size steps of every series"
            )
        return val

    def _advice(self, largest: int) -> str:
        advice = "lower the look-back with seq_len=..."
        if largest >= self.config.patch_len:
            advice += f": at most {largest} for these series"
        return advice

    def _require_length(self, data: SeriesSet, needed: int, task: str, breakdown: str, largest: int) -> None:
        """Refuse series shorter than ``needed`` rows, naming the shortest and the longest look-back that fits."""
        short = [s for s in data if len(s) < needed]
        if not short:
            return
        shortest = min(short, key=len)
        more = f" (and {len(short) - 1} more series)" if len(short) > 1 else ""
        raise SeriesLengthError(
            f"series {shortest.id!r}{more} is too short: {len(shortest)} rows, but {task} needs at least "
            f"{needed} = {breakdown}; {self._advice(largest)}"
        )

    def _require_training_rows(
        self, data: SeriesSet, lengths: list[int], val: int, largest: int, context: str = ""
    ) -> None:
        """Refuse data in which no series has a training window before its validation steps."""
        t, h = self.seq_len, self.horizon
        if t <= largest:
            return
        where = f" {context}" if context else ""
        raise SeriesLengthError(
            f"no series is long enough to train on{where}: training needs look-back {t} + horizon {h} "
            f"+ validation {val} = {t + h + val} rows in at least one series, the longest has {max(lengths)}; "
            f"{self._advice(largest)}, or lower val_size=..."
        )

    def _windows(
        self, data: SeriesSet, n_windows: int, step_size: int | None, val: int | None = None
    ) -> dict[int, list[int]]:
        """Cross-validation cutoffs (rows of history) of every series, earliest first.

        With ``val`` (the data before the first cutoff is trained on) one series must also have a
        training window and ``val`` validation steps before its first cutoff.
        """
        _check_positive("n_windows", n_windows)
        step = self.horizon if step_size is None else step_size
        _check_positive("step_size", step)
        span = self.horizon + (n_windows - 1) * step
        breakdown = f"look-back {self.seq_len} + horizon {self.horizon}"
        if n_windows > 1:
            breakdown += f" + {n_windows - 1} x step {step}"
        lengths = [len(s) for s in data]
        largest = max_seq_len(lengths, self.horizon, val, n_windows=n_windows, step_size=step)
        self._require_length(
            data, self.seq_len + span, f"cross-validation with {n_windows} window(s)", breakdown, largest
        )
        if val is not None:
            before = [n - span for n in lengths]
            self._require_training_rows(data, before, val, largest, "before the first cutoff")
        return {i: [len(s) - span + k * step for k in range(n_windows)] for i, s in enumerate(data)}

    def _fit_series(self, data: SeriesSet, val: int, context: str = "") -> None:
        c = self.config
        t, h = c.seq_len, c.pred_len
        train_sets, val_sets = [], []
        for s in data:
            if len(s) < t + h:
                logger.info(
                    "series %r: %d rows %s, too few for a window; not trained on", s.id, len(s), context
                )
                continue
            train_rows = len(s) - val
            mean, std = _scaling(s.values[:train_rows] if train_rows > 0 else s.values)
            scaled = ((s.values - mean) / std).astype(np.float32)[:, None]  # (L, 1)
            if train_rows >= t + h:
                train_sets.append(WindowDataset(scaled[:train_rows], t, h))
            else:
                logger.info("series %r: too short for training windows; used for validation only", s.id)
            val_sets.append(WindowDataset(scaled[-(t + val) :], t, h))
        if not train_sets:  # the callers' length checks make this unreachable; never train on nothing
            raise SeriesLengthError(f"no series is long enough to train on {context}".strip())
        train_set, val_set = ConcatDataset(train_sets), ConcatDataset(val_sets)
        train_config = budget(self.train_config, self.max_steps, len(train_set))
        seed_everything(train_config.seed)
        model = TimeLLM(c)  # loads the backbone and checks the prompt fits it: before training is announced
        logger.info(
            "training on %d windows of %d series (validation: %d windows, the last %d steps of each), "
            "%s epoch(s)%s",
            len(train_set),
            len(train_sets),
            len(val_set),
            val,
            train_config.epochs,
            f" of <= {train_config.max_train_windows} windows" if train_config.max_train_windows else "",
        )
        self.fit_result = fit(model, train_set, val_set, train_config)
        self.model = model

    @torch.no_grad()
    def _forecast(self, series: SeriesSet | list[Series], ends: list[int]) -> list[np.ndarray]:
        """The forecast from the ``seq_len`` rows before row ``ends[i]`` of ``series[i]``: (H,) each."""
        t = self.seq_len
        model = self.model
        pasts = np.stack([s.values[end - t : end] for s, end in zip(series, ends, strict=True)])  # (n, T)
        mean = pasts.mean(axis=1, keepdims=True)  # (n, 1): the look-back's own statistics, so that a
        std = pasts.std(axis=1, keepdims=True)  # forecast depends on the last seq_len rows only
        std[std == 0] = 1.0
        scaled = torch.as_tensor((pasts - mean) / std, dtype=torch.float32)[:, :, None]  # (n, T, 1)
        outputs = predict(model, scaled, batch_size=self.train_config.eval_batch_size)  # (n, H, 1)
        preds = outputs[:, :, 0].numpy().astype(np.float64) * std + mean  # (n, H)
        constant = np.ptp(pasts, axis=1) == 0
        preds[constant] = pasts[constant, -1:]  # a constant look-back forecasts that constant, exactly
        return list(preds)


# ------------------------------------------------------------------------------------------------
# helpers


def budget(config: TrainConfig, max_steps: int | None, windows: int) -> TrainConfig:
    """Turn a budget of ``max_steps`` optimiser steps over ``windows`` training windows into epochs.

    Every epoch ends with a validation, so the budget is split into at least
    :data:`EVALUATION_ROUNDS` epochs (early stopping and the best-epoch restore need several) and
    into more when one pass over the windows takes fewer steps than that. An epoch is a fresh
    random subset of the windows when it is shorter than a pass. The steps run are at most
    ``max_steps`` and at least ``max_steps - epochs + 1``.
    """
    if max_steps is None:
        return config
    per_step = config.batch_size * config.grad_accum  # windows per optimiser step
    steps_per_pass = math.ceil(windows / per_step)
    epochs = min(max_steps, max(EVALUATION_ROUNDS, math.ceil(max_steps / steps_per_pass)))
    per_epoch = (max_steps // epochs) * per_step  # at most one pass
    return replace(config, epochs=epochs, max_train_windows=per_epoch if per_epoch < windows else None)


def score_backtest(
    cv: pd.DataFrame, fmt: FrameFormat, scales: dict[Any, float], models: tuple[str, ...]
) -> pd.DataFrame:
    """MSE, MAE and MASE of each model per series and overall from a cross-validation frame."""
    target = "y" if fmt.wide else fmt.target_col
    rows = []
    overall: dict[str, list[np.ndarray]] = {m: [] for m in models}
    for sid, group in cv.groupby(fmt.id_col, sort=False):
        truth = group[target].to_numpy()
        for m in models:
            error = group[m].to_numpy() - truth
            overall[m].append(error)
            mae = float(np.mean(np.abs(error)))
            rows.append(
                {
                    fmt.id_col: sid,
                    "model": m,
                    "MSE": float(np.mean(error**2)),
                    "MAE": mae,
                    "MASE": mae / scales[sid] if math.isfinite(scales[sid]) else math.nan,
                }
            )
    scores = pd.DataFrame(rows)
    for m in models:
        error = np.concatenate(overall[m])
        mase = scores.loc[scores["model"] == m, "MASE"].to_numpy()
        rows.append(
            {
                fmt.id_col: "overall",
                "model": m,
                "MSE": float(np.mean(error**2)),
                "MAE": float(np.mean(np.abs(error))),
                "MASE": float(np.nanmean(mase)) if np.isfinite(mase).any() else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _scaling(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a series part; a constant part gets std 1."""
    mean, std = float(np.mean(values)), float(np.std(values))
    return mean, std if std > 0 else 1.0


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive(name: str, value: Any) -> None:
    if not _is_int(value) or value <= 0:
        raise InputDataError(f"{name} must be a positive integer, found {value!r}")
