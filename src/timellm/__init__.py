"""timellm: time-series forecasting by reprogramming a frozen pretrained language model."""

from timellm.backbones.loading import Backbone, BackboneError, load_backbone
from timellm.data.errors import InputDataError
from timellm.forecaster import TimeLLMForecaster
from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.modeling import AdapterLoadError, TimeLLM
from timellm.model.prompt import input_statistics, prompt_text

__all__ = [
    "AdapterLoadError",
    "Backbone",
    "BackboneError",
    "ExecutionSettings",
    "InputDataError",
    "TimeLLM",
    "TimeLLMConfig",
    "TimeLLMForecaster",
    "input_statistics",
    "load_backbone",
    "prompt_text",
]
__version__ = "0.1.0"
