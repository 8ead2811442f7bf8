import numpy as np
import pytest
import torch

from timellm.evaluation.metrics import (
    mae,
    mase,
    mase_per_series,
    mse,
    owa,
    seasonal_scale,
    smape,
    smape_per_series,
)


def test_mse_mae_average_over_every_element():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    true = np.array([[1.0, 0.0], [3.0, 8.0]])
    assert mse(pred, true) == pytest.approx((4 + 16) / 4)
    assert mae(pred, true) == pytest.approx((2 + 4) / 4)
    assert mse(torch.tensor(pred, requires_grad=True), torch.tensor(true)) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="same shape"):
        mse(pred, true[:1])


def test_smape_m4_definition_and_zero_over_zero():
    true = np.array([[100.0, 0.0, 50.0]])
    pred = np.array([[110.0, 0.0, 0.0]])
    # 200 * mean(10/210, 0/0 -> 0, 50/50)
    expected = 200 * (10 / 210 + 0 + 1) / 3
    assert smape(pred, true) == pytest.approx(expected)
    assert smape_per_series(pred, true) == pytest.approx([expected])
    assert smape(true, true) == 0.0
    assert np.isfinite(smape(np.zeros(4), np.zeros(4)))


def test_mase_uses_the_in_sample_seasonal_difference():
    insample = [np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([0.0, 10.0, 0.0, 10.0])]
    assert seasonal_scale(insample, 1) == pytest.approx([1.0, 10.0])
    assert seasonal_scale(insample[:1], 2) == pytest.approx([2.0])
    assert seasonal_scale(np.array([1.0, 4.0, 2.0]), 1) == pytest.approx(2.5)
    true = np.array([[6.0, 7.0], [0.0, 10.0]])
    pred = np.array([[7.0, 9.0], [5.0, 5.0]])
    per_series = mase_per_series(pred, true, insample, 1)
    assert per_series == pytest.approx([1.5, 0.5])
    assert mase(pred, true, insample, 1) == pytest.approx(1.0)
    # one series, one history
    assert mase(pred[0], true[0], insample[0], 1) == pytest.approx(1.5)


def test_mase_rejects_degenerate_histories():
    with pytest.raises(ValueError, match="longer than the period"):
        seasonal_scale([np.array([1.0, 2.0])], 2)
    with pytest.raises(ValueError, match="no seasonal variation"):
        seasonal_scale([np.array([3.0, 3.0, 3.0])], 1)
    with pytest.raises(ValueError, match="one history per forecast series"):
        mase(np.zeros((2, 3)), np.ones((2, 3)), [np.arange(5.0)], 1)


def test_owa_of_the_reference_is_one():
    assert owa(12.0, 1.6, 12.0, 1.6) == 1.0
    assert owa(6.0, 1.6, 12.0, 1.6) == pytest.approx(0.75)
