"""Test-split evaluation: MSE/MAE over every window and channel, beside naive references."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from timellm.data.windows import WindowDataset
from timellm.evaluation.baselines import last_value_forecast, seasonal_naive_forecast
from timellm.evaluation.metrics import mae, mse
from timellm.model.predict import predict


def predict_windows(
    model: nn.Module,
    array: np.ndarray,
    seq_len: int,
    pred_len: int,
    batch_size: int = 32,
    *,
    autocast=None,
    desc: str = "test",
    max_windows: int | None = None,
    accelerator=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forecast every window (stride 1) of ``array`` (rows, N): returns past, pred and true arrays.

    Shapes: past (W, T, N), pred (W, H, N), true (W, H, N); W counts every window, the last partial
    batch included (or ``max_windows`` evenly spaced ones). With an ``accelerate`` accelerator of
    several processes each scores a shard and every process gets all windows back, in order, each
    exactly once (``gather_for_metrics`` drops the windows repeated to even out the shards).
    """
    dataset = WindowDataset(array, seq_len, pred_len, channel_independent=False, max_windows=max_windows)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
    pasts, preds, trues = [], [], []
    # disable=None: no bar when not writing to a terminal (CI logs, tests)
    for past, future in tqdm(loader, desc=desc, leave=False, disable=None):
        pred = predict(model, past, batch_size=len(past), autocast=autocast)
        if accelerator is not None:
            past, pred, future = accelerator.gather_for_metrics(
                (past.to(accelerator.device), pred.to(accelerator.device), future.to(accelerator.device))
            )
            past, pred, future = past.cpu(), pred.cpu(), future.cpu()
        pasts.append(past.numpy())
        preds.append(pred.numpy())
        trues.append(future.numpy())
    if not preds:
        raise ValueError(
            f"no complete window of seq_len {seq_len} + pred_len {pred_len} in {len(array)} rows"
        )
    return np.concatenate(pasts), np.concatenate(preds), np.concatenate(trues)


def naive_references(past: np.ndarray, true: np.ndarray, period: int) -> dict[str, dict[str, float]]:
    """MSE/MAE of the last-value and seasonal-naive forecasts on the same windows."""
    past_t = torch.from_numpy(past)
    pred_len = true.shape[1]
    refs = {
        "last_value": last_value_forecast(past_t, pred_len).numpy(),
        "seasonal_naive": seasonal_naive_forecast(past_t, pred_len, period).numpy(),
    }
    return {name: {"mse": mse(pred, true), "mae": mae(pred, true)} for name, pred in refs.items()}


def evaluate(
    model: nn.Module,
    array: np.ndarray,
    seq_len: int,
    pred_len: int,
    period: int,
    batch_size: int = 32,
    *,
    autocast=None,
    max_windows: int | None = None,
    accelerator=None,
) -> tuple[dict, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """MSE/MAE of ``model`` on every window of ``array`` (or ``max_windows`` evenly spaced ones),
    with the last-value and seasonal-naive references on the same windows beside them.

    Returns the metrics and the (past, pred, true) arrays they came from. With an ``accelerator``
    of several processes the windows are shared out and gathered back, each counted once.
    """
    past, pred, true = predict_windows(
        model,
        array,
        seq_len,
        pred_len,
        batch_size,
        autocast=autocast,
        max_windows=max_windows,
        accelerator=accelerator,
    )
    metrics = {
        "mse": mse(pred, true),
        "mae": mae(pred, true),
        "test_windows": int(pred.shape[0]),
        "test_windows_total": int(array.shape[0] - seq_len - pred_len + 1),
        "channels": int(pred.shape[2]),
        "baselines": naive_references(past, true, period),
    }
    return metrics, (past, pred, true)
