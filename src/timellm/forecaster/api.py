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

Validation. The last ``val_size`` steps of every series (default: the horizon + 19, that is 20
validation windows per series) are held out for early stopping; the forecaster then forecasts from
the end of the whole series. With many series, early stopping reads an evenly spaced sample of
about 500 of those windows (at least one per series) and the interval calibration one of about
2,000.

Short series. Where the trained adapter (RevIN) validates worse than seasonal naive on the same
windows, a correction to seasonal naive (normalisation ``seasonal`` at the data's season, a zero
head) is trained too, and the one that validates better is kept (``choose_normalization``).
``ensemble=k`` trains k adapters of consecutive seeds on a k-th of the step budget each and
averages their forecasts.

Look-back. ``seq_len="auto"`` (the default) picks, at every fit, the longest look-back up to 512
that leaves at least as many training windows as look-back steps in the shortest series
(:func:`timellm.data.lookback.auto_seq_len`); an explicit ``seq_len`` is used exactly.

Prediction intervals. ``predict(level=[80, 95])`` adds ``TimeLLM-lo-80``, ``TimeLLM-hi-80``, ...
columns by split conformal prediction (Vovk et al. 2005; Lei et al. 2018), one quantile per
horizon step: after training, the adapter forecasts every held-out validation window, and each
absolute error is divided by the spread (standard deviation) of its window's look-back, so that
series of different scales pool into one set of scores. The interval of step h is the forecast
± q_h times the look-back spread of the forecast window, q_h being the ceil((n + 1) level)-th
smallest of the n scores of step h. The validation windows were never trained on, so the
guarantee of split conformal holds (coverage of at least ``level`` on average over windows
exchangeable with them), and no level needs a new training: every level reads the same scores.
Scaling by the look-back spread (normalised conformal) rather than pooling raw errors gives a
quiet series narrow bands and a volatile one wide bands from one adapter. A window whose
look-back is constant is forecast as that constant with an interval of width zero. The
calibration itself lives in :mod:`timellm.evaluation.conformal`.

Backtests. :meth:`TimeLLMForecaster.backtest` scores Time-LLM beside statsforecast's models on the
same cutoffs (:mod:`timellm.evaluation.backtest`): MSE, MAE, MASE and, per interval level,
coverage, width and M4's MSIS, with a median combination as an extra row.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from timellm.backbones.loading import Backbone
from timellm.data.errors import ColumnError, InputDataError, SeriesLengthError
from timellm.data.files import check_output_path
from timellm.data.frames import prepare_series
from timellm.data.frequency import season_length
from timellm.data.lookback import max_seq_len
from timellm.data.series import FrameFormat, Series, SeriesSet
from timellm.evaluation.backtest import (
    SUMMARY_ID,
    baseline_columns,
    mase_scale,
    score_backtest,
    score_columns,
)
from timellm.evaluation.conformal import (
    conformity_scores,
    interval_columns,
    sample_windows,
)
from timellm.evaluation.statistical import (
    DEFAULT_BUDGET,
    LONG_SEASON_MODELS,
    STATISTICAL_MODELS,
    check_levels,
    parse_baselines,
)
from timellm.forecaster import lengths
from timellm.forecaster.files import FORECASTER_FILE, check_record, member_folder, read_record, write_record
from timellm.forecaster.fitting import AdapterTraining, fit_plans, forecast_plans
from timellm.forecaster.lengths import check_positive, is_int
from timellm.model.adapter import ADAPTER_FILE, CONFIG_FILE, AdapterLoadError, TimeLLMBase
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.memory import MemoryPlan, refuse_what_cannot_fit
from timellm.model.predict import predict
from timellm.model.variants import load_model
from timellm.training.checkpoint import check_config_matches_weights, read_json_object
from timellm.training.config import split_legacy_execution
from timellm.training.loop import FitResult, TrainConfig

logger = logging.getLogger(__name__)

# Model settings for user data: the paper's architecture on the offline SmolLM2, truncated to two
# layers with 100 text prototypes as in the project's CPU presets, so that a few hundred training
# steps fit a laptop. Every setting can be changed (keyword arguments or a TimeLLMConfig).
DEFAULT_MODEL = TimeLLMConfig(backbone="smollm2-135m", llm_layers=2, num_prototypes=100, seq_len=512)
# Training to the validation optimum: Adam at 1e-3, cosine over up to 50 epochs of at most 25 steps
# each, early stopping after 5 epochs without improvement, within a time budget (DEFAULT_TIME_BUDGET)
DEFAULT_TRAIN = TrainConfig(learning_rate=0.001, schedule="cosine", epochs=50, patience=5)
DEFAULT_MAX_STEPS = None  # no step budget: train to the validation optimum
DEFAULT_TIME_BUDGET = 600.0  # seconds of training a fit may take at most (ten minutes)
LEGACY_MAX_STEPS = 100  # the step budget of adapters saved before the budget was recorded
# the backtest's extra model: the median of Time-LLM's and the automatic statistical models' forecasts
COMBINATION = "Combination"


class TimeLLMForecaster:
    """Time-LLM for long or wide DataFrames: ``fit``, ``predict``, ``cross_validation``, save/load.

    Args:
        horizon: steps to forecast (H, the model's ``pred_len``).
        seq_len: look-back T, or ``"auto"``: the longest up to 512 that leaves at least T training
            windows in the shortest series (the default unless ``config`` is given, whose own
            ``seq_len`` is then kept). Every series needs at least T + H rows to train.
        backbone: the frozen LLM (alias, folder, .gguf file or hub id); default ``smollm2-135m``.
        description: one or two sentences about the data; they go into every prompt.
        config: a full :class:`TimeLLMConfig` to start from (default :data:`DEFAULT_MODEL`);
            ``horizon`` and the arguments above replace its fields.
        train_config: batch size, learning rate, schedule, seed, ... (default :data:`DEFAULT_TRAIN`).
        execution: how the model runs: gradient checkpointing, attention kernel (not saved).
        max_steps: a training budget in optimiser steps (default None: train to the validation
            optimum, up to ``train_config.epochs`` epochs of at most 25 steps each, stopping after
            ``train_config.patience`` epochs without improvement).
        time_budget: seconds a fit may train at most (default 600; None: no limit): no epoch starts
            after it, the epoch in progress ends early, and the best epoch so far is kept. The
            training log states the budget and what ended the training.
        choose_normalization: where the trained adapter (RevIN, the default normalisation) does not
            beat seasonal naive on the validation windows, also train a correction to seasonal naive
            (normalisation ``seasonal`` at the data's season, a zero head) and keep the one that
            validates better; off when ``config`` or the settings choose a normalisation themselves.
        calibration_origins: more held-out forecasts for the intervals, from rolling origins over
            the training part: for k = 1..K an adapter is trained on every series without its last
            k x ``val_size`` steps, and its forecasts of the ``val_size`` steps after its data (which
            it never saw) join the validation windows' conformity scores; each origin costs one
            training more (default 0: the validation windows only).
        ensemble: adapters trained with consecutive seeds on an equal share of ``max_steps`` each
            (the training costs what one adapter's does), their forecasts averaged (default 1).
        val_size: steps at the end of every series held out for validation and for calibrating
            prediction intervals (default: the horizon + 19, 20 windows per series).
        id_col, time_col, target_col: column names of a long frame.
        wide: the frames are wide (``time_col`` and one column per series).
        interpolate: fill missing values and missing timestamps linearly instead of refusing them.
        **model_settings: further :class:`TimeLLMConfig` fields (``llm_layers=4``, ``llm="none"``, ...).
    """

    alias = "TimeLLM"  # the forecast column, one column per model as in neuralforecast
    # columns the forecasts and scores add beside the id, time and target columns, and the names of
    # interval and score columns (TimeLLM-lo-80, coverage-80, MSIS-80, ...): no input column may be so named
    output_columns = (
        alias,
        "cutoff",
        *STATISTICAL_MODELS,
        *LONG_SEASON_MODELS.values(),
        COMBINATION,
        *score_columns(),
    )
    output_pattern = re.compile(r"^(?:.+-(?:lo|hi)|coverage|width|MSIS|best-MSIS)-\d+(?:\.\d+)?$")

    def __init__(
        self,
        horizon: int,
        *,
        seq_len: int | str | None = None,
        backbone: str | None = None,
        description: str | None = None,
        config: TimeLLMConfig | None = None,
        train_config: TrainConfig | None = None,
        execution: ExecutionSettings | None = None,
        max_steps: int | None = DEFAULT_MAX_STEPS,
        time_budget: float | None = DEFAULT_TIME_BUDGET,
        ensemble: int = 1,
        choose_normalization: bool = True,
        calibration_origins: int = 0,
        val_size: int | None = None,
        id_col: str = "unique_id",
        time_col: str = "ds",
        target_col: str = "y",
        wide: bool = False,
        interpolate: bool = False,
        **model_settings: Any,
    ):
        check_positive("horizon", horizon)
        if max_steps is not None:
            check_positive("max_steps", max_steps)
        check_positive("ensemble", ensemble)
        if time_budget is not None and (
            isinstance(time_budget, bool) or not isinstance(time_budget, (int, float)) or not time_budget > 0
        ):
            raise InputDataError(
                f"time_budget must be a positive number of seconds or None (no limit), found {time_budget!r}"
            )
        if max_steps is not None and max_steps < ensemble:
            raise InputDataError(
                f"max_steps={max_steps} is fewer than ensemble={ensemble}: the {ensemble} adapters share "
                f"the budget of max_steps, at least one step each; give max_steps={ensemble} or more, or a "
                "smaller ensemble"
            )
        if not is_int(calibration_origins) or calibration_origins < 0:
            raise InputDataError(
                f"calibration_origins must be an integer of at least 0, found {calibration_origins!r}"
            )
        self.calibration_origins = calibration_origins
        if val_size is not None and (not is_int(val_size) or val_size < horizon):
            raise InputDataError(
                f"val_size must be an integer of at least the horizon ({horizon}), found {val_size!r}: "
                "validation forecasts the last val_size steps of every series"
            )
        changes: dict[str, Any] = {"pred_len": horizon, **model_settings}
        # "auto" (also the default without a config): resolved from the data at every fit
        self.auto_seq_len = seq_len == "auto" or (
            seq_len is None and config is None and "seq_len" not in model_settings
        )
        if seq_len is not None and not self.auto_seq_len:
            check_positive("seq_len", seq_len)
            changes["seq_len"] = seq_len
        if backbone is not None:
            changes["backbone"] = backbone
        if description is not None:
            changes["description"] = description
        self.config: TimeLLMConfig = (config or DEFAULT_MODEL).replace(**changes)
        self.train_config: TrainConfig = train_config or DEFAULT_TRAIN
        # how the model runs while training and forecasting (gradient checkpointing, attention kernel)
        self.execution: ExecutionSettings = execution or ExecutionSettings()
        self.max_steps = max_steps
        self.time_budget = None if time_budget is None else float(time_budget)
        self.ensemble = ensemble
        chosen = {"normalization", "period", "zero_head"} & set(model_settings)
        self.choose_normalization = bool(choose_normalization) and not chosen
        self.val_size = val_size
        self.format = FrameFormat(id_col, time_col, target_col, wide)
        self._check_format()
        self.interpolate = interpolate
        self.models: list[TimeLLMBase] = []  # the trained adapters (one, or an ensemble's members)
        self.fit_results: list[FitResult] = []  # their training, member by member
        self.history: SeriesSet | None = None  # the series of the last fit, predict(df=None) continues them
        # conformity scores (n, H) of the held-out validation windows: |error| / look-back spread
        self.calibration: np.ndarray | None = None
        self.calibration_constant = 0  # held-out windows left out of it: a constant look-back

    # -------------------------------------------------------------------------------------------
    # properties

    @property
    def model(self) -> TimeLLMBase | None:
        """The first (or only) trained adapter; None before a fit or load."""
        return self.models[0] if self.models else None

    @property
    def fit_result(self) -> FitResult | None:
        """The first (or only) adapter's training; None before a fit."""
        return self.fit_results[0] if self.fit_results else None

    @property
    def horizon(self) -> int:
        return self.config.pred_len

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    def __repr__(self) -> str:
        state = "fitted" if self.model is not None else "not fitted"
        look_back = "'auto'" if self.auto_seq_len and self.model is None else self.seq_len
        return (
            f"TimeLLMForecaster(horizon={self.horizon}, seq_len={look_back}, "
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
        val = self._prepare_fit(data, val_size)
        self._fit_series(data, val)
        self.history = data
        return self

    def plan_fit(
        self,
        df: pd.DataFrame,
        val_size: int | None = None,
        n_windows: int | None = None,
        step_size: int | None = None,
    ) -> list[MemoryPlan]:
        """The memory that :meth:`fit` on ``df`` would hold at its peak (a training batch and a
        forecast batch) beside the memory available, estimated before anything is loaded: what
        ``fit`` refuses by. With ``n_windows``: the training of :meth:`backtest` (refit), on the data
        before the first cutoff. The data are checked as a fit checks them, and ``seq_len="auto"``
        is resolved on them as a fit resolves it; nothing trains.
        """
        data = self.prepare(df)
        if n_windows:
            _, val = self._backtest_training_data(data, n_windows, step_size, val_size)
            lengths.cutoffs(self.config, data, n_windows, step_size, val)
        else:
            self._prepare_fit(data, val_size)
        return fit_plans(self.config, self.execution, self.train_config)

    def _prepare_fit(self, data: SeriesSet, val_size: int | None) -> int:
        """Check that ``data`` can train an adapter and resolve the look-back (``seq_len="auto"``);
        returns the validation steps per series."""
        val = self._val_size(val_size, data)
        self._resolve_seq_len(data, val)
        largest = max_seq_len([len(s) for s in data], self.horizon, val)
        lengths.require_length(
            self.config,
            data,
            self.seq_len + self.horizon,
            "training",
            f"look-back {self.seq_len} + horizon {self.horizon}",
            largest,
        )
        lengths.require_training_rows(self.config, data, [len(s) for s in data], val, largest)
        return val

    def predict(
        self, df: pd.DataFrame | None = None, h: int | None = None, level: Iterable[float] | None = None
    ) -> pd.DataFrame:
        """Forecast the next ``horizon`` steps after each series of ``df`` (default: the fitted data).

        Returns a long frame: id column, time column (future timestamps at each series' own
        frequency) and ``TimeLLM``, and with ``level`` (coverages in percent, e.g. ``[80, 95]``)
        the conformal interval columns ``TimeLLM-lo-95``, ``TimeLLM-lo-80``, ``TimeLLM-hi-80``,
        ``TimeLLM-hi-95``. Only the last ``seq_len`` rows of each series are read.
        """
        self._require_model()
        levels = check_levels(level)
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
        lengths.require_length(
            self.config,
            data,
            self.seq_len,
            "forecasting",
            f"the look-back {self.seq_len}",
            max_seq_len([len(s) for s in data], 0),
            takers=None,
        )
        ends = [len(s) for s in data]
        forecasts = self._forecast(data, ends)
        bands = self._intervals(list(data), ends, forecasts, levels)
        parts = [
            self._frame(s, s.future(self.horizon), pred, intervals=band)
            for s, pred, band in zip(data, forecasts, bands, strict=True)
        ]
        return pd.concat(parts, ignore_index=True)

    def _frame(self, s: Series, times, pred, cutoff=None, truth=None, intervals=None) -> pd.DataFrame:
        """One forecast as a long frame: id, time, [cutoff,] forecast[, intervals][, the true values]."""
        f = self.format
        columns = {f.id_col: [s.id] * self.horizon, f.time_col: times}
        if cutoff is not None:
            columns["cutoff"] = [cutoff] * self.horizon
        columns[self.alias] = pred
        columns.update(intervals or {})
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
        level: Iterable[float] | None = None,
    ) -> pd.DataFrame:
        """Backtest: forecast the last ``n_windows`` windows of each series, ``step_size`` apart.

        The last window ends at the end of each series; each earlier one ``step_size`` (default:
        the horizon) steps before. With ``refit`` (default) a new adapter is first trained on the
        data before each series' first cutoff only, so no forecast has seen its future; with
        ``refit=False`` the current adapter is used as it is. Returns a long frame: id, time,
        ``cutoff`` (the last timestamp the forecast saw), ``TimeLLM`` (with ``level``: its
        intervals, calibrated on the validation windows before the first cutoff when refitting)
        and the true target values. With ``seq_len="auto"`` and ``refit`` the look-back is chosen
        from the data before the first cutoff.
        """
        if not refit:
            self._require_model()
        levels = check_levels(level)
        return self._cross_validate(self.prepare(df), n_windows, step_size, val_size, refit, levels)

    def _cross_validate(
        self,
        data: SeriesSet,
        n_windows: int,
        step_size: int | None,
        val_size: int | None,
        refit: bool,
        levels: tuple[float, ...],
    ) -> pd.DataFrame:
        """:meth:`cross_validation` of validated series."""
        val = None
        if refit:  # the data before each series' first cutoff (len - span rows) is all training sees
            before, val = self._backtest_training_data(data, n_windows, step_size, val_size)
        windows = lengths.cutoffs(self.config, data, n_windows, step_size, val)
        if refit:
            self._fit_series(before, val, context="before the first cutoff")
        self.history = data
        order = [(i, c) for i, cutoffs in windows.items() for c in cutoffs]
        series, ends = [data.series[i] for i, _ in order], [c for _, c in order]
        forecasts = self._forecast(series, ends)
        bands = self._intervals(series, ends, forecasts, levels)
        parts = []
        for s, c, pred, band in zip(series, ends, forecasts, bands, strict=True):
            future = slice(c, c + self.horizon)
            parts.append(
                self._frame(s, s.timestamps[future], pred, s.timestamps[c - 1], s.values[future], band)
            )
        return pd.concat(parts, ignore_index=True)

    def _backtest_training_data(
        self, data: SeriesSet, n_windows: int, step_size: int | None, val_size: int | None
    ) -> tuple[SeriesSet, int]:
        """(the data before each series' first cutoff, validation steps) of a backtest that refits,
        the look-back resolved on them (``seq_len="auto"``)."""
        span = lengths.span(self.horizon, n_windows, step_size)
        before = SeriesSet([s.head(max(len(s) - span, 0)) for s in data], data.format)
        val = self._val_size(val_size, before)
        self._resolve_seq_len(before, val, " before the first cutoff")
        return before, val

    def backtest(
        self,
        df: pd.DataFrame,
        n_windows: int = 1,
        step_size: int | None = None,
        val_size: int | None = None,
        refit: bool = True,
        season: int | None = None,
        baselines: Iterable[str] | str | None = STATISTICAL_MODELS,
        level: Iterable[float] | None = None,
        baseline_budget: float | None = DEFAULT_BUDGET,
        combination: bool = True,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Cross-validate beside statistical baselines on the same cutoffs and score every model.

        ``baselines``: any of AutoETS, AutoTheta, AutoARIMA, SeasonalNaive and Naive from
        ``statsforecast`` (default: all; ``"none"`` or ``()``: Time-LLM alone), each fitted on
        exactly the history before each cutoff. ``season`` is the seasonal period of the models
        and of MASE (default: from each series' frequency: 24 for hourly data, 7 for daily, 12
        for monthly, ...). Above a season of 24, AutoETS and AutoARIMA run on the seasonally
        adjusted series of an STL decomposition and are named so (``MSTL-AutoETS``,
        ``MSTL-AutoARIMA``): statsforecast's seasonal ETS stops at 24 and its seasonal ARIMA
        search can run for an hour at 52. ``baseline_budget``: seconds each baseline may spend
        over all windows (default 60; None or 0: no limit); one past it is dropped from the
        results, with a warning. ``level``: interval coverages in percent; Time-LLM's are
        conformal, the baselines' their own. ``combination`` (default True): one more model,
        ``Combination``, the median of the point forecasts of Time-LLM and the automatic
        statistical models that ran (AutoETS, AutoTheta, AutoARIMA or their MSTL forms; M4's
        lesson that a combination often beats its members), without intervals; Time-LLM's own
        row is kept as it is.

        Returns (the cross-validation frame with a column per baseline and its intervals, the
        scores): one row per series and model and an ``overall`` row per model, with MSE and MAE
        on the data's own scale, MASE (the mean absolute error over that of the in-sample seasonal
        naive forecast before the first cutoff; undefined, NaN, for a series without seasonal
        variation), ``coverage-<level>`` and ``width-<level>`` (share of true values inside the
        interval, mean interval width), ``MSIS-<level>`` (M4's mean scaled interval score: the
        width plus 2 / (1 - level) times each miss, over the MASE scale; lower is better),
        ``seconds`` (fit + forecast time of the model over all series; on the overall rows),
        ``best`` (the lowest MASE of the series, or MAE where MASE is undefined) and
        ``best-MSIS-<level>``. Interpolated values (``interpolate=True``) are forecast but never
        scored as truth. ``scores.attrs["season"]`` holds each series' period.
        """
        if not refit:
            self._require_model()
        data = self.prepare(df)
        self._refuse_summary_id(data)
        if season is not None:
            check_positive("season", season)
            history = [
                len(s) - lengths.span(self.horizon, n_windows, step_size) for s in data
            ]  # before the first cutoff
            if season >= max(history):
                raise SeriesLengthError(
                    f"season={season} is not shorter than the history before the first cutoff of any series "
                    f"(at most {max(history)} rows): the seasonal naive forecast and MASE need more than one "
                    "season of history; lower season=..., or give longer series"
                )
        models = parse_baselines(baselines)
        levels = check_levels(level)
        if baseline_budget is not None and (
            isinstance(baseline_budget, bool)
            or not isinstance(baseline_budget, (int, float))
            or not baseline_budget >= 0
        ):
            raise InputDataError(
                f"baseline_budget must be a number of seconds (0 or None: no limit), found {baseline_budget!r}"
            )
        start = time.perf_counter()
        cv = self._cross_validate(data, n_windows, step_size, val_size, refit, levels)
        seconds = {self.alias: time.perf_counter() - start}
        data = self.history
        windows = lengths.cutoffs(self.config, data, n_windows, step_size)
        periods = {s.id: season or season_length(s.freq) for s in data}
        histories, seasons, labels, observed = [], [], [], []
        for i, cutoffs in windows.items():
            s = data.series[i]
            if cutoffs[0] <= periods[s.id]:
                logger.warning(
                    "series %r: %d rows before the first cutoff, not more than one season (%d): its MASE "
                    "is n/a, and so is the seasonal naive forecast of a window with under a season of history",
                    s.id,
                    cutoffs[0],
                    periods[s.id],
                )
            for c in cutoffs:  # the order of the cross-validation frame's windows
                histories.append(s.values[:c])
                seasons.append(periods[s.id])
                labels.append(f"series {s.id!r} at cutoff {s.timestamps[c - 1]}")
                observed.append(
                    np.ones(self.horizon, bool) if s.observed is None else s.observed[c : c + self.horizon]
                )
        seconds |= baseline_columns(
            cv, histories, self.horizon, seasons, models, levels, labels, baseline_budget
        )
        ran = [name for name in seconds if name != self.alias]
        scales = {}
        for i, cutoffs in windows.items():
            s = data.series[i]
            scales[s.id] = mase_scale(s.values[: cutoffs[0]], periods[s.id])
        members = [self.alias, *(m for m in ran if m not in ("SeasonalNaive", "Naive"))]
        if combination and len(members) > 1:
            cv[COMBINATION] = cv[members].median(axis=1, skipna=False)
            ran.append(COMBINATION)
            logger.info("%s: the median of %s", COMBINATION, ", ".join(members))
        scored = np.concatenate(observed)
        if not scored.all():
            logger.warning(
                "%d of %d forecast step(s) fall on interpolated values: forecast, but left out of the scores",
                int((~scored).sum()),
                len(scored),
            )
        scores = score_backtest(cv, self.format, scales, (self.alias, *ran), levels, seconds, scored)
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
        directory = check_output_path(directory, "adapter folder", folder=True)
        for k, model in enumerate(self.models):
            model.save_pretrained(member_folder(directory, k))
        settings = {
            "horizon": self.horizon,
            "seq_len": self.seq_len,
            "columns": asdict(self.format),
            "interpolate": self.interpolate,
            "val_size": self.val_size,
            "max_steps": self.max_steps,
            "time_budget": self.time_budget,
            "choose_normalization": self.choose_normalization,
            "calibration_origins": self.calibration_origins,
            "train": self.train_config.to_dict(),
        }
        write_record(directory, settings, len(self.models), self.calibration, self.calibration_constant)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        horizon: int | None = None,
        seq_len: int | None = None,
        backbone: Backbone | None = None,
        execution: ExecutionSettings | None = None,
        eval_batch_size: int | None = None,
    ) -> TimeLLMForecaster:
        """Load a saved forecaster (or any saved Time-LLM adapter folder) without training.

        ``horizon`` and ``seq_len``, when given, must be the ones the adapter was trained for: an
        adapter forecasts exactly its own horizon from exactly its own look-back. ``execution``:
        how the model runs here (the frozen weights' storage, ``llm_batch``, ...) and
        ``eval_batch_size``: windows per forecast batch (default: as saved); neither is saved.
        """
        directory = Path(directory)
        forecaster, config_data = cls._restore(directory, horizon, seq_len, execution, eval_batch_size)
        config, train = forecaster.config, forecaster.train_config
        if backbone is None:  # refuse what cannot fit before the backbone is loaded
            refuse_what_cannot_fit(forecast_plans(config, forecaster.execution, train))
        for k in range(forecaster.ensemble):  # the members share the first one's backbone
            folder = member_folder(directory, k)
            if k:
                _check_member(folder, config_data)
            forecaster.models.append(
                load_model(folder, backbone, execution=forecaster.execution, precision=train.precision)
            )
            backbone = forecaster.models[0].backbone
        return forecaster

    @classmethod
    def plan_pretrained(
        cls,
        directory: str | Path,
        *,
        horizon: int | None = None,
        seq_len: int | None = None,
        execution: ExecutionSettings | None = None,
        eval_batch_size: int | None = None,
    ) -> list[MemoryPlan]:
        """The memory that forecasting with the adapter saved in ``directory`` would hold at its
        peak beside the memory available (what :meth:`from_pretrained` refuses by; the same
        arguments), estimated from the saved settings: no weight is loaded."""
        forecaster, _ = cls._restore(Path(directory), horizon, seq_len, execution, eval_batch_size)
        return forecast_plans(forecaster.config, forecaster.execution, forecaster.train_config)

    @classmethod
    def _restore(
        cls,
        directory: Path,
        horizon: int | None,
        seq_len: int | None,
        execution: ExecutionSettings | None,
        eval_batch_size: int | None,
    ) -> tuple[TimeLLMForecaster, dict[str, Any]]:
        """A forecaster with the settings saved in ``directory``, checked, but no adapter loaded;
        and the saved adapter config (what every ensemble member's must equal)."""
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{directory} is not an adapter folder: it holds no {CONFIG_FILE} "
                "(save one with save_pretrained)"
            )
        config_path = directory / CONFIG_FILE
        record = read_record(directory)
        config_data = read_json_object(config_path, "adapter config", AdapterLoadError)
        try:
            config = TimeLLMConfig.from_dict(config_data)
        except (ValueError, TypeError) as err:
            raise AdapterLoadError(f"adapter config {config_path}: {err}") from None
        if (directory / ADAPTER_FILE).is_file():
            check_config_matches_weights(config_data, config_path, directory / ADAPTER_FILE, AdapterLoadError)
        wrong = []
        if horizon is not None and horizon != config.pred_len:
            check_positive("horizon", horizon)
            wrong.append(f"horizon {horizon}")
        if seq_len is not None and seq_len != config.seq_len:
            check_positive("seq_len", seq_len)
            wrong.append(f"look-back {seq_len}")
        if wrong:
            raise AdapterLoadError(
                f"the adapter in {directory} was trained for horizon {config.pred_len} and look-back "
                f"{config.seq_len}, not {' and '.join(wrong)}: an adapter forecasts only its own horizon from "
                f"its own look-back; ask for horizon={config.pred_len} and "
                "leave the look-back out, or train a new adapter"
            )
        check_record(record, config, directory / FORECASTER_FILE)
        # earlier versions saved the execution settings among the training settings: not saved now
        saved_train, _ = split_legacy_execution(record.get("train", {}))
        try:
            train = TrainConfig.from_dict(saved_train)
        except (ValueError, TypeError) as err:
            raise AdapterLoadError(f"{directory / FORECASTER_FILE}: 'train': {err}") from None
        forecaster = cls(
            config.pred_len,
            config=config,
            train_config=train,
            max_steps=None,
            ensemble=record.get("ensemble", 1),
            choose_normalization=record.get("choose_normalization", True),
            calibration_origins=record.get("calibration_origins", 0),
            val_size=record.get("val_size"),
            interpolate=record.get("interpolate", False),
            **record.get("columns", {}),
        )
        forecaster.execution = execution or ExecutionSettings()
        # the budget it was trained with, as saved (not checked again: nothing trains on it here)
        forecaster.max_steps = record.get("max_steps", LEGACY_MAX_STEPS)
        forecaster.time_budget = record.get("time_budget")
        if eval_batch_size is not None:
            forecaster.train_config = train.replace(eval_batch_size=eval_batch_size)
        if record.get("calibration") is not None:
            forecaster.calibration = np.asarray(record["calibration"], dtype=np.float64).reshape(
                -1, config.pred_len
            )
            forecaster.calibration_constant = record.get("calibration_constant", 0)
        return forecaster, config_data

    # -------------------------------------------------------------------------------------------
    # internals

    def _require_model(self) -> None:
        if self.model is None:
            raise InputDataError("this forecaster has no trained adapter yet: call fit(df) first")

    def _check_horizon(self, h: int) -> None:
        check_positive("h", h)
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
            if name in self.output_columns or self.output_pattern.match(str(name)):
                raise ColumnError(
                    f"{setting}={name!r} clashes with the column {name!r} that forecasts or scores are "
                    f"written to ({', '.join(self.output_columns)}, and <model>-lo-<level>, "
                    "<model>-hi-<level>, coverage-<level>, width-<level>, MSIS-<level>); rename that "
                    "column of the data"
                )
            if names.count(name) > 1:
                clash = [k for k, v in inputs.items() if v == name]
                raise ColumnError(
                    f"{' and '.join(clash)} are both {name!r}; the id, time and target columns must differ"
                )

    def _refuse_summary_id(self, data: SeriesSet) -> None:
        """Refuse a series whose id is that of the scores' summary rows (it would merge with them)."""
        clash = [s.id for s in data if str(s.id) == SUMMARY_ID]
        if clash:
            what = "column" if self.format.wide else f"id in column {self.format.id_col!r}"
            raise ColumnError(
                f"a series is named {clash[0]!r} ({what}), the name of the summary rows of the backtest "
                "scores; rename that series"
            )

    def _val_size(self, val_size: int | None, data: SeriesSet | None = None) -> int:
        """The validation steps per series: the argument, else the forecaster's, else the default.

        The default (:meth:`_default_val`) depends on the series to be trained on, ``data``;
        without them it is the horizon.
        """
        h = self.horizon
        if val_size is not None:
            val = val_size
        elif self.val_size:
            val = self.val_size
        else:
            val = (
                lengths.default_val_size(self.config, data, self.auto_seq_len)
                if data is not None and len(data)
                else h
            )
        if not is_int(val) or val < h:
            raise InputDataError(
                f"val_size must be an integer of at least the horizon ({h}), found {val!r}: "
                "validation forecasts the last val_size steps of every series"
            )
        return val

    def _fit_series(self, data: SeriesSet, val: int, context: str = "") -> None:
        """Train the adapter(s) on ``data`` (the last ``val`` steps of each series held out), then
        calibrate the intervals on the held-out windows."""
        trainer = AdapterTraining(
            self.config,
            self.train_config,
            self.execution,
            max_steps=self.max_steps,
            ensemble=self.ensemble,
            choose_normalization=self.choose_normalization,
            time_budget=self.time_budget,
        )
        self.config, self.models, self.fit_results, held_out = trainer.run(data, val, context)
        self.calibration, self.calibration_constant = self._conformity_scores(held_out, val)
        if self.calibration_origins:
            self._rolling_origin_scores(data, val, context, trainer.validate_start)
        logger.info(
            "prediction intervals: calibrated on %d held-out forecasts (%d series%s)%s",
            len(self.calibration),
            len(held_out),
            f"; validation windows and {self.calibration_origins} rolling origin(s)"
            if self.calibration_origins
            else "; their validation windows",
            f"; {self.calibration_constant} more had a constant look-back (no error scale)"
            if self.calibration_constant
            else "",
        )

    def _resolve_seq_len(self, data: SeriesSet, val: int, context: str = "") -> None:
        """With ``seq_len="auto"``: set the look-back for ``data`` (:func:`~.lengths.auto_look_back`)."""
        if self.auto_seq_len:
            self.config = lengths.auto_look_back(self.config, data, val, context)

    def _rolling_origin_scores(
        self, data: SeriesSet, val: int, context: str = "", validate_start: bool = False
    ) -> None:
        """Add the conformity scores of ``calibration_origins`` rolling origins (the constructor's
        ``calibration_origins``): origin k trains an adapter of the kept config on every series
        without its last k x ``val`` steps, and scores its forecasts of the ``val`` steps after them."""
        c = self.config
        needed = c.seq_len + c.pred_len + val  # rows before a cut for a training window and validation
        scores, constant = [self.calibration], self.calibration_constant
        for k in range(1, self.calibration_origins + 1):
            room = [s for s in data if len(s) - k * val >= needed]
            if not room:
                logger.info(
                    "calibration origin %d: no series has %d rows (look-back + horizon + validation) "
                    "before its last %d steps; the intervals calibrate on %s",
                    k,
                    needed,
                    k * val,
                    f"{k - 1} origin(s) besides the validation windows"
                    if k > 1
                    else "the validation windows only",
                )
                break
            trainer = AdapterTraining(
                c,
                self.train_config,
                self.execution,
                max_steps=self.max_steps,
                ensemble=self.ensemble,
                choose_normalization=False,  # the kept config, trained as it was
                backbone=self.models[0].backbone,
                validate_start=validate_start,
                time_budget=self.time_budget,
            )
            cut = SeriesSet([s.head(len(s) - k * val) for s in room], data.format)
            _, models, _, _ = trainer.run(cut, val, f"{context}, calibration origin {k}".lstrip(", "))
            # the val steps after each cut: the main adapter trained on them, this one never saw them
            ahead = [s.head(len(s) - (k - 1) * val) for s in room]
            more, left_out = self._conformity_scores(ahead, val, models)
            scores.append(more)
            constant += left_out
            logger.info(
                "calibration origin %d: %d held-out forecasts more (%d series)", k, len(more), len(ahead)
            )
        self.calibration, self.calibration_constant = np.concatenate(scores), constant

    def _conformity_scores(
        self, series: list[Series], val: int, models: list[TimeLLMBase] | None = None
    ) -> tuple[np.ndarray, int]:
        """Conformity scores of ``models``' forecasts (default: this forecaster's adapters) of the
        windows in the last ``val`` steps of each series (stride 1; an even sample of at most
        :data:`~timellm.evaluation.conformal.MAX_CALIBRATION_WINDOWS` of them): ((n, H), the
        windows left out for a constant look-back).
        """
        h = self.horizon
        t = self.seq_len  # the windows of the validation sets of _fit_series
        pairs = [(s, end) for s in series for end in range(max(len(s) - val, t), len(s) - h + 1)]
        pairs = [pairs[i] for i in sample_windows(len(pairs))]
        if not pairs:
            return np.empty((0, h)), 0
        ends = [end for _, end in pairs]
        forecasts = np.stack(self._forecast([s for s, _ in pairs], ends, models))  # (n, H)
        truth = np.stack([s.values[end : end + h] for s, end in pairs])  # (n, H)
        return conformity_scores(self._pasts([s for s, _ in pairs], ends), forecasts, truth)

    def _pasts(self, series: list[Series], ends: list[int]) -> np.ndarray:
        """The ``seq_len`` rows before ``ends[i]`` of ``series[i]``: (n, T)."""
        t = self.seq_len
        if not series:
            return np.empty((0, t))
        return np.stack([s.values[end - t : end] for s, end in zip(series, ends, strict=True)])

    def _intervals(
        self, series: list[Series], ends: list[int], forecasts: list[np.ndarray], levels: tuple[float, ...]
    ) -> list[dict[str, np.ndarray]]:
        """Conformal interval columns of every forecast, ``TimeLLM-lo-95`` ... ``TimeLLM-hi-95``."""
        pasts = self._pasts(series, ends)
        return interval_columns(
            self.alias, pasts, forecasts, levels, self.calibration, self.calibration_constant
        )

    @torch.no_grad()
    def _forecast(
        self, series: SeriesSet | list[Series], ends: list[int], models: list[TimeLLMBase] | None = None
    ) -> list[np.ndarray]:
        """The forecast from the ``seq_len`` rows before row ``ends[i]`` of ``series[i]``: (H,) each,
        the mean of ``models`` (default: this forecaster's adapters)."""
        t = self.seq_len
        pasts = np.stack([s.values[end - t : end] for s, end in zip(series, ends, strict=True)])  # (n, T)
        mean = pasts.mean(axis=1, keepdims=True)  # (n, 1): the look-back's own statistics, so that a
        std = pasts.std(axis=1, keepdims=True)  # forecast depends on the last seq_len rows only
        std[std == 0] = 1.0
        scaled = torch.as_tensor((pasts - mean) / std, dtype=torch.float32)[:, :, None]  # (n, T, 1)
        outputs = torch.stack(  # (n, H, 1): the mean forecast of the ensemble's members
            [
                predict(model, scaled, batch_size=self.train_config.eval_batch_size)
                for model in models or self.models
            ]
        ).mean(dim=0)
        preds = outputs[:, :, 0].numpy().astype(np.float64) * std + mean  # (n, H)
        constant = np.ptp(pasts, axis=1) == 0
        preds[constant] = pasts[constant, -1:]  # a constant look-back forecasts that constant, exactly
        return list(preds)


# ------------------------------------------------------------------------------------------------
# helpers


def _check_member(folder: Path, config_data: dict[str, Any]) -> None:
    """An ensemble member's folder holds an adapter of the first member's config."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise AdapterLoadError(f"{folder} is not an adapter folder: it holds no {CONFIG_FILE}")
    if read_json_object(path, "adapter config", AdapterLoadError) != config_data:
        raise AdapterLoadError(
            f"{path} differs from the first adapter's {CONFIG_FILE}: an ensemble's members share one config"
        )
    check_config_matches_weights(config_data, path, folder / ADAPTER_FILE, AdapterLoadError)
