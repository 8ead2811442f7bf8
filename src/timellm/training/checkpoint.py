"""Training checkpoints: safetensors and JSON only, written atomically, verified when read.

A checkpoint is one folder (``checkpoint/`` in a run folder) holding

- ``adapter.safetensors``: the adapter's weights at the checkpoint (never the frozen LLM);
- ``best.safetensors``: the adapter of the best validation epoch so far (restored at the end);
- ``optimizer.safetensors``: the optimiser's state tensors, flattened to ``state.<param>.<name>``;
- ``rng.safetensors``: torch's CPU (and CUDA) generator states as uint8 tensors;
- ``state.json``: everything else — progress, early-stopping state, scheduler and optimiser
  structure, python and numpy generator states, history — and the sha256 of every file above.

Nothing is ever unpickled. A checkpoint is written whole into ``checkpoint.partial/`` (each file
fsynced), then swapped in by renaming: a crash or a full disk at any moment leaves the previous
checkpoint readable, either as ``checkpoint/`` or, in the instant between the two renames, as
``checkpoint.previous/``, which :func:`find_checkpoint` falls back to.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from timellm.model.adapter import check_weights as model_weights_check
from timellm.model.precision import PRECISION_OF_ACCELERATE
from timellm.training.config import TrainConfig, split_legacy_execution

logger = logging.getLogger(__name__)

FORMAT = "timellm-checkpoint"
VERSION = 1
STATE_FILE = "state.json"
ADAPTER = "adapter.safetensors"
BEST = "best.safetensors"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
PARTIAL_SUFFIX = ".partial"
PREVIOUS_SUFFIX = ".previous"


class CheckpointError(ValueError):
    """A checkpoint cannot be read, does not fit, or could not be written; the message names the file."""


@dataclass
class Checkpoint:
    """A checkpoint read back: its folder, ``state.json`` and the tensors of each safetensors file."""

    path: Path
    state: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]  # file name -> {key: tensor}


# --------------------------------------------------------------------------------------------
# writing


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and force it to disk (the rename that publishes it comes later)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    directory: str | Path, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]
) -> Path:
    """Write a checkpoint folder atomically: ``tensors`` maps a file name to the tensors it holds.

    On any failure (a full disk, a killed process) the previous checkpoint stays intact and the
    partial folder is removed; the error says so and names the file that failed.
    """
    directory = Path(directory)
    partial = directory.with_name(directory.name + PARTIAL_SUFFIX)
    previous = directory.with_name(directory.name + PREVIOUS_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    current = partial
    try:
        digests = {}
        for name, group in tensors.items():
            current = partial / name
            data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in group.items()})
            _write_file(current, data)
            digests[name] = hashlib.sha256(data).hexdigest()
        current = partial / STATE_FILE
        record = {"format": FORMAT, "version": VERSION, **state, "files": digests}
        _write_file(current, (json.dumps(record, indent=1) + "\n").encode())
        _fsync_directory(partial)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        kept = (
            f"the previous checkpoint {directory} is intact"
            if (directory / STATE_FILE).is_file()
            else "no earlier checkpoint exists"
        )
        reason = "the disk is full" if err.errno == errno.ENOSPC else str(err)
        raise CheckpointError(f"could not write checkpoint file {current}: {reason}; {kept}") from err
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # publish: two renames; in between, `previous` is the complete last checkpoint
    if directory.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(directory, previous)
    os.replace(partial, directory)
    _fsync_directory(directory.parent)
    shutil.rmtree(previous, ignore_errors=True)
    return directory


# --------------------------------------------------------------------------------------------
# reading


def remove_checkpoint(directory: str | Path) -> None:
    """Remove a checkpoint folder with its previous and partial siblings (a finished run's)."""
    directory = Path(directory)
    for suffix in ("", PREVIOUS_SUFFIX, PARTIAL_SUFFIX):
        shutil.rmtree(directory.with_name(directory.name + suffix), ignore_errors=True)


def find_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint folder at ``directory`` (or its ``.previous`` twin), None if none."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + PREVIOUS_SUFFIX)):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def read_checkpoint(directory: str | Path) -> Checkpoint:
    """Read and verify a checkpoint folder; every problem is a :class:`CheckpointError` naming the file."""
    requested = Path(directory)
    path = find_checkpoint(requested)
    if path is None:
        raise CheckpointError(f"no checkpoint at {requested}: it holds no {STATE_FILE}")
    state_path = path / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint file {state_path} is truncated or corrupted: {err}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{state_path} is not a timellm checkpoint (no format {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {state_path} has format version {state.get('version')!r}; this timellm reads version {VERSION}"
        )
    tensors = {}
    for name, digest in state.get("files", {}).items():
        file = path / name
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint file {file} is missing") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointError(
                f"checkpoint file {file} is truncated or corrupted: its sha256 differs from the one in {state_path}"
            )
        try:
            tensors[name] = load_safetensors(data)
        except (SafetensorError, ValueError) as err:
            raise CheckpointError(f"checkpoint file {file} is truncated or corrupted: {err}") from None
    for name in (ADAPTER, BEST, OPTIMIZER, RNG):
        if name not in tensors:
            raise CheckpointError(f"checkpoint {state_path} lists no {name}")
    return Checkpoint(path, state, tensors)


def check_weights(
    path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Strict key and shape check of saved weights against a model's; errors name the file."""
    return model_weights_check(f"checkpoint file {path}", tensors, expected, CheckpointError)


# --------------------------------------------------------------------------------------------
# optimiser state <-> safetensors + JSON


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON-able structure."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                values.setdefault(str(index), {})[name] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
        for group in state_dict["param_groups"]
    ]
    return tensors, {"param_groups": groups, "values": values}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entry in structure.get("values", {}).items():
        state.setdefault(int(index), {}).update(entry)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in structure["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------------------------
# random generator states


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Python's and numpy's generator states as JSON, torch's (CPU, every CUDA device) as tensors."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    tensors = {"torch.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch.cuda.{i}"] = value
    as_json = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
    }
    return as_json, tensors


def set_rng_state(as_json: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = as_json["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = as_json["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch.cpu"])
    cuda_keys = sorted(
        (k for k in tensors if k.startswith("torch.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
    )
    cuda = [tensors[k] for k in cuda_keys]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------------------------------------
# the training state in a checkpoint: progress, adapter, best adapter, optimiser, scheduler, generators


@dataclass
class Progress:
    """Where training stands: what a checkpoint must hold besides weights and generator states."""

    epoch: int = 1  # the epoch in progress, or the next one to run
    batch: int = 0  # batches of that epoch already trained (on this process)
    global_step: int = 0  # optimiser steps so far
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    stopped: bool = False  # early stopping has fired
    running: float = 0.0  # this epoch's summed training loss (this process)
    seen: int = 0  # series behind `running`
    train_seconds: float = 0.0  # training time of earlier sessions of a resumed run
    history: list[dict[str, float]] = field(default_factory=list)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of everything but the frozen backbone (registered as ``llm``)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("llm.")}


def describe(checkpoint_dir: Path, progress: Progress) -> str:
    where = (
        f"epoch {progress.epoch}, batch {progress.batch}"
        if progress.batch
        else f"end of epoch {progress.epoch - 1}"
    )
    return f"{checkpoint_dir} (step {progress.global_step}, {where})"


def run_precision(accelerator) -> str:
    """The precision an accelerator runs: fp32, bf16 or fp16 (what ``auto`` resolved to)."""
    return PRECISION_OF_ACCELERATE[str(accelerator.mixed_precision)]


@dataclass
class Training:
    """What training moves on, whose state a checkpoint saves and restores into: the model (as
    itself, not accelerate's wrapper), its Adam, the learning-rate scheduler, the accelerator
    (processes, gradient scaler) and the run's training settings."""

    model: nn.Module
    adam: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    config: TrainConfig


def save_training_state(
    directory: Path, training: Training, progress: Progress, best: dict[str, torch.Tensor]
) -> None:
    """Write the training state as a checkpoint (main process); every process takes part in the collectives first."""
    accelerator = training.accelerator
    current = trainable_state(training.model)
    sums = torch.tensor([[progress.running, progress.seen]], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        sums = accelerator.gather(sums)
    if not accelerator.is_main_process:
        return
    optimizer_tensors, optimizer_structure = flatten_optimizer(training.adam.state_dict())
    rng_json, rng_tensors = rng_state()  # the main process's: replicas draw in lockstep
    record = asdict(progress)
    record["running"] = [float(row[0]) for row in sums.cpu()]  # one entry per process
    record["seen"] = [int(row[1]) for row in sums.cpu()]
    state = {
        "progress": record,
        "processes": accelerator.num_processes,
        "model_config": _model_config(training.model),
        "train_config": training.config.to_dict(),
        "precision": run_precision(accelerator),  # what precision auto resolved to
        "scheduler": training.scheduler.state_dict(),
        "grad_scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
        "optimizer": optimizer_structure,
        "rng": rng_json,
    }
    tensors = {
        ADAPTER: current,
        BEST: best,
        OPTIMIZER: optimizer_tensors,
        RNG: rng_tensors,
    }
    save_checkpoint(directory, tensors, state)
    logger.debug("checkpoint written: %s", describe(directory, progress))


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    """The model's config as a dict (a TimeLLM's), or None for a model without one (baselines)."""
    config = getattr(model, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else None


def _default_config(model: nn.Module) -> dict[str, Any]:
    """Every setting of the model's config class at its default (none where it has no defaults)."""
    try:
        return type(model.config)().to_dict()
    except (TypeError, ValueError):
        return {}


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> str:
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    return "; ".join(f"{k}: {saved.get(k)!r} there, {current.get(k)!r} here" for k in keys)


def restore_training_state(directory: Path, training: Training) -> tuple[Progress, dict[str, torch.Tensor]]:
    """Load a checkpoint into the model, optimiser, scheduler and generators; return progress and best."""
    model, config, accelerator = training.model, training.config, training.accelerator
    saved = read_checkpoint(directory)
    state, where = saved.state, saved.path / STATE_FILE
    current = _model_config(model)
    if current is not None and state.get("model_config") is not None:
        # a model setting added since the checkpoint was written ran there at its default
        state["model_config"] = {**_default_config(model), **state["model_config"]}
    if current is not None and state.get("model_config") not in (None, current):
        raise CheckpointError(
            f"checkpoint {where} was made for another model: {_differences(state['model_config'], current)}"
        )
    saved_train, _ = split_legacy_execution(state["train_config"])
    # a training setting added since the checkpoint was written ran there at its default
    saved_train = {**TrainConfig().to_dict(), **saved_train}
    if saved_train != config.to_dict():
        raise CheckpointError(
            f"checkpoint {where} was written with other training settings: "
            f"{_differences(saved_train, config.to_dict())}"
        )
    if state.get("precision", run_precision(accelerator)) != run_precision(accelerator):
        logger.warning(
            "checkpoint %s was trained in %s; this machine continues in %s (precision %s resolves per device)",
            where,
            state["precision"],
            run_precision(accelerator),
            config.precision,
        )
    expected = trainable_state(model)
    adapter = check_weights(saved.path / ADAPTER, saved.tensors[ADAPTER], expected)
    best = check_weights(saved.path / BEST, saved.tensors[BEST], expected)

    record = dict(state["progress"])
    running, seen = record.pop("running"), record.pop("seen")
    progress = Progress(**record)
    if progress.batch:
        if state["processes"] != accelerator.num_processes:
            raise CheckpointError(
                f"checkpoint {where} was written in the middle of an epoch by {state['processes']} "
                f"process(es); resume it with the same number (this run has {accelerator.num_processes})"
            )
        progress.running, progress.seen = running[accelerator.process_index], seen[accelerator.process_index]

    model.load_state_dict(adapter, strict=False)
    _load_optimizer(training.adam, saved, state)
    training.scheduler.load_state_dict(state["scheduler"])
    if accelerator.scaler is not None and state.get("grad_scaler"):
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    set_rng_state(state["rng"], saved.tensors[RNG])
    return progress, {k: v.to(expected[k].device) for k, v in best.items()}


def _load_optimizer(adam: torch.optim.Optimizer, saved: Checkpoint, state: dict[str, Any]) -> None:
    path = saved.path / OPTIMIZER
    tensors = saved.tensors[OPTIMIZER]
    params = [p for group in adam.param_groups for p in group["params"]]
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        if int(index) >= len(params):
            raise CheckpointError(
                f"checkpoint file {path} holds state for parameter {index}; this model's adapter has {len(params)}"
            )
        if value.ndim and value.shape != params[int(index)].shape:
            raise CheckpointError(
                f"checkpoint file {path} was made for another backbone or shape: {key} has shape "
                f"{tuple(value.shape)}, the parameter has {tuple(params[int(index)].shape)}"
            )
    try:
        adam.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint file {path} does not fit this optimiser: {err}") from None


# ------------------------------------------------------------------------------------------------
# saved adapter folders (save_pretrained): what was written is what is read


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_checksums(directory: Path, names: list[str]) -> dict[str, str]:
    """The sha256 of each named file of a folder, to record beside them at save time."""
    return {name: file_digest(directory / name) for name in names}


def verify_checksums(directory: Path, checksums: Any, record: Path, error: type[Exception]) -> None:
    """Refuse a folder whose files differ from the sha256 recorded in ``record`` when it was saved."""
    if not isinstance(checksums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in checksums.items()
    ):
        raise error(f"{record}: 'checksums' must map file names to sha256 hex digests, found {checksums!r}")
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file():
            raise error(
                f"adapter folder {directory} lacks {name}, which was saved with it (listed in {record})"
            )
        if file_digest(path) != expected:
            raise error(
                f"{path} was changed after the adapter was saved (its sha256 differs from the one in "
                f"{record}): restore the file as saved, or train a new adapter"
            )


def read_json_object(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """A JSON file that must hold one object (a mapping), with a one-line error otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {what} {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise error(f"{what} {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise error(
            f"{what} {path} must hold a JSON object of settings, found {type(data).__name__}: {data!r:.60}"
        )
    return data


def saved_weights_config(path: Path) -> dict[str, Any] | None:
    """The model config written into a safetensors file's metadata at save time, or None if none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError):
        return None  # the weights' own loader reports unreadable files
    try:
        config = json.loads(metadata.get("config", "null"))
    except json.JSONDecodeError:
        return None
    return config if isinstance(config, dict) else None


def check_config_matches_weights(config: dict[str, Any], config_path: Path, weights: Path, error) -> None:
    """Refuse a ``config.json`` that differs from the config its weights were saved with.

    The adapter's weights carry their model config in their metadata: a config edited afterwards
    (another backbone, another ``llm_layers``) would rebuild another model around the same weights
    and forecast wrongly without any shape mismatch to show it.
    """
    saved = saved_weights_config(weights)
    if saved is None:
        return
    keys = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    if keys:
        shown = "; ".join(
            f"{k}: {config.get(k)!r} in {config_path.name}, {saved.get(k)!r} there" for k in keys[:4]
        )
        raise error(
            f"{config_path} does not match the model its weights {weights.name} were saved with ({shown}): "
            "restore the saved config.json, or train a new adapter"
        )
