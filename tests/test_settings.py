"""Settings given as text: `--set` pairs, their sections, the execution record and precision names."""

from dataclasses import fields

import pytest
import torch

from timellm.model.config import ExecutionSettings
from timellm.model.precision import ACCELERATE_PRECISION, PRECISIONS
from timellm.settings import (
    EXECUTION_FIELDS,
    PRECISION_DTYPES,
    SettingsError,
    execution_dict,
    execution_settings,
    parse_overrides,
    split_settings,
)


def test_pairs_are_read_as_yaml_values():
    assert parse_overrides(
        ["llm_layers=4", "train.learning_rate=1e-3", "description=", "fast_path=false"]
    ) == {
        "llm_layers": 4,
        "train.learning_rate": 0.001,
        "description": None,
        "fast_path": False,
    }
    with pytest.raises(SettingsError, match="key=value, found 'llm_layers'"):
        parse_overrides(["llm_layers"])


def test_a_bare_key_finds_its_section_and_a_dotted_key_names_it():
    settings = split_settings({"llm_layers": 4, "epochs": 2, "attention": "sdpa", "run.refit": True})
    assert settings == {
        "model": {"llm_layers": 4},
        "train": {"epochs": 2},
        "execution": {"attention": "sdpa"},
        "run": {"refit": True},
    }
    with pytest.raises(SettingsError, match="unknown setting 'refit'; known settings: "):
        split_settings({"refit": True}, sections=("model", "train", "execution"))


def test_every_execution_setting_but_autocast_is_recorded():
    assert set(EXECUTION_FIELDS) == {f.name for f in fields(ExecutionSettings)} - {"autocast_dtype"}
    execution = execution_settings({"attention": "eager", "gradient_checkpointing": True})
    assert execution_settings(execution_dict(execution)) == execution
    with pytest.raises(SettingsError, match="gradient_checkpointing must be true or false"):
        execution_settings({"gradient_checkpointing": "yes"})
    with pytest.raises(SettingsError, match="unknown execution setting"):
        execution_settings({"autocast_dtype": "bfloat16"})


def test_one_table_of_precision_names():
    assert set(PRECISION_DTYPES) == set(PRECISIONS) - {"auto"} == set(ACCELERATE_PRECISION)
    assert PRECISION_DTYPES["fp32"] is None and PRECISION_DTYPES["bf16"] is torch.bfloat16
