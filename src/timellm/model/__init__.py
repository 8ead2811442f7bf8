"""The Time-LLM model: its configuration, layers, prompt, the fast path and the model itself.

Depends only on :mod:`timellm.backbones` (the frozen language model it reprograms).
"""

from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.modeling import ADAPTER_FILE, CONFIG_FILE, AdapterLoadError, TimeLLM, check_weights

__all__ = [
    "ADAPTER_FILE",
    "CONFIG_FILE",
    "AdapterLoadError",
    "ExecutionSettings",
    "TimeLLM",
    "TimeLLMConfig",
    "check_weights",
]
