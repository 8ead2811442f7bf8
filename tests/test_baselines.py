import pytest
import torch

from timellm.evaluation.baselines import (
    DLinear,
    PatchTST,
    last_value_forecast,
    seasonal_naive_forecast,
    series_decomposition,
)


@pytest.mark.parametrize("seq_len,pred_len,channels", [(48, 12, 1), (24, 36, 3), (10, 5, 2)])
@pytest.mark.parametrize("normalization", [None, "revin", "last", "seasonal"])
def test_dlinear_shapes(seq_len, pred_len, channels, normalization):
    model = DLinear(seq_len, pred_len, normalization=normalization, period=5)
    out = model(torch.randn(4, seq_len, channels))
    assert out.shape == (4, pred_len, channels)
    with pytest.raises(ValueError, match=rf"seq_len={seq_len}.*found \(4, {seq_len + 1}, 1\)"):
        model(torch.randn(4, seq_len + 1, 1))


def test_dlinear_with_subtract_last_starts_from_the_last_value():
    model = DLinear(12, 4, kernel_size=5, normalization="last", zero=True)
    x = torch.randn(2, 12, 3) * 5 + 10
    torch.testing.assert_close(model(x), x[:, -1:, :].expand(2, 4, 3))
    with pytest.raises(
        ValueError, match="normalization must be None or one of revin, last, seasonal; found 'mean'"
    ):
        DLinear(12, 4, normalization="mean")


@pytest.mark.parametrize("kernel_size", [25, 4, 1])
def test_decomposition_sums_back_to_the_input(kernel_size):
    x = torch.randn(3, 2, 30)
    seasonal, trend = series_decomposition(x, kernel_size)
    assert seasonal.shape == trend.shape == x.shape
    torch.testing.assert_close(seasonal + trend, x)
    # a constant series is all trend; a ramp is all trend away from the padded ends
    flat = torch.full((1, 30), 2.0)
    torch.testing.assert_close(series_decomposition(flat, kernel_size)[1], flat)
    ramp = torch.arange(60.0)[None]
    _, ramp_trend = series_decomposition(ramp, 5)
    torch.testing.assert_close(ramp_trend[:, 2:-2], ramp[:, 2:-2])


def test_dlinear_channels_share_weights_and_are_independent():
    model = DLinear(24, 6)
    x = torch.randn(2, 24, 3)
    out = model(x)
    torch.testing.assert_close(out[..., 1:2], model(x[..., 1:2]))


def test_dlinear_learns_a_linear_trend():
    torch.manual_seed(0)
    seq_len, pred_len = 32, 8
    steps = torch.arange(seq_len + pred_len, dtype=torch.float32)
    model = DLinear(seq_len, pred_len)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        level, slope = torch.rand(64, 1) * 2 - 1, (torch.rand(64, 1) - 0.5) * 0.1
        series = (level + slope * steps)[..., None]  # (64, T + H, 1)
        loss = torch.nn.functional.mse_loss(model(series[:, :seq_len]), series[:, seq_len:])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 1e-3


def test_patchtst_shapes_and_gradients():
    model = PatchTST(seq_len=32, pred_len=8, patch_len=8, stride=4, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    x = torch.randn(3, 32, 2)
    out = model(x)
    assert out.shape == (3, 8, 2)
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert model.model.config.pooling_type is None  # a flatten head over all patches
    model.eval()
    torch.testing.assert_close(model(x)[..., 1:], model(x[..., 1:]))  # channel independence
    with pytest.raises(ValueError, match=r"seq_len=32"):
        model(torch.randn(3, 16, 2))


def test_patchtst_passes_other_settings_through_and_refuses_duplicates():
    model = PatchTST(32, 8, patch_len=8, stride=8, d_model=8, n_heads=2, n_layers=1, norm_type="layernorm")
    assert model.config.norm_type == "layernorm"
    with pytest.raises(ValueError, match="context_length"):
        PatchTST(32, 8, context_length=64)


def test_naive_forecasts_are_exact():
    past = torch.arange(12.0).reshape(1, 6, 2)  # channel 0: 0,2,..,10; channel 1: 1,3,..,11
    last = last_value_forecast(past, 3)
    assert last.shape == (1, 3, 2)
    assert last[0].tolist() == [[10.0, 11.0]] * 3
    seasonal = seasonal_naive_forecast(past, 5, period=2)
    assert seasonal[0, :, 0].tolist() == [8.0, 10.0, 8.0, 10.0, 8.0]
    assert seasonal[0, :, 1].tolist() == [9.0, 11.0, 9.0, 11.0, 9.0]
    torch.testing.assert_close(seasonal_naive_forecast(past, 4, period=1), last_value_forecast(past, 4))
    full = seasonal_naive_forecast(past, 6, period=6)
    torch.testing.assert_close(full, past)


def test_seasonal_period_longer_than_the_window_is_refused():
    with pytest.raises(ValueError, match="period 7 > look-back 6"):
        seasonal_naive_forecast(torch.zeros(1, 6, 1), 3, period=7)
    with pytest.raises(ValueError, match="positive integer"):
        seasonal_naive_forecast(torch.zeros(1, 6, 1), 3, period=0)
