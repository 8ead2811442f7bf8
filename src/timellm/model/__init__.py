"""The Time-LLM model: its configuration, layers, prompt, the fast path, the model and its ablations.

Depends only on :mod:`timellm.backbones` (the frozen language model it reprograms).
"""

from timellm.model.adapter import ADAPTER_FILE, CONFIG_FILE, AdapterLoadError, TimeLLMBase, check_weights
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.modeling import TimeLLM
from timellm.model.variants import build_model, load_model

__all__ = [
    "ADAPTER_FILE",
    "CONFIG_FILE",
    "AdapterLoadError",
    "ExecutionSettings",
    "TimeLLM",
    "TimeLLMBase",
    "TimeLLMConfig",
    "build_model",
    "check_weights",
    "load_model",
]
