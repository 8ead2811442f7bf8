"""The saved forecaster's own file, ``forecaster.json``, beside the adapter's ``config.json`` and
``adapter.safetensors``: the API settings, the training settings, the interval calibration and a
checksum of the adapter files. Every field is checked on load, and a folder edited after it was
saved is refused, so that a hand-edited adapter never forecasts silently wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from timellm._records import check_known_keys
from timellm.forecaster.lengths import is_int
from timellm.model.adapter import ADAPTER_FILE, CONFIG_FILE, AdapterLoadError
from timellm.model.config import TimeLLMConfig
from timellm.training.checkpoint import folder_checksums, read_json_object, verify_checksums

FORECASTER_FILE = "forecaster.json"
FORECASTER_FORMAT = "timellm-forecaster"
FORECASTER_VERSION = 1
# what forecaster.json holds (save_pretrained): any other key is an error on load, never dropped
FORECASTER_KEYS = frozenset(
    {
        "format",
        "version",
        "horizon",
        "seq_len",
        "columns",
        "interpolate",
        "val_size",
        "max_steps",
        "time_budget",
        "ensemble",
        "choose_normalization",
        "calibration_origins",
        "train",
        "calibration",
        "calibration_constant",
        "checksums",
    }
)


def member_folder(directory: Path, member: int) -> Path:
    """Where an ensemble's member adapter is saved: the first in the folder itself (so that a
    single adapter's folder is the same), member k in ``member-k/``."""
    return directory if member == 0 else directory / f"member-{member}"


def write_record(
    directory: Path,
    settings: dict[str, Any],
    members: int,
    calibration: np.ndarray | None,
    calibration_constant: int,
) -> None:
    """Write ``forecaster.json`` into an adapter folder that holds the ``members`` adapters
    (``config.json`` and the weights each): the forecaster's ``settings`` (horizon, seq_len,
    columns, ...; the keys of :data:`FORECASTER_KEYS`), the calibration and the files' checksums."""
    record: dict[str, Any] = {"format": FORECASTER_FORMAT, "version": FORECASTER_VERSION, **settings}
    record["ensemble"] = members
    if calibration is not None:  # the conformity scores: intervals after loading, no retraining
        record["calibration"] = calibration.tolist()
        record["calibration_constant"] = calibration_constant
    # what was written is what from_pretrained reads: a file edited afterwards is refused
    files = [
        str((member_folder(directory, k) / name).relative_to(directory))
        for k in range(members)
        for name in (CONFIG_FILE, ADAPTER_FILE)
    ]
    record["checksums"] = folder_checksums(directory, files)
    (directory / FORECASTER_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read_record(directory: Path) -> dict[str, Any]:
    """The forecaster file of an adapter folder, its format, keys and checksums checked ({} if the
    folder is a bare adapter without one)."""
    path = directory / FORECASTER_FILE
    if not path.is_file():
        return {}
    record = read_json_object(path, "forecaster file", AdapterLoadError)
    if record.get("format") != FORECASTER_FORMAT:
        raise AdapterLoadError(f"{path} is not a timellm forecaster file (no format {FORECASTER_FORMAT!r})")
    check_known_keys(record, FORECASTER_KEYS, path, AdapterLoadError)
    if "checksums" in record:
        verify_checksums(directory, record["checksums"], path, AdapterLoadError)
    return record


def check_record(record: dict[str, Any], config: TimeLLMConfig, path: Path) -> None:
    """Every field of a forecaster file, checked against its type and the adapter's config."""

    def refuse(field: str, expected: str) -> None:
        raise AdapterLoadError(f"{path}: {field!r} must be {expected}, found {record[field]!r:.80}")

    if record.get("version", FORECASTER_VERSION) != FORECASTER_VERSION:
        raise AdapterLoadError(
            f"{path} has format version {record['version']!r}; this timellm reads version {FORECASTER_VERSION}"
        )
    for field, value in (("horizon", config.pred_len), ("seq_len", config.seq_len)):
        if field in record and record[field] != value:
            refuse(field, f"{value}, as in {CONFIG_FILE}")
    columns = record.get("columns", {})
    if not isinstance(columns, dict) or set(columns) - {"id_col", "time_col", "target_col", "wide"}:
        raise AdapterLoadError(
            f"{path}: 'columns' must be an object of id_col, time_col, target_col and wide, found {columns!r:.80}"
        )
    for name, value in columns.items():
        if name == "wide" and not isinstance(value, bool):
            raise AdapterLoadError(f"{path}: columns.wide must be true or false, found {value!r}")
        if name != "wide" and (not isinstance(value, str) or not value):
            raise AdapterLoadError(f"{path}: columns.{name} must be a column name (text), found {value!r}")
    for flag in ("interpolate", "choose_normalization"):
        if flag in record and not isinstance(record[flag], bool):
            refuse(flag, "true or false")
    if record.get("val_size") is not None and (
        not is_int(record["val_size"]) or record["val_size"] < config.pred_len
    ):
        refuse("val_size", f"null or an integer of at least the horizon {config.pred_len}")
    if record.get("max_steps") is not None and (not is_int(record["max_steps"]) or record["max_steps"] < 1):
        refuse("max_steps", "null or a positive integer")
    seconds = record.get("time_budget")
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0
    ):
        refuse("time_budget", "null or a positive number of seconds")
    if "calibration_origins" in record and (
        not is_int(record["calibration_origins"]) or record["calibration_origins"] < 0
    ):
        refuse("calibration_origins", "the number of rolling origins (an integer of at least 0)")
    if "ensemble" in record and (not is_int(record["ensemble"]) or record["ensemble"] < 1):
        refuse("ensemble", "the number of adapters saved (a positive integer)")
    if "train" in record and not isinstance(record["train"], dict):
        refuse("train", "an object of training settings")
    if not is_int(record.get("calibration_constant", 0)) or record.get("calibration_constant", 0) < 0:
        refuse("calibration_constant", "a count of windows (an integer of at least 0)")
    scores = record.get("calibration")
    if scores is None:
        return
    h = config.pred_len
    if not isinstance(scores, list) or not all(isinstance(row, list) and len(row) == h for row in scores):
        refuse("calibration", f"null or a list of score rows of {h} numbers each (one per horizon step)")
    numbers = [v for row in scores for v in row]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        refuse("calibration", "rows of numbers")
    array = np.asarray(numbers, dtype=np.float64)
    if not np.isfinite(array).all() or (array < 0).any():
        raise AdapterLoadError(
            f"{path}: 'calibration' holds {'negative' if (array < 0).any() else 'non-finite'} scores; "
            "conformity scores are absolute errors over a spread, finite and at least 0: fit the forecaster again"
        )
