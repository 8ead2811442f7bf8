import logging

import numpy as np
import pytest
import torch

from timellm.evaluation.baselines import last_value_forecast, seasonal_naive_forecast
from timellm.evaluation.statistical import (
    STATISTICAL_MODELS,
    check_levels,
    forecast_windows,
    interval_names,
    parse_baselines,
)


def test_baselines_are_named_all_none_or_a_list():
    assert parse_baselines("all") == STATISTICAL_MODELS
    assert parse_baselines("none") == () and parse_baselines(None) == () and parse_baselines([]) == ()
    assert parse_baselines("autoarima, Naive,AutoARIMA") == ("AutoARIMA", "Naive")
    assert parse_baselines(["SeasonalNaive"]) == ("SeasonalNaive",)
    with pytest.raises(ValueError, match="unknown baseline.*'Prophet'.*AutoETS, AutoTheta"):
        parse_baselines("AutoETS,Prophet")


@pytest.mark.parametrize("bad", [0, 100, -5, 150, "abc", True, None])
def test_levels_are_percentages_strictly_between_0_and_100(bad):
    with pytest.raises(ValueError, match="level must be"):
        check_levels([80, bad])


def test_levels_are_sorted_once_each_and_name_columns_as_statsforecast_does():
    assert check_levels([95, 80.0, 95]) == (80, 95)
    assert check_levels(None) == ()
    assert interval_names("TimeLLM", 80) == ("TimeLLM-lo-80", "TimeLLM-hi-80")
    assert interval_names("AutoETS", 97.5) == ("AutoETS-lo-97.5", "AutoETS-hi-97.5")


def seasonal(n, period=12, seed=0):
    t = np.arange(n)
    return 10 + np.sin(2 * np.pi * t / period) + np.random.default_rng(seed).normal(0, 0.2, n)


def test_naive_references_are_those_of_the_evaluation_baselines():
    histories = [seasonal(60), seasonal(45, seed=1)]
    out = forecast_windows(histories, 8, [12, 12], ("SeasonalNaive", "Naive"))
    for i, y in enumerate(histories):
        past = torch.as_tensor(y, dtype=torch.float64)[None, :, None]  # (1, T, 1)
        np.testing.assert_allclose(
            out["SeasonalNaive"].mean[i], seasonal_naive_forecast(past, 8, 12)[0, :, 0]
        )
        np.testing.assert_allclose(out["Naive"].mean[i], last_value_forecast(past, 8)[0, :, 0])
    assert out["Naive"].seconds >= 0 and out["Naive"].failures == 0


def test_intervals_nest_and_contain_the_forecast():
    out = forecast_windows(
        [seasonal(96)], 12, [12], ("AutoETS", "AutoTheta", "SeasonalNaive"), levels=[95, 80]
    )
    for result in out.values():
        mean, lo80, hi80, lo95, hi95 = (
            result.mean,
            result.lower[80],
            result.upper[80],
            result.lower[95],
            result.upper[95],
        )
        assert np.isfinite(mean).all()
        assert (lo95 <= lo80 + 1e-9).all() and (lo80 <= mean + 1e-6).all(), result.model
        assert (mean <= hi80 + 1e-6).all() and (hi80 <= hi95 + 1e-9).all(), result.model
        assert (hi95 - lo95 > hi80 - lo80).all()


def test_a_history_a_model_cannot_fit_is_nan_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="timellm"):
        out = forecast_windows(
            [np.arange(5.0), seasonal(60)], 4, [1, 12], ("AutoETS",), labels=["tiny", "long"]
        )
    result = out["AutoETS"]
    assert np.isnan(result.mean[0]).all() and np.isfinite(result.mean[1]).all()
    assert result.failures == 1
    assert "AutoETS could not fit tiny (5 rows)" in caplog.text


def test_importing_timellm_does_not_import_statsforecast():
    import subprocess
    import sys

    code = "import sys, timellm, timellm.forecaster, timellm.cli.main; print('statsforecast' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


class _Slow:
    """A stand-in for a statsforecast model whose every fit takes ``seconds``."""

    def __init__(self, seconds):
        self.seconds = seconds

    def forecast(self, y, h, level=None):
        import time

        time.sleep(self.seconds)
        out = {"mean": np.full(h, y[-1])}
        for lv in level or []:
            out[f"lo-{lv}"], out[f"hi-{lv}"] = out["mean"] - 1, out["mean"] + 1
        return out


def test_a_model_past_its_budget_is_dropped_with_one_line_saying_how_to_keep_it(monkeypatch, caplog):
    import time

    from timellm.evaluation import statistical

    monkeypatch.setattr(
        statistical, "_model", lambda name, season: _Slow(0.15 if name == "AutoARIMA" else 0.0)
    )
    histories = [seasonal(60, seed=i) for i in range(8)]
    start = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="timellm"):
        out = forecast_windows(histories, 4, [12] * 8, ("AutoARIMA", "Naive"), budget=0.4)
    assert time.perf_counter() - start < 1.5  # not the 8 x 0.15 s the slow model would take
    assert set(out) == {"Naive"}
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "AutoARIMA dropped: it ran past its time budget of 0.4 s" in dropped[0]
    assert "raise the budget with baseline_budget=SECONDS" in dropped[0]
    # a progress line per model and window
    assert sum("Naive: window" in r.getMessage() for r in caplog.records) == 8


def test_a_single_fit_longer_than_the_budget_is_interrupted(monkeypatch):
    import time

    from timellm.evaluation import statistical

    monkeypatch.setattr(statistical, "_model", lambda name, season: _Slow(30.0))
    start = time.perf_counter()
    out = forecast_windows([seasonal(60)], 4, [12], ("AutoETS",), budget=0.3)
    assert out == {} and time.perf_counter() - start < 5


def test_no_budget_lets_every_model_finish(monkeypatch):
    from timellm.evaluation import statistical

    monkeypatch.setattr(statistical, "_model", lambda name, season: _Slow(0.01))
    for budget in (None, 0):
        out = forecast_windows([seasonal(60)] * 3, 4, [12] * 3, ("AutoETS",), levels=[80], budget=budget)
        assert np.isfinite(out["AutoETS"].mean).all() and np.isfinite(out["AutoETS"].upper[80]).all()
    with pytest.raises(ValueError, match="budget must be a number of seconds"):
        forecast_windows([seasonal(60)], 4, [12], ("AutoETS",), budget=-1)


def test_long_seasons_run_mstl_and_are_named_for_it():
    from timellm.evaluation.statistical import LONG_SEASON, model_name

    weekly = 100 + 10 * np.sin(2 * np.pi * np.arange(300) / 52) + np.random.default_rng(0).normal(0, 1, 300)
    out = forecast_windows([weekly], 52, [52], ("AutoETS", "AutoARIMA", "AutoTheta"), levels=[80])
    assert [r.model for r in out.values()] == ["MSTL-AutoETS", "MSTL-AutoARIMA", "AutoTheta"]
    truth = 100 + 10 * np.sin(2 * np.pi * np.arange(300, 352) / 52)
    for result in out.values():  # each forecasts the season, unlike a non-seasonal fit
        assert np.corrcoef(result.mean[0], truth)[0, 1] > 0.9, result.model
        assert (result.lower[80] < result.upper[80]).all()
    assert model_name("AutoARIMA", LONG_SEASON) == "AutoARIMA"  # 24 (hourly) keeps the seasonal models
    assert model_name("Naive", 168) == "Naive"


def test_the_budget_is_not_swallowed_by_a_search_that_catches_exception(monkeypatch):
    import time

    from timellm.evaluation import statistical

    class Searching:  # as statsforecast's AutoARIMA: every candidate fit inside try/except Exception
        def forecast(self, y, h, level=None):
            for _ in range(100):
                try:
                    time.sleep(0.1)
                except Exception:
                    continue
            return {"mean": np.zeros(h)}

    monkeypatch.setattr(statistical, "_model", lambda name, season: Searching())
    start = time.perf_counter()
    assert forecast_windows([seasonal(60)], 4, [12], ("AutoARIMA",), budget=0.3) == {}
    assert time.perf_counter() - start < 3
