import json
import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import timellm.forecaster.fitting as forecaster_module
from timellm.data.errors import ColumnError, InputDataError, SeriesLengthError, ValueDataError
from timellm.evaluation.statistical import forecast_windows
from timellm.forecaster import TimeLLMForecaster, budget
from timellm.model.adapter import AdapterLoadError
from timellm.training.loop import FitResult, TrainConfig

TINY = dict(seq_len=48, patch_len=8, stride=4, d_model=8, d_ff=16, n_heads=2, num_prototypes=20)


# what a skipped training returns (its validation loss never calls for a correction to seasonal naive)
UNTRAINED = FitResult(best_val_loss=0.0, best_epoch=0, epochs_run=0, steps=0, train_seconds=0.0)


def forecaster(horizon=12, llm="none", max_steps=4, **changes):
    return TimeLLMForecaster(horizon, llm=llm, max_steps=max_steps, **{**TINY, **changes})


def frame(lengths=(120, 90), freqs=("h", "D")):
    """Seasonal series of different lengths, frequencies and scales."""
    parts = []
    for i, (n, freq) in enumerate(zip(lengths, freqs, strict=True)):
        t = np.arange(n)
        y = 10**i * (5 + np.sin(2 * np.pi * t / 24)) + 0.01 * t
        parts.append(
            pd.DataFrame(
                {"unique_id": f"s{i}", "ds": pd.date_range("2024-01-01", periods=n, freq=freq), "y": y}
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def fitted():
    return forecaster().fit(frame())


def test_predict_continues_each_series_at_its_own_frequency(fitted):
    out = fitted.predict()
    assert list(out.columns) == ["unique_id", "ds", "TimeLLM"]
    assert out.groupby("unique_id", sort=False).size().to_dict() == {"s0": 12, "s1": 12}
    hourly = out[out.unique_id == "s0"].ds
    daily = out[out.unique_id == "s1"].ds
    assert hourly.iloc[0] == pd.Timestamp("2024-01-01") + pd.Timedelta(hours=120)
    assert daily.iloc[-1] == pd.Timestamp("2024-01-01") + pd.Timedelta(days=90 + 11)
    assert np.isfinite(out.TimeLLM).all()
    assert out[out.unique_id == "s1"].TimeLLM.between(0, 100).all()  # on the series' own scale (~10 x)


def test_predict_reads_only_the_last_seq_len_rows(fitted):
    df = frame()
    tail = df.groupby("unique_id", sort=False).tail(48)
    a, b = fitted.predict(df), fitted.predict(tail)
    np.testing.assert_allclose(a.TimeLLM, b.TimeLLM, rtol=1e-6)
    assert a.ds.equals(b.ds)


def test_a_constant_series_forecasts_that_constant_exactly():
    df = frame((100,), ("h",))
    const = df.assign(unique_id="flat", y=3.25)
    out = forecaster().fit(pd.concat([df, const])).predict()
    assert (out[out.unique_id == "flat"].TimeLLM == 3.25).all()


def test_fit_uses_the_last_val_size_steps_of_each_series_for_validation(monkeypatch):
    seen = {}

    def fake_fit(model, train_set, val_set, config, **options):
        seen.update(train=len(train_set), val=len(val_set), config=config)
        return UNTRAINED

    monkeypatch.setattr(forecaster_module, "fit", fake_fit)
    forecaster(val_size=20).fit(frame((120, 90)))
    # validation: the last 20 steps of each series -> 20 - 12 + 1 windows; training: the rest
    assert seen["val"] == 2 * 9
    assert seen["train"] == (100 - 60 + 1) + (70 - 60 + 1)
    with pytest.raises(InputDataError, match="val_size must be an integer of at least the horizon"):
        forecaster(val_size=5)


def test_max_steps_is_the_training_budget(fitted):
    assert fitted.fit_result.steps == 4
    for windows, max_steps in ((10, 50), (1000, 50), (100_000, 50), (5, 1), (5, 3)):
        config = budget(TrainConfig(batch_size=8), max_steps, windows)
        per_epoch = min(config.max_train_windows or windows, windows)
        steps = config.epochs * -(-per_epoch // 8)
        assert max_steps * 0.9 <= steps <= max_steps
        assert config.epochs >= min(4, max_steps)  # validated (and early stopped) several times


def test_by_default_a_fit_trains_to_its_validation_optimum_within_a_time_budget(monkeypatch, caplog):
    seen = {}

    def fake_fit(model, train_set, val_set, config, **options):
        seen["config"] = config
        return UNTRAINED

    monkeypatch.setattr(forecaster_module, "fit", fake_fit)
    with caplog.at_level(logging.INFO, logger="timellm.forecaster.fitting"):
        TimeLLMForecaster(12, llm="none", **TINY).fit(frame((1200, 900)))
    config = seen["config"]
    # up to 50 epochs of at most 25 steps, early stopping after 5, at most ten minutes of training
    assert (config.epochs, config.patience, config.time_budget) == (50, 5, 600.0)
    assert config.max_train_windows == 25 * config.batch_size
    assert (
        "to the validation optimum: up to 50 epoch(s) of <= 600 windows, early stopping after 5"
        in caplog.text
    )
    assert "within a time budget of 600 s" in caplog.text
    # an ensemble shares the time budget; no limit at all on request
    TimeLLMForecaster(12, llm="none", ensemble=2, time_budget=90, **TINY).fit(frame((1200, 900)))
    assert seen["config"].time_budget == 45
    TimeLLMForecaster(12, llm="none", time_budget=None, **TINY).fit(frame((1200, 900)))
    assert seen["config"].time_budget is None
    with pytest.raises(InputDataError, match="time_budget must be a positive number of seconds or None"):
        TimeLLMForecaster(12, time_budget=0)


def test_a_time_budget_ends_training_early_and_keeps_the_best_epoch_so_far():
    from timellm.data import WindowDataset
    from timellm.training.loop import fit

    series = np.sin(np.arange(600) / 4.0).astype(np.float32)[:, None]
    model = TimeLLMForecaster(12, llm="none", **TINY).config
    from timellm.model.variants import build_model

    result = fit(
        build_model(model.replace(pred_len=12), seed=0),
        WindowDataset(series[:500], 48, 12),
        WindowDataset(series[440:], 48, 12),
        TrainConfig(epochs=50, batch_size=8, patience=50, time_budget=1e-6),
    )
    # the budget is spent by the first batch: that epoch is cut short, validated and kept
    assert (result.epochs_run, result.steps, result.stopped_by) == (1, 1, "time budget")


def test_cross_validation_trains_before_the_first_cutoff_and_returns_the_truth(monkeypatch):
    trained_on = {}
    real_fit = forecaster_module.fit

    def spy(model, train_set, val_set, config, **options):
        trained_on["train"] = len(train_set)
        return real_fit(model, train_set, val_set, config, **options)

    monkeypatch.setattr(forecaster_module, "fit", spy)
    df = frame((120, 90))
    cv = forecaster().cross_validation(df, n_windows=2, step_size=6)
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", "TimeLLM", "y"]
    assert len(cv) == 2 * 2 * 12
    # before the first cutoff: 120 - 18 and 90 - 18 rows, minus the default validation of 12 + 19
    # steps: s1's 41 training rows are too few for a window of 48 + 12
    assert trained_on["train"] == (102 - 31 - 60 + 1) + 0
    s0 = cv[cv.unique_id == "s0"]
    assert sorted(s0.cutoff.unique()) == [
        pd.Timestamp("2024-01-01") + pd.Timedelta(hours=h) for h in (101, 107)
    ]
    merged = s0.merge(df, on=["unique_id", "ds"], suffixes=("", "_true"))
    np.testing.assert_array_equal(merged.y, merged.y_true)
    assert (s0.ds > s0.cutoff).all()


def test_backtest_scores_beside_seasonal_naive(fitted):
    df = frame((120, 90))
    df = pd.concat([df, df[df.unique_id == "s0"].assign(unique_id="flat", y=2.0)])
    cv, scores = fitted.backtest(df, n_windows=2, refit=False, season=24, baselines=["SeasonalNaive"])
    assert "SeasonalNaive" in cv.columns
    table = scores.set_index(["unique_id", "model"])
    # a sine of period 24 plus a slow trend: seasonal naive is off by the trend only
    assert table.loc[("s0", "SeasonalNaive"), "MAE"] == pytest.approx(0.24, rel=1e-6)
    assert np.isnan(table.loc[("flat", "TimeLLM"), "MASE"])  # no seasonal variation: undefined
    assert table.loc[("flat", "TimeLLM"), "MSE"] == 0.0
    assert {"overall"} <= set(scores.unique_id)
    assert np.isfinite(table.loc[("overall", "TimeLLM"), "MASE"])
    # one best model per series, by MASE (by MAE for the flat series, whose MASE is undefined)
    assert scores.groupby("unique_id").best.sum().eq(1).all()
    assert table.loc[("s0", "SeasonalNaive"), "best"] == (
        table.loc[("s0", "SeasonalNaive"), "MASE"] < table.loc[("s0", "TimeLLM"), "MASE"]
    )
    assert np.isfinite(table.loc[("overall", "SeasonalNaive"), "seconds"])


def test_baselines_forecast_the_same_cutoffs_and_timestamps_from_the_same_history(fitted):
    df = frame((120, 90))
    models = ("AutoETS", "AutoTheta", "SeasonalNaive", "Naive")
    cv, scores = fitted.backtest(df, n_windows=3, step_size=4, refit=False, baselines=models, level=[80])
    alone = fitted.cross_validation(df, n_windows=3, step_size=4, refit=False)
    pd.testing.assert_frame_equal(cv[alone.columns], alone)  # Time-LLM's rows, cutoffs and times unchanged
    data = fitted.prepare(df)
    for s in data:
        rows = cv[cv.unique_id == s.id]
        for cutoff, window in rows.groupby("cutoff"):
            c = int(np.searchsorted(s.timestamps, cutoff)) + 1  # rows of history the window saw
            assert list(window.ds) == list(s.timestamps[c : c + 12])
            season = 24 if s.id == "s0" else 7  # hourly and daily
            expected = forecast_windows([s.values[:c]], 12, [season], models, levels=[80])
            for m in models:
                np.testing.assert_allclose(window[m], expected[m].mean[0], rtol=1e-6)
                np.testing.assert_allclose(window[f"{m}-hi-80"], expected[m].upper[80][0], rtol=1e-6)
    assert scores.attrs["season"] == {"s0": 24, "s1": 7}
    assert set(scores.model) == {"TimeLLM", *models, "Combination"}
    assert len(scores) == 3 * 6  # two series and overall, six models
    # the combination: the median of Time-LLM, AutoETS and AutoTheta (not of the naive references)
    np.testing.assert_allclose(cv.Combination, np.median(cv[["TimeLLM", "AutoETS", "AutoTheta"]], axis=1))
    assert np.isnan(scores.loc[scores.model == "Combination", "coverage-80"]).all()  # no intervals of its own
    covered = scores.set_index(["unique_id", "model"]).loc[("overall", "AutoETS"), "coverage-80"]
    assert 0 <= covered <= 1 and scores["width-80"].dropna().ge(0).all()  # AutoETS may fit a sine exactly
    assert scores.loc[scores.model == "TimeLLM", "width-80"].gt(0).all()


def test_intervals_nest_contain_the_forecast_and_are_named_as_in_statsforecast(fitted):
    out = fitted.predict(level=[95, 80])
    assert list(out.columns) == [
        "unique_id",
        "ds",
        "TimeLLM",
        "TimeLLM-lo-95",
        "TimeLLM-lo-80",
        "TimeLLM-hi-80",
        "TimeLLM-hi-95",
    ]
    assert (out["TimeLLM-lo-95"] <= out["TimeLLM-lo-80"]).all()
    assert (out["TimeLLM-lo-80"] <= out.TimeLLM).all() and (out.TimeLLM <= out["TimeLLM-hi-80"]).all()
    assert (out["TimeLLM-hi-80"] <= out["TimeLLM-hi-95"]).all()
    assert (out["TimeLLM-hi-95"] - out["TimeLLM-lo-95"] > out["TimeLLM-hi-80"] - out["TimeLLM-lo-80"]).all()
    np.testing.assert_array_equal(out.TimeLLM, fitted.predict().TimeLLM)  # the forecast is unchanged
    # the larger series (about 10 times the other's scale) gets bands about 10 times as wide
    width = (out["TimeLLM-hi-80"] - out["TimeLLM-lo-80"]).groupby(out.unique_id).mean()
    assert 5 < width["s1"] / width["s0"] < 20


@pytest.mark.parametrize("level", [0, 100, "abc", -1])
def test_bad_levels_are_refused(fitted, level):
    with pytest.raises(ValueError, match="level must be"):
        fitted.predict(level=[80, level])


def test_intervals_need_enough_held_out_windows():
    few = forecaster(val_size=12).fit(frame())  # one validation window per series: 2 scores
    assert few.calibration.shape == (2, 12)
    with pytest.raises(
        InputDataError, match="a 80 % interval needs at least 4 held-out validation windows.*val_size"
    ):
        few.predict(level=[80])


def test_conformal_intervals_reach_their_nominal_coverage_on_a_noisy_sine():
    """A sine of period 24 plus Gaussian noise (sd 0.5): 400 test windows the model never saw."""
    n, h = 2400, 12
    t = np.arange(n)
    y = 3 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(7).normal(0, 0.5, n)
    df = pd.DataFrame({"unique_id": "noisy", "ds": pd.date_range("2024-01-01", periods=n, freq="h"), "y": y})
    fc = forecaster(horizon=h, max_steps=60, val_size=h + 299)  # 300 calibration windows
    fc.fit(df.iloc[:1200])
    cv = fc.cross_validation(df, n_windows=400, step_size=3, refit=False, level=[80, 95])
    for level, tolerance in ((80, 0.04), (95, 0.025)):
        inside = (cv[f"TimeLLM-lo-{level}"] <= cv.y) & (cv.y <= cv[f"TimeLLM-hi-{level}"])
        assert abs(inside.mean() - level / 100) < tolerance, (level, inside.mean())


def test_calibration_is_saved_with_the_adapter(fitted, tmp_path):
    fitted.save_pretrained(tmp_path / "adapter")
    loaded = TimeLLMForecaster.from_pretrained(tmp_path / "adapter")
    np.testing.assert_array_equal(loaded.calibration, fitted.calibration)
    df = frame()
    pd.testing.assert_frame_equal(loaded.predict(df, level=[80]), fitted.predict(df, level=[80]))


def fake_training(monkeypatch):
    """Skip the optimiser: these tests check which windows and look-back a fit would use."""
    seen = {}

    def fake_fit(model, train_set, val_set, config, **options):
        seen.update(train=len(train_set), val=len(val_set))
        return UNTRAINED

    monkeypatch.setattr(forecaster_module, "fit", fake_fit)
    return seen


AUTO = {k: v for k, v in TINY.items() if k != "seq_len"}


@pytest.mark.parametrize(
    ("lengths", "horizon", "expected_seq_len", "expected_val"),
    [
        ((2000, 1500), 12, 512, 31),  # long: the paper's 512
        ((400, 300), 12, (300 - 31 - 12 + 1) // 2, 31),  # the shortest series decides: 129
        ((60,), 6, (60 - 25 - 6 + 1) // 2, 25),  # short: look-back 15
        ((45,), 6, (45 - 6 - 6 + 1) // 2, 6),  # too short for 20 validation windows: one, look-back 17
    ],
)
def test_seq_len_auto_is_the_longest_look_back_leaving_as_many_training_windows(
    monkeypatch, caplog, lengths, horizon, expected_seq_len, expected_val
):
    seen = fake_training(monkeypatch)
    fc = TimeLLMForecaster(horizon, llm="none", **AUTO)
    assert fc.auto_seq_len and "seq_len='auto'" in repr(fc)
    with caplog.at_level(logging.INFO, logger="timellm"):
        fc.fit(frame(lengths, ("h",) * len(lengths)))
    assert fc.seq_len == expected_seq_len
    assert f"seq_len auto: look-back {expected_seq_len}" in caplog.text
    shortest = min(lengths) - expected_val
    assert seen["train"] >= expected_seq_len or expected_seq_len == 512
    assert shortest - expected_seq_len - horizon + 1 >= expected_seq_len or expected_seq_len == 512
    assert seen["val"] == len(lengths) * (expected_val - horizon + 1)


def test_an_explicit_seq_len_is_used_exactly_and_too_short_series_name_the_need(monkeypatch):
    fake_training(monkeypatch)
    fc = TimeLLMForecaster(12, seq_len=40, llm="none", **AUTO).fit(frame((400, 300), ("h", "h")))
    assert fc.seq_len == 40 and not fc.auto_seq_len
    with pytest.raises(
        InputDataError,
        match=r"series 's0' is too short for an automatic look-back: 40 rows.*at least 10 steps.*needs 43",
    ):
        TimeLLMForecaster(12, llm="none", **AUTO).fit(frame((40,), ("h",)))


def test_save_and_load_give_the_same_forecasts(fitted, tmp_path):
    fitted.save_pretrained(tmp_path / "adapter")
    record = json.loads((tmp_path / "adapter" / "forecaster.json").read_text())
    assert record["horizon"] == 12 and record["seq_len"] == 48 and record["columns"]["id_col"] == "unique_id"
    loaded = TimeLLMForecaster.from_pretrained(tmp_path / "adapter")
    df = frame()
    pd.testing.assert_frame_equal(loaded.predict(df), fitted.predict(df))
    with pytest.raises(InputDataError, match="pass df="):
        loaded.predict()


def test_unknown_keys_in_a_saved_forecaster_are_refused_not_dropped(fitted, tmp_path):
    fitted.save_pretrained(tmp_path / "adapter")
    path = tmp_path / "adapter" / "forecaster.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "quantiles": [0.1, 0.9]}))
    with pytest.raises(AdapterLoadError, match=r"forecaster.json has unknown key\(s\) quantiles"):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter")
    path.write_text(json.dumps({**record, "train": {**record["train"], "warmup_steps": 10}}))
    with pytest.raises(AdapterLoadError, match=r"unknown training setting\(s\): warmup_steps"):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter")
    # earlier versions saved the execution settings among the training settings: still readable
    path.write_text(json.dumps({**record, "train": {**record["train"], "attention": "sdpa"}}))
    assert TimeLLMForecaster.from_pretrained(tmp_path / "adapter").train_config == fitted.train_config


def test_the_execution_settings_reach_the_model():
    from timellm.model.config import ExecutionSettings

    chosen = ExecutionSettings(gradient_checkpointing=True, attention="eager")
    assert forecaster(execution=chosen).fit(frame()).model.execution == chosen


def test_an_adapter_for_another_horizon_or_look_back_is_refused(fitted, tmp_path):
    fitted.save_pretrained(tmp_path / "adapter")
    with pytest.raises(AdapterLoadError, match="trained for horizon 12 and look-back 48, not horizon 24"):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter", horizon=24)
    with pytest.raises(AdapterLoadError, match="not look-back 96"):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter", seq_len=96)
    with pytest.raises(InputDataError, match="trained for horizon 12, not h=6"):
        fitted.predict(h=6)


def test_series_too_short_say_the_minimum_and_the_look_back_option(fitted):
    short = frame((120, 50))
    with pytest.raises(InputDataError) as err:
        forecaster().fit(short)
    message = str(err.value)
    assert (
        "series 's1' is too short: 50 rows" in message
        and "at least 60 = look-back 48 + horizon 12" in message
    )
    assert "seq_len=" in message and "at most 38" in message
    with pytest.raises(InputDataError, match="forecasting needs at least 48"):
        fitted.predict(frame((120, 40)))


@pytest.mark.parametrize("horizon", [0, -3])
def test_horizon_must_be_positive(horizon):
    with pytest.raises(InputDataError, match="horizon must be a positive integer"):
        TimeLLMForecaster(horizon)


def test_wide_frames_and_custom_column_names():
    long = frame((100, 100), ("h", "h"))
    wide = (
        long.pivot(index="ds", columns="unique_id", values="y").reset_index().rename(columns={"ds": "time"})
    )
    out = forecaster(time_col="time", wide=True).fit(wide).predict()
    assert list(out.columns) == ["unique_id", "time", "TimeLLM"] and set(out.unique_id) == {"s0", "s1"}
    renamed = long.rename(columns={"unique_id": "id", "ds": "t", "y": "v"})
    out = forecaster(id_col="id", time_col="t", target_col="v").fit(renamed).predict()
    assert list(out.columns) == ["id", "t", "TimeLLM"]


def test_the_users_description_goes_into_the_prompt():
    fc = forecaster(llm="pretrained", backbone="tiny-random-llama", description="Pump pressure.", max_steps=1)
    fc.fit(frame((80,), ("h",)))
    ids = fc.model.backbone.tokenizer("Pump pressure.", add_special_tokens=False)["input_ids"]
    prefix = fc.model.prefix_ids
    assert any(prefix[i : i + len(ids)] == ids for i in range(len(prefix)))


def test_predict_before_fit_is_a_clear_error():
    with pytest.raises(InputDataError, match="call fit"):
        forecaster().predict(frame())


# ------------------------------------------------------------------------------------------------
# issue 17: no silently wrong answer, and every check before training


@pytest.fixture
def no_training(monkeypatch):
    """Make training fail loudly: the checks under test must come before it."""

    def fail(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(forecaster_module, "fit", fail)


def test_a_huge_value_outside_the_look_back_is_refused_before_training(no_training):
    df = frame((120, 90))
    df.loc[5, "y"] = 1e200  # far outside the look-back: it would only break the training scaling
    with pytest.raises(
        ValueDataError, match="series 's0': column 'y' has values as large as 1e\\+200 in rows 5"
    ):
        forecaster().fit(df)


@pytest.mark.parametrize(
    "columns, expected",
    [
        (dict(target_col="TimeLLM"), "target_col='TimeLLM' clashes with the column 'TimeLLM'"),
        (dict(id_col="cutoff"), "id_col='cutoff' clashes"),
        (dict(time_col="SeasonalNaive"), "time_col='SeasonalNaive' clashes"),
        (dict(target_col="Naive"), "target_col='Naive' clashes with the column 'Naive'"),
        (dict(time_col="AutoETS"), "time_col='AutoETS' clashes"),
        (dict(id_col="model"), "id_col='model' clashes"),
        (dict(target_col="MSTL-AutoARIMA"), "target_col='MSTL-AutoARIMA' clashes"),
        (dict(target_col="TimeLLM-lo-80"), "target_col='TimeLLM-lo-80' clashes"),
        (dict(time_col="MSIS-95"), "time_col='MSIS-95' clashes"),
        (dict(id_col="ds"), "id_col and time_col are both 'ds'"),
        (dict(time_col="y", wide=True), "time_col and the target column of the output are both 'y'"),
    ],
)
def test_column_names_that_clash_with_the_output_are_refused(columns, expected):
    with pytest.raises(ColumnError, match=expected):
        forecaster(**columns)
    fc = forecaster()
    fc.format = replace(fc.format, **columns)  # as the CLI sets the columns of a loaded forecaster
    with pytest.raises(ColumnError, match=expected):
        fc.prepare(frame())


def test_the_advised_look_back_counts_validation_and_fits(no_training, monkeypatch):
    df = frame((59,), ("h",))
    with pytest.raises(SeriesLengthError) as err:
        forecaster(seq_len=48).fit(df)
    assert "59 rows, but training needs at least 60" in str(err.value)
    assert "at most 35" in str(err.value)  # not 47: the last 12 steps are held out for validation
    with pytest.raises(SeriesLengthError) as err:
        forecaster(seq_len=40).fit(df)  # one window fits, but not before the validation steps
    assert "look-back 40 + horizon 12 + validation 12 = 64 rows" in str(err.value)
    assert "at most 35" in str(err.value) and "val_size=" in str(err.value)
    monkeypatch.undo()
    out = forecaster(seq_len=35, max_steps=1).fit(df).predict()
    assert len(out) == 12 and np.isfinite(out.TimeLLM).all()
    with pytest.raises(SeriesLengthError, match="before the first cutoff.*at most 23"):
        forecaster(seq_len=35).cross_validation(df)  # 59 - 12 (window) - 12 - 12


def test_a_season_longer_than_every_series_is_refused_and_a_short_one_said(fitted, caplog):
    with pytest.raises(SeriesLengthError, match="season=200 is not shorter than the history"):
        fitted.backtest(frame(), refit=False, season=200)
    with caplog.at_level("WARNING", logger="timellm.forecaster"):
        _, scores = fitted.backtest(frame(), refit=False, season=100)  # s1 has 78 rows before its cutoff
    assert "series 's1': 78 rows before the first cutoff, not more than one season (100)" in caplog.text
    assert np.isnan(scores.loc[scores.unique_id == "s1", "MASE"]).all()
    assert np.isfinite(scores.loc[scores.unique_id == "s0", "MASE"]).all()


def test_a_prompt_longer_than_the_backbones_context_is_refused_before_training(no_training):
    fc = forecaster(llm="pretrained", backbone="tiny-random-llama", description="word " * 9600)
    with pytest.raises(ValueError, match="LLM input needs up to .* backbone 'tiny-random-llama' has 2048"):
        fc.fit(frame((80,), ("h",)))


def test_a_d_ff_wider_than_the_backbone_names_the_setting():
    fc = TimeLLMForecaster(12, backbone="tiny-random-llama", **{**TINY, "d_ff": 128})
    with pytest.raises(ValueError, match="use d_ff=32 or less"):
        fc.fit(frame((80,), ("h",)))


def test_backtest_scores_msis_per_level_and_marks_the_best(fitted):
    from timellm.evaluation import metrics

    df = frame()
    models = ("SeasonalNaive", "Naive")
    cv, scores = fitted.backtest(df, n_windows=2, refit=False, baselines=models, level=[80, 95])
    table = scores.set_index(["unique_id", "model"])
    for lv in (80, 95):
        assert {f"MSIS-{lv}", f"best-MSIS-{lv}"} <= set(scores.columns)
        assert scores.groupby("unique_id")[f"best-MSIS-{lv}"].sum().eq(1).all()
        for sid, group in scores.groupby("unique_id"):
            best = group.loc[group[f"MSIS-{lv}"].idxmin(), "model"]
            assert table.loc[(sid, best), f"best-MSIS-{lv}"]
    # the score by hand for one series and model: width + 2/a * misses, over the MASE scale
    s0 = fitted.prepare(df).series[0]
    rows = cv[cv.unique_id == "s0"]
    scale = float(metrics.seasonal_scale(s0.values[: len(s0) - 24], 24))
    expected = metrics.interval_score(rows["Naive-lo-80"], rows["Naive-hi-80"], rows.y, 80).mean() / scale
    assert table.loc[("s0", "Naive"), "MSIS-80"] == pytest.approx(expected)
    assert table.loc[("overall", "Naive"), "MSIS-80"] == pytest.approx(
        np.mean([table.loc[(s, "Naive"), "MSIS-80"] for s in ("s0", "s1")])
    )


def test_a_series_named_overall_is_refused_before_any_work(fitted):
    df = frame()
    df.loc[df.unique_id == "s1", "unique_id"] = "overall"
    with pytest.raises(ColumnError, match="a series is named 'overall'.*summary rows.*rename that series"):
        fitted.backtest(df, refit=False, baselines="none")
    assert len(fitted.cross_validation(df, refit=False)) == 24  # no summary rows there: allowed


def test_interpolated_values_are_forecast_but_not_scored(fitted, caplog):
    df = frame()
    last = df.index[df.unique_id == "s0"][-3:]
    df.loc[last[:2], "y"] = np.nan  # two of the last window's true values are missing
    fc = TimeLLMForecaster.__new__(TimeLLMForecaster)
    fc.__dict__.update(fitted.__dict__)
    fc.interpolate = True
    with caplog.at_level("WARNING", logger="timellm.forecaster"):
        cv, scores = fc.backtest(df, refit=False, baselines=("Naive",))
    assert "2 of 24 forecast step(s) fall on interpolated values" in caplog.text
    rows = cv[cv.unique_id == "s0"]
    kept = rows.iloc[:-3].index.append(rows.index[-1:])
    mae = np.mean(np.abs(cv.loc[kept, "TimeLLM"] - cv.loc[kept, "y"]))
    assert scores.set_index(["unique_id", "model"]).loc[("s0", "TimeLLM"), "MAE"] == pytest.approx(mae)


def _edit(path, change):
    record = json.loads(path.read_text())
    path.write_text(json.dumps(change(record)))


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: {**c, "llm_layers": 4}, "config.json was changed after the adapter was saved"),
        (
            lambda c: {**c, "backbone": "tiny-random-gpt2"},
            "config.json was changed after the adapter was saved",
        ),
        (lambda c: None, "config.json was changed"),
    ],
)
def test_a_hand_edited_config_is_refused_by_its_checksum(fitted, tmp_path, change, expected):
    fitted.save_pretrained(tmp_path / "adapter")
    _edit(tmp_path / "adapter" / "config.json", change)
    with pytest.raises(AdapterLoadError, match=expected):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter")


def test_a_config_unlike_the_weights_is_refused_without_a_forecaster_file(fitted, tmp_path):
    fitted.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "forecaster.json").unlink()  # a bare model folder: no checksums
    _edit(tmp_path / "adapter" / "config.json", lambda c: {**c, "llm_layers": 4})
    with pytest.raises(
        AdapterLoadError, match="does not match the model its weights .*llm_layers: 4 in config"
    ):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "config.json").write_text("null")
    with pytest.raises(AdapterLoadError, match="must hold a JSON object of settings, found NoneType"):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter")


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda r: {**r, "calibration": {"a": 1}},
            "'calibration' must be null or a list of score rows of 12",
        ),
        (
            lambda r: {**r, "calibration": [[-v for v in row] for row in r["calibration"]]},
            "'calibration' holds negative scores",
        ),
        (lambda r: {**r, "calibration": [["x"] * 12]}, "'calibration' must be rows of numbers"),
        (lambda r: {**r, "columns": None}, "'columns' must be an object"),
        (lambda r: {**r, "columns": {"id_col": 3}}, "columns.id_col must be a column name"),
        (lambda r: {**r, "interpolate": "yes"}, "'interpolate' must be true or false"),
        (lambda r: {**r, "val_size": 2}, "'val_size' must be null or an integer of at least the horizon 12"),
        (lambda r: {**r, "max_steps": 0}, "'max_steps' must be null or a positive integer"),
        (lambda r: {**r, "horizon": 24}, "'horizon' must be 12, as in config.json"),
        (lambda r: {**r, "train": []}, "'train' must be an object"),
        (lambda r: {**r, "checksums": "x"}, "'checksums' must map file names to sha256"),
        (lambda r: [r], "must hold a JSON object"),
    ],
)
def test_every_field_of_a_saved_forecaster_is_checked(fitted, tmp_path, change, expected):
    fitted.save_pretrained(tmp_path / "adapter")
    _edit(tmp_path / "adapter" / "forecaster.json", change)
    with pytest.raises(AdapterLoadError, match=expected):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter")


def test_many_series_validate_and_calibrate_on_an_even_sample_of_windows(monkeypatch):
    from timellm.evaluation import conformal

    seen = fake_training(monkeypatch)
    monkeypatch.setattr(forecaster_module, "MAX_EARLY_STOPPING_WINDOWS", 20)
    monkeypatch.setattr(conformal, "MAX_CALIBRATION_WINDOWS", 40)
    fc = TimeLLMForecaster(6, llm="none", **AUTO)
    df = frame((200, 200, 200, 200), ("h",) * 4)
    fc.fit(df)
    assert seen["val"] == 4 * 5  # 20 validation windows per series, 5 of each read to stop early
    assert len(fc.calibration) == 40  # a larger sample calibrates the intervals


def test_an_ensemble_forecasts_the_mean_of_its_members_and_shares_the_step_budget(tmp_path):
    fc = forecaster(llm="pretrained", backbone="tiny-random-llama", max_steps=24, ensemble=3).fit(frame())
    assert len(fc.models) == 3 and [r.steps for r in fc.fit_results] == [8, 8, 8]  # 24 steps shared
    assert len({float(next(m.head.parameters()).detach().sum()) for m in fc.models}) == 3  # 3 seeds
    assert fc.models[1].llm is fc.models[0].llm  # one frozen backbone for every member
    members = fc.models
    alone = []
    for model in members:
        fc.models = [model]
        alone.append(fc.predict().TimeLLM.to_numpy())
    fc.models = members
    np.testing.assert_allclose(fc.predict().TimeLLM, np.mean(alone, axis=0), rtol=1e-5)
    # saved and loaded: every member, the same forecasts
    fc.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "member-2" / "adapter.safetensors").is_file()
    with pytest.raises(InputDataError, match="ensemble must be a positive integer"):
        forecaster(ensemble=0)
    loaded = TimeLLMForecaster.from_pretrained(tmp_path / "adapter")
    assert len(loaded.models) == 3 and loaded.models[2].llm is loaded.models[0].llm
    np.testing.assert_allclose(loaded.predict(frame()).TimeLLM, fc.predict().TimeLLM, rtol=1e-6)
    # a member edited after saving is refused; so is one whose config differs from the first one's
    weights = tmp_path / "adapter" / "member-1" / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(AdapterLoadError, match="member-1/adapter.safetensors was changed"):
        TimeLLMForecaster.from_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "forecaster.json").unlink()  # no record: a single adapter folder
    assert len(TimeLLMForecaster.from_pretrained(tmp_path / "adapter").models) == 1


def test_a_correction_to_seasonal_naive_is_tried_where_the_adapter_validates_worse(monkeypatch, caplog):
    losses, built, starts = iter(()), [], []

    def fake_fit(model, train_set, val_set, config, **options):
        built.append(model.config)
        starts.append(options.get("validate_start", False))
        return replace(UNTRAINED, best_val_loss=next(losses))

    monkeypatch.setattr(forecaster_module, "fit", fake_fit)
    hourly = frame((120,), ("h",))  # a sine of period 24: seasonal naive validates well

    def fit(validation_losses, **settings):
        nonlocal losses
        losses = iter(validation_losses)
        built.clear()
        return forecaster(**settings).fit(hourly)

    with caplog.at_level(logging.INFO, logger="timellm"):
        fc = fit([1.0, 0.5])  # worse than seasonal naive, and the correction validates better
    assert [c.normalization for c in built] == ["revin", "seasonal"]
    assert starts == [False, True]  # the untrained correction (seasonal naive) competes with its epochs
    assert (fc.config.normalization, fc.config.period, fc.config.zero_head) == ("seasonal", 24, True)
    assert fc.model.config == fc.config and "kept the correction" in caplog.text
    assert fit([1.0, 2.0]).config.normalization == "revin" and len(built) == 2  # the first kept
    fit([0.0])  # better than seasonal naive on validation: nothing else is trained
    assert len(built) == 1
    fit([1.0], normalization="revin")  # a normalisation the caller chose: never another
    assert len(built) == 1
    fit([1.0], choose_normalization=False)
    assert len(built) == 1


def test_rolling_origins_add_held_out_forecasts_from_adapters_that_never_saw_them(
    monkeypatch, caplog, tmp_path
):
    trained = []
    real_fit = forecaster_module.fit

    def spy(model, train_set, val_set, config, **options):
        trained.append(len(train_set))
        return real_fit(model, train_set, val_set, config, **options)

    monkeypatch.setattr(forecaster_module, "fit", spy)
    df = frame((200,), ("h",))
    settings = dict(val_size=20, choose_normalization=False)
    base = forecaster(**settings).fit(df)
    trained.clear()
    fc = forecaster(**settings, calibration_origins=2).fit(df)
    assert len(base.calibration) == 9 and len(fc.calibration) == 27  # 20 - 12 + 1 windows an origin
    np.testing.assert_allclose(fc.calibration[:9], base.calibration)  # the same adapter's validation
    # training windows (look-back 48 + horizon 12): the adapter on 200 - 20 rows, origin k on 20 k fewer
    assert trained == [180 - 60 + 1, 160 - 60 + 1, 140 - 60 + 1]
    assert len(fc.models) == 1 and fc.models[0] is not None  # the forecasting adapter is the first one
    np.testing.assert_allclose(fc.predict().TimeLLM, base.predict().TimeLLM, rtol=1e-6)
    fc.save_pretrained(tmp_path / "adapter")
    loaded = TimeLLMForecaster.from_pretrained(tmp_path / "adapter")
    assert loaded.calibration_origins == 2 and len(loaded.calibration) == 27
    with caplog.at_level(logging.INFO, logger="timellm"):  # 200 rows hold 6 origins of 20 steps
        many = forecaster(**settings, calibration_origins=9).fit(df)
    assert len(many.calibration) == 7 * 9 and "calibration origin 7: no series has 80 rows" in caplog.text
    with pytest.raises(InputDataError, match="calibration_origins must be an integer of at least 0"):
        forecaster(calibration_origins=-1)
