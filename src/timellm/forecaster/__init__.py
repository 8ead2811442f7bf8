"""Forecast your own data: :class:`TimeLLMForecaster`, a DataFrame API in the conventions of
neuralforecast and Hugging Face (:mod:`.api`), how it trains its adapters (:mod:`.fitting`), its
saved file (:mod:`.files`) and its rules for series lengths (:mod:`.lengths`)."""

from timellm.forecaster.api import (
    COMBINATION,
    DEFAULT_MAX_STEPS,
    DEFAULT_MODEL,
    DEFAULT_TIME_BUDGET,
    DEFAULT_TRAIN,
    TimeLLMForecaster,
)
from timellm.forecaster.files import FORECASTER_FILE
from timellm.forecaster.fitting import budget
from timellm.forecaster.lengths import DEFAULT_VALIDATION_WINDOWS

__all__ = [
    "COMBINATION",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_TIME_BUDGET",
    "DEFAULT_MODEL",
    "DEFAULT_TRAIN",
    "DEFAULT_VALIDATION_WINDOWS",
    "FORECASTER_FILE",
    "TimeLLMForecaster",
    "budget",
]
