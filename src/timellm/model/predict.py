"""One way to run a forecasting model for predictions: batched, in eval mode, without autograd.

Every inference in the project goes through :func:`predict`: the test-split evaluation, the M4
and transfer protocols, the ablation's reference models, the forecaster and the speed benchmark.
It works for any module that maps (B, T, N) look-back windows to (B, H, N) forecasts (Time-LLM,
DLinear, PatchTST), so the references are run exactly as the model is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd for the block; the model's training mode is restored after it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def predict(
    model: nn.Module,
    past_values: torch.Tensor,
    *,
    batch_size: int = 32,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """(W, T, N) look-back windows -> (W, H, N) float32 forecasts on the CPU, ``batch_size`` at a time.

    ``autocast``: a context factory the model runs under (e.g. an accelerator's ``autocast``);
    a Time-LLM model's own precision setting applies either way.
    """
    if past_values.ndim != 3:
        raise ValueError(
            f"past_values must have shape (windows, seq_len, channels), found {tuple(past_values.shape)}"
        )
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, found {batch_size!r}")
    device = model_device(model)
    outputs = []
    with evaluating(model):
        for start in range(0, len(past_values), batch_size):
            batch = past_values[start : start + batch_size].to(device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                outputs.append(model(batch).float().cpu())
    if not outputs:
        raise ValueError("predict needs at least one window")
    return torch.cat(outputs)
