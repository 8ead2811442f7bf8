"""What every command shares: the user error and its exit status, the options all take, and the
way messages from the layers below name this command line's options instead of API arguments."""

from __future__ import annotations

import argparse
import logging
import re
import shlex
from collections.abc import Iterable
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


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the options and the data, print the memory plan (what the run refuses by) and "
        "stop: no weight is loaded, nothing is written; exit status 2 where it would not fit",
    )


def print_memory_plan(plans, what: str) -> int:
    """--dry-run: print the memory plan of a run, batch by batch; exit status 0 where it fits, else
    the run's own refusal (:class:`~timellm.model.memory.InsufficientMemoryError`, exit status 2)."""
    from timellm.model.memory import GiB, refuse_what_cannot_fit, simulated_available

    print(f"dry run of {what}: nothing loaded, nothing written")
    if not plans:
        print("  no language model to plan: nothing to refuse")
        return 0
    print("memory, estimated before loading:")
    for plan in plans:
        print(f"  {plan.describe()}")
    room, device = plans[0].available, plans[0].device
    limit = " (TIMELLM_MEMORY_LIMIT)" if simulated_available() is not None else ""
    shown = f"{room / GiB:.2f} GiB{limit}" if room is not None else "cannot be read here (not checked)"
    print(f"  available on {device}: {shown}")
    refuse_what_cannot_fit(plans, log=False)  # printed above
    peak = max(plan.estimate.total for plan in plans)
    print(f"fits: a peak of about {peak / GiB:.2f} GiB")
    return 0


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


# API arguments that a command's option spells otherwise: the API's name -> the options' dests
API_DESTS = {"h": ("horizon",), "n_windows": ("windows",), "target_col": ("target_col", "target_cols")}
# the options whose flag is not their dest written with dashes
DEST_FLAGS = {"target_cols": "--target-col", "overrides": "--set"}
# the API's arguments that messages below the CLI name (``seq_len=...``): each is one of a command's
# options where the command has it
API_ARGUMENTS = (
    *("seq_len", "val_size", "max_steps", "ensemble", "calibration_origins", "id_col", "time_col"),
    *("target_col", "description", "backbone", "horizon", "h", "n_windows", "step_size", "season"),
    *("period", "baseline_budget"),
)
# the sections of a dotted setting as messages below the CLI name them, and as --set takes them
SECTION_NAMES = {"train_config": "train", **{name: name for name in ("train", "model", "execution", "run")}}

SWITCHES = {"interpolate=True": "interpolate", "wide=True": "wide"}

# how the layers below name what every command takes as an option (their messages name no flag)
PHRASES = {
    "data_dir=FOLDER": "--data-dir FOLDER",
    "dtypes=": "--dtypes",
    "data=PATH": "--data PATH",
}
RESUME_CALL = re.compile(r"resume_run\(([^()]+)\)")  # resume_run(RUN_DIR), for any run folder


def with_phrases(message: str) -> str:
    """An error message with the API arguments of :data:`PHRASES` written as this CLI's options,
    and ``resume_run(RUN_DIR)`` as the command that resumes the run."""
    for phrase, option in PHRASES.items():
        message = message.replace(phrase, option)
    return RESUME_CALL.sub(r"`timellm train --resume \1`", message)


def with_flags(message: str, options: Iterable[str] = ()) -> str:
    """An error message with the settings it names (``seq_len=...``, ``train.batch_size=...``)
    written as a user types them on this command line: the command's own option where it has one
    (``options``: the dests of its options, e.g. ``vars(args)``), else ``--set name=...`` for a
    model, training, execution or run setting; an option's API name standing alone
    (``calibration_origins must be ...``) is written as the option too. Other words are left as
    they are.
    """
    from timellm.model.config import TimeLLMConfig
    from timellm.settings import EXECUTION_FIELDS, RUN_FIELDS
    from timellm.training.config import TrainConfig

    dests = set(options)
    settings = {f.name for f in fields(TimeLLMConfig)} | {f.name for f in fields(TrainConfig)}
    settings |= set(EXECUTION_FIELDS) | set(RUN_FIELDS)

    def option(name: str) -> str | None:
        found = next((d for d in API_DESTS.get(name, (name,)) if d in dests), None)
        return None if found is None else DEST_FLAGS.get(found, "--" + found.replace("_", "-"))

    def flag(match: re.Match) -> str:
        section, name = match.group(1), match.group(2)
        if section is not None:
            return f"--set {SECTION_NAMES[section]}.{name}=" if name in settings else match.group(0)
        if name in API_ARGUMENTS and option(name) is not None:
            return f"{option(name)} "
        return f"--set {name}=" if name in settings else match.group(0)

    sections = "|".join(SECTION_NAMES)

    def bare(match: re.Match) -> str:  # calibration_origins (an identifier, not a word): its option
        name = match.group(1)
        return option(name) or name if name in API_ARGUMENTS else name

    def rewrite(text: str) -> str:
        for setting, dest in SWITCHES.items():
            if dest in dests:
                text = re.sub(rf"\b{re.escape(setting)}", f"--{dest}", text)
        text = re.sub(rf"(?<![\w.-])(?:({sections})\.)?([a-z][a-z0-9_]*)=", flag, text)
        return re.sub(r"(?<![\w.-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![\w=(]|\.\w)", bare, text)

    # quoted text (a series id such as 'val_size=3', a file name) is the user's own: left as written;
    # a quote mark inside a word or after one (don't, the series') is an apostrophe, not a quote
    parts = re.split(r"""((?<!\w)'[^']*'(?!\w)|(?<!\w)"[^"]*"(?!\w))""", message)
    return "".join(part if i % 2 else rewrite(part) for i, part in enumerate(parts))
