"""The `timellm` command line. Errors are one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

logger = logging.getLogger("timellm")

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logger.handlers[:] = [handler]
    # under `accelerate launch` only the main process reports progress; the others warn and fail only
    secondary = int(os.environ.get("RANK", "0")) > 0
    logger.setLevel(logging.WARNING if secondary else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding the benchmark files (default: $TIMELLM_DATA)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def _add_training(parser: argparse.ArgumentParser, preset_required: bool = True) -> None:
    parser.add_argument(
        "--preset",
        required=preset_required,
        help="a preset name, e.g. ETTh1-96 or ETTh1-96-cpu (see `timellm presets`)",
    )
    _add_preset_overrides(parser)


def _add_set(parser: argparse.ArgumentParser, what: str = "a model, training or run setting") -> None:
    """--set KEY=VALUE, the one way every command takes settings beyond its own options."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what}, e.g. --set llm_layers=4 --set train.learning_rate=0.001",
    )


def _add_preset_overrides(parser: argparse.ArgumentParser) -> None:
    """--backbone, --set and --out: what every command that runs a preset takes."""
    parser.add_argument(
        "--backbone", help="backbone alias, folder, .gguf file or hub id (overrides the preset)"
    )
    _add_set(parser)
    parser.add_argument("--out", help="run folder to write (default: runs/<preset>-<time>)")


def _add_protocol_options(parser: argparse.ArgumentParser, preset: str) -> None:
    parser.add_argument(
        "--variant",
        default="cpu",
        help=f"preset variant: cpu (default: sized for a CPU, see `timellm presets`) or paper "
        f"(the paper's settings, for a GPU); the preset is {preset}[-<variant>]",
    )
    _add_preset_overrides(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timellm", description="Time-LLM forecasting with a frozen language model."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a preset on its benchmark, test it, write a run folder")
    _add_training(p, preset_required=False)
    p.add_argument(
        "--percent", type=float, default=100, help="few-shot: train on the first PERCENT %% of windows"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint, with the settings it recorded",
    )
    p.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="S1,S2,...",
        help="train once per seed, into <out>/seed-<S>, and report the mean and standard deviation",
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

    p = sub.add_parser("bench", help="benchmarks: `timellm bench speed` (fast vs plain path)")
    bench = p.add_subparsers(dest="which", required=True, metavar="BENCHMARK")
    p = bench.add_parser(
        "speed",
        help="throughput, memory and FLOP rate of the fast and the plain path on ETTh1 windows",
        description="Speed of the plain and the fast path on ETTh1 windows: throughput, peak memory, "
        "FLOP/s against this CPU's matmul peak; every configuration in a fresh process.",
    )
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--layers", type=int, default=6, help="LLM layers kept")
    p.add_argument("--batch", type=int, default=32, help="series per step (windows of one channel)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    p.add_argument("--infer-steps", type=int, default=6, help="timed inference steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument(
        "--dtypes",
        type=_name_list,
        default=None,
        help="comma-separated: fp32, bf16 (default: those this CPU runs natively; bf16 needs AMX or AVX-512 BF16)",
    )
    p.add_argument("--paths", type=_name_list, default="plain,fast")
    p.add_argument("--modes", type=_name_list, default="train,infer")
    p.add_argument("--malloc", type=_name_list, default="default,tuned", help="allocator settings to compare")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument(
        "--data", default=None, help="ETTh1.csv(.gz) (default: $TIMELLM_DATA, else the packaged copy)"
    )
    p.add_argument("--no-breakdown", action="store_true", help="skip the step-time breakdown")
    p.add_argument("--no-ladder", action="store_true", help="skip adding the speed-ups one at a time")
    p.add_argument(
        "--plain-attention",
        default="eager",
        choices=["eager", "sdpa"],
        help="the plain path's attention kernel (default: eager, as the released code forces)",
    )
    p.add_argument("--plain-fused-adam", action="store_true", help="give the plain path the fused Adam too")
    p.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute backbone layers in backward"
    )
    p.add_argument(
        "--compile",
        default="none",
        choices=["none", "inference", "always"],
        help="the fast path's torch.compile setting (default: none)",
    )
    p.add_argument(
        "--compile-scope",
        default="modules",
        choices=["modules", "layers"],
        help="what --compile covers: the norms and MLPs, or whole decoder layers (default: modules)",
    )
    p.add_argument(
        "--infer-batches",
        type=_int_list,
        default=[],
        metavar="B1,B2,...",
        help="also time fast-path inference at these batch sizes (series per forward)",
    )
    p.add_argument(
        "--profile", action="store_true", help="also profile a fast-path step per mode, operator by operator"
    )
    p.add_argument("--out", default="results/speed.csv")

    p = sub.add_parser(
        "m4", help="M4 short-term forecasting: train per frequency, forecast, score SMAPE/MASE/OWA"
    )
    p.add_argument(
        "--frequency",
        nargs="+",
        required=True,
        help="one or more of Yearly, Quarterly, Monthly, Weekly, Daily, Hourly (or Y Q M W D H)",
    )
    p.add_argument(
        "--reference",
        choices=["dlinear"],
        help="train this reference model in the same pipeline and budget instead of Time-LLM",
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
    _add_set(p)
    _add_user_data_commands(sub)

    p = sub.add_parser(
        "ablate",
        help="Time-LLM beside its ablations and baselines under one budget: one table (Tan et al.)",
    )
    _add_training(p)
    p.add_argument(
        "--budget",
        help="training budget: preset (its own settings), cpu, tiny, or WINDOWSxEPOCHS such as 1500x2 "
        "(default: preset)",
    )
    p.add_argument(
        "--variants",
        help="comma-separated subset (default: all): time-llm, random-llm, no-prompt, no-statistics, "
        "no-llm, llm2attn, llm2trsf, dlinear, patchtst, last-value, seasonal-naive; on request also "
        "statsforecast's autoets, autotheta, autoarima (fitted on every test window's look-back: slow)",
    )
    p.add_argument("--csv", help="your own data instead of the preset's benchmark: a wide or long CSV file")
    p.add_argument("--time-col", help="CSV column of time stamps (sorts rows, gives the period)")
    p.add_argument("--id-col", help="long CSV: column naming the series")
    p.add_argument(
        "--target-col",
        dest="target_cols",
        action="append",
        help="CSV column to forecast (repeatable; default: every numeric column)",
    )
    p.add_argument("--period", type=int, help="seasonal period of the CSV (default: from the time stamps)")
    p.add_argument("--description", help="one or two sentences about the data, for the prompt")
    p.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="S1,S2,...",
        help="run every variant once per seed, into <out>/seed-<S>; the table holds mean and standard deviation",
    )
    _add_common(p)

    p = sub.add_parser(
        "explain", help="text prototypes as words; a test window's prompt and attended prototypes"
    )
    p.add_argument("run_dir", help="a run folder (timellm train, or a Time-LLM variant of timellm ablate)")
    p.add_argument("--window", type=int, default=0, help="test window to explain (negative: from the end)")
    p.add_argument("--channel", help="column name or index (default: the last column)")
    p.add_argument("--top-words", type=int, default=5, help="nearest words shown per prototype")
    p.add_argument("--top-prototypes", type=int, default=5, help="most attended prototypes shown")
    p.add_argument(
        "--prototypes",
        type=int,
        help="list the words of only the first N prototypes (default: every prototype)",
    )
    p.add_argument("--heatmap", help="write a PNG heat map of patch-to-prototype attention here")
    _add_common(p)
    return parser


def _name_list(text: str) -> list[str]:
    """``"plain,fast"`` -> ``["plain", "fast"]``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, found {text!r}")
    return names


def _int_list(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, found {text!r}")
    return numbers


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 2021,2022,2023; found {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected distinct integer seeds, e.g. 2021,2022,2023; found {text!r}"
        )
    return seeds


def _resolve_preset(args, preset=None):
    """``preset`` (default: the one --preset names) with --backbone and --set applied."""
    from timellm.experiments.presets import get_preset, parse_overrides

    overrides = parse_overrides(args.overrides)
    if getattr(args, "backbone", None):
        overrides["backbone"] = args.backbone
    return (preset if preset is not None else get_preset(args.preset)).with_overrides(overrides)


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
    from accelerate import PartialState

    from timellm.experiments.runs import resume_run, train_and_test, train_seeds
    from timellm.training.loop import NonFiniteLossError

    if args.resume:
        given = [
            flag
            for flag, value in (
                ("--preset", args.preset),
                ("--backbone", args.backbone),
                ("--set", args.overrides),
                ("--out", args.out),
                ("--percent", args.percent != 100),
                ("--seeds", args.seeds),
            )
            if value
        ]
        if given:
            raise CLIError(
                f"--resume continues {args.resume} with the settings in its config.yaml; drop {', '.join(given)}"
            )
        run_dir = Path(args.resume)
    elif not args.preset:
        raise CLIError("train needs --preset NAME (see `timellm presets`), or --resume RUN_DIR")
    try:
        if args.resume:
            metrics = resume_run(run_dir, data_dir=args.data_dir)
        else:
            preset = _resolve_preset(args)
            run_dir = Path(args.out) if args.out else _default_run_dir(preset.name)
            command = _command_line(args)
            if args.seeds:
                summary = train_seeds(
                    preset, run_dir, args.seeds, data_dir=args.data_dir, percent=args.percent, command=command
                )
            else:
                metrics = train_and_test(
                    preset, run_dir, data_dir=args.data_dir, percent=args.percent, command=command
                )
    except NonFiniteLossError as err:
        print(f"timellm train: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    if not PartialState().is_main_process:
        return 0
    if args.seeds:
        print(f"\n{preset.name} over {len(args.seeds)} seeds (standardised scale; std: sample, ddof 1)")
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    else:
        _print_metrics(metrics, f"{metrics['dataset']}, horizon {metrics['pred_len']}")
    print(f"run folder: {run_dir}")
    return 0


def _command_line(args) -> str:
    """The command as typed (recorded in the run folder), from main()'s argv."""
    return "timellm " + " ".join(shlex.quote(a) for a in args.argv)


def cmd_m4(args) -> int:
    from timellm.data.m4 import get_frequency
    from timellm.evaluation.m4 import weighted_m4
    from timellm.experiments.presets import get_m4_preset
    from timellm.experiments.protocols import check_m4_files, run_m4

    frequencies = [get_frequency(f).name for f in args.frequency]
    if len(set(frequencies)) != len(frequencies):
        raise CLIError(f"--frequency names a frequency twice: {' '.join(args.frequency)}")
    presets = [_resolve_preset(args, get_m4_preset(f, args.variant)) for f in frequencies]
    for frequency in frequencies:  # every file first: no frequency trains before a missing one fails
        check_m4_files(frequency, args.data_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = Path(args.out) if args.out else Path("runs") / f"m4-{args.variant}-{stamp}"
    results = []
    for frequency, preset in zip(frequencies, presets, strict=True):
        run_dir = root / frequency if len(frequencies) > 1 else root
        results.append(
            run_m4(
                preset,
                frequency,
                run_dir,
                data_dir=args.data_dir,
                command=_command_line(args),
                reference=args.reference,
            )
        )
    if len(results) > 1:
        results.append({"frequency": "Average", **weighted_m4(results)})
    what = args.reference or presets[0].model.backbone
    print(f"\nM4, {what}: every series forecast from the end of its training series")
    print(f"{'frequency':<12}{'series':>8}{'SMAPE':>9}{'MASE':>9}{'OWA':>8}{'Naive2 SMAPE':>14}{'MASE':>8}")
    for r in results:
        print(
            f"{r['frequency']:<12}{r['series']:>8}{r['smape']:>9.3f}{r['mase']:>9.3f}{r['owa']:>8.3f}"
            f"{r['naive2_smape']:>14.3f}{r['naive2_mase']:>8.3f}"
        )
    print(f"run folder: {root}")
    return 0


def cmd_transfer(args) -> int:
    from timellm.experiments.protocols import transfer, transfer_preset

    preset = _resolve_preset(args, transfer_preset(args.source, args.pred_len, args.variant))
    run_dir = Path(args.out) if args.out else _default_run_dir(f"{preset.name}-to-{args.target}")
    metrics = transfer(preset, args.target, run_dir, data_dir=args.data_dir, command=_command_line(args))
    _print_metrics(
        metrics, f"zero-shot {preset.dataset} -> {metrics['test_dataset']}, horizon {preset.model.pred_len}"
    )
    print(f"run folder: {run_dir}")
    return 0


def cmd_report(args) -> int:
    from timellm.experiments.report import write_report

    written, markdown = write_report(args.runs_dir, args.out)
    print(markdown)
    for path in written.values():
        print(f"wrote {path} and {path.with_name(path.name.removeprefix('report_').replace('.md', '.csv'))}")
    return 0


def cmd_evaluate(args) -> int:
    from timellm.experiments.runs import evaluate_run

    metrics = evaluate_run(args.run_dir, args.data_dir)
    _print_metrics(metrics, f"{args.run_dir}")
    return 0


def cmd_presets(args) -> int:
    from timellm.experiments.presets import all_presets, execution_dict, m4_presets

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
            print(f"    model: {m.to_dict()}\n    train: {t.to_dict()}")
            print(f"    execution: {execution_dict(preset.execution)}\n    run: {preset.run}")
    return 0


def cmd_demo(args) -> int:
    from timellm.experiments.presets import get_preset
    from timellm.experiments.runs import train_and_test

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
    from timellm.model.modeling import TimeLLM

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


# ------------------------------------------------------------------------------------------------
# your own data: forecast, backtest, example-data

TRAINING_OPTIONS = ("backbone", "description", "max_steps", "val_size", "overrides", "save")


def _add_user_data_commands(sub) -> None:
    p = sub.add_parser(
        "forecast",
        help="train on a CSV/Parquet file of your series and forecast their next steps",
        description="Forecast every series of a CSV or Parquet file: a long table (unique_id, ds, y) or a "
        "wide one (--wide: a time column and one column per series). Trains an adapter first, unless "
        "--model names one already trained.",
    )
    _add_user_data_options(p)
    p.add_argument("--out", help="forecast file to write, .csv or .parquet (default: CSV on stdout)")
    p.add_argument(
        "--plot", help="also draw the recent history and the forecast of (up to six) series to this PNG"
    )
    _add_level_option(p, "add conformal prediction intervals: TimeLLM-lo-80, TimeLLM-hi-80, ... columns")
    p.add_argument("--save", help="save the trained adapter to this folder (reuse it with --model)")

    p = sub.add_parser(
        "backtest",
        help="forecast the last windows of your series and score them beside statistical baselines",
        description="Cross-validate on the end of every series: train on the data before the first "
        "cutoff (unless --model), forecast --windows windows of --horizon steps, and print MSE, MAE and "
        "MASE per series and overall beside AutoETS, AutoTheta, AutoARIMA, SeasonalNaive and Naive of "
        "statsforecast, fitted on the same history before each cutoff.",
    )
    _add_user_data_options(p)
    p.add_argument("--windows", type=int, default=1, help="windows per series (default 1)")
    p.add_argument("--step-size", type=int, help="steps between windows (default: the horizon)")
    p.add_argument(
        "--season",
        type=int,
        help="seasonal period of the statistical models and MASE (default: from the frequency)",
    )
    p.add_argument(
        "--baselines",
        default="all",
        help="statistical baselines: all (default), none, or a comma-separated list of "
        "AutoETS, AutoTheta, AutoARIMA, SeasonalNaive, Naive",
    )
    _add_level_option(p, "score prediction intervals: coverage and mean width of every model at each level")
    p.add_argument(
        "--plot",
        help="draw history, truth, Time-LLM and the best baseline of (up to four) series to this PNG",
    )
    p.add_argument("--out", help="also write the forecasts beside the truth to this .csv/.parquet file")

    p = sub.add_parser(
        "example-data", help="write a small real data set (two hourly series of ETTh1) as a long CSV"
    )
    p.add_argument("out", help="file to write (.csv or .parquet)")
    p.add_argument("--rows", type=int, default=1000, help="rows of the longer series (default 1000)")
    p.add_argument("--verbose", action="store_true", help="debug logging")


def _add_user_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="CSV or Parquet file")
    p.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    p.add_argument("--id-col", help="series id column of a long table (default unique_id)")
    p.add_argument("--time-col", help="time column (default ds)")
    p.add_argument("--target-col", help="value column of a long table (default y)")
    p.add_argument(
        "--wide", action="store_true", default=None, help="a time column and one column per series"
    )
    p.add_argument(
        "--interpolate",
        action="store_true",
        default=None,
        help="fill missing values and missing timestamps linearly instead of refusing them",
    )
    p.add_argument("--description", help="one or two sentences about the data, put into the prompt")
    p.add_argument(
        "--backbone", help="the frozen LLM: alias, folder, .gguf file or hub id (default smollm2-135m)"
    )
    p.add_argument(
        "--seq-len",
        type=_seq_len,
        default="auto",
        help="look-back steps, or auto (default): the longest <= 512 that leaves at least as many "
        "training windows as look-back steps in the shortest series",
    )
    p.add_argument("--max-steps", type=int, help="training budget in optimiser steps (default 100)")
    p.add_argument(
        "--val-size", type=int, help="steps at the end of each series for validation (default: horizon)"
    )
    _add_set(p, "a model or training setting")
    p.add_argument("--model", help="an adapter folder saved before (--save): forecast with it, no training")
    p.add_argument("--verbose", action="store_true", help="debug logging")


def _seq_len(text: str):
    """--seq-len: a positive integer or "auto"."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, found {text!r}") from None


def _add_level_option(p: argparse.ArgumentParser, purpose: str) -> None:
    p.add_argument(
        "--level",
        nargs="+",
        metavar="LEVEL",
        help=f"{purpose}; coverages in percent, strictly between 0 and 100, e.g. --level 80 95",
    )


def _levels(args) -> tuple:
    """--level as numbers (checked by the API: strictly between 0 and 100)."""
    from timellm.evaluation.statistical import check_levels

    if not args.level:
        return ()
    numbers = []
    for text in args.level:
        try:
            numbers.append(float(text))
        except ValueError:
            raise CLIError(
                f"--level takes coverages in percent between 0 and 100 (e.g. --level 80 95), found {text!r}"
            ) from None
    try:
        return check_levels(numbers)
    except ValueError as err:
        raise CLIError(f"--level: {err}") from None


def _forecaster(args):
    """A new forecaster from the options, or the one saved in --model (then nothing may train)."""
    from dataclasses import replace

    from timellm.experiments.presets import execution_settings, parse_overrides, split_settings
    from timellm.forecaster import DEFAULT_MAX_STEPS, DEFAULT_MODEL, DEFAULT_TRAIN, TimeLLMForecaster

    names = {
        "id_col": args.id_col,
        "time_col": args.time_col,
        "target_col": args.target_col,
        "wide": args.wide,
    }
    columns = {k: v for k, v in names.items() if v is not None}
    if args.model:
        given = [
            "--set" if name == "overrides" else f"--{name.replace('_', '-')}"
            for name in TRAINING_OPTIONS
            if getattr(args, name, None) not in (None, [])
        ]
        if given:
            raise CLIError(
                f"{', '.join(given)} would train a new adapter: leave {'it' if len(given) == 1 else 'them'} "
                f"out to forecast with --model {args.model}, or leave out --model to train"
            )
        seq_len = None if args.seq_len == "auto" else args.seq_len  # a saved adapter has its own
        forecaster = TimeLLMForecaster.from_pretrained(args.model, horizon=args.horizon, seq_len=seq_len)
        forecaster.format = replace(forecaster.format, **columns)
        if args.interpolate:
            forecaster.interpolate = True
        return forecaster
    settings = split_settings(parse_overrides(args.overrides), sections=("model", "train", "execution"))
    model = settings["model"]
    if "pred_len" in model:
        raise CLIError("--set pred_len: the horizon is --horizon")
    return TimeLLMForecaster(
        args.horizon,
        # --set seq_len=N is a look-back given explicitly too: then the config's is kept
        seq_len=None if args.seq_len == "auto" and "seq_len" in model else args.seq_len,
        backbone=args.backbone,
        description=args.description,
        config=DEFAULT_MODEL.replace(**model),
        train_config=DEFAULT_TRAIN.replace(**settings["train"]),
        execution=execution_settings(settings["execution"]),
        max_steps=DEFAULT_MAX_STEPS if args.max_steps is None else args.max_steps,
        val_size=args.val_size,
        interpolate=bool(args.interpolate),
        **columns,
    )


def _write(frame, path: str) -> None:
    from timellm.data.frames import write_table

    try:
        write_table(frame, path)
    except OSError as err:
        raise CLIError(f"cannot write {path}: {err.strerror or err}") from None


def _check_outputs(args) -> None:
    """Every output writable, in a format that can be written here, before any training."""
    from timellm.data.frames import check_output_path, check_table_path

    if getattr(args, "out", None):
        check_table_path(args.out, "--out file")
    if getattr(args, "save", None):
        check_output_path(args.save, "--save folder", folder=True)
    if getattr(args, "plot", None):
        if Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
            raise CLIError(f"--plot {args.plot}: expected a file name ending in {', '.join(PLOT_SUFFIXES)}")
        check_output_path(args.plot, "--plot file")


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")  # what matplotlib writes without extras

# API settings as error messages below the CLI name them, and the options that set them here
SETTING_FLAGS = {
    "seq_len": "--seq-len",
    "val_size": "--val-size",
    "max_steps": "--max-steps",
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
    import re
    from dataclasses import fields

    from timellm.model.config import TimeLLMConfig
    from timellm.training.config import TrainConfig

    for setting, switch in SWITCHES.items():
        message = re.sub(rf"\b{re.escape(setting)}", switch, message)
    settings = {f.name for f in fields(TimeLLMConfig)} | {f.name for f in fields(TrainConfig)}

    def flag(match: re.Match) -> str:
        name = match.group(1)
        if name in SETTING_FLAGS:
            return f"{SETTING_FLAGS[name]} "
        return f"--set {name}=" if name in settings else match.group(0)

    return re.sub(r"(?<![\w.-])([a-z][a-z0-9_]*)=", flag, message)


def cmd_forecast(args) -> int:
    from timellm.data.frames import read_table

    levels = _levels(args)
    forecaster = _forecaster(args)  # option errors before any file is read
    _check_outputs(args)
    frame = read_table(args.data, forecaster.format)
    if not args.model:
        forecaster.fit(frame)
    forecasts = forecaster.predict(frame if args.model else None, level=levels)
    series = forecasts[forecaster.format.id_col].nunique()
    if args.out:  # the forecasts first: a failing --save must not lose them
        _write(forecasts, args.out)
        print(
            f"wrote {len(forecasts)} forecasts ({series} series x {forecaster.horizon} steps) to {args.out}"
        )
    else:
        forecasts.to_csv(sys.stdout, index=False)
    if args.save:
        try:
            forecaster.save_pretrained(args.save)
        except OSError as err:
            raise CLIError(f"cannot save the adapter to {args.save}: {err.strerror or err}") from None
    if args.plot:
        from timellm.plotting import plot_series_forecasts

        history = forecaster.prepare(frame).to_frame()
        fmt = forecaster.format
        try:
            plot_series_forecasts(
                history,
                forecasts,
                args.plot,
                id_col=fmt.id_col,
                time_col=fmt.time_col,
                target_col="y" if fmt.wide else fmt.target_col,
                model_col=forecaster.alias,
            )
        except OSError as err:
            raise CLIError(f"cannot write {args.plot}: {err.strerror or err}") from None
        logger.info("plot: %s", args.plot)
    if args.save:
        logger.info("adapter saved to %s (reuse it: --model %s)", args.save, args.save)
    return 0


def cmd_backtest(args) -> int:
    import math

    from timellm.data.frames import read_table
    from timellm.evaluation.statistical import parse_baselines

    levels = _levels(args)
    baselines = parse_baselines(args.baselines)
    forecaster = _forecaster(args)
    _check_outputs(args)
    frame = read_table(args.data, forecaster.format)
    if args.model:
        logger.warning(
            "--model: the adapter is used as saved; if it was trained on these windows, the scores flatter it"
        )
    cv, scores = forecaster.backtest(
        frame,
        args.windows,
        args.step_size,
        refit=not args.model,
        season=args.season,
        baselines=baselines,
        level=levels,
    )
    fmt = forecaster.format
    seasons = sorted(set(scores.attrs["season"].values()))
    cutoffs = cv["cutoff"]
    print(
        f"backtest: {args.windows} window(s) x horizon {forecaster.horizon} per series, look-back "
        f"{forecaster.seq_len}, cutoffs {cutoffs.min()} to {cutoffs.max()}; seasonal period "
        f"{', '.join(map(str, seasons))} (statistical models and MASE); MSE and MAE on the data's own "
        "scale; seconds: fit + forecast of every window; * best MASE of the series"
    )
    width = max(12, *(len(str(v)) + 2 for v in scores[fmt.id_col]))
    interval_columns = [c for lv in levels for c in (f"coverage-{lv:g}", f"width-{lv:g}")]
    header = f"{'series':<{width}}{'model':<16}{'MSE':>12}{'MAE':>12}{'MASE':>9}"
    header += "".join(f"{c.replace('coverage', 'cover'):>12}" for c in interval_columns)
    print(header + f"{'seconds':>9}")
    previous = None
    for row in scores.to_dict("records"):
        sid = row[fmt.id_col]
        label, previous = (str(sid) if sid != previous else ""), sid
        mase = "n/a" if math.isnan(row["MASE"]) else f"{row['MASE']:.3f}"
        line = f"{label:<{width}}{row['model']:<16}{row['MSE']:>12.4g}{row['MAE']:>12.4g}{mase:>9}"
        line += "".join(f"{row[c]:>12.3g}" for c in interval_columns)
        seconds = "" if math.isnan(row["seconds"]) else f"{row['seconds']:.1f}"
        print(line + f"{seconds:>9}" + (" *" if row["best"] else ""))
    if args.out:
        _write(cv, args.out)
        print(f"forecasts beside the truth: {args.out}")
    if args.plot:
        from timellm.plotting import plot_backtest

        history = forecaster.history.to_frame()
        best = _best_baselines(scores, fmt.id_col, baselines)
        try:
            plot_backtest(
                history,
                cv,
                args.plot,
                best,
                id_col=fmt.id_col,
                time_col=fmt.time_col,
                target_col="y" if fmt.wide else fmt.target_col,
                model_col=forecaster.alias,
                level=max(levels) if levels else None,
            )
        except OSError as err:
            raise CLIError(f"cannot write {args.plot}: {err.strerror or err}") from None
        print(f"plot: {args.plot}")
    return 0


def _best_baselines(scores, id_col: str, baselines: tuple) -> dict:
    """The baseline of lowest MASE (MAE where MASE is undefined) of every series."""
    best = {}
    for sid, group in scores[scores["model"].isin(baselines)].groupby(id_col, sort=False):
        key = "MASE" if group["MASE"].notna().any() else "MAE"
        if sid != "overall" and group[key].notna().any():
            best[sid] = group.loc[group[key].idxmin(), "model"]
    return best


def cmd_example_data(args) -> int:
    from timellm.data.frames import example_frame

    frame = example_frame(args.rows)
    _write(frame, args.out)
    sizes = frame.groupby("unique_id", sort=False).size()
    shown = ", ".join(f"{sid} ({n} rows)" for sid, n in sizes.items())
    print(f"wrote {args.out}: hourly ETTh1 series {shown} in long format (unique_id, ds, y)")
    return 0


USER_DATA_COMMANDS = {"forecast": cmd_forecast, "backtest": cmd_backtest, "example-data": cmd_example_data}
FLAG_COMMANDS = ("forecast", "backtest", "ablate")  # errors name these commands' options, not API settings


def cmd_ablate(args) -> int:
    from timellm.data.sources import DataSource
    from timellm.experiments.ablation import TABLE_CSV, ablation_markdown, run_ablation, run_ablation_seeds

    preset = _resolve_preset(args)
    source = None
    if args.csv:
        source = DataSource(
            csv=str(Path(args.csv).resolve()),
            time_col=args.time_col,
            id_col=args.id_col,
            target_cols=tuple(args.target_cols) if args.target_cols else None,
            period=args.period,
        )
    elif any(v is not None for v in (args.time_col, args.id_col, args.target_cols, args.period)):
        raise CLIError(
            "--time-col, --id-col, --target-col and --period describe a --csv file; none was given"
        )
    if args.description:
        preset = preset.with_overrides({"description": args.description})
    name = source.name if source else preset.name
    run_dir = Path(args.out) if args.out else _default_run_dir(f"ablate-{name}")
    command = _command_line(args)
    settings = dict(
        variants=args.variants, budget=args.budget, data_dir=args.data_dir, source=source, command=command
    )
    if args.seeds and len(args.seeds) > 1:
        table = run_ablation_seeds(preset, run_dir, args.seeds, **settings)
    else:
        if args.seeds:
            preset = preset.with_overrides({"seed": args.seeds[0]})
        table = run_ablation(preset, run_dir, **settings)
    windows = int(table["test_windows"].max())
    print(f"\n{name}, horizon {preset.model.pred_len}, {windows} test windows, standardised scale")
    print(ablation_markdown(table))
    print(f"table: {run_dir / TABLE_CSV}")
    return 0


def cmd_explain(args) -> int:
    from timellm.experiments.explain import explain_run

    result = explain_run(
        args.run_dir,
        window=args.window,
        channel=args.channel,
        top_words=args.top_words,
        top_prototypes=args.top_prototypes,
        heatmap=args.heatmap,
        data_dir=args.data_dir,
    )
    words = result["words"]
    shown = words if args.prototypes is None else words[: args.prototypes]
    print(f"text prototypes: nearest vocabulary words (cosine similarity), {len(shown)} of {len(words)}")
    for w in shown:
        pairs = ", ".join(f"{word} {sim:.2f}" for word, sim in zip(w.words, w.similarities, strict=True))
        print(f"  #{w.prototype:<5}{pairs}")
    explanation = result["explanation"]
    print(f"\n{result['dataset']} test window {result['window']}, channel {result['channel']}")
    print(f"prompt: {explanation.prompt or '(none: the model runs without a prompt)'}")
    print("most attended prototypes (mean attention over patches and heads):")
    for index, weight in explanation.top_prototypes:
        print(f"  #{index:<5}{weight:.3f}  {', '.join(words[index].words)}")
    if result["heatmap"] is not None:
        print(f"heat map: {result['heatmap']}")
    return 0


def cmd_bench(args) -> int:
    from timellm.experiments.speed import report, speed_benchmark

    frame = speed_benchmark(
        backbone=args.backbone,
        layers=args.layers,
        batch=args.batch,
        steps=args.steps,
        infer_steps=args.infer_steps,
        warmup=args.warmup,
        dtypes=args.dtypes,
        paths=args.paths,
        modes=args.modes,
        mallocs=args.malloc,
        threads=args.threads,
        data=args.data,
        breakdown=not args.no_breakdown,
        ladder=not args.no_ladder,
        plain_attention=args.plain_attention,
        plain_fused_adam=args.plain_fused_adam,
        gradient_checkpointing=args.gradient_checkpointing,
        compile=args.compile,
        compile_scope=args.compile_scope,
        infer_batches=args.infer_batches,
        profile=args.profile,
        out=args.out,
    )
    print(report(frame))  # the tables are the product of this command
    return 0


COMMANDS = {
    "ablate": cmd_ablate,
    "explain": cmd_explain,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "presets": cmd_presets,
    "demo": cmd_demo,
    "info": cmd_info,
    "bench": cmd_bench,
    "m4": cmd_m4,
    "transfer": cmd_transfer,
    "report": cmd_report,
}
COMMANDS.update(USER_DATA_COMMANDS)


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
    from timellm.experiments.presets import PresetError
    from timellm.model.modeling import AdapterLoadError
    from timellm.training.loop import NonFiniteLossError

    try:
        code = COMMANDS[args.command](args)
        _leave_process_group()
        return code
    except (
        CLIError,
        PresetError,
        DataError,
        BackboneError,
        AdapterLoadError,
        FileNotFoundError,
        ValueError,
    ) as err:
        message = with_phrases(str(err))
        if args.command in FLAG_COMMANDS:
            message = with_flags(message)
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
