"""Presets are data: packaged YAML files resolved into a dataset, a model config, a train config,
the model's execution settings and a run's own settings (sections ``model``, ``train``, ``execution``
and ``run`` of the YAML files, of ``--set`` keys and of a run folder's config.yaml)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.settings import SECTIONS, SettingsError, execution_dict, execution_settings, split_settings
from timellm.training.config import TrainConfig

# an unknown preset is a settings error like an unknown setting: one exception for both
PresetError = SettingsError


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

    def settings_record(self) -> dict[str, Any]:
        """The model, training, execution and run settings, as a run folder's config.yaml records them."""
        return {
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "execution": execution_dict(self.execution),
            "run": self.run,
        }


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
