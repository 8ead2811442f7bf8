"""The `timellm` command line: the practitioner's commands (:mod:`timellm.cli.forecast`) and the
researcher's (:mod:`timellm.cli.experiments`) under one parser. Errors are one line on stderr and
exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from timellm.cli import experiments, forecast
from timellm.cli.common import EXIT_FAILURE, EXIT_USAGE, CLIError, logger, with_flags, with_phrases

COMMANDS = {**forecast.COMMANDS, **experiments.COMMANDS}


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logger.handlers[:] = [handler]
    # under `accelerate launch` only the main process reports progress; the others warn and fail only
    secondary = int(os.environ.get("RANK", "0")) > 0
    logger.setLevel(logging.WARNING if secondary else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    # torchao (weights=int8) logs a line for each optional GPU kernel library it cannot load, and
    # torch's pytree warns about the types torchao registers: noise on a CPU, not ours to report
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timellm", description="Time-LLM forecasting with a frozen language model."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    forecast.add_commands(sub)
    experiments.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line (not a call from Python): tune glibc's allocator first
        from timellm._malloc import ensure_tuned_allocator

        ensure_tuned_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(getattr(args, "verbose", False))
    from timellm.backbones.loading import BackboneError
    from timellm.data.benchmarks import DataError
    from timellm.model.adapter import AdapterLoadError
    from timellm.model.memory import InsufficientMemoryError
    from timellm.settings import SettingsError
    from timellm.training.loop import NonFiniteLossError

    try:
        code = COMMANDS[args.command](args)
        _leave_process_group()
        return code
    except (
        CLIError,
        SettingsError,
        DataError,
        BackboneError,
        AdapterLoadError,
        InsufficientMemoryError,
        FileNotFoundError,
        ValueError,
    ) as err:
        # the settings a message names, as this command takes them (its own option, or --set)
        message = with_flags(with_phrases(str(err)), vars(args))
        print(f"timellm {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as err:  # training diverged: not a usage error
        print(f"timellm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:  # e.g. `timellm presets | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("timellm: interrupted", file=sys.stderr)
        return 130


def _leave_process_group() -> None:
    """Under a multi-process launch, wait for every process, then close the process group.

    Without this a process that finishes first (those that are not the main one write nothing)
    exits while the others still hold connections to it, and its communication threads can
    abort the interpreter's shutdown ("terminate called without an active exception").
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
