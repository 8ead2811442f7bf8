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
