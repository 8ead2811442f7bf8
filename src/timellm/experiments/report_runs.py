"""The run folders a report reads, and the protocol each run belongs to.

Every folder under a root that holds ``config.yaml`` and ``metrics.json`` is a run, except an
ablation's folders (the ablation summary reads those). Its protocol: ``m4`` (an M4 run),
``zero_shot`` (tested on another dataset than it was trained on), ``few_shot`` (trained on less
than 100 % of the training windows) or ``long_term``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from timellm.experiments.ablation import FULL, trained_converged
from timellm.experiments.ablation import SEEDS_CSV as ABLATION_ROWS
from timellm.experiments.folders import METRICS, RUN_CONFIG, WHOLE_TEST, read_run_files

logger = logging.getLogger(__name__)

PROTOCOLS = ("long_term", "few_shot", "zero_shot", "m4")


@dataclass
class Run:
    """One run folder: its recorded settings and its metrics."""

    path: Path
    record: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def protocol(self) -> str:
        return classify(self.record, self.metrics)


def classify(record: dict[str, Any], metrics: dict[str, Any]) -> str:
    """long_term, few_shot, zero_shot or m4 (zero-shot wins over few-shot when both apply)."""
    if record.get("protocol") == "m4" or metrics.get("protocol") == "m4":
        return "m4"
    dataset = record.get("dataset")
    test_dataset = record.get("test_dataset", dataset)
    if test_dataset is not None and test_dataset != dataset:
        return "zero_shot"
    if float(record.get("percent", 100) or 100) < 100:
        return "few_shot"
    return "long_term"


def collect_runs(root: str | Path) -> list[Run]:
    """Every run folder under ``root`` (``root`` itself included), in path order.

    Folders with a config but no metrics (a run in progress or one that failed) are skipped, logged.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder {root} does not exist")
    runs = []
    ablations = {path.parent for path in root.rglob(ABLATION_ROWS)}
    for config in sorted(root.rglob(RUN_CONFIG)):
        folder = config.parent
        if ablations & {folder, *folder.parents}:
            continue  # an ablation and its variants' folders: the ablation summary reads those
        record, metrics = read_run_files(folder)
        if metrics is None:
            logger.warning("skipping %s: no %s (unfinished or failed run)", folder, METRICS)
            continue
        runs.append(Run(folder, record, metrics))
    return runs


# what a converged ablation's run records about its invocation, not about the experiment: seeds run
# by separate commands, on other machines, are still repeats of one experiment
_INVOCATION = ("variants", "command", "environment", "run", "test_windows")


def converged_runs(root: str | Path) -> list[Run]:
    """Time-LLM's runs in the ablations under ``root`` that trained by the converged recipe, as
    long-term runs: the same adapter on the same test windows, so the ablation's Time-LLM rows are
    also the long-term table's converged rows (their preset: ``<dataset>-<horizon>-converged``).

    Each carries the ablation's command with every seed that has finished, and what the long-term
    table reads that an ablation row keeps elsewhere (layers, test windows of the whole split).
    Where the ablation tested a subset of the test windows, the scores of ``timellm evaluate --save``
    on the whole split (``metrics_whole_test.json``) take their place when present.
    """
    root, runs = Path(root), []
    for rows in sorted(root.rglob(ABLATION_ROWS)):
        ablation = rows.parent
        folders = sorted(p.parent for p in (ablation / FULL).glob(f"seed-*/{METRICS}"))
        finished = []
        for folder in folders:
            record, metrics = read_run_files(folder)
            if trained_converged(record):
                # the row's seed (a folder written before its record named the seed it trained with)
                record = {**record, "train": {**record.get("train", {}), "seed": metrics["seed"]}}
                finished.append((folder, record, metrics))
        seeds = ",".join(
            str(r["train"]["seed"]) for _, r, _ in sorted(finished, key=lambda f: f[1]["train"]["seed"])
        )
        for folder, record, metrics in finished:
            model = record.get("model", {})
            preset = f"{record['dataset']}-{model.get('pred_len')}-converged"
            command = str(record.get("command") or "")
            command = re.sub(r"--seeds \S+", f"--seeds {seeds}", command)  # a command line, not a message
            kept = {k: v for k, v in record.items() if k not in _INVOCATION}
            scores = {
                **metrics,
                "command": command,
                "llm_layers": model.get("llm_layers"),
                "test_windows_total": record.get("test_windows_total"),
            }
            if (folder / WHOLE_TEST).is_file():
                whole = json.loads((folder / WHOLE_TEST).read_text())
                keys = (
                    "mse",
                    "mae",
                    "baselines",
                    "test_windows",
                    "test_windows_total",
                    "test_seconds",
                    "channels",
                )
                scores = {**scores, **{k: whole[k] for k in keys if k in whole}, "test_series_per_s": None}
                out = re.search(r"--out (\S+)", command)  # a recorded command line, not a message
                where = f"{out.group(1)}/{FULL}/seed-S" if out else f"{FULL}/seed-S"
                retest = f"timellm evaluate {where} --save"  # a command line, not a message
                scores["command"] = f"{command} && {retest} (each seed S)"
            runs.append(Run(folder, {**kept, "preset": preset, "command": command}, scores))
    return runs
