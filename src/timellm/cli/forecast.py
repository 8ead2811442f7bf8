"""The practitioner's commands: forecast and backtest your own series (CSV or Parquet), write the
example data, and the demo. Nothing here imports the experiment harness except the demo, which
trains a packaged preset."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from contextlib import contextmanager
from pathlib import Path

from timellm.cli.common import (
    CLIError,
    add_common,
    add_dry_run,
    add_set,
    logger,
    print_memory_plan,
    print_metrics,
    with_flags,
)


def add_commands(sub) -> None:
    """The practitioner's subcommands, on ``sub`` (the parser's subparsers)."""
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
        "MASE (and with --level coverage, width and MSIS) per series and overall beside AutoETS, "
        "AutoTheta, AutoARIMA, SeasonalNaive and Naive of statsforecast, fitted on the same history "
        "before each cutoff. Above a season of 24 (weekly data: 52) AutoETS and AutoARIMA run on the "
        "seasonally adjusted series of an STL decomposition, named MSTL-AutoETS and MSTL-AutoARIMA. "
        "An extra row, Combination, scores the median of the forecasts of Time-LLM and the automatic "
        "statistical models.",
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
    p.add_argument(
        "--baseline-budget",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time each statistical baseline may take over all windows; one past it is dropped with a "
        "warning (default 60; 0: no limit)",
    )
    _add_level_option(
        p,
        "score prediction intervals: coverage, mean width and MSIS (M4's mean scaled interval score) of "
        "every model at each level",
    )
    p.add_argument(
        "--plot",
        help="draw history, truth, Time-LLM and the best baseline of (up to four) series to this PNG",
    )
    p.add_argument("--out", help="also write the forecasts beside the truth to this .csv/.parquet file")
    p.add_argument("--scores", help="also write the scores table to this .csv/.parquet file")

    p = sub.add_parser(
        "example-data", help="write a small real data set (two hourly series of ETTh1) as a long CSV"
    )
    p.add_argument("out", help="file to write (.csv or .parquet)")
    p.add_argument("--rows", type=int, default=1000, help="rows of the longer series (default 1000)")
    p.add_argument("--verbose", action="store_true", help="debug logging")

    p = sub.add_parser("demo", help="train briefly on ETTh1 with SmolLM2, test, save the adapter and a plot")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    add_common(p)


TRAINING_OPTIONS = (
    "backbone",
    "description",
    "max_steps",
    "time_budget",
    "ensemble",
    "calibration_origins",
    "val_size",
    "overrides",
    "save",
)


def _add_user_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="CSV or Parquet file")
    p.add_argument(
        "--horizon", type=int, help="steps to forecast (required, unless --model names an adapter: its own)"
    )
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
    p.add_argument(
        "--max-steps",
        type=int,
        help="a training budget in optimiser steps (default: train to the validation optimum, up to "
        "50 epochs of at most 25 steps, early stopping after 5 without improvement)",
    )
    p.add_argument(
        "--time-budget",
        type=_seconds,
        help="the longest a training may take, e.g. 600, 90s, 10m or 1h (default 10m): no epoch starts "
        "after it and the best epoch so far is kept; none: no limit",
    )
    p.add_argument(
        "--ensemble",
        type=int,
        help="adapters trained with consecutive seeds on an equal share of --max-steps each, their "
        "forecasts averaged (default 1)",
    )
    p.add_argument(
        "--calibration-origins",
        type=int,
        help="more held-out forecasts for the intervals: K rolling origins, each an adapter trained "
        "without the last K x --val-size steps that forecasts the steps after them (one training "
        "more each; default 0)",
    )
    p.add_argument(
        "--val-size",
        type=int,
        help="steps at the end of each series for validation and interval calibration (default: the "
        "horizon + 19, twenty windows, where the series are long enough; else the horizon)",
    )
    add_set(p, "a model or training setting")
    p.add_argument("--model", help="an adapter folder saved before (--save): forecast with it, no training")
    add_dry_run(p)
    p.add_argument("--verbose", action="store_true", help="debug logging")


def _seq_len(text: str):
    """--seq-len: a positive integer or "auto"."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, found {text!r}") from None


def _seconds(text: str) -> float:
    """--time-budget: seconds (600), with a unit (90s, 10m, 1h), or none (0.0: no limit)."""
    if text.strip().lower() == "none":
        return 0.0
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1].lower()]) if text and text[-1].lower() in units else (text, 1)
    try:
        value = float(number) * unit
    except ValueError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive time such as 600, 90s, 10m or 1h, or none, found {text!r}"
        )
    return value


def _add_level_option(p: argparse.ArgumentParser, purpose: str) -> None:
    p.add_argument(
        "--level",
        nargs="+",
        metavar="LEVEL",
        help=f"{purpose}; coverages in percent, strictly between 0 and 100 (80, not 0.8), e.g. --level 80 95",
    )


def _levels(args) -> tuple:
    """--level as numbers (checked by the API: percentages from 1 to below 100)."""
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


# training settings that say how a saved adapter forecasts, not what it learns: --model takes them
FORECAST_TRAIN_SETTINGS = ("eval_batch_size",)


def _saved_model_options(args) -> dict:
    """With --model: what loading (or planning) the saved adapter takes from the options, as
    ``from_pretrained``'s keywords: the horizon and look-back asked for, and the execution settings
    and eval_batch_size of --set; an option or a setting that would train a new adapter is refused."""
    from timellm.settings import execution_settings, parse_overrides, split_settings

    # execution settings (how the saved adapter runs: weights=bf16, llm_batch=1, ...) and the
    # forecast batch (train.eval_batch_size) may be given; anything else would train a new adapter
    settings = split_settings(parse_overrides(args.overrides), sections=("model", "train", "execution"))
    forecasting = {k: v for k, v in settings["train"].items() if k in FORECAST_TRAIN_SETTINGS}
    trains = [
        f"--set {name}"
        for name in [*settings["model"], *(k for k in settings["train"] if k not in forecasting)]
    ]
    given = [
        f"--{name.replace('_', '-')}"
        for name in TRAINING_OPTIONS
        if name != "overrides" and getattr(args, name, None) not in (None, [])
    ]
    if given + trains:
        what = given + trains
        raise CLIError(
            f"{', '.join(what)} would train a new adapter: leave {'it' if len(what) == 1 else 'them'} "
            f"out to forecast with --model {args.model}, or leave out --model to train (with --model, "
            "--set takes how the adapter runs: weights=..., llm_batch=..., train.eval_batch_size=... "
            "and the other execution settings)"
        )
    return {
        "horizon": args.horizon,
        "seq_len": None if args.seq_len == "auto" else args.seq_len,  # a saved adapter has its own
        "execution": execution_settings(settings["execution"]),
        "eval_batch_size": forecasting.get("eval_batch_size"),
    }


def _forecaster(args):
    """A new forecaster from the options, or the one saved in --model (then nothing may train)."""
    from dataclasses import replace

    from timellm.forecaster import (
        DEFAULT_MAX_STEPS,
        DEFAULT_MODEL,
        DEFAULT_TIME_BUDGET,
        DEFAULT_TRAIN,
        TimeLLMForecaster,
    )
    from timellm.settings import execution_settings, parse_overrides, split_settings

    columns = _columns(args)
    _require_horizon(args)
    if args.model:
        forecaster = TimeLLMForecaster.from_pretrained(args.model, **_saved_model_options(args))
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
        time_budget=DEFAULT_TIME_BUDGET if args.time_budget is None else args.time_budget or None,
        ensemble=1 if args.ensemble is None else args.ensemble,
        calibration_origins=args.calibration_origins or 0,
        # --set normalization=... (period, zero_head) is a choice made: then no other is tried
        choose_normalization=not {"normalization", "period", "zero_head"} & set(model),
        val_size=args.val_size,
        interpolate=bool(args.interpolate),
        **columns,
    )


def _require_horizon(args) -> None:
    if args.horizon is None and not args.model:
        raise CLIError(
            "--horizon is required: the steps to forecast (with --model, the saved adapter's own horizon is used)"
        )


def _columns(args) -> dict:
    """The column options given (id, time, target, wide)."""
    names = {
        "id_col": args.id_col,
        "time_col": args.time_col,
        "target_col": args.target_col,
        "wide": args.wide,
    }
    return {k: v for k, v in names.items() if v is not None}


def _dry_run(args) -> int:
    """--dry-run: the options and the data checked, the outputs' places too, and the memory plan
    of the run printed (what the run refuses by), without loading a weight or writing a file."""
    from timellm.data.files import read_table
    from timellm.forecaster import TimeLLMForecaster

    _require_horizon(args)
    if args.model:
        plans = TimeLLMForecaster.plan_pretrained(args.model, **_saved_model_options(args))
        _check_outputs(args)
        read_table(args.data)  # the data must be readable too
        return print_memory_plan(plans, f"timellm {args.command} with the adapter in {args.model}")
    forecaster = _forecaster(args)
    _check_outputs(args)
    frame = read_table(args.data, forecaster.format)
    windows = getattr(args, "windows", None)  # backtest: the training before the first cutoff
    plans = forecaster.plan_fit(frame, n_windows=windows, step_size=getattr(args, "step_size", None))
    return print_memory_plan(plans, f"timellm {args.command} on {args.data}")


def _write(frame, path: str) -> None:
    from timellm.data.files import write_table

    try:
        write_table(frame, path)
    except OSError as err:
        raise CLIError(f"cannot write {path}: {err.strerror or err}") from None


def _check_outputs(args) -> None:
    """Every output writable, in a format that can be written here, and none of them an input
    (the data file, the --model folder's files), before any training."""
    from timellm.data.files import check_not_input, check_output_path, check_table_path
    from timellm.forecaster import FORECASTER_FILE
    from timellm.model.adapter import ADAPTER_FILE, CONFIG_FILE

    adapter_files = (CONFIG_FILE, ADAPTER_FILE, FORECASTER_FILE)
    inputs = [args.data]
    if getattr(args, "model", None):
        inputs += [Path(args.model) / name for name in adapter_files]
    for option in ("out", "scores"):
        if getattr(args, option, None):
            check_table_path(getattr(args, option), f"--{option} file")
            check_not_input(getattr(args, option), inputs, f"--{option} file")
    if getattr(args, "save", None):
        check_output_path(args.save, "--save folder", folder=True)
        check_not_input(args.save, inputs, "--save folder", writes=adapter_files)
    if getattr(args, "plot", None):
        if Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
            raise CLIError(f"--plot {args.plot}: expected a file name ending in {', '.join(PLOT_SUFFIXES)}")
        check_output_path(args.plot, "--plot file")
        check_not_input(args.plot, inputs, "--plot file")
    outputs = [getattr(args, o) for o in ("out", "scores", "plot") if getattr(args, o, None)]
    for i, path in enumerate(outputs):
        check_not_input(path, outputs[:i], "output file")


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")  # what matplotlib writes without extras


def cmd_forecast(args) -> int:
    from timellm.data.files import read_table

    levels = _levels(args)
    if args.dry_run:
        return _dry_run(args)
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

    from timellm.data.files import read_table
    from timellm.evaluation.statistical import parse_baselines
    from timellm.forecaster import COMBINATION

    levels = _levels(args)
    baselines = parse_baselines(args.baselines)
    if args.dry_run:
        return _dry_run(args)
    forecaster = _forecaster(args)
    _check_outputs(args)
    frame = read_table(args.data, forecaster.format)
    if args.model:
        logger.warning(
            "--model: the adapter is used as saved; if it was trained on these windows, the scores flatter it"
        )
    with _option_names_in_warnings(vars(args)):
        cv, scores = forecaster.backtest(
            frame,
            args.windows,
            args.step_size,
            refit=not args.model,
            season=args.season,
            baselines=baselines,
            level=levels,
            baseline_budget=args.baseline_budget,
        )
    fmt = forecaster.format
    seasons = sorted(set(scores.attrs["season"].values()))
    cutoffs = cv["cutoff"]
    print(
        f"backtest: {args.windows} window(s) x horizon {forecaster.horizon} per series, look-back "
        f"{forecaster.seq_len}, cutoffs {cutoffs.min()} to {cutoffs.max()}; seasonal period "
        f"{', '.join(map(str, seasons))} (statistical models and MASE); MSE and MAE on the data's own "
        "scale; seconds: fit + forecast of every window; * best MASE of the series"
        + (
            "; MSIS: M4's mean scaled interval score (width + misses, lower is better), * best"
            if levels
            else ""
        )
    )
    members = [m for m in dict.fromkeys(scores["model"]) if m not in (COMBINATION, "SeasonalNaive", "Naive")]
    if COMBINATION in set(scores["model"]):
        print(f"{COMBINATION}: the median of the forecasts of {', '.join(members)} (no intervals of its own)")
    width = max(12, *(len(str(v)) + 2 for v in scores[fmt.id_col]))
    model_width = max(16, *(len(str(m)) + 2 for m in scores["model"]))
    header = f"{'series':<{width}}{'model':<{model_width}}{'MSE':>12}{'MAE':>12}{'MASE':>9}"
    for lv in levels:
        header += f"{f'cover-{lv:g}':>10}{f'width-{lv:g}':>11}{f'MSIS-{lv:g}':>11} "
    print(header + f"{'seconds':>9}")
    previous = None
    for row in scores.to_dict("records"):
        sid = row[fmt.id_col]
        label, previous = (str(sid) if sid != previous else ""), sid
        mase = "n/a" if math.isnan(row["MASE"]) else f"{row['MASE']:.3f}"
        line = f"{label:<{width}}{row['model']:<{model_width}}{row['MSE']:>12.4g}{row['MAE']:>12.4g}{mase:>9}"
        for lv in levels:
            msis = row[f"MSIS-{lv:g}"]
            shown = "n/a" if math.isnan(msis) else f"{msis:.3f}"
            mark = "*" if row[f"best-MSIS-{lv:g}"] else " "
            line += f"{row[f'coverage-{lv:g}']:>10.3g}{row[f'width-{lv:g}']:>11.3g}{shown:>11}{mark}"
        seconds = "" if math.isnan(row["seconds"]) else f"{row['seconds']:.1f}"
        print(line + f"{seconds:>9}" + (" *" if row["best"] else ""))
    if args.out:
        _write(cv, args.out)
        print(f"forecasts beside the truth: {args.out}")
    if args.scores:
        _write(scores, args.scores)
        print(f"scores: {args.scores}")
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


class _OptionNames(logging.Filter):
    """Warnings of the layers below name API settings (``baseline_budget=...``): here, this CLI's
    options (``options``: the dests of the command's options)."""

    def __init__(self, options) -> None:
        super().__init__()
        self.options = set(options)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            record.msg, record.args = with_flags(record.getMessage(), self.options), None
        return True


@contextmanager
def _option_names_in_warnings(options):
    """While a command runs the API, its log warnings name options as this command line spells them."""
    names = _OptionNames(options)
    handlers = list(logger.handlers)
    for handler in handlers:
        handler.addFilter(names)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(names)


def _best_baselines(scores, id_col: str, baselines: tuple) -> dict:
    """The baseline of lowest MASE (MAE where MASE is undefined) of every series."""
    best = {}
    for sid, group in scores[scores["model"].isin(baselines)].groupby(id_col, sort=False):
        key = "MASE" if group["MASE"].notna().any() else "MAE"
        if sid != "overall" and group[key].notna().any():
            best[sid] = group.loc[group[key].idxmin(), "model"]
    return best


def cmd_example_data(args) -> int:
    from timellm.data.example import example_frame

    frame = example_frame(args.rows)
    _write(frame, args.out)
    sizes = frame.groupby("unique_id", sort=False).size()
    shown = ", ".join(f"{sid} ({n} rows)" for sid, n in sizes.items())
    print(f"wrote {args.out}: hourly ETTh1 series {shown} in long format (unique_id, ds, y)")
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
    print_metrics(metrics, "ETTh1, horizon 96")
    out = Path(args.out)
    print(f"adapter: {out / 'adapter'}   plot: {out / 'forecast.png'}   log: {out / 'train.log'}")
    print(
        f"trained {metrics['steps']} steps in {metrics['train_seconds']:.0f} s; the full benchmark: timellm train --preset ETTh1-96-cpu"
    )
    return 0


COMMANDS = {
    "forecast": cmd_forecast,
    "backtest": cmd_backtest,
    "example-data": cmd_example_data,
    "demo": cmd_demo,
}
