"""One configuration of the speed benchmark, measured in this process: build the model, time its
steps, break a training step into parts, profile it operator by operator, and the machine's
matmul peak. :mod:`timellm.experiments.speed` runs each in a fresh interpreter
(``python -m timellm.experiments.measure TASK JSON``), so that peak memory and the allocator
setting are those of one configuration.

A training step is forward + backward + Adam step; an inference step is a no-grad forward in eval
mode. Each step takes the next ``batch`` windows (stride 1) of one ETTh1 channel, so the
statistics texts are new, as in a first epoch.
"""

from __future__ import annotations

import functools
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from timellm.data.benchmarks import borders
from timellm.experiments.flops import fast_path_flops, matmul_peak, plain_path_flops, shapes_rate
from timellm.model.precision import PRECISION_NAMES

TRAIN_ROWS = borders("ett_hour", 0, 0)[1][0]  # ETTh1's training split (8640 rows) standardises the data
BENCH_DTYPES = ("fp32", "bf16")  # the precisions the benchmark measures (names of PRECISION_NAMES)


@dataclass(frozen=True)
class RunSpec:
    """One benchmark configuration, run in its own process."""

    backbone: str
    layers: int
    batch: int
    seq_len: int
    pred_len: int
    dtype: str  # "fp32" or "bf16" (autocast)
    path: str  # "plain" or "fast"
    mode: str  # "train" or "infer"
    warmup: int
    steps: int
    threads: int
    data: str
    gradient_checkpointing: bool = False
    attention: str = "auto"  # ExecutionSettings.attention: "auto", "sdpa" or "eager" (the released code's)
    fused_adam: bool = True  # torch's fused Adam kernel, or the per-tensor loop (the released code's)
    compile: str = "none"  # ExecutionSettings.compile: "none", "inference" or "always"
    compile_scope: str = "modules"  # ExecutionSettings.compile_scope: "modules" or "layers"
    # "ours", or "released": the released layer's einsums, scaled scores and bernoulli dropout
    reprogramming: str = "ours"
    label: str = ""  # a name for the row (the ladder's steps)
    model_changes: dict = field(default_factory=dict)  # other TimeLLMConfig fields (tests: a small d_ff)


def default_etth1() -> Path:
    """ETTh1 under ``$TIMELLM_DATA`` if set, else the copy that ships with the package."""
    from timellm.data.benchmarks import find_file

    return find_file("ETTh1")


def etth1_windows(
    path: str | Path, seq_len: int, pred_len: int, channel: str = "OT"
) -> tuple[torch.Tensor, torch.Tensor]:
    """All stride-1 windows of one ETTh1 channel, standardised with the training rows.

    Returns past (W, seq_len) and future (W, pred_len) as float32 tensors.
    """
    frame = pd.read_csv(path)
    if channel not in frame.columns:
        raise ValueError(f"{path} has no column {channel!r}; found {', '.join(frame.columns)}")
    values = frame[channel].to_numpy(np.float32)
    train = values[:TRAIN_ROWS]
    values = (values - train.mean()) / train.std()
    series = torch.from_numpy(values)
    windows = series.unfold(0, seq_len + pred_len, 1)  # (W, seq_len + pred_len)
    return windows[:, :seq_len].contiguous(), windows[:, seq_len:].contiguous()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def run_one(spec: RunSpec) -> dict:
    """Measure one configuration in this process; return a result row."""
    from timellm._malloc import allocator_setting
    from timellm.model.layers import normalize

    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    past, future = etth1_windows(spec.data, spec.seq_len, spec.pred_len)
    model = _build_model(spec)
    rss_loaded = _peak_rss_mb()
    step, batch = _stepper(spec, model, _optimiser(spec, model), past, future)
    times, cpu_times, first_step = [], [], 0.0
    for i in range(spec.warmup + spec.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step(i)
        if i == 0:
            first_step = time.perf_counter() - start  # with the prefix cache and any compilation
        if i >= spec.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    seconds, cpu_seconds = statistics.median(times), statistics.median(cpu_times)

    row = asdict(spec)
    row.update(
        malloc=allocator_setting(),
        step_s=seconds,
        step_s_min=min(times),
        step_s_max=max(times),
        first_step_s=first_step,
        series_per_s=spec.batch / seconds,
        # per CPU second of this process (all threads): what the code costs, whatever else runs
        series_per_cpu_s=spec.batch / cpu_seconds,
        # CPU seconds per wall second over the timed steps: near `threads` on a quiet machine,
        # lower when other processes took the cores (then the row is slower than the code is)
        cpu_util=sum(cpu_times) / sum(times),
        peak_rss_mb=_peak_rss_mb(),
        rss_after_load_mb=rss_loaded,
        uses_fast_path=model.uses_fast_path,
        # the kernel the LLM really ran with
        attn_implementation=model.attention_kernel_for(past.device) or model.llm.config._attn_implementation,
    )
    x, _ = batch(0)
    c = model.config
    normalised = normalize(x[..., 0], c.normalization, pred_len=c.pred_len, period=c.period)[0]
    train = spec.mode == "train"
    if model.uses_fast_path:
        stats_len = model.statistics_token_ids(normalised)[1].shape[1]
        flops = fast_path_flops(model, spec.batch, len(model.prefix_ids), stats_len, train)
    else:
        flops = plain_path_flops(model, spec.batch, model.prompt_token_ids(normalised)[1].shape[1], train)
    row.update(flops=flops, flop_per_s=flops / seconds, flop_per_cpu_s=flops / cpu_seconds)
    return row


def _stepper(spec: RunSpec, model, optimiser, past: torch.Tensor, future: torch.Tensor):
    """(step, batch) of a configuration: ``step(i)`` runs the i-th timed step of ``spec.mode`` on
    ``batch(i)``, the next ``spec.batch`` windows (past (B, T, 1), future (B, H, 1))."""
    from timellm.model.predict import predict

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = (i * spec.batch) % (past.shape[0] - spec.batch)
        return past[start : start + spec.batch, :, None], future[start : start + spec.batch, :, None]

    def train_step(i: int) -> None:
        x, y = batch(i)
        model.train()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    def infer_step(i: int) -> None:
        x, _ = batch(i)
        predict(model, x, batch_size=spec.batch)  # what evaluation and forecasting run

    return (train_step if spec.mode == "train" else infer_step), batch


def _build_model(spec: RunSpec):
    from timellm import TimeLLM, TimeLLMConfig
    from timellm.backbones.loading import load_backbone
    from timellm.model.config import ExecutionSettings

    backbone = load_backbone(spec.backbone, llm_layers=spec.layers)
    config = TimeLLMConfig(
        backbone=spec.backbone,
        llm_layers=spec.layers,
        seq_len=spec.seq_len,
        pred_len=spec.pred_len,
        dataset="ETTh1",
        fast_path=spec.path == "fast",
        **spec.model_changes,
    )
    execution = ExecutionSettings(
        autocast_dtype=_autocast_name(spec.dtype),
        gradient_checkpointing=spec.gradient_checkpointing,
        attention=spec.attention,
        compile=spec.compile,
        compile_scope=spec.compile_scope,
    )
    model = TimeLLM(config, backbone=backbone, execution=execution)
    if spec.reprogramming == "released":
        layer = model.reprogramming
        layer.forward = functools.partial(released_reprogramming, layer)
    elif spec.reprogramming != "ours":
        raise ValueError(f"reprogramming must be ours or released, found {spec.reprogramming!r}")
    return model


def _autocast_name(precision: str) -> str | None:
    """ExecutionSettings.autocast_dtype of a precision name: "bf16" -> "bfloat16", "fp32" -> None."""
    return PRECISION_NAMES[precision].autocast


def released_attention(layer, patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """The released ReprogrammingLayer's attention weights (S, K, P, V') with ``layer``'s weights:
    einsum scores in (S, K, P, V') layout, the scale on the scores, softmax."""
    s, p, _ = patches.shape
    q = layer.query(patches).view(s, p, layer.n_heads, -1)
    k = layer.key(prototypes).view(prototypes.shape[0], layer.n_heads, -1)
    scores = torch.einsum("blhe,she->bhls", q, k)
    return torch.softmax(scores / math.sqrt(q.shape[-1]), dim=-1)


def released_reprogramming(layer, patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """The released ReprogrammingLayer's computation with ``layer``'s weights (the ladder's first
    rungs): :func:`released_attention`, ``nn.Dropout`` on the weights, an einsum with the values.
    The same function as :class:`Reprogramming`'s forward."""
    s, p, _ = patches.shape
    weights = layer.dropout(released_attention(layer, patches, prototypes))
    v = layer.value(prototypes).view(prototypes.shape[0], layer.n_heads, -1)
    return layer.out(torch.einsum("bhls,she->blhe", weights, v).reshape(s, p, -1))


def _optimiser(spec: RunSpec, model) -> torch.optim.Optimizer:
    from timellm.training.loop import make_adam

    if spec.fused_adam:
        return make_adam(model.parameters(), 1e-3)
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def step_breakdown(spec: RunSpec, reps: int = 3) -> dict:
    """Where a training step's time goes: prompt tokens, LLM, mapping layer (V -> V'), the rest.

    Each part is timed alone on the same batch (median of ``reps``, after one warm-up), the whole
    step too; "adam" is the optimiser step alone; "rest" = step - parts (patch embedding,
    reprogramming, head, loss). Times are
    this process's CPU time, which other processes sharing the cores disturb less than wall time.
    """
    from timellm.model.layers import normalize

    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    past, future = etth1_windows(spec.data, spec.seq_len, spec.pred_len)
    x, y = past[: spec.batch, :, None], future[: spec.batch, :, None]
    model = _build_model(spec).train()
    config, backbone = model.config, model.backbone
    optimiser = _optimiser(spec, model)
    normalised = normalize(x[..., 0], config.normalization, pred_len=config.pred_len, period=config.period)[0]
    width = backbone.hidden_size

    def timed(fn) -> float:
        fn()
        runs = []
        for _ in range(reps):
            start = time.process_time()
            fn()
            runs.append(time.process_time() - start)
        return statistics.median(runs)

    def full_step() -> None:
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    def prompt() -> None:
        if model.uses_fast_path:
            model.statistics_token_ids(normalised)
        else:
            model.prompt_token_ids(normalised)

    def llm() -> None:
        tokens = torch.randn(spec.batch, config.num_patches, width, requires_grad=True)
        with model.autocast(x.device):
            model.run_llm(normalised, tokens).sum().backward()

    def mapping() -> None:
        with model.autocast(x.device):
            model.prototypes(backbone.word_embeddings).sum().backward()
        model.zero_grad(set_to_none=True)

    def adam() -> None:
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        optimiser.step()
        model.zero_grad(set_to_none=True)

    parts = {"step": timed(full_step), "prompt": timed(prompt), "llm": timed(llm), "mapping": timed(mapping)}
    parts["adam"] = timed(adam)
    parts["llm"] -= parts["prompt"]  # _run_llm builds the prompt tokens itself
    parts["rest"] = parts["step"] - parts["prompt"] - parts["llm"] - parts["mapping"] - parts["adam"]
    keep = ("backbone", "layers", "dtype", "path", "batch", "attention", "fused_adam")
    row = {k: v for k, v in asdict(spec).items() if k in keep}
    from timellm._malloc import allocator_setting

    row["malloc"] = allocator_setting()
    row.update({f"{k}_s": v for k, v in parts.items()})
    row.update({f"{k}_pct": 100 * v / parts["step"] for k, v in parts.items() if k != "step"})
    return row


# what each aten operator is, for the profile's summary
OP_KINDS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::addmv_", "aten::matmul", "aten::linear"),
    "attention (softmax)": ("aten::_softmax", "aten::_softmax_backward_data"),
    "copies, concatenations": ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous", "aten::index"),
    "optimiser": ("aten::_fused_adam_",),
}


def _op_kind(name: str) -> str:
    return next((kind for kind, names in OP_KINDS.items() if name in names), "elementwise, other")


def op_profile(spec: RunSpec, steps: int = 2, top: int = 25) -> list[dict]:
    """Where one step's time goes, operator by operator (torch.profiler, after ``spec.warmup`` steps).

    Returns the ``top`` operators by self time (grouped by input shapes), then one row per kind of
    operator (:data:`OP_KINDS`: matmuls, softmax, copies and concatenations, the optimiser, the
    rest: norms, activations, rotary, masks, dropout) with its share of the step.
    """
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    past, future = etth1_windows(spec.data, spec.seq_len, spec.pred_len)
    model = _build_model(spec)
    step, _ = _stepper(spec, model, _optimiser(spec, model), past, future)
    for i in range(spec.warmup):
        step(i)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(spec.warmup, spec.warmup + steps):
            step(i)
    events = [e for e in prof.key_averages(group_by_input_shape=True) if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    base = {"path": spec.path, "mode": spec.mode, "dtype": spec.dtype, "attention": spec.attention}
    rows = [
        {
            **base,
            "kind": _op_kind(e.key),
            "op": e.key,
            "shapes": str(e.input_shapes)[:120],
            "ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "pct": 100 * e.self_cpu_time_total / total,
            "calls_per_step": e.count / steps,
        }
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    ]
    kinds: dict[str, float] = {}
    for e in events:
        kinds[_op_kind(e.key)] = kinds.get(_op_kind(e.key), 0.0) + e.self_cpu_time_total
    rows += [
        {
            **base,
            "kind": kind,
            "op": "(all)",
            "shapes": "",
            "ms_per_step": t / 1e3 / steps,
            "pct": 100 * t / total,
        }
        for kind, t in sorted(kinds.items(), key=lambda item: -item[1])
    ]
    return rows


def _matmul_row(threads: int, dtypes: Sequence[str] = BENCH_DTYPES) -> dict:
    torch.set_num_threads(threads)
    from timellm._malloc import allocator_setting

    row: dict = {"threads": threads, "malloc": allocator_setting()}
    for name in dtypes:
        dtype = PRECISION_NAMES[name].dtype
        row[name], row[f"{name}_per_cpu_s"] = matmul_peak(dtype)
        row[f"{name}_model_shapes"] = shapes_rate(dtype)
    return row


def _worker(task: str, payload: str) -> None:
    """A child of :func:`speed_benchmark`: one measurement, printed as one JSON line."""
    spec = json.loads(payload)
    if task == "matmul":
        row = _matmul_row(spec["threads"], spec.get("dtypes", BENCH_DTYPES))
    elif task == "breakdown":
        row = step_breakdown(RunSpec(**spec))
    elif task == "profile":
        row = {"rows": op_profile(RunSpec(**spec))}
    elif task == "run":
        row = run_one(RunSpec(**spec))
    else:
        raise ValueError(f"unknown benchmark task {task!r}: matmul, breakdown, profile or run")
    sys.stdout.write(json.dumps(row) + "\n")


if __name__ == "__main__":  # only as speed_benchmark's child process; users run `timellm bench speed`
    _worker(*sys.argv[1:])
