"""Settings given as text: ``--set KEY=VALUE`` pairs, the sections they belong to, and the names
of the precisions a run computes in. One module below both the command line and the experiment
harness, so that a practitioner's forecast needs nothing from the harness to read its settings.

A setting belongs to one of four sections: ``model`` (:class:`TimeLLMConfig`), ``train``
(:class:`TrainConfig`), ``execution`` (:class:`ExecutionSettings`: how the model runs, never saved
with it) and ``run`` (:data:`RUN_FIELDS`: how a benchmark run is scored).
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import yaml

from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.precision import AUTOCAST_DTYPES
from timellm.training.config import TrainConfig

# settings of a run that are neither model nor training settings: max_test_windows (score an evenly
# spaced subset of the test windows), refit (M4: once validation has chosen the epoch count,
# train a fresh adapter on the whole training series for that many epochs and forecast with it)
# and choose_normalization (long-term, few-shot and zero-shot runs: where the trained adapter does
# not beat seasonal naive on validation, also train a correction to seasonal naive and keep the
# one that validates better) and curve_test_windows (a learning curve: after every epoch, also score
# that many evenly spaced test windows into the epoch's history; reporting only, nothing is chosen on it)
RUN_FIELDS = ("max_test_windows", "refit", "choose_normalization", "curve_test_windows")
# how the model executes, chosen per run; autocast follows the run's precision (train.precision),
# so it is not a setting of its own
EXECUTION_FIELDS = tuple(f.name for f in fields(ExecutionSettings) if f.name != "autocast_dtype")
SECTIONS = ("model", "train", "execution", "run")

# The precisions by name: what the user writes (train.precision, `bench speed --dtypes`), the
# torch dtype autocast runs in (None: no autocast); from the table of timellm.model.precision.
# "auto" is not here: it resolves per device to one of these.
PRECISION_DTYPES = AUTOCAST_DTYPES


class SettingsError(ValueError):
    """An unknown setting, a malformed ``KEY=VALUE`` or a bad value; the message lists what is known."""


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["llm_layers=4", "train.epochs=2"]`` -> ``{"llm_layers": 4, "train.epochs": 2}`` (YAML values)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"a setting is key=value, found {pair!r}")
        parsed = yaml.safe_load(value) if value.strip() else None
        if isinstance(parsed, str) and _EXPONENT_FLOAT.fullmatch(parsed):
            parsed = float(parsed)  # YAML 1.1 reads 1e-3 (no dot, no sign) as a string
        out[key.strip()] = parsed
    return out


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def split_settings(
    overrides: dict[str, Any], sections: tuple[str, ...] = SECTIONS
) -> dict[str, dict[str, Any]]:
    """``{"llm_layers": 4, "train.epochs": 2}`` -> ``{"model": {"llm_layers": 4}, "train": {"epochs": 2},
    ...}`` with every section of ``SECTIONS``; an unknown key is an error.

    A bare key is looked up in the model's, then the training's, the execution's and the run's
    settings; a dotted key names its section. ``sections`` limits where a key may go.
    """
    known = {
        "model": {f.name for f in fields(TimeLLMConfig)},
        "train": {f.name for f in fields(TrainConfig)},
        "execution": set(EXECUTION_FIELDS),
        "run": set(RUN_FIELDS),
    }
    out: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        target = next((s for s in sections if section in ("", s) and name in known[s]), None)
        if target is None:
            names = sorted(set().union(*(known[s] for s in sections)))
            raise SettingsError(f"unknown setting {key!r}; known settings: {', '.join(names)}")
        out[target][name] = value
    return out


def execution_dict(execution: ExecutionSettings) -> dict[str, Any]:
    """The settings of ``execution`` a preset or run record holds (``EXECUTION_FIELDS``)."""
    return {name: getattr(execution, name) for name in EXECUTION_FIELDS}


def execution_settings(values: dict[str, Any] | None) -> ExecutionSettings:
    """``ExecutionSettings`` from a preset's or run record's ``execution`` section, checked."""
    values = dict(values or {})
    unknown = set(values) - set(EXECUTION_FIELDS)
    if unknown:
        raise SettingsError(
            f"unknown execution setting(s) {', '.join(sorted(unknown))}; known: {', '.join(EXECUTION_FIELDS)}"
        )
    checkpointing = values.get("gradient_checkpointing", False)
    if not isinstance(checkpointing, bool):
        raise SettingsError(f"gradient_checkpointing must be true or false, found {checkpointing!r}")
    try:
        return ExecutionSettings(**values)
    except ValueError as err:
        raise SettingsError(str(err)) from None
