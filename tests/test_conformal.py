import numpy as np
import pytest

from timellm.data.errors import InputDataError
from timellm.evaluation import metrics
from timellm.evaluation.conformal import (
    conformal_quantiles,
    conformity_scores,
    interval_columns,
    sample_windows,
)


def test_scores_are_errors_over_the_look_back_spread_and_skip_constant_look_backs():
    pasts = np.array([[0.0, 2.0, 0.0, 2.0], [5.0, 5.0, 5.0, 5.0]])  # spread 1, then none
    forecasts, truth = np.zeros((2, 3)), np.array([[1.0, -2.0, 3.0], [9.0, 9.0, 9.0]])
    scores, constant = conformity_scores(pasts, forecasts, truth)
    np.testing.assert_allclose(scores, [[1.0, 2.0, 3.0]])
    assert constant == 1


def test_quantile_is_the_conformal_rank_per_step_and_too_few_windows_say_why():
    scores = np.arange(1.0, 11.0)[:, None] * np.array([1.0, 2.0])  # 10 windows, 2 steps
    np.testing.assert_allclose(conformal_quantiles(scores, 80), [9.0, 18.0])  # ceil(11 * 0.8) = 9th
    with pytest.raises(InputDataError, match="needs at least 19 .* larger val_size"):
        conformal_quantiles(scores, 95)
    with pytest.raises(InputDataError) as err:
        conformal_quantiles(scores[:0], 80, constant=30)
    assert "constant" in str(err.value) and "val_size" not in str(err.value)


def test_a_constant_look_back_gets_a_zero_width_interval_without_scores():
    pasts = np.full((2, 8), 3.0)
    bands = interval_columns("M", pasts, [np.full(4, 3.0)] * 2, (80, 95), np.empty((0, 4)), constant=20)
    for band in bands:
        assert list(band) == ["M-lo-95", "M-lo-80", "M-hi-80", "M-hi-95"]
        assert all((v == 3.0).all() for v in band.values())


def test_calibration_windows_are_an_even_sample_beyond_the_limit():
    assert list(sample_windows(5, limit=10)) == [0, 1, 2, 3, 4]
    chosen = sample_windows(10_000, limit=100)
    assert len(chosen) == 100 and chosen[0] == 0 and chosen[-1] == 9_999


def test_msis_is_width_plus_scaled_misses_over_the_scale():
    truth = np.array([0.0, 5.0, -3.0])
    lower, upper = np.full(3, -1.0), np.full(3, 1.0)
    # widths 2; misses: none, 4 above, 2 below; a = 0.2 -> penalty 2/0.2 = 10 per unit
    np.testing.assert_allclose(metrics.interval_score(lower, upper, truth, 80), [2.0, 42.0, 22.0])
    assert metrics.msis(lower, upper, truth, 80, scale=2.0) == pytest.approx(66.0 / 3 / 2)
    with pytest.raises(ValueError, match="level must be strictly between 0 and 100"):
        metrics.interval_score(lower, upper, truth, 100)
