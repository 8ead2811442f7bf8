"""One builder for every variant of a config, above the classes that implement them: Time-LLM on
its pretrained, a given or a random-weights backbone (:class:`~timellm.model.modeling.TimeLLM`),
and the LLM-free ablations (:class:`~timellm.model.ablations.LLMFreeTimeLLM`). Neither class knows
the other; both stand on :class:`~timellm.model.adapter.TimeLLMBase`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from timellm.backbones.loading import Backbone
from timellm.model.ablations import LLMFreeTimeLLM
from timellm.model.adapter import ADAPTER_FILE, TimeLLMBase, saved_config
from timellm.model.config import LLM_FREE, ExecutionSettings, TimeLLMConfig
from timellm.model.modeling import TimeLLM, load_backbone_for

__all__ = ["build_model", "load_model"]


def build_model(
    config: TimeLLMConfig,
    execution: ExecutionSettings | None = None,
    seed: int | None = None,
    backbone: Backbone | None = None,
    precision: str = "auto",
) -> TimeLLMBase:
    """Every variant of ``config``: Time-LLM on its pretrained (or a given, already loaded) or
    random-weights backbone, or an LLM-free ablation (which takes no backbone).

    ``seed`` seeds torch right before the trainable weights are drawn, after any backbone is
    loaded, so that a variant's initial adapter never depends on what was loaded before it.
    """
    if config.llm == "pretrained" and backbone is None:
        backbone = load_backbone_for(config, config.llm_layers, execution or ExecutionSettings(), precision)
    if seed is not None:
        torch.manual_seed(seed)
    if config.llm in LLM_FREE:
        if backbone is not None:
            raise ValueError(f"the {config.llm!r} ablation has no LLM: pass no backbone")
        return LLMFreeTimeLLM(config, execution)
    return TimeLLM(config, backbone, execution=execution, precision=precision)


def load_model(
    directory: str | Path,
    backbone: Backbone | None = None,
    execution: ExecutionSettings | None = None,
    precision: str = "auto",
) -> TimeLLMBase:
    """The model of whichever variant was saved in ``directory`` (``save_pretrained``), its
    backbone loaded as its config names (or ``backbone``, given; its weights stored as
    ``execution.weights`` resolves for ``precision``)."""
    model = build_model(saved_config(directory), execution, backbone=backbone, precision=precision)
    model.load_adapter(Path(directory) / ADAPTER_FILE)
    return model
