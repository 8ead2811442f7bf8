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
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from timellm.model.modeling import check_weights as model_weights_check

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
