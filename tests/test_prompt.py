import math

import pytest
import torch

from timellm.model.layers import normalize, revin_denormalize, revin_normalize
from timellm.model.prompt import (
    dataset_description,
    format_number,
    input_statistics,
    prompt_text,
    statistics_texts,
)


def sine(length=512, period=24, phase=0.0):
    t = torch.arange(length, dtype=torch.float32)
    return torch.sin(2 * math.pi * t / period + phase)


def test_top_lags_of_a_sine_include_its_period_and_never_lag_zero():
    for series in (torch.stack([sine(), sine(phase=1.0)]), sine(length=200)[None]):
        lags_of_batch = input_statistics(series).lags.tolist()
        for lags in lags_of_batch:
            assert 24 in lags, lags
            assert 0 not in lags
            assert len(lags) == 5 and len(set(lags)) == 5


def test_lags_stay_within_half_the_window():
    stats = input_statistics(torch.randn(16, 100), top_k=5)
    assert stats.lags.min() >= 1 and stats.lags.max() <= 50


def test_trend_sign():
    t = torch.linspace(0, 1, 64)
    stats = input_statistics(torch.stack([t, -t, t * 0 + 1]))
    assert stats.upward.tolist() == [True, False, False]


def test_min_max_median_are_computed_per_series():
    x = torch.tensor([[3.0, 1.0, 2.0, 5.0, 4.0], [0.0, -1.0, -2.0, -3.0, -4.0]])
    stats = input_statistics(x, top_k=2)
    assert stats.minimum.tolist() == [1.0, -4.0]
    assert stats.maximum.tolist() == [5.0, 0.0]
    assert stats.median.tolist() == [3.0, -2.0]


def test_revin_round_trip():
    x = torch.randn(5, 40) * 7 + 3
    normalised, mean, std = revin_normalize(x)
    assert torch.allclose(normalised.mean(-1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(revin_denormalize(normalised, mean, std), x, atol=1e-4)


def test_subtract_last_normalisation_ends_at_zero_and_round_trips():
    x = torch.randn(5, 40) * 7 + 3
    normalised, last, std = normalize(x, "last")
    assert torch.equal(last, x[:, -1:])
    assert torch.allclose(normalised[:, -1], torch.zeros(5))
    torch.testing.assert_close(normalised.std(-1, unbiased=False), torch.ones(5), atol=1e-4, rtol=0)
    assert torch.allclose(revin_denormalize(normalised, last, std), x, atol=1e-4)
    for kind, reference in (("revin", revin_normalize(x)), ("last", (normalised, last, std))):
        for got, want in zip(normalize(x, kind), reference, strict=True):
            assert torch.equal(got, want)
    with pytest.raises(
        ValueError, match="normalization must be one of revin, last, seasonal; found 'minmax'"
    ):
        normalize(x, "minmax")


def test_seasonal_normalisation_centres_the_forecast_on_seasonal_naive():
    from timellm.evaluation.baselines import seasonal_naive_forecast

    x = torch.randn(5, 40) * 7 + 3
    normalised, centre, std = normalize(x, "seasonal", pred_len=30, period=12)
    assert torch.equal(normalised, revin_normalize(x)[0])  # the input is normalised as revin
    assert torch.equal(centre, seasonal_naive_forecast(x[..., None], 30, 12)[..., 0])  # (5, 30)
    torch.testing.assert_close(std, revin_normalize(x)[2])
    for bad in ({"pred_len": 30}, {"pred_len": 30, "period": 41}, {"period": 12}):
        with pytest.raises(ValueError, match="seasonal normalisation needs pred_len and a period in"):
            normalize(x, "seasonal", **bad)


def test_prompt_statistics_follow_the_normalisation():
    series = sine() * 10 + 50
    revin, last = (prompt_text(series, 96, normalization=kind) for kind in ("revin", "last"))
    assert revin != last
    assert revin == prompt_text(series, 96)


def test_revin_of_a_constant_series_is_finite():
    normalised, mean, std = revin_normalize(torch.full((1, 10), 4.0))
    assert torch.isfinite(normalised).all()
    assert torch.allclose(revin_denormalize(normalised, mean, std), torch.full((1, 10), 4.0))


def test_numbers_are_compact():
    assert format_number(0.123456789) == "0.123"
    assert format_number(-1234.5678) == "-1.23e+03"
    assert format_number(-0.0) == "0"


def test_prompt_text_contains_the_statistics():
    series = sine() * 10 + 50
    text = prompt_text(series, 96, dataset="ETTh1")
    normalised, _, _ = revin_normalize(series[None])
    stats = input_statistics(normalised)
    assert f"min {format_number(stats.minimum.item())}" in text
    assert f"max {format_number(stats.maximum.item())}" in text
    assert f"median {format_number(stats.median.item())}" in text
    assert "trend " in text and "lags " + ", ".join(map(str, stats.lags[0].tolist())) in text
    assert "forecast the next 96 steps given the previous 512 steps" in text
    assert "transformer" in text  # the ETTh1 description
    assert text.endswith(statistics_texts(stats)[0])


def test_user_description_takes_precedence():
    assert dataset_description("ETTh1", "Daily sales of ice cream.") == "Daily sales of ice cream."
    text = prompt_text(sine(64), 8, dataset="ETTh1", description="Daily sales of ice cream.")
    assert "ice cream" in text and "transformer" not in text


def test_each_benchmark_has_its_own_description():
    texts = {name: dataset_description(name) for name in ("ETTh1", "ETTm1", "weather", "illness")}
    assert len(set(texts.values())) == 4
    assert "influenza" in texts["illness"].lower()


def test_unknown_dataset_description_is_a_clear_error():
    with pytest.raises(ValueError, match="no packaged description for dataset 'nope'"):
        dataset_description("nope")
