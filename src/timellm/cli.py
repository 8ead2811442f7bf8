"""The `timellm` command line. Errors are one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

logger = logging.getLogger("timellm")

EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding the benchmark files (default: $TIMELLM_DATA)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", required=True, help="a preset name, e.g. ETTh1-96 or ETTh1-96-cpu (see `timellm presets`)"
    )
    parser.add_argument(
        "--backbone", help="backbone alias, folder, .gguf file or hub id (overrides the preset)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model, training or run setting, e.g. --set llm_layers=4 --set train.epochs=2",
    )
    parser.add_argument("--out", help="run folder to write (default: runs/<preset>-<time>)")


def _add_protocol_options(parser: argparse.ArgumentParser, preset: str) -> None:
    parser.add_argument(
        "--variant",
        default="cpu",
        help=f"preset variant: cpu (default: sized for a CPU, see `timellm presets`) or paper "
        f"(the paper's settings, for a GPU); the preset is {preset}[-<variant>]",
    )
    parser.add_argument(
        "--backbone", help="backbone alias, folder, .gguf file or hub id (overrides the preset)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model, training or run setting, e.g. --set llm_layers=4 --set train.epochs=2",
    )
    parser.add_argument("--out", help="run folder to write (default: runs/<preset>-<time>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timellm", description="Time-LLM forecasting with a frozen language model."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a preset on its benchmark, test it, write a run folder")
    _add_training(p)
    p.add_argument(
        "--percent", type=float, default=100, help="few-shot: train on the first PERCENT %% of windows"
    )
    _add_common(p)

    p = sub.add_parser("evaluate", help="re-test a run folder's adapter on its whole test split")
    p.add_argument("run_dir")
    _add_common(p)

    p = sub.add_parser("presets", help="list the packaged presets")
    p.add_argument("--all", action="store_true", help="show every setting of each preset")

    p = sub.add_parser("demo", help="train briefly on ETTh1 with SmolLM2, test, save the adapter and a plot")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    _add_common(p)

    p = sub.add_parser(
        "m4", help="M4 short-term forecasting: train per frequency, forecast, score SMAPE/MASE/OWA"
    )
    p.add_argument(
        "--frequency",
        nargs="+",
        required=True,
        help="one or more of Yearly, Quarterly, Monthly, Weekly, Daily, Hourly (or Y Q M W D H)",
    )
    _add_protocol_options(p, "m4-<Frequency>")
    _add_common(p)

    p = sub.add_parser(
        "transfer", help="zero-shot: train and select on --source, test on --target's test split"
    )
    p.add_argument("--source", required=True, help="benchmark to train and select on, e.g. ETTh1")
    p.add_argument("--target", required=True, help="benchmark whose test split is forecast, e.g. ETTh2")
    p.add_argument("--pred-len", type=int, default=96, help="horizon: picks the preset <source>-<pred_len>")
    _add_protocol_options(p, "<source>-<pred_len>")
    _add_common(p)

    p = sub.add_parser(
        "report", help="gather run folders into one Markdown and CSV table per protocol, beside the paper"
    )
    p.add_argument("runs_dir", help="folder searched (recursively) for run folders")
    p.add_argument("--out", help="folder for <protocol>.csv and report_<protocol>.md (default: RUNS_DIR)")

    p = sub.add_parser("info", help="parameter counts of a model built from a preset")
    p.add_argument("--preset", default="ETTh1-96", help="preset (default ETTh1-96: the paper's settings)")
    p.add_argument("--backbone", help="backbone (overrides the preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _resolve_preset(args):
    from timellm.presets import get_preset, parse_overrides

    overrides = parse_overrides(args.overrides)
    if getattr(args, "backbone", None):
        overrides["backbone"] = args.backbone
    return get_preset(args.preset).with_overrides(overrides)


def _default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _print_metrics(metrics: dict, title: str) -> None:
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


def cmd_train(args) -> int:
    from timellm.runs import train_and_test

    preset = _resolve_preset(args)
    run_dir = Path(args.out) if args.out else _default_run_dir(preset.name)
    command = "timellm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    metrics = train_and_test(preset, run_dir, data_dir=args.data_dir, percent=args.percent, command=command)
    _print_metrics(metrics, f"{preset.dataset}, horizon {preset.model.pred_len}")
    print(f"run folder: {run_dir}")
    return 0


def _command_line(args) -> str:
    """The command as typed (recorded in the run folder), from main()'s argv."""
    return "timellm " + " ".join(shlex.quote(a) for a in args.argv)


def _with_cli_overrides(preset, args):
    from timellm.presets import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.backbone:
        overrides["backbone"] = args.backbone
    return preset.with_overrides(overrides)


def cmd_m4(args) -> int:
    from timellm.m4 import get_frequency
    from timellm.presets import get_m4_preset
    from timellm.protocols import check_m4_files, run_m4, weighted_m4

    frequencies = [get_frequency(f).name for f in args.frequency]
    if len(set(frequencies)) != len(frequencies):
        raise CLIError(f"--frequency names a frequency twice: {' '.join(args.frequency)}")
    presets = [_with_cli_overrides(get_m4_preset(f, args.variant), args) for f in frequencies]
    for frequency in frequencies:  # every file first: no frequency trains before a missing one fails
        check_m4_files(frequency, args.data_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(args.out) if args.out else Path("runs") / f"m4-{args.variant}-{stamp}"
    results = []
    for frequency, preset in zip(frequencies, presets, strict=True):
        run_dir = root / frequency if len(frequencies) > 1 else root
        results.append(
            run_m4(preset, frequency, run_dir, data_dir=args.data_dir, command=_command_line(args))
        )
    if len(results) > 1:
        results.append({"frequency": "Average", **weighted_m4(results)})
    print(f"\nM4, {presets[0].model.backbone}: every series forecast from the end of its training series")
    print(f"{'frequency':<12}{'series':>8}{'SMAPE':>9}{'MASE':>9}{'OWA':>8}{'Naive2 SMAPE':>14}{'MASE':>8}")
    for r in results:
        print(
            f"{r['frequency']:<12}{r['series']:>8}{r['smape']:>9.3f}{r['mase']:>9.3f}{r['owa']:>8.3f}"
            f"{r['naive2_smape']:>14.3f}{r['naive2_mase']:>8.3f}"
        )
    print(f"run folder: {root}")
    return 0


def cmd_transfer(args) -> int:
    from timellm.protocols import transfer, transfer_preset

    preset = _with_cli_overrides(transfer_preset(args.source, args.pred_len, args.variant), args)
    run_dir = Path(args.out) if args.out else _default_run_dir(f"{preset.name}-to-{args.target}")
    metrics = transfer(preset, args.target, run_dir, data_dir=args.data_dir, command=_command_line(args))
    _print_metrics(
        metrics, f"zero-shot {preset.dataset} -> {metrics['test_dataset']}, horizon {preset.model.pred_len}"
    )
    print(f"run folder: {run_dir}")
    return 0


def cmd_report(args) -> int:
    from timellm.report import write_report

    written, markdown = write_report(args.runs_dir, args.out)
    print(markdown)
    for path in written.values():
        print(f"wrote {path} and {path.with_name(path.name.removeprefix('report_').replace('.md', '.csv'))}")
    return 0


def cmd_evaluate(args) -> int:
    from timellm.runs import evaluate_run

    metrics = evaluate_run(args.run_dir, args.data_dir)
    _print_metrics(metrics, f"{args.run_dir}")
    return 0


def cmd_presets(args) -> int:
    from timellm.presets import all_presets, m4_presets

    for name, preset in {**all_presets(), **m4_presets()}.items():
        m, t = preset.model, preset.train
        line = (
            f"{name:<22} seq {m.seq_len:>4} pred {m.pred_len:>4} patch {m.patch_len}/{m.stride} "
            f"d_model {m.d_model} d_ff {m.d_ff} layers {m.llm_layers or 'all'} lr {t.learning_rate} epochs {t.epochs}"
        )
        if t.max_train_windows:
            line += f" (<= {t.max_train_windows} windows/epoch)"
        print(line)
        if args.all:
            print(f"    model: {m.to_dict()}\n    train: {t.to_dict()}\n    run: {preset.run}")
    return 0


def cmd_demo(args) -> int:
    from timellm.presets import get_preset
    from timellm.runs import train_and_test

    preset = get_preset("ETTh1-96-demo")
    logger.info(
        "demo: ETTh1, horizon 96, %s with %d layers (preset %s)",
        preset.model.backbone,
        preset.model.llm_layers,
        preset.name,
    )
    metrics = train_and_test(preset, args.out, data_dir=args.data_dir, command="timellm demo")
    _print_metrics(metrics, "ETTh1, horizon 96")
    out = Path(args.out)
    print(f"adapter: {out / 'adapter'}   plot: {out / 'forecast.png'}   log: {out / 'train.log'}")
    print(
        f"trained {metrics['steps']} steps in {metrics['train_seconds']:.0f} s; the full benchmark: timellm train --preset ETTh1-96-cpu"
    )
    return 0


def cmd_info(args) -> int:
    from timellm.model import TimeLLM

    preset = _resolve_preset(args)
    model = TimeLLM(preset.model)
    backbone = model.backbone
    print(f"preset {preset.name}, backbone {preset.model.backbone}")
    if backbone is not None:
        print(
            f"backbone: hidden {backbone.hidden_size}, vocabulary {backbone.vocab_size}, "
            f"layers used {backbone.num_layers} of {backbone.total_layers}, causal {backbone.is_causal}"
        )
    trainable, total = model.num_parameters(True), model.num_parameters()
    print(f"trainable parameters: {trainable:,}")
    print(f"total parameters:     {total:,}")
    for name, module in model.named_children():
        count = sum(p.numel() for p in module.parameters() if p.requires_grad)
        if count:
            print(f"  {name:<16}{count:>14,}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "presets": cmd_presets,
    "demo": cmd_demo,
    "info": cmd_info,
    "m4": cmd_m4,
    "transfer": cmd_transfer,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(getattr(args, "verbose", False))
    from timellm.backbones import BackboneError
    from timellm.data.benchmarks import DataError
    from timellm.model import AdapterLoadError
    from timellm.presets import PresetError

    try:
        return COMMANDS[args.command](args)
    except (
        CLIError,
        PresetError,
        DataError,
        BackboneError,
        AdapterLoadError,
        FileNotFoundError,
        ValueError,
    ) as err:
        print(f"timellm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `timellm presets | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("timellm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
