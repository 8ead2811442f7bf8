"""Speed of the plain and the fast path on ETTh1 windows: throughput, peak memory, FLOP/s.

``timellm bench speed`` runs :func:`speed_benchmark`: every
(dtype, path, mode, allocator) configuration runs in a fresh subprocess, so that its peak RSS is its
own and its allocator setting (``GLIBC_TUNABLES``, fixed when a process starts) is the one named in
the ``malloc`` column. A training step is forward + backward + Adam step; an inference step is a
no-grad forward in eval mode. Each step takes the next ``batch`` windows (stride 1) of one channel,
so the statistics texts are new, as in a first epoch.

The achieved FLOP/s of the fast path is compared with this machine's matmul peak (large square
``torch.matmul`` in the same dtype). The FLOPs counted are those the fast path must compute (see
:func:`fast_path_flops`); the plain path computes more for the same result.

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
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from timellm.data.benchmarks import borders
from timellm.experiments.tables import markdown_table, plain_cell
from timellm.model.precision import resolve_precision

logger = logging.getLogger(__name__)

TRAIN_ROWS = borders("ett_hour", 0, 0)[1][0]  # ETTh1's training split (8640 rows) standardises the data
DTYPES = {"fp32": None, "bf16": "bfloat16"}


def native_dtypes() -> tuple[list[str], dict[str, str]]:
    """The dtypes this CPU runs natively (measured by default) and, for the others, why not.

    An emulated bf16 matmul can run hundreds of times slower than fp32 (0.3 against 93-173
    GFLOP/s on an AVX2 EPYC): measuring it by default would take hours and show nothing.
    """
    from timellm.model.precision import native_precisions

    reasons = native_precisions("cpu")
    return [d for d in DTYPES if reasons[d] is None], {
        d: reasons[d] for d in DTYPES if reasons[d] is not None
    }


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


# --------------------------------------------------------------------------------------------
# data


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


# --------------------------------------------------------------------------------------------
# FLOPs


def matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 8) -> tuple[float, float]:
    """Best (FLOP per wall second, FLOP per CPU second) of a (size x size) @ (size x size)
    torch.matmul in ``dtype`` over ``reps`` runs. CPU seconds add up all threads."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, first-touch of the output
    wall = cpu = float("inf")
    for _ in range(reps):
        start, cpu_start = time.perf_counter(), time.process_time()
        torch.matmul(a, b)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - cpu_start)
    return 2 * size**3 / wall, 2 * size**3 / cpu


# (m, k, n) of the fast path's largest products at batch 32 on SmolLM2 (64 patches per series:
# 2048 patch tokens; width 576, MLP 1536, 1000 prototypes over a 49152-word vocabulary)
MODEL_SHAPES = ((2048, 576, 1536), (2048, 1536, 576), (2048, 576, 576), (1000, 576, 49152), (2048, 576, 192))


def shapes_rate(dtype: torch.dtype, shapes=MODEL_SHAPES, reps: int = 5) -> float:
    """FLOP per wall second of ``torch.matmul`` at ``shapes`` (each timed alone, best of ``reps``):
    the rate the model's own products reach by themselves, a ceiling below the square peak."""
    flops = seconds = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - start)
        flops, seconds = flops + 2 * m * k * n, seconds + best
    return flops / seconds


def _llm_shape(model) -> tuple[int, int, int]:
    """(weights per layer, heads x head_dim, layers) of the model's LLM."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    llm = model.llm
    layer = next(m for m in llm.modules() if isinstance(m, GradientCheckpointingLayer))
    weights = sum(p.numel() for p in layer.parameters() if p.ndim == 2)
    cfg = llm.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return weights, heads * head_dim, cfg.num_hidden_layers


def _adapter_flops(model, series: int, train: bool, prototypes_computed: bool) -> float:
    c = model.config
    p, s, d = c.num_patches, series, model.backbone.hidden_size
    vocab, protos, width = model.backbone.vocab_size, c.num_prototypes, c.n_heads * c.head_dim
    reprogramming = 2 * s * p * c.d_model * width + 4 * protos * d * width
    reprogramming += 4 * s * p * protos * width + 2 * s * p * width * d
    head = 2 * s * c.d_ff * p * c.pred_len
    mapping = 2 * protos * vocab * d if prototypes_computed else 0.0
    # training: forward and twice that backward, the mapping's weight gradient only (E is frozen)
    return 3 * (reprogramming + head) + 2 * mapping if train else reprogramming + head + mapping


def fast_path_flops(
    model, series: int, prefix_len: int, stats_len: float, train: bool, attention: bool = True
) -> float:
    """FLOPs one fast-path step must compute for ``series`` series.

    With per layer ``W`` = the multiply-adds of its weight matrices per token (sum of its 2-D
    weights' sizes), ``A`` = heads x head_dim, LLM layers ``n``, prefix Lp, mean statistics
    tokens Ls, patches P, vocabulary V, prototypes V', backbone width D, reprogramming width
    K·dk = ``R``, d_model ``m``, head input d_ff·P and horizon H:

    - statistics tokens, forward only: ``S·Ls·n·(2W + 4A·(Lp + (Ls+1)/2))``
      (projections and MLP, then QKᵀ and AV over the causal keys);
    - patch tokens, forward: ``S·P·n·(2W + 4A·(Lp + Ls + (P+1)/2))``; backward for the input
      gradient only (the LLM is frozen): the same projections once more and the attention twice;
    - adapter forward: mapping ``2V'VD`` (training only: E' is cached at inference), reprogramming
      ``2SPmR + 4V'DR + 4SPV'R + 2SPRD``, head ``2S(d_ff·P)H``; its backward twice that, except the
      mapping's, which needs only the weight gradient (E is frozen): ``2V'VD``.

    Norms, activations, softmax, RoPE, the patch embedding and the optimiser are not counted;
    the fraction of peak the benchmark reports is ``(FLOPs / CPU seconds of a step) / (matmul
    FLOPs / CPU seconds)``: CPU time, not wall time, so that time slices other processes take on
    a shared machine do not count (with all cores free and busy both ratios agree);
    ``attention=False`` leaves out the LLM's QKᵀ and AV too (torch's FLOP counter does not see
    the CPU flash-attention kernel, so the tests compare that part with it).
    """
    weights, width, n = _llm_shape(model)
    p, s, lp, ls = model.config.num_patches, series, prefix_len, stats_len

    def tokens(count: float, keys: float, backward: bool) -> float:
        linear = 2 * weights * count * n
        scores = 4 * width * keys * count * n if attention else 0.0
        return linear + scores + ((linear + 2 * scores) if backward else 0.0)

    llm_flops = tokens(s * ls, lp + (ls + 1) / 2, False) + tokens(s * p, lp + ls + (p + 1) / 2, train)
    return llm_flops + _adapter_flops(model, series, train, prototypes_computed=train)


def plain_path_flops(model, series: int, prompt_len: int, train: bool, attention: bool = True) -> float:
    """FLOPs one plain-path step computes for ``series`` series whose padded prompt is ``prompt_len``.

    Every series runs its whole ``prompt_len + P`` sequence (left pads included) through all
    ``n`` layers: ``S·(L+P)·n·(2W + 4A·(L+P))`` forward (attention scores for every pair, masked
    or not); in training the backward repeats the projections and doubles the attention for the
    whole sequence (the prompt positions sit in the same tensors as the patches). E' is
    recomputed in every forward, inference included. Everything else as :func:`fast_path_flops`.
    The ratio of the two counts is the speed-up an exact shortcut can give when both paths run
    their multiplies equally fast.
    """
    weights, width, n = _llm_shape(model)
    length = prompt_len + model.config.num_patches
    linear = 2 * weights * series * length * n
    scores = 4 * width * length * series * length * n if attention else 0.0
    llm_flops = linear + scores + ((linear + 2 * scores) if train else 0.0)
    return llm_flops + _adapter_flops(model, series, train, prototypes_computed=True)


# --------------------------------------------------------------------------------------------
# one configuration (runs in a child process)


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
        autocast_dtype=DTYPES[spec.dtype],
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


def _matmul_row(threads: int, dtypes: Sequence[str] = ("fp32", "bf16")) -> dict:
    torch.set_num_threads(threads)
    from timellm._malloc import allocator_setting

    row: dict = {"threads": threads, "malloc": allocator_setting()}
    for name in dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        row[name], row[f"{name}_per_cpu_s"] = matmul_peak(dtype)
        row[f"{name}_model_shapes"] = shapes_rate(dtype)
    return row


# --------------------------------------------------------------------------------------------
# the driver


def _child(task: str, payload: dict, malloc: str) -> dict:
    """Run one task in a fresh interpreter with the given allocator setting; return its JSON row."""
    from timellm._malloc import TUNED_TUNABLES

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if malloc == "tuned":
        env["GLIBC_TUNABLES"] = TUNED_TUNABLES
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "timellm.experiments.speed", task, json.dumps(payload)]
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


def speed_benchmark(
    backbone: str = "smollm2-135m",
    layers: int = 6,
    batch: int = 32,
    steps: int = 3,
    infer_steps: int = 6,
    warmup: int = 2,
    dtypes: Sequence[str] | None = None,
    paths: Sequence[str] = ("plain", "fast"),
    modes: Sequence[str] = ("train", "infer"),
    mallocs: Sequence[str] = ("default", "tuned"),
    threads: int | None = None,
    data: str | Path | None = None,
    seq_len: int = 512,
    pred_len: int = 96,
    breakdown: bool = True,
    ladder: bool = True,
    plain_attention: str = "eager",
    plain_fused_adam: bool = False,
    gradient_checkpointing: bool = False,
    compile: str = "none",
    compile_scope: str = "modules",
    infer_batches: Sequence[int] = (),
    profile: bool = False,
    model_changes: dict | None = None,
    out: str | Path | None = "results/speed.csv",
) -> pd.DataFrame:
    """Measure every (dtype, path, mode, malloc) configuration, each in a fresh process.

    ``dtypes`` None measures the dtypes this CPU runs natively (:func:`native_dtypes`: fp32, and
    bf16 where the CPU has AMX or AVX-512 BF16); the skipped ones and why are logged and kept in
    ``frame.attrs["skipped_dtypes"]``. An explicitly asked-for emulated dtype runs, after a warning.

    The plain path runs as the released code does (``plain_attention`` eager, Adam's per-tensor
    loop), the fast path with SDPA and the fused Adam. Returns one row per configuration with at
    least ``backbone, layers, dtype, path, mode, series_per_s, peak_rss_mb, malloc``, plus the
    speed-up over the plain path of the same (dtype, mode, malloc) and over the plain path with
    the default allocator, the FLOPs each path computes per step (their ratio ``flop_ratio`` is
    the speed-up the shortcut gives at equal FLOP rates) and the achieved fraction of the matmul
    peak. Writes ``out`` (CSV) if given; with ``breakdown`` also ``<out stem>_breakdown.csv`` (where
    a training step's time goes) and with ``ladder`` ``<out stem>_ladder.csv`` (each speed-up
    added in turn to the released configuration). ``compile`` and ``compile_scope`` are the fast
    path's ``ExecutionSettings.compile`` and ``compile_scope``; ``infer_batches`` measures
    fast-path inference at each of those batch sizes (series per forward) into ``frame.attrs["batches"]`` and ``<out stem>_batches.csv``:
    the batch that runs best for evaluation and forecasting. ``profile`` adds an operator-level
    profile of a fast-path step per mode (:func:`op_profile`; ``<out stem>_profile.csv``).
    """
    threads = threads or os.cpu_count() or 1
    data = Path(data) if data is not None else default_etth1()
    if not data.is_file():
        raise FileNotFoundError(f"ETTh1 not found at {data}; give its file as data=PATH")
    skipped: dict[str, str] = {}
    if dtypes is None:
        dtypes, skipped = native_dtypes()
        for dtype, reason in skipped.items():
            logger.warning("not measuring %s (ask for it with dtypes=): %s", dtype, reason)
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, found {dtype!r}")
        resolve_precision(dtype, "cpu")  # warns once where the CPU emulates it
    base = RunSpec(
        backbone=backbone,
        layers=layers,
        batch=batch,
        seq_len=seq_len,
        pred_len=pred_len,
        dtype="fp32",
        path="fast",
        mode="train",
        warmup=warmup,
        steps=steps,
        threads=threads,
        data=str(data),
        gradient_checkpointing=gradient_checkpointing,
        model_changes=dict(model_changes or {}),
    )
    as_run = {
        "plain": {"attention": plain_attention, "fused_adam": plain_fused_adam},
        "fast": {"attention": "auto", "fused_adam": True, "compile": compile, "compile_scope": compile_scope},
    }

    def spec_for(mode: str, **changes) -> RunSpec:
        changes = {**as_run[changes.get("path", base.path)], **changes}
        return replace(base, mode=mode, steps=steps if mode == "train" else infer_steps, **changes)

    peak = _child("matmul", {"threads": threads, "dtypes": list(dtypes)}, "tuned")
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
    frame = pd.DataFrame(rows).sort_values(
        list(order), key=lambda column: column.map(order[column.name].index), ignore_index=True
    )
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
    frame.attrs["matmul_peak"] = peak
    frame.attrs["skipped_dtypes"] = skipped
    out = Path(out) if out is not None else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
    if breakdown:
        parts = [
            _child("breakdown", asdict(spec_for("train", path=path, dtype=dtypes[0])), mallocs[-1])
            for path in paths
        ]
        _attach(frame, "breakdown", parts, out)
    if profile:
        ops = []
        for mode in modes:
            logger.info("profiling a fast-path %s step, operator by operator", mode)
            ops += _child("profile", asdict(spec_for(mode, path="fast", dtype=dtypes[0])), mallocs[-1])[
                "rows"
            ]
        _attach(frame, "profile", ops, out)
    if infer_batches:
        sizes = []
        for size in infer_batches:
            logger.info("inference at batch %d", size)
            sizes.append(_child("run", asdict(spec_for("infer", batch=size, dtype=dtypes[0])), mallocs[-1]))
        _attach(frame, "batches", sizes, out)
    if ladder:
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
                row = _child("run", asdict(spec_for(mode, label=label, **changes)), malloc)
                steps_run.append(row)
        table = pd.DataFrame(steps_run)
        first = table.groupby("mode")["series_per_s"].transform("first")
        table["speedup_vs_released"] = table["series_per_s"] / first
        table["speedup_vs_previous"] = table["series_per_s"] / table.groupby("mode")["series_per_s"].shift(1)
        frame.attrs["ladder"] = table
        if out is not None:
            table.to_csv(out.with_name(f"{out.stem}_ladder.csv"), index=False)
    return frame


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
        measured = [d for d in DTYPES if d in peak]
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


def _worker(task: str, payload: str) -> None:
    """A child of :func:`speed_benchmark`: one measurement, printed as one JSON line."""
    spec = json.loads(payload)
    if task == "matmul":
        row = _matmul_row(spec["threads"], spec.get("dtypes", ("fp32", "bf16")))
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
