"""timellm: time-series forecasting by reprogramming a frozen pretrained language model."""

from timellm.backbones.loading import Backbone, BackboneError, load_backbone
from timellm.data.errors import InputDataError
from timellm.forecaster import TimeLLMForecaster
from timellm.model.adapter import AdapterLoadError
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.modeling import TimeLLM
from timellm.model.prompt import input_statistics, prompt_text
from timellm.model.variants import build_model, load_model

__all__ = [
    "AdapterLoadError",
    "Backbone",
    "BackboneError",
    "ExecutionSettings",
    "InputDataError",
    "TimeLLM",
    "TimeLLMConfig",
    "TimeLLMForecaster",
    "build_model",
    "input_statistics",
    "load_backbone",
    "load_model",
    "prompt_text",
]
__version__ = "0.1.0"
