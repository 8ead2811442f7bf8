"""Reference forecasts computed on the same windows as the model."""

from __future__ import annotations

import torch


def last_value_forecast(past: torch.Tensor, pred_len: int) -> torch.Tensor:
    """Repeat each series' last value: (B, T, N) -> (B, H, N)."""
    return past[:, -1:, :].expand(-1, pred_len, -1)


def seasonal_naive_forecast(past: torch.Tensor, pred_len: int, period: int) -> torch.Tensor:
    """Repeat the last ``period`` values: (B, T, N) -> (B, H, N)."""
    if period > past.shape[1]:
        raise ValueError(f"seasonal period {period} is longer than the look-back window {past.shape[1]}")
    season = past[:, -period:, :]
    repeats = -(-pred_len // period)
    return season.repeat(1, repeats, 1)[:, :pred_len, :]
