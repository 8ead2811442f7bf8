"""Classic forecasting baselines with the interface of :class:`timellm.TimeLLM`.

Every model maps ``past_values`` (B, T, N) to forecasts (B, H, N) on the same scale, forecasting
each channel on its own with shared weights, so that the same data pipeline, budget and metrics
serve Time-LLM and its baselines alike (SPEC §5, the critique of Tan et al.).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from timellm.model.config import NORMALIZATIONS
from timellm.model.layers import normalize, revin_denormalize


def _check_past(past_values: torch.Tensor, seq_len: int | None = None) -> None:
    if past_values.ndim != 3 or (seq_len is not None and past_values.shape[1] != seq_len):
        expected = f"seq_len={seq_len}" if seq_len is not None else "seq_len"
        raise ValueError(
            f"past_values must have shape (batch, {expected}, channels), found {tuple(past_values.shape)}"
        )


# ------------------------------------------------------------------------------------------------
# naive references


def last_value_forecast(past: torch.Tensor, pred_len: int) -> torch.Tensor:
    """Repeat the last observation: (B, T, N) -> (B, pred_len, N)."""
    _check_past(past)
    return past[:, -1:, :].expand(-1, pred_len, -1).clone()


def seasonal_naive_forecast(past: torch.Tensor, pred_len: int, period: int) -> torch.Tensor:
    """Repeat the last ``period`` observations: (B, T, N) -> (B, pred_len, N), ŷ_{T+h} = y_{T+h-k·period}."""
    _check_past(past)
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"period must be a positive integer, found {period!r}")
    if period > past.shape[1]:
        raise ValueError(
            f"seasonal naive needs at least one full season: period {period} > look-back {past.shape[1]}"
        )
    season = past[:, past.shape[1] - period :, :]  # (B, period, N)
    steps = torch.arange(pred_len, device=past.device) % period  # (H,)
    return season[:, steps, :]


@torch.no_grad()
def seasonal_naive_loss(windows: Dataset, pred_len: int, period: int, loss: Callable) -> float:
    """``loss`` of seasonal naive's forecasts over every (past, future) pair of ``windows``: the
    validation loss a model must beat to be worth more than repeating the last season."""
    if len(windows) == 0:
        raise ValueError("seasonal_naive_loss needs at least one window")
    past, future = (
        torch.stack(part) for part in zip(*(windows[i] for i in range(len(windows))), strict=True)
    )
    return float(loss(seasonal_naive_forecast(past, pred_len, period), future))


# ------------------------------------------------------------------------------------------------
# DLinear


def series_decomposition(x: torch.Tensor, kernel_size: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Split x (..., T) into (seasonal, trend), trend a centred moving average, seasonal = x - trend.

    The ends are padded by repeating the first and last value, so the trend keeps length T; an even
    kernel puts the extra step at the end.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be positive, found {kernel_size}")
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1])  # (S, 1, T)
    front = (kernel_size - 1) // 2
    padded = F.pad(flat, (front, kernel_size - 1 - front), mode="replicate")  # (S, 1, T + k - 1)
    trend = F.avg_pool1d(padded, kernel_size, stride=1).reshape(shape)  # (..., T)
    return x - trend, trend


class DLinear(nn.Module):
    """DLinear (Zeng et al., 2023): moving-average decomposition, one linear map T -> H per part.

    Both maps are shared across channels (``individual=False`` of the paper). ``normalization``
    ("revin", "last" or "seasonal" with ``period``, as Time-LLM's: :func:`timellm.model.layers.normalize`) adds instance
    normalisation (no affine) around it, useful for series of very different scales (M4); the
    paper's DLinear has none, hence the default None. ``zero=True`` starts both maps at zero.
    """

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        kernel_size: int = 25,
        normalization: str | None = None,
        period: int | None = None,
        zero: bool = False,
    ):
        super().__init__()
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be None or one of {', '.join(NORMALIZATIONS)}; found {normalization!r}"
            )
        self.seq_len, self.pred_len, self.kernel_size = seq_len, pred_len, kernel_size
        self.normalization, self.period = normalization, period
        self.seasonal = nn.Linear(seq_len, pred_len)
        self.trend = nn.Linear(seq_len, pred_len)
        if zero:  # as Time-LLM's zero_head: the untrained forecast is the normalisation's centre
            for layer in (self.seasonal, self.trend):
                nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)

    def forward(self, past_values: torch.Tensor) -> torch.Tensor:
        """(B, T, N) -> (B, H, N)."""
        _check_past(past_values, self.seq_len)
        b, t, n = past_values.shape
        x = past_values.permute(0, 2, 1).reshape(b * n, t)  # (S, T)
        if self.normalization is not None:
            x, centre, scale = normalize(x, self.normalization, pred_len=self.pred_len, period=self.period)
        seasonal, trend = series_decomposition(x, self.kernel_size)  # (S, T) each
        y = self.seasonal(seasonal) + self.trend(trend)  # (S, H)
        if self.normalization is not None:
            y = revin_denormalize(y, centre, scale)
        return y.reshape(b, n, self.pred_len).permute(0, 2, 1)  # (B, H, N)


# ------------------------------------------------------------------------------------------------
# PatchTST


class PatchTST(nn.Module):
    """PatchTST (Nie et al., 2023) from ``transformers``, channel independent, flatten head.

    Each of the N channels becomes its own one-channel series (B·N of them), as in Time-LLM, so the
    model does not depend on N. Defaults: the paper's ETTh1 setting. Our names map onto
    ``PatchTSTConfig``: patch_len → patch_length, stride → patch_stride, n_heads →
    num_attention_heads, n_layers → num_hidden_layers, d_ff → ffn_dim, and ``dropout`` is applied
    where the paper's code applies it (positional, feed-forward and residual dropout; no attention
    dropout). Further ``PatchTSTConfig`` fields pass straight through ``config_kwargs``.

    Differences from the paper's code that ``transformers`` imposes: no end padding before
    patching (the first (T - patch_len) % stride steps are dropped instead), a fixed sin-cos
    position encoding by default (the paper learns one) and RevIN without affine parameters
    (``scaling="std"``).
    """

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 16,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ff: int = 128,
        dropout: float = 0.3,
        head_dropout: float = 0.0,
        **config_kwargs: Any,
    ):
        super().__init__()
        ours = dict(  # set from the arguments above
            context_length=seq_len,
            prediction_length=pred_len,
            num_input_channels=1,  # channel independence: every channel is its own series
            patch_length=patch_len,
            patch_stride=stride,
            d_model=d_model,
            num_attention_heads=n_heads,
            num_hidden_layers=n_layers,
            ffn_dim=d_ff,
            attention_dropout=0.0,
            positional_dropout=dropout,
            ff_dropout=dropout,
            path_dropout=dropout,
            head_dropout=head_dropout,
            loss="mse",  # a point forecast, not a distribution head
        )
        clash = sorted(set(ours) & set(config_kwargs))
        if clash:
            raise ValueError(f"config_kwargs repeats settings this wrapper sets from its arguments: {clash}")
        paper = dict(  # the paper's choices where transformers defaults differ; config_kwargs may change them
            pooling_type=None,  # flatten all patches into the head (not mean pooling)
            pre_norm=False,  # normalise after each residual block
            norm_type="batchnorm",
            scaling="std",  # instance normalisation of each input window, undone on the output
        )
        if seq_len <= patch_len:
            raise ValueError(f"seq_len ({seq_len}) must exceed patch_len ({patch_len}) for PatchTST")
        self.seq_len, self.pred_len = seq_len, pred_len
        # transformers' model code is imported here, not with this module: the forecast path reads
        # seasonal naive from it and must not pull in transformers' quantizers (and torchao) at import
        from transformers import PatchTSTConfig, PatchTSTForPrediction

        self.config = PatchTSTConfig(**ours, **{**paper, **config_kwargs})
        self.model = PatchTSTForPrediction(self.config)

    def forward(self, past_values: torch.Tensor) -> torch.Tensor:
        """(B, T, N) -> (B, H, N)."""
        _check_past(past_values, self.seq_len)
        b, t, n = past_values.shape
        series = past_values.permute(0, 2, 1).reshape(b * n, t, 1)  # (S, T, 1), channel independence
        out = self.model(past_values=series).prediction_outputs  # (S, H, 1)
        return out.reshape(b, n, self.pred_len).permute(0, 2, 1)  # (B, H, N)
