"""What every variant of the model shares: Time-LLM (:mod:`timellm.model.modeling`) and its
LLM-free ablations (:mod:`timellm.model.ablations`) both stand on :class:`TimeLLMBase`.

The frame of the forward pass (channel independence, normalisation and its inverse around the
variant's own ``forecast_normalised``), the model's autocast, parameter counts, and the adapter on
disk: ``config.json`` beside ``adapter.safetensors`` (the trainable weights only, never the frozen
LLM), loaded back with strict key and shape checks. :mod:`timellm.model.variants` builds and loads
every variant of a config.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from timellm.backbones.loading import Backbone
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.layers import normalize, revin_denormalize
from timellm.model.precision import PRECISION_OF_AUTOCAST, resolve_precision

CONFIG_FILE = "config.json"
ADAPTER_FILE = "adapter.safetensors"
FORMAT_VERSION = "1"


class AdapterLoadError(ValueError):
    """A saved adapter does not fit the model it is loaded into; the message names the file."""


class TimeLLMBase(nn.Module):
    """A forecaster of ``config``: ``forward(past_values) -> forecasts``, saved as an adapter.

    A variant implements :meth:`forecast_normalised` (normalised series in, their normalised
    forecasts out) and sets ``backbone`` (None without an LLM) and ``fast_path_reason`` (None where
    the LLM runs on a cached prompt). ``execution`` says how to run; it may be replaced at any time
    and is never saved. :func:`timellm.model.variants.load_model` loads whichever variant was saved.
    """

    def __init__(self, config: TimeLLMConfig, execution: ExecutionSettings | None = None):
        super().__init__()
        self.config = config
        self.execution = execution or ExecutionSettings()
        self.backbone: Backbone | None = None
        # why the LLM does not run on a cached prompt (None: it does)
        self.fast_path_reason: str | None = f"no LLM in the {config.llm!r} variant"

    @property
    def uses_fast_path(self) -> bool:
        """Whether the LLM runs on the cached prompt (causal backbone, prompt on, fast_path on)."""
        return self.fast_path_reason is None

    def forward(self, past_values: torch.Tensor) -> torch.Tensor:
        """(B, T, N) look-back windows -> (B, H, N) forecasts on the same scale."""
        c = self.config
        if past_values.ndim != 3 or past_values.shape[1] != c.seq_len:
            raise ValueError(
                f"past_values must have shape (batch, seq_len={c.seq_len}, channels), found {tuple(past_values.shape)}"
            )
        b, t, n = past_values.shape
        series = past_values.permute(0, 2, 1).reshape(b * n, t)  # (S, T), channel independence
        x, centre, scale = normalize(series, c.normalization, pred_len=c.pred_len, period=c.period)  # (S, T)
        with self.autocast(past_values.device):
            out = self.forecast_normalised(x)  # (S, H)

        forecast = revin_denormalize(out.to(past_values.dtype), centre, scale)  # (S, H)
        return forecast.reshape(b, n, c.pred_len).permute(0, 2, 1)  # (B, H, N)

    def forecast_normalised(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised series (S, T) -> their normalised forecasts (S, H): the variant's own part."""
        raise NotImplementedError(f"{type(self).__name__} does not forecast")

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The model's own mixed-precision context on ``device`` (its ExecutionSettings.autocast_dtype)."""
        dtype = self.execution.autocast_dtype
        if dtype is None:  # leave any autocast the caller set up alone
            return contextlib.nullcontext()
        resolve_precision(PRECISION_OF_AUTOCAST[dtype], device)  # warns once if emulated
        return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))

    # ---------------------------------------------------------------------------------------
    # parameters and persistence

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable weights only: no frozen backbone weight is ever saved."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("llm.")}

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"cannot save the adapter to {directory}: it is a file, not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.adapter_state_dict().items()}
        metadata = {
            "format": "timellm-adapter",
            "version": FORMAT_VERSION,
            "config": json.dumps(self.config.to_dict()),
        }
        save_file(tensors, str(directory / ADAPTER_FILE), metadata=metadata)
        return directory

    def load_adapter(self, path: str | Path) -> None:
        """Load adapter weights with strict key and shape checks; errors name the file."""
        path = Path(path)
        try:
            tensors = load_file(str(path))
        except FileNotFoundError:
            raise AdapterLoadError(f"adapter file {path} does not exist") from None
        except (SafetensorError, OSError) as err:
            raise AdapterLoadError(f"adapter file {path} is truncated or corrupted: {err}") from None
        check_weights(f"adapter file {path}", tensors, self.adapter_state_dict(), AdapterLoadError)
        self.load_state_dict(tensors, strict=False)


def saved_config(directory: str | Path) -> TimeLLMConfig:
    """The config of the adapter saved in ``directory``."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory} holds no {CONFIG_FILE}: not a saved Time-LLM adapter")
    return TimeLLMConfig.load(directory / CONFIG_FILE)


def check_weights(
    source: str,
    tensors: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    error: type[Exception] = AdapterLoadError,
) -> dict[str, torch.Tensor]:
    """Strict key and shape check of saved weights against a model's; ``error`` names ``source``."""
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise error(
            f"{source} does not match this model: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise error(
                f"{source} was made for another backbone or shape: {key} has shape "
                f"{tuple(value.shape)}, this model expects {tuple(expected[key].shape)}"
            )
    return tensors
