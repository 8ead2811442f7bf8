"""``timellm bench memory``: what a Time-LLM run holds, by backbone size and weight storage.

Each (backbone, weights) cell runs in a fresh child process at the paper's ETTh1-96 model settings
(all layers, 1000 prototypes, d_ff 128, look-back 512) on real ETTh1 windows (all 7 channels):
load, a few inference batches, then a few Adam steps of the adapter through the frozen LLM
(inference first: the allocator keeps what training frees, which would hide inference's own peak).
It records
the resident set after the load, the peak of each phase (``VmHWM``, reset between phases), the
estimate of :mod:`timellm.model.memory` beside each measured peak, the estimate at the paper's
batch of 24 series (marked as an estimate), series per second, and the share of the compute
dtype's matmul peak that the step's FLOPs reach. A cell the estimate says cannot fit is not run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from timellm.experiments.folders import cpu_model, source_commit
from timellm.model.memory import GiB, available_memory, estimate_memory, plan_storage, process_memory

logger = logging.getLogger(__name__)

BACKBONES = ("smollm2-135m", "random-llama-1b", "random-llama-7b")
WEIGHTS = ("fp32", "bf16", "int8")
CHANNELS = 7  # ETTh1's channels: every window is 7 series
PAPER_BATCH = 24  # series a batch in the released scripts (24 channel-windows per GPU)


@dataclass(frozen=True)
class MemoryBenchSettings:
    """What ``timellm bench memory`` measures."""

    backbones: tuple[str, ...] = BACKBONES
    weights: tuple[str, ...] = WEIGHTS
    batch_size: int = 1  # windows a batch (x 7 channels); the paper's 24 is estimated, not run, on a CPU
    train_steps: int = 2  # Adam steps; the last one is timed
    infer_batches: int = 2  # inference batches; the last one is timed
    precision: str = "auto"  # the run's compute precision (auto: bf16 where native)
    gradient_checkpointing: bool = False
    llm_batch: int | None = None  # series through the LLM at once in inference (None: the whole batch)
    data: str | None = None  # ETTh1 CSV (default: $TIMELLM_DATA, else the packaged copy)
    out: str | None = "results"  # folder for memory.csv and memory.md; None writes nothing
    model_changes: dict = field(default_factory=dict)  # other model settings (tests: a small model)


def paper_config(backbone: str, changes: dict | None = None):
    """The paper's ETTh1-96 model settings on ``backbone`` (all its layers)."""
    import dataclasses

    from timellm.experiments.presets import get_preset

    config = dataclasses.replace(get_preset("ETTh1-96").model, backbone=backbone, llm_layers=None)
    return dataclasses.replace(config, **(changes or {}))


def memory_benchmark(settings: MemoryBenchSettings) -> pd.DataFrame:
    """Run every cell in a child process; return (and write to ``settings.out``) the table."""
    from timellm.experiments.flops import matmul_peak
    from timellm.model.config import ExecutionSettings
    from timellm.model.precision import STORAGE_DTYPES, resolve_precision

    compute = resolve_precision(settings.precision, "cpu")
    peaks = {name: matmul_peak(STORAGE_DTYPES[name])[0] for name in ("fp32", "bf16")}
    logger.info(
        "matmul peak (2048^2): fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s", peaks["fp32"] / 1e9, peaks["bf16"] / 1e9
    )
    rows = []
    for backbone in settings.backbones:
        for weights in settings.weights:
            config = paper_config(backbone, settings.model_changes)
            execution = ExecutionSettings(
                weights=weights, gradient_checkpointing=settings.gradient_checkpointing
            )
            storage, _ = plan_storage(config, execution, settings.precision, "cpu")
            row = {
                "backbone": backbone,
                "weights": storage,
                "compute": compute,
                "batch_windows": settings.batch_size,
                "gradient_checkpointing": settings.gradient_checkpointing,
                "llm_batch": settings.llm_batch,
            }
            needed = estimate_memory(
                config,
                storage=storage,
                compute=compute,
                batch_series=settings.batch_size * CHANNELS,
                training=True,
                gradient_checkpointing=settings.gradient_checkpointing,
            ).total
            room = available_memory("cpu")
            if room is not None and needed > room:
                logger.info(
                    "%s with %s weights: estimated %.1f GiB > %.1f GiB available; not run",
                    backbone,
                    storage,
                    needed / GiB,
                    room / GiB,
                )
                row.update(
                    status=f"does not fit: estimate {needed / GiB:.1f} GiB > {room / GiB:.1f} GiB available"
                )
                rows.append(row)
                continue
            logger.info("%s with %s weights: measuring in a child process", backbone, storage)
            row.update(_run_child(settings, backbone, weights))
            row["matmul_peak_gflops"] = round(peaks["bf16" if compute == "bf16" else "fp32"] / 1e9, 1)
            for phase in ("train", "infer"):
                rate = row.get(f"{phase}_gflops")
                if rate is not None:
                    row[f"{phase}_peak_fraction"] = round(rate / row["matmul_peak_gflops"], 3)
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["peaks"] = peaks
    if settings.out:
        write(frame, Path(settings.out), settings)
    return frame


def _run_child(settings: MemoryBenchSettings, backbone: str, weights: str) -> dict:
    from timellm._malloc import tuned_environment

    payload = json.dumps({"settings": asdict(settings), "backbone": backbone, "weights": weights})
    env = tuned_environment()  # the allocator the command line runs with
    command = [sys.executable, "-m", "timellm.experiments.memory_bench", payload]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"status": f"failed (exit {done.returncode}): {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# one cell, in the child


def _reset_peak() -> None:
    """Start a new high-water mark of the resident set (Linux: writing 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def _etth1_batch(path: str | None, seq_len: int, pred_len: int, windows: int):
    """``windows`` look-back windows of all 7 ETTh1 channels (B, T, 7), standardised, and their futures."""
    import numpy as np
    import torch

    from timellm.data.benchmarks import find_file

    frame = pd.read_csv(path or find_file("ETTh1"))
    values = frame.drop(columns=["date"]).to_numpy(np.float32)
    train = values[:8640]
    values = (values - train.mean(0)) / train.std(0)
    starts = np.linspace(0, len(values) - seq_len - pred_len, windows).astype(int)
    past = np.stack([values[s : s + seq_len] for s in starts])
    future = np.stack([values[s + seq_len : s + seq_len + pred_len] for s in starts])
    return torch.from_numpy(past), torch.from_numpy(future)


def measure_cell(settings: MemoryBenchSettings, backbone: str, weights: str) -> dict:
    """Load, train and infer one configuration in this process; return its measured row."""
    import contextlib

    import torch

    from timellm.experiments.flops import fast_path_flops
    from timellm.model.config import ExecutionSettings
    from timellm.model.modeling import TimeLLM
    from timellm.model.precision import STORAGE_DTYPES, resolve_precision
    from timellm.training.loop import make_adam

    config = paper_config(backbone, settings.model_changes)
    execution = ExecutionSettings(
        weights=weights, gradient_checkpointing=settings.gradient_checkpointing, llm_batch=settings.llm_batch
    )
    compute = resolve_precision(settings.precision, "cpu")
    storage, _ = plan_storage(config, execution, settings.precision, "cpu")
    past, future = _etth1_batch(settings.data, config.seq_len, config.pred_len, settings.batch_size)
    series = past.shape[0] * past.shape[2]
    base = process_memory("VmRSS")

    def estimate(training: bool, batch_series: int = series) -> float:
        e = estimate_memory(
            config,
            storage=storage,
            compute=compute,
            batch_series=batch_series,
            training=training,
            gradient_checkpointing=settings.gradient_checkpointing,
            base=base,
            llm_batch=settings.llm_batch,
        )
        return e.total / GiB

    _reset_peak()
    start = time.perf_counter()
    model = TimeLLM(config, execution=execution, precision=settings.precision)
    load_s = time.perf_counter() - start
    row = {
        "status": "ok",
        "frozen_params_m": round(sum(p.numel() for p in model.llm.parameters()) / 1e6, 1),
        "base_gib": round(base / GiB, 2),
        "after_load_gib": round(process_memory("VmRSS") / GiB, 2),
        "load_peak_gib": round(process_memory("VmHWM") / GiB, 2),
        "load_s": round(load_s, 1),
    }
    autocast = (
        torch.autocast("cpu", dtype=STORAGE_DTYPES[compute])
        if compute != "fp32"
        else contextlib.nullcontext()
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = make_adam(trainable, 1e-4)  # the training loop's Adam (fused where the device has it)
    prefix = len(model.prefix_ids)
    stats_ids, _ = model.statistics_token_ids(past.permute(0, 2, 1).reshape(series, -1))
    stats = float(stats_ids.shape[1])

    def infer() -> None:
        with torch.no_grad(), autocast:
            model(past)

    def train() -> None:
        with autocast:
            loss = torch.nn.functional.mse_loss(model(past).float(), future)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        row["train_loss"] = round(float(loss), 4)

    # inference first: the allocator keeps what training frees, which would hide inference's peak
    for phase, step, count, training in (
        ("infer", infer, settings.infer_batches, False),
        ("train", train, settings.train_steps, True),
    ):
        model.train(training)
        _reset_peak()
        for _ in range(count):
            start = time.perf_counter()
            step()
            seconds = time.perf_counter() - start  # the last step's: warm caches and kernels
        row[f"{phase}_peak_gib"] = round(process_memory("VmHWM") / GiB, 2)
        row[f"{phase}_estimate_gib"] = round(estimate(training), 2)
        row[f"{phase}_estimate_b24_gib"] = round(estimate(training, PAPER_BATCH), 1)
        row[f"{phase}_{'step' if training else 'batch'}_s"] = round(seconds, 2)
        row[f"{phase}_series_per_s"] = round(series / seconds, 2)
        flops = fast_path_flops(model, series, prefix, stats, training)
        row[f"{phase}_gflops"] = round(flops / seconds / 1e9, 1)

    if torch.cuda.is_available():
        row["cuda_max_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
    return row


def refresh_estimates(frame: pd.DataFrame, model_changes: dict | None = None) -> pd.DataFrame:
    """Every measured row's estimate columns as the current estimator gives them (the estimate is a
    function of the row's settings and measured base, so rows measured earlier stay comparable)."""
    frame = frame.copy()
    for index, row in frame.iterrows():
        if row.get("status") != "ok":
            continue
        peaks = estimated_peaks(row.to_dict(), model_changes)
        b24 = estimated_peaks({**row.to_dict(), "batch_windows": PAPER_BATCH / CHANNELS}, model_changes)
        for phase in ("train", "infer"):
            frame.loc[index, f"{phase}_estimate_gib"] = round(peaks[phase], 2)
            frame.loc[index, f"{phase}_estimate_b24_gib"] = round(b24[phase], 1)
    return frame


def estimated_peaks(row: dict, model_changes: dict | None = None) -> dict[str, float]:
    """The current estimate (GiB) of a measured cell's training and inference peaks, from its
    backbone, storage, compute dtype, batch and settings, and the process base it measured."""
    config = paper_config(row["backbone"], model_changes)
    llm_batch = row.get("llm_batch")
    llm_batch = None if llm_batch is None or pd.isna(llm_batch) else int(llm_batch)
    peaks = {}
    for phase, training in (("train", True), ("infer", False)):
        e = estimate_memory(
            config,
            storage=row["weights"],
            compute=row["compute"],
            batch_series=round(float(row["batch_windows"]) * CHANNELS),
            training=training,
            gradient_checkpointing=bool(row["gradient_checkpointing"]),
            base=int(float(row["base_gib"]) * GiB),
            llm_batch=llm_batch,
        )
        peaks[phase] = e.total / GiB
    return peaks


# --------------------------------------------------------------------------------------------
# the table


BACKBONE_ORDER = {name: i for i, name in enumerate(BACKBONES)}


def markdown(frame: pd.DataFrame) -> str:
    """The table of memory.md: one row per cell, memory in GiB, estimates in brackets."""
    head = (
        "| backbone | weights | gradient checkpointing | llm_batch | after load | inference peak (estimate) | "
        "training peak (estimate) | at batch 24, estimated: inference / training | series/s: inference / "
        "training | share of the matmul peak: inference / training | status |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in frame.itertuples():
        ckpt = "on" if r.gradient_checkpointing else "off"
        if r.status != "ok":
            rows.append(f"| {r.backbone} | {r.weights} | {ckpt} | | | | | | | | {r.status} |")
            continue
        chunk = "" if pd.isna(getattr(r, "llm_batch", None)) else int(r.llm_batch)
        rows.append(
            f"| {r.backbone} | {r.weights} | {ckpt} | {chunk} | {r.after_load_gib:.2f} | "
            f"{r.infer_peak_gib:.2f} ({r.infer_estimate_gib:.2f}) | {r.train_peak_gib:.2f} ({r.train_estimate_gib:.2f}) | "
            f"{r.infer_estimate_b24_gib:.1f} / {r.train_estimate_b24_gib:.1f} | "
            f"{r.infer_series_per_s:.2f} / {r.train_series_per_s:.2f} | "
            f"{r.infer_peak_fraction:.2f} / {r.train_peak_fraction:.2f} | ok |"
        )
    return "\n".join(rows)


def write(frame: pd.DataFrame, out: Path, settings: MemoryBenchSettings) -> None:
    """Add ``frame``'s cells to ``out``/memory.csv (a re-measured cell replaces its row), refresh
    every row's estimate, and render ``out``/memory.md from the whole file."""
    out.mkdir(parents=True, exist_ok=True)
    peaks_attr = frame.attrs.get("peaks", {})
    frame = frame.assign(cpu=cpu_model(), commit=source_commit() or "")
    for name, value in peaks_attr.items():
        frame[f"{name}_matmul_peak_gflops"] = round(value / 1e9, 1)
    path = out / "memory.csv"
    if path.is_file() and frame.empty:  # nothing measured: render what the file holds
        frame = pd.read_csv(path)
    elif path.is_file():
        old = pd.read_csv(path)
        keys = ["backbone", "weights", "gradient_checkpointing", "llm_batch"]
        fresh = {_key(r) for r in frame[keys].to_dict("records")}
        kept = old[[_key(r) not in fresh for r in old[keys].to_dict("records")]]
        frame = pd.concat([kept, frame], ignore_index=True)
    frame = refresh_estimates(frame, settings.model_changes)
    frame = frame.sort_values(
        ["backbone", "gradient_checkpointing", "llm_batch", "weights"],
        key=lambda c: c.map(BACKBONE_ORDER).fillna(len(BACKBONE_ORDER)) if c.name == "backbone" else c,
        na_position="first",
        kind="stable",
    )
    frame.to_csv(path, index=False)
    lines = [
        "# Memory and speed by backbone size and weight storage",
        "",
        "`timellm bench memory`: the paper's ETTh1-96 model (all layers of the backbone, 1000 text "
        "prototypes, d_ff 128, look-back 512) on real ETTh1 windows, each cell in a fresh process: "
        f"load, {settings.infer_batches} inference batches, then {settings.train_steps} Adam steps of the "
        "adapter through the frozen LLM. A batch is one window of ETTh1's 7 channels (7 series); "
        "`at batch 24` is the estimate of `timellm.model.memory` at the paper's 24 series, not a "
        "measurement. Memory is the resident set in GiB (1 GiB = 1.074 GB): after the load, and the "
        "peak of each phase beside the estimate. The share of the matmul peak divides the FLOPs a step "
        "computes by its wall time and by a 2048x2048 matmul's rate in the compute dtype, measured in "
        "the same run. The commit of each row is in memory.csv.",
        "",
        f"CPU: `{cpu_model()}`, {os.cpu_count()} cores; matmul peaks measured by the runs: fp32 "
        f"{_span(frame, 'fp32')} GFLOP/s, bf16 {_span(frame, 'bf16')} GFLOP/s.",
        "",
        markdown(frame),
        "",
    ]
    (out / "memory.md").write_text("\n".join(lines) + kept_sections(out / "memory.md"))


def kept_sections(path: Path) -> str:
    """The ``## `` sections of an existing memory.md (measurements written by hand below the
    table), which a new render keeps; "" where there are none."""
    text = path.read_text() if path.is_file() else ""
    start = text.find("\n## ")
    return "" if start < 0 else "\n" + text[start + 1 :]


def _span(frame: pd.DataFrame, dtype: str) -> str:
    column = frame.get(f"{dtype}_matmul_peak_gflops")
    if column is None or not column.notna().any():
        return "?"
    return f"{column.min():.0f}-{column.max():.0f}"


def _key(record: dict) -> tuple:
    chunk = record.get("llm_batch")
    chunk = None if chunk is None or pd.isna(chunk) else int(chunk)
    return record["backbone"], record["weights"], bool(record["gradient_checkpointing"]), chunk


def _main(payload: str) -> None:
    args = json.loads(payload)
    raw = args["settings"]
    raw["backbones"], raw["weights"] = tuple(raw["backbones"]), tuple(raw["weights"])
    settings = MemoryBenchSettings(**raw)
    row = measure_cell(settings, args["backbone"], args["weights"])
    sys.stdout.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    _main(sys.argv[1])
