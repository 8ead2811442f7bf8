"""The researcher's commands: train and evaluate presets on the paper's benchmarks, the M4 and
zero-shot protocols, reports, ablations, explanations, the speed benchmark, presets and model
information. They run the experiment harness (:mod:`timellm.experiments`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from timellm.cli.common import (
    EXIT_FAILURE,
    CLIError,
    add_common,
    add_dry_run,
    add_set,
    command_line,
    print_memory_plan,
    print_metrics,
    with_flags,
)
from timellm.model.precision import PRECISIONS


def add_commands(sub) -> None:
    """The researcher's subcommands, on ``sub`` (the parser's subparsers)."""
    _add_training_commands(sub)
    _add_protocol_commands(sub)
    _add_analysis_commands(sub)
    _add_bench_commands(sub)
    _add_preset_commands(sub)


def _add_training_commands(sub) -> None:
    """train and evaluate: a preset on its benchmark, a run folder re-tested."""
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
    add_dry_run(p)
    add_common(p)

    p = sub.add_parser("evaluate", help="re-test a run folder's adapter on its whole test split")
    p.add_argument("run_dir")
    p.add_argument(
        "--save",
        action="store_true",
        help="also write the scores to RUN_DIR/metrics_whole_test.json (the long-term table reads it "
        "for a converged ablation's Time-LLM run tested on a subset)",
    )
    add_common(p)


def _add_protocol_commands(sub) -> None:
    """m4 and transfer: the paper's short-term and zero-shot protocols."""
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
    add_common(p)

    p = sub.add_parser(
        "transfer", help="zero-shot: train and select on --source, test on --target's test split"
    )
    p.add_argument("--source", required=True, help="benchmark to train and select on, e.g. ETTh1")
    p.add_argument("--target", required=True, help="benchmark whose test split is forecast, e.g. ETTh2")
    p.add_argument("--pred-len", type=int, default=96, help="horizon: picks the preset <source>-<pred_len>")
    _add_protocol_options(p, "<source>-<pred_len>")
    add_common(p)


def _add_analysis_commands(sub) -> None:
    """report, ablate and explain: what runs found, beside the ablations, and why."""
    p = sub.add_parser(
        "report", help="gather run folders into one Markdown and CSV table per protocol, beside the paper"
    )
    p.add_argument("runs_dir", help="folder searched (recursively) for run folders")
    p.add_argument("--out", help="folder for <protocol>.csv and report_<protocol>.md (default: RUNS_DIR)")
    p.add_argument(
        "--update",
        action="store_true",
        help="keep the rows of the ablation summary already in --out that these runs do not replace "
        "(the same dataset, horizon, variant and seed), and their learning-rate tries",
    )

    p = sub.add_parser(
        "ablate",
        help="Time-LLM beside its ablations and baselines under one budget: one table (Tan et al.)",
    )
    _add_training(p)
    add_dry_run(p)
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
    add_common(p)

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
    add_common(p)


def _add_bench_commands(sub) -> None:
    """bench speed and bench memory."""
    p = sub.add_parser(
        "bench", help="benchmarks: `timellm bench speed` (fast vs plain path), `timellm bench memory`"
    )
    bench = p.add_subparsers(dest="which", required=True, metavar="BENCHMARK")
    _add_speed_bench(bench)
    _add_memory_bench(bench)


def _add_speed_bench(bench) -> None:
    """bench speed: the options of :class:`timellm.experiments.speed.SpeedSettings`."""
    p = bench.add_parser(
        "speed",
        help="throughput, memory and FLOP rate of the fast and the plain path on ETTh1 windows",
        description="Speed of the plain and the fast path on ETTh1 windows: throughput, peak memory, "
        "FLOP/s against this CPU's matmul peak; every configuration in a fresh process.",
    )
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--layers", type=int, default=6, help="LLM layers kept")
    p.add_argument("--batch", type=int, default=32, help="series per step (windows of one channel)")
    p.add_argument(
        "--set",
        dest="model_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model setting of every configuration, e.g. --set num_prototypes=100 (the -cpu presets' shape)",
    )
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


def _add_memory_bench(bench) -> None:
    """bench memory: the options of :class:`timellm.experiments.memory_bench.MemoryBenchSettings`."""
    p = bench.add_parser(
        "memory",
        help="memory after the load and peak memory of training and inference, by backbone and weight storage",
        description="The paper's ETTh1-96 model (all layers, 1000 prototypes) on each backbone and weight "
        "storage, each in a fresh process: resident set after the load, peaks of inference and of Adam "
        "steps beside the estimate, series per second and the share of the matmul peak. Cells the "
        "estimate says cannot fit are listed, not run. Writes memory.csv and memory.md.",
    )
    p.add_argument(
        "--backbones",
        type=_name_list,
        default="smollm2-135m,random-llama-1b,random-llama-7b",
        help="comma-separated backbone specs (random-llama-7b: LLaMA-7B's shape, random weights)",
    )
    p.add_argument("--weights", type=_name_list, default="fp32,bf16,int8", help="storages to compare")
    p.add_argument("--batch", type=int, default=1, help="ETTh1 windows a batch (x 7 channels)")
    p.add_argument("--steps", type=int, default=2, help="Adam steps (the last is timed)")
    p.add_argument("--infer-steps", type=int, default=2, help="inference batches (the last is timed)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute backbone layers in backward"
    )
    p.add_argument(
        "--data", default=None, help="ETTh1.csv(.gz) (default: $TIMELLM_DATA, else the packaged copy)"
    )
    p.add_argument(
        "--llm-batch",
        type=int,
        default=None,
        help="series through the LLM at once in inference (execution llm_batch)",
    )
    p.add_argument("--out", default="results", help="folder for memory.csv and memory.md")


def _add_preset_commands(sub) -> None:
    """presets and info: the packaged presets, and what one needs before anything loads."""
    p = sub.add_parser("presets", help="list the packaged presets")
    p.add_argument("--all", action="store_true", help="show every setting of each preset")

    p = sub.add_parser(
        "info",
        help="parameter counts and the memory a preset needs, estimated from its config (nothing is loaded)",
    )
    p.add_argument("--preset", default="ETTh1-96", help="preset (default ETTh1-96: the paper's settings)")
    p.add_argument("--backbone", help="backbone (overrides the preset)")
    add_set(p)
    p.add_argument(
        "--data-dir", help="folder holding the benchmark files (default: $TIMELLM_DATA): its channels"
    )


def _add_training(parser: argparse.ArgumentParser, preset_required: bool = True) -> None:
    parser.add_argument(
        "--preset",
        required=preset_required,
        help="a preset name, e.g. ETTh1-96 or ETTh1-96-cpu (see `timellm presets`)",
    )
    _add_preset_overrides(parser)


def _add_preset_overrides(parser: argparse.ArgumentParser) -> None:
    """--backbone, --set and --out: what every command that runs a preset takes."""
    parser.add_argument(
        "--backbone", help="backbone alias, folder, .gguf file or hub id (overrides the preset)"
    )
    add_set(parser)
    parser.add_argument("--out", help="run folder to write (default: runs/<preset>-<time>)")


def _add_protocol_options(parser: argparse.ArgumentParser, preset: str) -> None:
    parser.add_argument(
        "--variant",
        default="cpu",
        help=f"preset variant: cpu (default: sized for a CPU, see `timellm presets`) or paper "
        f"(the paper's settings, for a GPU); the preset is {preset}[-<variant>]",
    )
    _add_preset_overrides(parser)
    add_dry_run(parser)


def _name_list(text: str) -> list[str]:
    """``"plain,fast"`` -> ``["plain", "fast"]``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, found {text!r}")
    return names


def _integers(text: str) -> list[int] | None:
    """``"1,2,3"`` -> ``[1, 2, 3]``; None where a part is not an integer or there is none."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return None
    return numbers or None


def _int_list(text: str) -> list[int]:
    numbers = _integers(text)
    if numbers is None or min(numbers) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, found {text!r}")
    return numbers


def _seed_list(text: str) -> list[int]:
    seeds = _integers(text)
    if seeds is None or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected distinct integer seeds, comma-separated, e.g. 2021,2022,2023; found {text!r}"
        )
    return seeds


def _resolve_preset(args, preset=None):
    """``preset`` (default: the one --preset names) with --backbone and --set applied."""
    from timellm.experiments.presets import get_preset
    from timellm.settings import parse_overrides

    overrides = parse_overrides(args.overrides)
    if getattr(args, "backbone", None):
        overrides["backbone"] = args.backbone
    return (preset if preset is not None else get_preset(args.preset)).with_overrides(overrides)


def _default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


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
    if args.dry_run:
        return _dry_run_train(args)
    try:
        if args.resume:
            metrics = resume_run(run_dir, data_dir=args.data_dir)
        else:
            preset = _resolve_preset(args)
            run_dir = Path(args.out) if args.out else _default_run_dir(preset.name)
            command = command_line(args)
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
        print_metrics(metrics, f"{metrics['dataset']}, horizon {metrics['pred_len']}")
    print(f"run folder: {run_dir}")
    return 0


def _dry_run_train(args) -> int:
    """train --dry-run: the run's settings resolved and its data read, the memory plan printed."""
    from timellm.experiments.planning import plan_run
    from timellm.experiments.runs import recorded_preset

    if args.resume:
        preset, record = recorded_preset(args.resume)
        percent, test_dataset = record.get("percent", 100), record.get("test_dataset")
    else:
        preset, percent, test_dataset = _resolve_preset(args), args.percent, None
    plans = plan_run(preset, data_dir=args.data_dir, percent=percent, test_dataset=test_dataset)
    return print_memory_plan(plans, f"timellm train, preset {preset.name}")


def cmd_m4(args) -> int:
    from timellm.data.m4 import get_frequency
    from timellm.evaluation.m4 import weighted_m4
    from timellm.experiments.presets import get_m4_preset
    from timellm.experiments.protocols import check_m4_files, plan_m4, run_m4

    frequencies = [get_frequency(f).name for f in args.frequency]
    if len(set(frequencies)) != len(frequencies):
        raise CLIError(f"--frequency names a frequency twice: {' '.join(args.frequency)}")
    presets = [_resolve_preset(args, get_m4_preset(f, args.variant)) for f in frequencies]
    if args.dry_run:
        for frequency, preset in zip(frequencies, presets, strict=True):
            plans = plan_m4(preset, frequency, data_dir=args.data_dir, reference=args.reference)
            print_memory_plan(plans, f"timellm m4, {frequency} (preset {preset.name})")
        return 0
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
                command=command_line(args),
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
    from timellm.experiments.protocols import plan_transfer, transfer, transfer_preset

    preset = _resolve_preset(args, transfer_preset(args.source, args.pred_len, args.variant))
    if args.dry_run:
        plans = plan_transfer(preset, args.target, data_dir=args.data_dir)
        return print_memory_plan(plans, f"timellm transfer, preset {preset.name} to {args.target}")
    run_dir = Path(args.out) if args.out else _default_run_dir(f"{preset.name}-to-{args.target}")
    metrics = transfer(preset, args.target, run_dir, data_dir=args.data_dir, command=command_line(args))
    print_metrics(
        metrics, f"zero-shot {preset.dataset} -> {metrics['test_dataset']}, horizon {preset.model.pred_len}"
    )
    print(f"run folder: {run_dir}")
    return 0


def cmd_report(args) -> int:
    from timellm.experiments.report import write_report

    written, markdown = write_report(args.runs_dir, args.out, update=args.update)
    print(markdown)
    for path in written.values():
        print(f"wrote {path} and {path.with_name(path.name.removeprefix('report_').replace('.md', '.csv'))}")
    return 0


def cmd_evaluate(args) -> int:
    from timellm.experiments.runs import evaluate_run

    metrics = evaluate_run(args.run_dir, args.data_dir)
    print_metrics(metrics, f"{args.run_dir}")
    if args.save:
        from timellm.experiments.folders import WHOLE_TEST, RunFolder

        RunFolder(args.run_dir).write_metrics(metrics, WHOLE_TEST)
        print(f"scores written to {Path(args.run_dir) / WHOLE_TEST}")
    return 0


def cmd_presets(args) -> int:
    from timellm.experiments.presets import all_presets, m4_presets
    from timellm.settings import execution_dict

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


def cmd_info(args) -> int:
    """Sizes and the memory a preset needs, from its config alone: nothing is loaded. The memory is
    the plan that `train` refuses by (:mod:`timellm.experiments.planning`), on the data's channels."""
    from timellm.experiments.planning import plan_run
    from timellm.model.config import LLM_FREE
    from timellm.model.memory import GiB, adapter_parameters, llm_shape

    preset = _resolve_preset(args)
    c = preset.model
    print(f"preset {preset.name}, backbone {c.backbone}")
    shape = None
    if c.llm not in LLM_FREE:
        shape = llm_shape(c.backbone, c.llm_layers, c.trust_remote_code)
        print(
            f"backbone: width {shape.hidden}, vocabulary {shape.vocab}, {shape.layers} layers used, "
            f"{shape.parameters:,} frozen parameters"
        )
    print(f"trainable parameters: {adapter_parameters(c, shape):,}")
    plans = plan_run(preset, data_dir=args.data_dir)
    e = plans[0].estimate
    execution = preset.execution
    print(
        f"memory, estimated before loading (weights {e.storage}, computing in {e.compute} on "
        f"{plans[0].device}; gradient checkpointing {'on' if execution.gradient_checkpointing else 'off'}"
        f"{f'; llm_batch {execution.llm_batch}' if execution.llm_batch else ''}):"
    )
    for plan in plans:
        print(f"  {plan.describe()}{'' if plan.fits else ' (does not fit)'}")
    room = plans[0].available
    print(
        f"  available on {plans[0].device}: "
        + (f"{room / GiB:.1f} GiB" if room is not None else "cannot be read here")
    )
    for plan in plans:
        if not plan.fits:
            print(f"  {plan.batch.describe()}: {with_flags(plan.advice, vars(args))}")
    return 0


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
    if args.dry_run:
        return _dry_run_ablate(preset, source, args)
    run_dir = Path(args.out) if args.out else _default_run_dir(f"ablate-{name}")
    command = command_line(args)
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


def _dry_run_ablate(preset, source, args) -> int:
    """ablate --dry-run: the variants and the data resolved, each variant with an LLM's memory plan
    printed (the plan the ablation refuses by); exit status 2 where one would not fit."""
    from timellm.data.sources import DataSource
    from timellm.experiments.ablation import check_borrowed_rates, plan_ablation, resolve_variants

    variants = resolve_variants(args.variants)
    if args.out:  # a variant that trains at Time-LLM's rate needs it there (the ablation's own check)
        check_borrowed_rates(args.out, variants, args.budget)
    source = source or DataSource(benchmark=preset.dataset)
    splits = source.load(preset.model.seq_len, preset.model.pred_len, args.data_dir)
    status = 0
    for variant, plans in plan_ablation(preset, variants, args.budget, splits):
        status = max(status, print_memory_plan(plans, f"timellm ablate, {variant.label} ({preset.name})"))
    return status


def cmd_explain(args) -> int:
    from timellm.experiments.explain import explain_run

    options = (
        "window",
        "channel",
        "top_words",
        "top_prototypes",
        "heatmap",
        "data_dir",
    )  # named as the API's
    result = explain_run(args.run_dir, **{name: getattr(args, name) for name in options})
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
    if args.which == "memory":
        from timellm.experiments.memory_bench import MemoryBenchSettings, markdown, memory_benchmark

        # --batch, --steps and --infer-steps are shorter than the settings they set
        settings = _bench_settings(
            MemoryBenchSettings,
            args,
            batch_size=args.batch,
            train_steps=args.steps,
            infer_batches=args.infer_steps,
        )
        print(markdown(memory_benchmark(settings)))  # the table is the product of this command
        return 0
    from timellm.experiments.speed import SpeedSettings, report, speed_benchmark
    from timellm.settings import parse_overrides, split_settings

    # the three whose options read better negated or singular
    settings = _bench_settings(
        SpeedSettings,
        args,
        mallocs=tuple(args.malloc),
        breakdown=not args.no_breakdown,
        ladder=not args.no_ladder,
        model_changes=split_settings(parse_overrides(args.model_settings), ("model",))["model"],
    )
    print(report(speed_benchmark(settings)))  # the tables are the product of this command
    return 0


def _bench_settings(settings_class, args, **named_otherwise):
    """A benchmark's settings from the options named as its fields (comma-separated lists as
    tuples), and ``named_otherwise``: the settings whose options carry other names."""
    from dataclasses import fields

    given = {f.name: getattr(args, f.name) for f in fields(settings_class) if hasattr(args, f.name)}
    given = {name: tuple(value) if isinstance(value, list) else value for name, value in given.items()}
    return settings_class(**given, **named_otherwise)


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "m4": cmd_m4,
    "transfer": cmd_transfer,
    "report": cmd_report,
    "ablate": cmd_ablate,
    "explain": cmd_explain,
    "bench": cmd_bench,
    "presets": cmd_presets,
    "info": cmd_info,
}
