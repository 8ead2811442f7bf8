"""What every command shares: the user error and its exit status, the options all take, and the
way messages from the layers below name this command line's options instead of API arguments."""

from __future__ import annotations

import argparse
import logging
import re
import shlex
from dataclasses import fields

logger = logging.getLogger("timellm")

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding the benchmark files (default: $TIMELLM_DATA)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def add_set(parser: argparse.ArgumentParser, what: str = "a model, training or run setting") -> None:
    """--set KEY=VALUE, the one way every command takes settings beyond its own options."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what}, e.g. --set llm_layers=4 --set train.learning_rate=0.001",
    )


def command_line(args) -> str:
    """The command as typed (recorded in the run folder), from main()'s argv."""
    return "timellm " + " ".join(shlex.quote(a) for a in args.argv)


def print_metrics(metrics: dict, title: str) -> None:
    rows = [("Time-LLM", metrics["mse"], metrics["mae"])]
    names = {"last_value": "last value", "seasonal_naive": "seasonal naive"}
    rows += [(names.get(k, k), v["mse"], v["mae"]) for k, v in metrics["baselines"].items()]
    windows = metrics.get("test_windows", metrics.get("windows"))
    total = metrics.get("test_windows_total", windows)
    scope = (
        f"{windows} test windows"
        if windows == total
        else f"{windows} of {total} test windows (evenly spaced)"
    )
    print(f"\n{title}: {scope} x {metrics['channels']} channels, standardised scale")
    print(f"{'model':<16}{'MSE':>9}{'MAE':>9}")
    for name, m, a in rows:
        print(f"{name:<16}{m:>9.4f}{a:>9.4f}")


# API settings as error messages below the CLI name them, and the options that set them here
SETTING_FLAGS = {
    "seq_len": "--seq-len",
    "val_size": "--val-size",
    "max_steps": "--max-steps",
    "ensemble": "--ensemble",
    "calibration_origins": "--calibration-origins",
    "id_col": "--id-col",
    "time_col": "--time-col",
    "target_col": "--target-col",
    "description": "--description",
    "backbone": "--backbone",
    "horizon": "--horizon",
    "h": "--horizon",
    "n_windows": "--windows",
    "step_size": "--step-size",
    "season": "--season",
    "period": "--period",
    "baseline_budget": "--baseline-budget",
}

SWITCHES = {"interpolate=True": "--interpolate", "wide=True": "--wide"}

# how the layers below name what every command takes as an option (their messages name no flag)
PHRASES = {
    "data_dir=FOLDER": "--data-dir FOLDER",
    "resume_run(RUN_DIR)": "`timellm train --resume RUN_DIR`",
    "dtypes=": "--dtypes",
    "data=PATH": "--data PATH",
}


def with_phrases(message: str) -> str:
    """An error message with the API arguments of :data:`PHRASES` written as this CLI's options."""
    for phrase, option in PHRASES.items():
        message = message.replace(phrase, option)
    return message


def with_flags(message: str) -> str:
    """An error message with the API settings it names (``seq_len=...``) written as this CLI's options.

    Settings that have no option of their own are model or training settings: ``--set name=...``.
    """
    from timellm.model.config import TimeLLMConfig
    from timellm.training.config import TrainConfig

    settings = {f.name for f in fields(TimeLLMConfig)} | {f.name for f in fields(TrainConfig)}

    def flag(match: re.Match) -> str:
        name = match.group(1)
        if name in SETTING_FLAGS:
            return f"{SETTING_FLAGS[name]} "
        return f"--set {name}=" if name in settings else match.group(0)

    def rewrite(text: str) -> str:
        for setting, switch in SWITCHES.items():
            text = re.sub(rf"\b{re.escape(setting)}", switch, text)
        return re.sub(r"(?<![\w.-])([a-z][a-z0-9_]*)=", flag, text)

    # quoted text (a series id such as 'val_size=3', a file name) is the user's own: left as written;
    # a quote mark inside a word or after one (don't, the series') is an apostrophe, not a quote
    parts = re.split(r"""((?<!\w)'[^']*'(?!\w)|(?<!\w)"[^"]*"(?!\w))""", message)
    return "".join(part if i % 2 else rewrite(part) for i, part in enumerate(parts))
