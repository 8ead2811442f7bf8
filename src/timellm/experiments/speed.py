"""Speed of the plain and the fast path on ETTh1 windows: throughput, peak memory, FLOP/s.

``timellm bench speed`` runs :func:`speed_benchmark`: every
(dtype, path, mode, allocator) configuration runs in a fresh subprocess, so that its peak RSS is its
own and its allocator setting (``GLIBC_TUNABLES``, fixed when a process starts) is the one named in
the ``malloc`` column (:mod:`timellm.experiments.measure` measures one configuration). What to
measure is one :class:`SpeedSettings`.

The achieved FLOP/s of the fast path is compared with this machine's matmul peak (large square
``torch.matmul`` in the same dtype). The FLOPs counted are those the fast path must compute (see
:func:`timellm.experiments.flops.fast_path_flops`); the plain path computes more for the same result.

On a machine shared with other work, wall-clock throughput measures the neighbours as much as
the code: every row also reports its throughput per CPU second of its own process and
``cpu_util`` (CPU seconds per wall second; about ``threads`` when the cores were free). With
fewer free cores than threads, OpenMP threads wait for each other at every barrier: run with
one thread there (``threads=1``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from timellm.experiments.measure import BENCH_DTYPES, RunSpec, default_etth1
from timellm.experiments.tables import markdown_table, plain_cell
from timellm.model.precision import resolve_precision

logger = logging.getLogger(__name__)


def native_dtypes() -> tuple[list[str], dict[str, str]]:
    """The dtypes this CPU runs natively (measured by default) and, for the others, why not.

    An emulated bf16 matmul can run hundreds of times slower than fp32 (0.3 against 93-173
    GFLOP/s on an AVX2 EPYC): measuring it by default would take hours and show nothing.
    """
    from timellm.model.precision import native_precisions

    reasons = native_precisions("cpu")
    return [d for d in BENCH_DTYPES if reasons[d] is None], {
        d: reasons[d] for d in BENCH_DTYPES if reasons[d] is not None
    }


def _child(task: str, payload: dict, malloc: str) -> dict:
    """Run one task in a fresh interpreter with the given allocator setting; return its JSON row."""
    from timellm._malloc import TUNED_TUNABLES

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if malloc == "tuned":
        env["GLIBC_TUNABLES"] = TUNED_TUNABLES
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "timellm.experiments.measure", task, json.dumps(payload)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {task} {payload} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# (label, RunSpec changes, allocator): each step adds one speed-up to the one before
LADDER = (
    (
        "as released: plain path, eager attention, per-tensor Adam, fp32",
        {"path": "plain", "attention": "eager", "fused_adam": False, "reprogramming": "released"},
        "default",
    ),
    (
        "+ SDPA attention",
        {"path": "plain", "attention": "sdpa", "fused_adam": False, "reprogramming": "released"},
        "default",
    ),
    (
        "+ fused Adam",
        {"path": "plain", "attention": "sdpa", "fused_adam": True, "reprogramming": "released"},
        "default",
    ),
    (
        "+ reprogramming as one product per head, cheap dropout mask",
        {"path": "plain", "attention": "sdpa", "fused_adam": True},
        "default",
    ),
    ("+ fast path (prompt cache, token memo, E' cache)", {"path": "fast", "attention": "sdpa"}, "default"),
    ("+ eager attention for the short cached passes", {"path": "fast", "attention": "eager"}, "default"),
    (
        "+ grouped-query attention, fused kernel, no K/V copies (auto)",
        {"path": "fast", "attention": "auto"},
        "default",
    ),
    ("+ tuned allocator", {"path": "fast"}, "tuned"),
    ("+ torch.compile of norms and MLPs (always)", {"path": "fast", "compile": "always"}, "tuned"),
    ("= compile for inference only", {"path": "fast", "compile": "inference"}, "tuned"),
    (
        "+ compile of whole decoder layers, for inference",
        {"path": "fast", "compile": "inference", "compile_scope": "layers"},
        "tuned",
    ),
    (
        "+ bf16 autocast",
        {"path": "fast", "compile": "inference", "compile_scope": "layers", "dtype": "bf16"},
        "tuned",
    ),
)


@dataclass(frozen=True)
class SpeedSettings:
    """What :func:`speed_benchmark` measures: the model, the budget, the configurations compared
    and the side tables. Every (dtype, path, mode, malloc) combination is one configuration."""

    backbone: str = "smollm2-135m"  # the frozen LLM (an alias, folder, .gguf file or hub id)
    layers: int = 6  # LLM layers kept
    batch: int = 32  # series per step (windows of one channel)
    steps: int = 3  # timed training steps per configuration
    infer_steps: int = 6  # timed inference steps per configuration
    warmup: int = 2  # untimed steps first (the first builds the prompt cache, compiles)
    dtypes: tuple[str, ...] | None = None  # precisions (BENCH_DTYPES); None: those this CPU runs natively
    paths: tuple[str, ...] = ("plain", "fast")
    modes: tuple[str, ...] = ("train", "infer")
    mallocs: tuple[str, ...] = ("default", "tuned")  # glibc allocator settings compared
    threads: int | None = None  # torch threads; None: every core
    data: str | Path | None = None  # ETTh1.csv(.gz); None: $TIMELLM_DATA, else the packaged copy
    seq_len: int = 512  # look-back (the paper's)
    pred_len: int = 96  # horizon
    breakdown: bool = True  # also where a training step's time goes (<out stem>_breakdown.csv)
    ladder: bool = True  # also each speed-up added in turn to the released configuration
    plain_attention: str = "eager"  # the plain path's attention kernel (the released code forces eager)
    plain_fused_adam: bool = False  # give the plain path the fused Adam too (the released code has none)
    gradient_checkpointing: bool = False  # recompute backbone layers in backward, on both paths
    compile: str = "none"  # the fast path's ExecutionSettings.compile
    compile_scope: str = "modules"  # the fast path's ExecutionSettings.compile_scope
    infer_batches: tuple[int, ...] = ()  # also fast-path inference at these batch sizes
    profile: bool = False  # also an operator-level profile of a fast-path step per mode
    model_changes: dict = field(default_factory=dict)  # other TimeLLMConfig fields (tests: a small d_ff)
    out: str | Path | None = "results/speed.csv"  # the table; side tables beside it; None: none written


def speed_benchmark(settings: SpeedSettings) -> pd.DataFrame:
    """Measure every (dtype, path, mode, malloc) configuration of ``settings``, each in a fresh process.

    ``dtypes`` None measures the dtypes this CPU runs natively (:func:`native_dtypes`: fp32, and
    bf16 where the CPU has AMX or AVX-512 BF16); the skipped ones and why are logged and kept in
    ``frame.attrs["skipped_dtypes"]``. An explicitly asked-for emulated dtype runs, after a warning.

    The plain path runs as the released code does (eager attention, Adam's per-tensor loop), the
    fast path with its own attention and the fused Adam. Returns one row per configuration with at
    least ``backbone, layers, dtype, path, mode, series_per_s, peak_rss_mb, malloc``, plus the
    speed-up over the plain path of the same (dtype, mode, malloc) and over the plain path with
    the default allocator, the FLOPs each path computes per step (their ratio ``flop_ratio`` is
    the speed-up the shortcut gives at equal FLOP rates) and the achieved fraction of the matmul
    peak. Writes ``out`` (CSV) if given, and beside it a CSV per side table asked for:
    ``<out stem>_breakdown.csv`` (where a training step's time goes), ``_ladder.csv`` (each
    speed-up added in turn to the released configuration), ``_batches.csv`` (fast-path inference
    at each of ``infer_batches``: the batch that runs best for evaluation and forecasting) and
    ``_profile.csv`` (an operator-level profile of a fast-path step per mode). Each side table is
    also in ``frame.attrs``.
    """
    threads = settings.threads or os.cpu_count() or 1
    data = Path(settings.data) if settings.data is not None else default_etth1()
    if not data.is_file():
        raise FileNotFoundError(f"ETTh1 not found at {data}; give its file as data=PATH")
    dtypes, skipped = _measured_dtypes(settings.dtypes)
    spec_for = functools.partial(_spec_for, settings, _base_spec(settings, threads, data))
    peak = _child("matmul", {"threads": threads, "dtypes": list(dtypes)}, "tuned")
    frame = _compare(_measure_configurations(settings, dtypes, spec_for), peak)
    frame.attrs["matmul_peak"] = peak
    frame.attrs["skipped_dtypes"] = skipped
    out = Path(settings.out) if settings.out is not None else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
    _side_tables(frame, settings, dtypes, spec_for, out)
    return frame


def _measured_dtypes(asked: Sequence[str] | None) -> tuple[Sequence[str], dict[str, str]]:
    """The dtypes to measure (those asked for, or the native ones) and the skipped ones with why."""
    dtypes, skipped = asked, {}
    if dtypes is None:
        dtypes, skipped = native_dtypes()
        for dtype, reason in skipped.items():
            logger.warning("not measuring %s (ask for it with dtypes=): %s", dtype, reason)
    for dtype in dtypes:
        if dtype not in BENCH_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(BENCH_DTYPES)}, found {dtype!r}")
        resolve_precision(dtype, "cpu")  # warns once where the CPU emulates it
    return dtypes, skipped


def _base_spec(settings: SpeedSettings, threads: int, data: Path) -> RunSpec:
    """What every configuration shares: the model, the budget, the threads and the data."""
    return RunSpec(
        backbone=settings.backbone,
        layers=settings.layers,
        batch=settings.batch,
        seq_len=settings.seq_len,
        pred_len=settings.pred_len,
        dtype="fp32",
        path="fast",
        mode="train",
        warmup=settings.warmup,
        steps=settings.steps,
        threads=threads,
        data=str(data),
        gradient_checkpointing=settings.gradient_checkpointing,
        model_changes=dict(settings.model_changes),
    )


def _spec_for(settings: SpeedSettings, base: RunSpec, mode: str, **changes) -> RunSpec:
    """One configuration: ``base`` in ``mode``, with its path as it runs and ``changes``."""
    as_run = {
        "plain": {"attention": settings.plain_attention, "fused_adam": settings.plain_fused_adam},
        "fast": {
            "attention": "auto",
            "fused_adam": True,
            "compile": settings.compile,
            "compile_scope": settings.compile_scope,
        },
    }
    changes = {**as_run[changes.get("path", base.path)], **changes}
    return replace(
        base, mode=mode, steps=settings.steps if mode == "train" else settings.infer_steps, **changes
    )


def _measure_configurations(settings: SpeedSettings, dtypes, spec_for) -> pd.DataFrame:
    """One row per (dtype, mode, path, malloc), each measured in a fresh process, in that order."""
    modes, paths, mallocs = settings.modes, settings.paths, settings.mallocs
    rows = []
    # the allocator settings alternate innermost: load from other processes drifts over minutes,
    # so the rows that are compared run next to each other
    for dtype in dtypes:
        for mode in modes:
            for path in paths:
                for malloc in mallocs:
                    logger.info("benchmarking %s %s %s with the %s allocator", dtype, path, mode, malloc)
                    rows.append(_child("run", asdict(spec_for(mode, path=path, dtype=dtype)), malloc))
    order = {"malloc": list(mallocs), "dtype": list(dtypes), "mode": list(modes), "path": list(paths)}
    return pd.DataFrame(rows).sort_values(
        list(order), key=lambda column: column.map(order[column.name].index), ignore_index=True
    )


def _compare(frame: pd.DataFrame, peak: dict) -> pd.DataFrame:
    """Add the speed-ups over the plain path, the FLOP ratio and the fractions of the matmul peak."""
    keys = ["dtype", "mode", "malloc"]
    plain = frame[frame.path == "plain"].set_index(keys)
    frame["speedup"] = [
        r.series_per_s / plain["series_per_s"].get((r.dtype, r.mode, r.malloc), np.nan)
        for r in frame.itertuples()
    ]
    frame["flop_ratio"] = [
        plain["flops"].get((r.dtype, r.mode, r.malloc), np.nan) / r.flops for r in frame.itertuples()
    ]
    baseline = frame[(frame.path == "plain") & (frame.malloc == "default")].set_index(["dtype", "mode"])
    frame["speedup_vs_plain_default_malloc"] = [
        r.series_per_s / baseline["series_per_s"].get((r.dtype, r.mode), np.nan) for r in frame.itertuples()
    ]
    frame["speedup_cpu"] = [
        r.series_per_cpu_s / plain["series_per_cpu_s"].get((r.dtype, r.mode, r.malloc), np.nan)
        for r in frame.itertuples()
    ]
    frame["matmul_peak_flop_per_s"] = frame["dtype"].map(lambda d: peak[d])
    frame["matmul_peak_flop_per_cpu_s"] = frame["dtype"].map(lambda d: peak[f"{d}_per_cpu_s"])
    frame["fraction_of_peak"] = frame["flop_per_cpu_s"] / frame["matmul_peak_flop_per_cpu_s"]
    # the same FLOPs against what the model's own matmul shapes reach alone (wall time: shapes_rate)
    frame["fraction_of_shapes_rate"] = frame["flop_per_s"] / frame["dtype"].map(
        lambda d: peak.get(f"{d}_model_shapes", np.nan)
    )
    return frame


def _side_tables(frame: pd.DataFrame, settings: SpeedSettings, dtypes, spec_for, out: Path | None) -> None:
    """The side tables asked for, in ``frame.attrs`` and beside ``out``: the step-time breakdown,
    the operator profile, inference by batch size and the ladder of speed-ups."""
    modes, paths, malloc = settings.modes, settings.paths, settings.mallocs[-1]
    if settings.breakdown:
        parts = [
            _child("breakdown", asdict(spec_for("train", path=path, dtype=dtypes[0])), malloc)
            for path in paths
        ]
        _attach(frame, "breakdown", parts, out)
    if settings.profile:
        ops = []
        for mode in modes:
            logger.info("profiling a fast-path %s step, operator by operator", mode)
            ops += _child("profile", asdict(spec_for(mode, path="fast", dtype=dtypes[0])), malloc)["rows"]
        _attach(frame, "profile", ops, out)
    if settings.infer_batches:
        sizes = []
        for size in settings.infer_batches:
            logger.info("inference at batch %d", size)
            sizes.append(_child("run", asdict(spec_for("infer", batch=size, dtype=dtypes[0])), malloc))
        _attach(frame, "batches", sizes, out)
    if settings.ladder:
        table = _ladder(modes, dtypes, spec_for)
        frame.attrs["ladder"] = table
        if out is not None:
            table.to_csv(out.with_name(f"{out.stem}_ladder.csv"), index=False)


def _ladder(modes: Sequence[str], dtypes: Sequence[str], spec_for) -> pd.DataFrame:
    """Each rung of LADDER that applies to a mode, measured, with its speed-up over the released
    configuration and over the rung before."""
    steps_run = []
    for mode in modes:
        for label, changes, malloc in LADDER:
            if mode != "train" and label in ("+ fused Adam", "= compile for inference only"):
                continue  # no optimiser at inference, where "always" and "inference" are one
            if mode == "train" and changes.get("compile_scope") == "layers" and "dtype" not in changes:
                continue  # compiled for inference only: a training step is the previous rung's
            if changes.get("dtype", "fp32") not in dtypes:
                continue  # a dtype not measured (emulated here, or left out)
            logger.info("ladder (%s): %s", mode, label)
            steps_run.append(_child("run", asdict(spec_for(mode, label=label, **changes)), malloc))
    table = pd.DataFrame(steps_run)
    first = table.groupby("mode")["series_per_s"].transform("first")
    table["speedup_vs_released"] = table["series_per_s"] / first
    table["speedup_vs_previous"] = table["series_per_s"] / table.groupby("mode")["series_per_s"].shift(1)
    return table


def _attach(frame: pd.DataFrame, name: str, rows: list[dict], out: Path | None) -> None:
    """Keep a side table in ``frame.attrs[name]`` and, with ``out``, as ``<out stem>_<name>.csv``."""
    frame.attrs[name] = pd.DataFrame(rows)
    if out is not None:
        frame.attrs[name].to_csv(out.with_name(f"{out.stem}_{name}.csv"), index=False)


def _table(frame: pd.DataFrame, columns: Sequence[str], digits: int = 2) -> str:
    return markdown_table(frame, columns, cell=lambda value, column: plain_cell(value, column, digits))


def report(frame: pd.DataFrame) -> str:
    """The benchmark tables as Markdown."""
    shown = frame.assign(
        fraction_of_peak=frame.get("fraction_of_peak", np.nan),
        gflop_per_s=frame.get("flop_per_s", np.nan) / 1e9,
    )
    columns = [
        "backbone",
        "layers",
        "dtype",
        "path",
        "attention",
        "mode",
        "malloc",
        "series_per_s",
        "speedup",
        "flop_ratio",
        "speedup_vs_plain_default_malloc",
        "series_per_cpu_s",
        "speedup_cpu",
        "peak_rss_mb",
        "cpu_util",
        "gflop_per_s",
        "fraction_of_peak",
        "fraction_of_shapes_rate",
    ]
    text = _table(shown.assign(fraction_of_shapes_rate=frame.get("fraction_of_shapes_rate", np.nan)), columns)
    peak = frame.attrs.get("matmul_peak")
    if peak:
        measured = [d for d in BENCH_DTYPES if d in peak]
        text += f"\n\nmatmul peak (2048x2048, {peak['threads']} threads, best of 8): " + ", ".join(
            f"{d} {peak[d] / 1e9:.0f} GFLOP/s ({peak[f'{d}_per_cpu_s'] / 1e9:.0f} per CPU second)"
            for d in measured
        )
        text += "; at the model's own product shapes (each alone): " + ", ".join(
            f"{d} {peak.get(f'{d}_model_shapes', np.nan) / 1e9:.0f} GFLOP/s" for d in measured
        )
    for dtype, reason in frame.attrs.get("skipped_dtypes", {}).items():
        text += f"\n\n{dtype} not measured: {reason} (ask for it with dtypes=)"
    parts = frame.attrs.get("breakdown")
    if parts is not None and len(parts):
        cols = ["path", "attention", "fused_adam", "dtype", "malloc", "step_s"]
        cols += ["prompt_pct", "llm_pct", "mapping_pct", "adam_pct", "rest_pct"]
        text += "\n\nwhere a training step's time goes (%):\n\n" + _table(parts, cols, digits=3)
    ops = frame.attrs.get("profile")
    if ops is not None and len(ops):
        kinds = ops[ops["op"] == "(all)"]
        text += "\n\nfast-path step by kind of operator (torch.profiler, self time):\n\n"
        text += _table(kinds, ["mode", "dtype", "kind", "ms_per_step", "pct"], digits=1)
        heavy = ops[ops["op"] != "(all)"].groupby("mode", sort=False).head(8)
        text += "\n\nthe heaviest operators:\n\n"
        text += _table(heavy, ["mode", "op", "shapes", "ms_per_step", "pct", "calls_per_step"], digits=1)
    sizes = frame.attrs.get("batches")
    if sizes is not None and len(sizes):
        cols = ["dtype", "compile", "malloc", "batch", "series_per_s", "step_s", "peak_rss_mb", "cpu_util"]
        text += "\n\nfast-path inference by batch size (series per forward):\n\n" + _table(sizes, cols)
    ladder = frame.attrs.get("ladder")
    if ladder is not None and len(ladder):
        cols = [
            "mode",
            "label",
            "malloc",
            "series_per_s",
            "speedup_vs_previous",
            "speedup_vs_released",
            "peak_rss_mb",
        ]
        text += "\n\neach speed-up in turn, from the released configuration:\n\n" + _table(ladder, cols)
    return text
