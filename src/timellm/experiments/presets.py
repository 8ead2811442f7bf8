"""Presets are data: packaged YAML files resolved into a dataset, a model config, a train config,
the model's execution settings and a run's own settings (sections ``model``, ``train``, ``execution``
and ``run`` of the YAML files, of ``--set`` keys and of a run folder's config.yaml)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any

import yaml

from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.training.config import TrainConfig

# settings of a run that are neither model nor training settings: max_test_windows (score an evenly
# spaced subset of the test windows) and refit (M4: once validation has chosen the epoch count,
# train a fresh adapter on the whole training series for that many epochs and forecast with it)
RUN_FIELDS = ("max_test_windows", "refit")
# how the model executes, chosen per run (autocast follows the run's precision, not a setting here)
EXECUTION_FIELDS = ("gradient_checkpointing", "attention", "compile", "compile_scope")
SECTIONS = ("model", "train", "execution", "run")


class PresetError(ValueError):
    """An unknown preset or a bad override; the message lists what is known."""


@dataclass(frozen=True)
class Preset:
    name: str
    dataset: str
    model: TimeLLMConfig
    train: TrainConfig
    run: dict[str, Any]
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)

    def with_overrides(self, overrides: dict[str, Any]) -> Preset:
        """Apply ``{"llm_layers": 4, "train.epochs": 2, ...}``; a bare key is looked up in each section."""
        settings = split_settings(overrides)
        return Preset(
            self.name,
            self.dataset,
            self.model.replace(**settings["model"]),
            self.train.replace(**settings["train"]),
            {**self.run, **settings["run"]},
            execution_settings({**execution_dict(self.execution), **settings["execution"]}),
        )


def execution_dict(execution: ExecutionSettings) -> dict[str, Any]:
    """The settings of ``execution`` a preset or run record holds (``EXECUTION_FIELDS``)."""
    return {name: getattr(execution, name) for name in EXECUTION_FIELDS}


def execution_settings(values: dict[str, Any] | None) -> ExecutionSettings:
    """``ExecutionSettings`` from a preset's or run record's ``execution`` section, checked."""
    values = dict(values or {})
    unknown = set(values) - set(EXECUTION_FIELDS)
    if unknown:
        raise PresetError(
            f"unknown execution setting(s) {', '.join(sorted(unknown))}; known: {', '.join(EXECUTION_FIELDS)}"
        )
    checkpointing = values.get("gradient_checkpointing", False)
    if not isinstance(checkpointing, bool):
        raise PresetError(f"gradient_checkpointing must be true or false, found {checkpointing!r}")
    try:
        return ExecutionSettings(**values)
    except ValueError as err:
        raise PresetError(str(err)) from None


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
        target = next(
            (s for s in sections if section in ("", s) and name in known[s]),
            None,
        )
        if target is None:
            names = sorted(set().union(*(known[s] for s in sections)))
            raise PresetError(f"unknown setting {key!r}; known settings: {', '.join(names)}")
        out[target][name] = value
    return out


def _merge(base: dict, extra: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _files() -> list[dict]:
    folder = resources.files("timellm.experiments") / "presets"
    return [
        yaml.safe_load(p.read_text())
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".yaml")
    ]


def all_presets() -> dict[str, Preset]:
    """Every packaged preset by name: "<dataset>-<horizon>" and its "-cpu" variant (plus extras)."""
    presets: dict[str, Preset] = {}
    for data in _files():
        defaults = data.get("defaults", {})
        for dataset, spec in data.get("datasets", {}).items():
            for horizon in spec["horizons"]:
                settings = _merge(defaults, {k: v for k, v in spec.items() if k in SECTIONS})
                settings = _merge(settings, spec.get("by_horizon", {}).get(horizon))
                settings = _merge(settings, {"model": {"pred_len": horizon, "dataset": dataset}})
                name = f"{dataset}-{horizon}"
                presets[name] = _build(name, dataset, settings)
                for variant, extra in data.get("variants", {}).items():
                    # a dataset may tune a variant: "variants: {cpu: {train: {...}}}" under it,
                    # and per horizon: "variants: {cpu: {by_horizon: {48: {train: {...}}}}}"
                    own = dict(spec.get("variants", {}).get(variant) or {})
                    own_horizon = own.pop("by_horizon", {}).get(horizon)
                    tuned = _merge(_merge(_merge(settings, extra), own), own_horizon)
                    presets[f"{name}-{variant}"] = _build(f"{name}-{variant}", dataset, tuned)
    return presets


M4_PRESETS = "m4.yaml"


def _m4_file() -> dict:
    return yaml.safe_load((resources.files("timellm.experiments") / "presets" / M4_PRESETS).read_text())


def m4_presets() -> dict[str, Preset]:
    """The packaged M4 presets: "m4-<Frequency>" and its variants ("m4-Hourly-cpu").

    Horizon and look-back (2 x horizon) come from the competition's frequency table; a variant
    may tune one frequency: "variants: {cpu: {by_frequency: {Weekly: {model: {...}}}}}".
    """
    from timellm.data.m4 import get_frequency

    data = _m4_file()
    presets: dict[str, Preset] = {}
    names = [get_frequency(frequency).name for frequency in data["frequencies"]]
    for variant, extra in data.get("variants", {}).items():
        unknown = set((extra or {}).get("by_frequency", {})) - set(names)
        if unknown:
            raise PresetError(
                f"M4 variant {variant!r} tunes unknown frequencies {', '.join(sorted(unknown))}; "
                f"expected some of {', '.join(names)}"
            )
    for frequency in data["frequencies"]:
        f = get_frequency(frequency)
        settings = _merge(data.get("defaults", {}), {"model": {"seq_len": f.seq_len, "pred_len": f.horizon}})
        name = f"m4-{f.name}"
        presets[name] = _build(name, "m4", settings)
        for variant, extra in data.get("variants", {}).items():
            extra = dict(extra or {})
            own = extra.pop("by_frequency", {}).get(f.name)
            presets[f"{name}-{variant}"] = _build(
                f"{name}-{variant}", "m4", _merge(_merge(settings, extra), own)
            )
    return presets


def get_m4_preset(frequency: str, variant: str | None = None) -> Preset:
    """The M4 preset of ``frequency`` ("Hourly", "H"); ``variant`` None or "paper" is the paper's."""
    from timellm.data.m4 import get_frequency

    name = f"m4-{get_frequency(frequency).name}" + (f"-{variant}" if variant not in (None, "paper") else "")
    presets = m4_presets()
    if name not in presets:
        raise PresetError(f"unknown M4 preset {name!r}; known: {', '.join(presets)}")
    return presets[name]


def _build(name: str, dataset: str, settings: dict) -> Preset:
    try:
        return Preset(
            name,
            dataset,
            TimeLLMConfig(**settings.get("model", {})),
            TrainConfig(**settings.get("train", {})),
            dict(settings.get("run", {})),
            execution_settings(settings.get("execution")),
        )
    except (TypeError, ValueError) as err:
        raise PresetError(f"preset {name} is invalid: {err}") from err


def get_preset(name: str) -> Preset:
    presets = all_presets()
    if name not in presets:
        close = [p for p in presets if p.lower().startswith(name.split("-")[0].lower())][:12]
        hint = f" Similar: {', '.join(close)}." if close else ""
        raise PresetError(f"unknown preset {name!r}.{hint} List them with `timellm presets`.")
    return presets[name]


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["llm_layers=4", "train.epochs=2"]`` -> ``{"llm_layers": 4, "train.epochs": 2}`` (YAML values)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PresetError(f"a setting is key=value, found {pair!r}")
        parsed = yaml.safe_load(value) if value.strip() else None
        if isinstance(parsed, str) and _EXPONENT_FLOAT.fullmatch(parsed):
            parsed = float(parsed)  # YAML 1.1 reads 1e-3 (no dot, no sign) as a string
        out[key.strip()] = parsed
    return out


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
