"""How much memory a Time-LLM run needs, known before the backbone is loaded.

The estimate is the sum of what a run holds at its peak (bytes):

- ``base``: the process before the load (Python, torch, transformers, the data): measured, as
  the current resident set, where the estimate is made;
- ``weights``: the frozen LLM's parameters times the bytes of their storage (int8: one byte plus
  torchao's per-row scale), counted on a model built on the meta device from the backbone's config;
- ``adapter``: the trainable parameters in fp32; training adds their gradient, Adam's two
  moments, autocast's copies and the optimiser's temporaries (28 bytes a parameter, measured),
  and what autograd keeps of the frozen weights where they are stored wider than they compute
  (fp32 weights under bf16 autocast: a bf16 copy of each, the vocabulary included);
- ``cache``: the fast path's prompt keys and values, every layer, every series of the batch;
- ``activations``: in training, what autograd keeps for backward through every layer at the patch
  tokens (with gradient checkpointing: one layer input each, plus one layer recomputed), and the
  reprogramming attention; in inference, one layer's working set;
- ``workspace``: one weight matrix converted whole where the storage is wider than the compute
  (autocast's copy) or int8 (dequantised; a narrower storage is widened a few rows at a time), and
  what the first forward adds to any process (kernel workspaces, caches: 0.3 GiB, measured).

Per-token activation bytes follow the decoder layer's saved tensors (norm inputs in fp32, the
projections' inputs, the MLP's three intermediate products) and were checked against measured
peaks of SmolLM2-135M and of LLaMA-shaped 1B and 7B backbones (``timellm bench memory``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from timellm.model.config import ExecutionSettings, TimeLLMConfig
from timellm.model.precision import STORAGE_BYTES, resolve_precision, resolve_weights

logger = logging.getLogger(__name__)

GiB = 2**30
# tokens of the prompt (prefix + statistics) assumed where the tokenizer is not at hand: the
# packaged descriptions and statistics come to 100-190 tokens with SmolLM2's and LLaMA's tokenizers
DEFAULT_PROMPT_TOKENS = 190
# bytes autograd keeps per token and layer, as multiples of the width D and the MLP width I, in
# the compute dtype (see the module docstring)
SAVED_PER_D, SAVED_PER_I = 11, 4
# one layer's working set in inference, per token, in the same units
WORKING_PER_D, WORKING_PER_I = 4, 3
# bytes a trainable parameter holds in training: itself, its gradient and Adam's two moments (16),
# autocast's 16-bit copies of it and of its gradient, and the optimiser step's temporaries
TRAIN_BYTES_PER_PARAMETER = 28
# what the first forward adds to a process whatever the model: kernel workspaces, the
# tokenizer's and autocast's caches (measured on SmolLM2-135M and the LLaMA-shaped backbones)
RUNTIME = int(0.3 * 2**30)


class InsufficientMemoryError(MemoryError):
    """A run's estimated peak exceeds the memory available; the message says what would fit."""


@dataclass(frozen=True)
class LLMShape:
    """The sizes of a (truncated) backbone that memory depends on, read from its config."""

    parameters: int  # frozen parameters of the kept layers, embeddings included
    linear_parameters: int  # of which in nn.Linear weights (what int8 quantises)
    linear_rows: int  # output rows of those linears (int8 keeps one scale per row)
    largest_matrix: int  # elements of the largest weight matrix
    layers: int
    hidden: int
    intermediate: int
    kv_width: int  # key/value heads x head width
    vocab: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of a run, by part; ``total`` is what is compared with free memory."""

    base: int
    weights: int
    adapter: int
    cache: int
    activations: int
    workspace: int
    storage: str  # the frozen weights' storage the estimate is for
    compute: str  # the dtype the LLM computes in
    training: bool
    batch_series: int  # series per batch (windows x channels)

    @property
    def total(self) -> int:
        return self.base + self.weights + self.adapter + self.cache + self.activations + self.workspace

    def describe(self) -> str:
        """One line: the total and its parts in GiB."""
        parts = ", ".join(
            f"{name} {getattr(self, name) / GiB:.2f}"
            for name in ("base", "weights", "adapter", "cache", "activations", "workspace")
        )
        mode = "training" if self.training else "inference"
        return (
            f"{self.total / GiB:.2f} GiB for {mode} of {self.batch_series} series a batch with "
            f"{self.storage} weights computing in {self.compute} ({parts} GiB)"
        )


# --------------------------------------------------------------------------------------------
# sizes from the config alone


def backbone_config(spec: str, llm_layers: int | None, trust_remote_code: bool = False):
    """The transformers config of backbone ``spec`` truncated to ``llm_layers``, without its weights
    (:class:`~timellm.backbones.errors.BackboneError` where it cannot be read, as a load does)."""
    from timellm.backbones.loading import load_backbone_config

    return load_backbone_config(spec, llm_layers, trust_remote_code)


@functools.cache
def llm_shape(spec: str, llm_layers: int | None, trust_remote_code: bool = False) -> LLMShape:
    """Count the parameters of ``spec``'s kept layers on a model built on the meta device."""
    from transformers import AutoModel

    config = backbone_config(spec, llm_layers, trust_remote_code)
    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    linears = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    hidden = int(config.hidden_size)
    heads = int(getattr(config, "num_attention_heads", 1))
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    return LLMShape(
        parameters=sum(p.numel() for p in model.parameters()),
        linear_parameters=sum(w.numel() for w in linears),
        linear_rows=sum(w.shape[0] for w in linears),
        largest_matrix=max(p.numel() for p in model.parameters() if p.ndim >= 2),
        layers=int(config.num_hidden_layers),
        hidden=hidden,
        intermediate=int(getattr(config, "intermediate_size", None) or 4 * hidden),
        kv_width=kv_heads * head_dim,
        vocab=int(model.get_input_embeddings().weight.shape[0]),
    )


def adapter_parameters(config: TimeLLMConfig, shape: LLMShape | None) -> int:
    """Trainable parameters of the model ``config`` builds around a backbone of ``shape``."""
    from timellm.model.layers import FlattenHead, PatchEmbedding, Reprogramming, TextPrototypes

    c = config
    with torch.device("meta"):
        modules = [PatchEmbedding(c.patch_len, c.d_model, c.patch_embedding, c.dropout)]
        if shape is None:
            modules.append(FlattenHead(c.d_model, c.num_patches, c.pred_len, c.dropout))
        else:
            modules += [
                TextPrototypes(shape.vocab, c.num_prototypes),
                Reprogramming(c.d_model, c.n_heads, c.head_dim, shape.hidden, c.attention_dropout),
                FlattenHead(c.d_ff, c.num_patches, c.pred_len, c.dropout),
            ]
    return sum(p.numel() for m in modules for p in m.parameters())


def weight_bytes(shape: LLMShape, storage: str) -> int:
    """Bytes of the frozen weights stored as ``storage``."""
    if storage == "int8":  # linears: 1 byte + a bf16 scale and zero point per row; the rest bf16
        rest = shape.parameters - shape.linear_parameters
        return shape.linear_parameters + 4 * shape.linear_rows + 2 * rest
    return STORAGE_BYTES[storage] * shape.parameters


# --------------------------------------------------------------------------------------------
# the estimate


def process_memory(field: str = "VmRSS") -> int:
    """A memory figure of this process from /proc/self/status, in bytes: ``VmRSS`` (its resident
    set now) or ``VmHWM`` (its peak); 0 where /proc cannot be read."""
    return _proc_field("/proc/self/status", field) or 0


def current_rss() -> int:
    """This process's resident set now, in bytes (0 where /proc cannot be read)."""
    return process_memory("VmRSS")


def estimate_memory(
    config: TimeLLMConfig,
    *,
    storage: str,
    compute: str,
    batch_series: int,
    training: bool,
    gradient_checkpointing: bool = False,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    base: int | None = None,
    llm_batch: int | None = None,
) -> MemoryEstimate:
    """The peak memory of running ``config`` on ``batch_series`` series a batch (windows x channels).

    ``storage``: fp32, bf16, fp16 or int8 (resolved, not auto); ``compute``: fp32, bf16 or fp16.
    ``base``: the process's memory before the load (default: its resident set now).
    ``llm_batch``: series through the LLM at once in inference (ExecutionSettings.llm_batch).
    """
    c = config
    shape = None if not _uses_llm(c) else llm_shape(c.backbone, c.llm_layers, c.trust_remote_code)
    act = STORAGE_BYTES[compute]
    base = current_rss() if base is None else base
    adapter = adapter_parameters(c, shape) * (TRAIN_BYTES_PER_PARAMETER if training else 4)
    s, p = batch_series, c.num_patches
    if shape is None:
        tokens = s * p * c.d_model * 4 * (8 if training else 2)
        return MemoryEstimate(base, 0, adapter, 0, tokens, RUNTIME, storage, compute, training, s)

    weights = weight_bytes(shape, storage)
    stored = 4 if storage == "fp32" else 2
    if training and stored > act:
        # autocast's narrow copies of the frozen weights (the vocabulary's for the mapping), kept
        # for backward; stored narrower, nothing wide is kept (the vocabulary is widened in chunks)
        adapter += (shape.linear_parameters + shape.vocab * shape.hidden) * act
    prompt = prompt_tokens if c.use_prompt else 0
    keys = prompt + p
    # the prompt's keys and values (every layer, every series); in training also the patch tokens'
    at_once = s if training or llm_batch is None else min(s, llm_batch)  # series in the LLM at once
    cache = 2 * shape.layers * at_once * (keys if training else prompt) * shape.kv_width * act
    # x act bytes; torchao's int8 linears return fp32 under autocast, so the MLP's saved products
    # (the I terms) are twice as wide there (measured: 1B-shaped, int8, no checkpointing)
    wide_mlp = 2 if storage == "int8" else 1
    per_token = SAVED_PER_D * shape.hidden + wide_mlp * SAVED_PER_I * shape.intermediate
    working = (WORKING_PER_D * shape.hidden + WORKING_PER_I * shape.intermediate) * act
    # reprogramming attention over V' prototypes: scores, softmax and dropout mask (fp32)
    reprogram = s * c.n_heads * p * c.num_prototypes * 4 * (3 if training else 1)
    if training:
        if gradient_checkpointing:
            layers = shape.layers * s * p * shape.hidden * act + 2 * s * p * per_token * act
        else:
            layers = shape.layers * s * p * per_token * act
        activations = layers + reprogram
    else:
        activations = at_once * max(prompt, p) * working + reprogram
    # a whole matrix converted at once: autocast's narrow copy, or torchao's dequantised int8;
    # storage narrower than the compute widens a few rows at a time (backbones.storage)
    workspace = RUNTIME + (shape.largest_matrix * act if stored > act or storage == "int8" else 0)
    return MemoryEstimate(
        base, weights, adapter, cache, activations, workspace, storage, compute, training, s
    )


# --------------------------------------------------------------------------------------------
# what is free, and refusing what cannot fit


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes this process may still use on ``device``, its own resident set included (CPU: the
    kernel's MemAvailable and any cgroup limit; GPU: the free device memory); None where the
    system does not say (no /proc: nothing is then refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    known = [x for x in (_proc_field("/proc/meminfo", "MemAvailable"), _cgroup_room()) if x is not None]
    return min(known) + current_rss() if known else None


def _proc_field(path: str, field: str) -> int | None:
    """A ``field:  <n> kB`` line of a /proc file (meminfo, a process's status) in bytes; None
    where the file cannot be read or has no such line."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_room() -> int | None:
    """Room left under a cgroup v2 memory limit, if there is one."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def simulated_available() -> int | None:
    """``TIMELLM_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix), a ceiling set by hand or by tests;
    None where it is not set. A size that is not a positive number is refused."""
    text = os.environ.get("TIMELLM_MEMORY_LIMIT", "")
    if not text.strip():
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    size = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        found = int(float(size[:-1]) * units[size[-1]]) if size[-1:] in units else int(size)
    except (ValueError, OverflowError):
        found = 0
    if found <= 0:
        raise ValueError(
            f"TIMELLM_MEMORY_LIMIT must be a positive size, in bytes or like 16G, found {text!r}"
        )
    return found


def memory_available(device: torch.device | str = "cpu") -> int | None:
    """Bytes a run may use on ``device``: ``TIMELLM_MEMORY_LIMIT`` where it is set, else what the
    system says (:func:`available_memory`); None where neither says."""
    return simulated_available() or available_memory(device)


def plan_storage(
    config: TimeLLMConfig, execution: ExecutionSettings, precision: str, device
) -> tuple[str, str]:
    """(storage, compute) of a run: ``execution.weights`` resolved (auto: see
    :func:`timellm.model.precision.resolve_weights`) and ``precision`` resolved on ``device``."""
    compute = resolve_precision(precision, device)
    if not _uses_llm(config):
        return "fp32", compute
    if execution.weights == "auto" and compute == "fp32":
        shape = llm_shape(config.backbone, config.llm_layers, config.trust_remote_code)
        room = memory_available(device)
        return resolve_weights("auto", precision, device, weight_bytes(shape, "fp32"), room), compute
    return resolve_weights(execution.weights, precision, device), compute


def _uses_llm(config: TimeLLMConfig) -> bool:
    return config.llm not in ("none", "attention", "transformer")


# --------------------------------------------------------------------------------------------
# the plan of a run: every batch it holds at its peak, beside the memory available


@dataclass(frozen=True)
class MemoryBatch:
    """A batch a run holds at its peak: ``windows`` windows of ``channels`` series each."""

    training: bool
    windows: int
    channels: int = 1
    setting: str | None = None  # the setting that sizes it, advised where a smaller batch would fit

    @property
    def series(self) -> int:
        return self.windows * self.channels

    def describe(self) -> str:
        if self.training:
            return f"training, {self.series} series a step"
        if self.channels > 1:
            windows = f"{self.windows} window{'s' if self.windows > 1 else ''}"
            return f"inference, {windows} x {self.channels} channels"
        return f"inference, {self.windows} series a batch"


@dataclass(frozen=True)
class MemoryPlan:
    """One batch's estimate beside the memory available and, where it does not fit, what would."""

    batch: MemoryBatch
    estimate: MemoryEstimate
    available: int | None  # bytes the run may use (None: unknown here, so nothing is refused)
    device: str
    advice: str = ""  # the settings that would fit; empty where the batch fits

    @property
    def fits(self) -> bool:
        return self.available is None or self.estimate.total <= self.available

    def describe(self) -> str:
        """One line: the batch and its estimate by part."""
        return f"{self.batch.describe()}: {self.estimate.describe()}"

    def refusal(self) -> str:
        """The one-line error of a batch that does not fit."""
        room = (self.available or 0) / GiB
        return (
            f"this run needs about {self.estimate.describe()}, but {room:.2f} GiB are available on "
            f"{self.device}; {self.advice}"
        )


def plan_memory(
    config: TimeLLMConfig,
    execution: ExecutionSettings,
    *,
    precision: str,
    batches: Sequence[MemoryBatch],
    device: torch.device | str | None = None,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    layers_fixed: bool = False,
) -> list[MemoryPlan]:
    """The memory plan of a run, known before anything is loaded: each of its ``batches`` estimated
    (one process base for all) beside the memory available, with the settings that would fit where
    a batch does not. ``layers_fixed``: the layers are a trained adapter's (fewer is not advised).

    What ``train``, ``forecast`` and their ``--dry-run`` refuse by and ``timellm info`` prints.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    storage, compute = plan_storage(config, execution, precision, device)
    room = memory_available(device)
    base = current_rss()
    plans = []
    for batch in batches:

        def estimate(
            cfg=config,
            storage=storage,
            ckpt=execution.gradient_checkpointing,
            windows=batch.windows,
            chunk=execution.llm_batch,
            batch=batch,
        ) -> MemoryEstimate:
            return estimate_memory(
                cfg,
                storage=storage,
                compute=compute,
                batch_series=windows * batch.channels,
                training=batch.training,
                gradient_checkpointing=ckpt,
                prompt_tokens=prompt_tokens,
                base=base,
                llm_batch=chunk,
            )

        found = estimate()
        advice = ""
        if room is not None and found.total > room:
            options = _lighter_settings(config, execution, batch, storage, layers_fixed)
            advice = _advice(options, estimate, room, base)
        plans.append(MemoryPlan(batch, found, room, device.type, advice))
    return plans


def _lighter_settings(
    config: TimeLLMConfig,
    execution: ExecutionSettings,
    batch: MemoryBatch,
    storage: str,
    layers_fixed: bool,
) -> list[tuple[str, dict]]:
    """(setting, the estimate's arguments it changes) of each setting that makes a run lighter."""
    options: list[tuple[str, dict]] = []
    if _uses_llm(config):
        for other in ("bf16", "int8"):
            if STORAGE_BYTES[other] < STORAGE_BYTES[storage]:
                options.append((f"weights={other}", {"storage": other}))
    if batch.training and not execution.gradient_checkpointing and _uses_llm(config):
        options.append(("gradient_checkpointing=true", {"ckpt": True}))
    if not batch.training and _uses_llm(config) and batch.series > 1 and (execution.llm_batch or 2) > 1:
        options.append(("llm_batch=1", {"chunk": 1}))
    setting = batch.setting or ("train.batch_size" if batch.training else "train.eval_batch_size")
    for windows in sorted({batch.windows // 4, 1}, reverse=True):
        if 0 < windows < batch.windows:
            options.append((f"{setting}={windows}", {"windows": windows}))
    if not layers_fixed and _uses_llm(config) and (config.llm_layers is None or config.llm_layers > 1):
        shape = llm_shape(config.backbone, config.llm_layers, config.trust_remote_code)
        fewer = max(1, shape.layers // 2)
        options.append((f"llm_layers={fewer}", {"cfg": dataclasses.replace(config, llm_layers=fewer)}))
    return options


def _advice(options: list[tuple[str, dict]], estimate, room: int, base: int) -> str:
    """What would fit in ``room``: each setting that fits alone, else the lightest combination that
    fits, else why nothing can."""
    fits = [
        f"{name} ({e.total / GiB:.1f} GiB)"
        for name, e in ((n, estimate(**c)) for n, c in options)
        if e.total <= room
    ]
    if fits:
        return "settings that fit: " + ", ".join(fits)
    if base >= room:
        return f"nothing can fit: this process alone holds {base / GiB:.2f} GiB before loading anything"
    together: dict = {}
    names: dict[str, str] = {}
    for without_layers in (True, False):
        for name, change in options:
            if without_layers and "cfg" in change:
                continue
            together.update(change)
            names.update(dict.fromkeys(change, name))  # the lightest of each kind, given last
        combined = estimate(**together)
        if combined.total <= room:
            return (
                f"no one setting fits alone, together they do: {', '.join(dict.fromkeys(names.values()))} "
                f"({combined.total / GiB:.1f} GiB)"
            )
    settings = ", ".join(dict.fromkeys(names.values())) or "no lighter setting applies"
    return (
        f"nothing fits, not even {settings} together ({estimate(**together).total / GiB:.1f} GiB): "
        "the run needs a machine with more memory"
    )


def refuse_what_cannot_fit(plans: Sequence[MemoryPlan], log: bool = True) -> None:
    """Raise :class:`InsufficientMemoryError` for the first batch of ``plans`` that does not fit;
    else log each estimate (unless ``log`` is False)."""
    for plan in plans:
        if not plan.fits:
            raise InsufficientMemoryError(plan.refusal())
    for plan in plans if log else ():
        if plan.available is None:
            logger.info(
                "memory: %s; the memory available cannot be read here, so it is not checked",
                plan.estimate.describe(),
            )
        else:
            logger.info("memory: %s; %.2f GiB available", plan.estimate.describe(), plan.available / GiB)


def check_memory(
    config: TimeLLMConfig,
    execution: ExecutionSettings,
    *,
    precision: str,
    batch_windows: int,
    channels: int = 1,
    training: bool,
    device: torch.device | str | None = None,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    batch_setting: str | None = None,
) -> MemoryEstimate:
    """Estimate one batch of ``batch_windows`` windows of ``channels`` series and refuse it, before
    anything is loaded, if it cannot fit (:func:`plan_memory` with one batch); ``batch_setting``
    names the setting that sets the batch. Raises :class:`InsufficientMemoryError` naming the
    estimate, what is free, and the settings (weights, gradient checkpointing, batch size, layers)
    that would fit."""
    batch = MemoryBatch(training, batch_windows, channels, batch_setting)
    plans = plan_memory(
        config, execution, precision=precision, batches=[batch], device=device, prompt_tokens=prompt_tokens
    )
    refuse_what_cannot_fit(plans)
    return plans[0].estimate
