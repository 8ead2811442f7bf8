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
- ``workspace``: one weight matrix widened to the compute dtype where the storage is narrower,
  and what the first forward adds to any process (kernel workspaces, caches: 0.3 GiB, measured).

Per-token activation bytes follow the decoder layer's saved tensors (norm inputs in fp32, the
projections' inputs, the MLP's three intermediate products) and were checked against measured
peaks of SmolLM2-135M and of LLaMA-shaped 1B and 7B backbones (``timellm bench memory``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
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
    """The transformers config of backbone ``spec`` truncated to ``llm_layers``, without its weights."""
    from timellm.backbones.loading import (
        SHAPE_ALIASES,
        TINY_ALIASES,
        _quiet_transformers,
        _resolve_folder,
        _truncated_config,
    )
    from timellm.backbones.shapes import shaped_config

    if spec in SHAPE_ALIASES:
        return shaped_config(spec, _smollm2_vocabulary(), llm_layers)[0]
    if spec in TINY_ALIASES:
        from timellm.backbones.tiny import build_tiny_backbone

        return build_tiny_backbone(spec, llm_layers)[0].config
    from transformers import AutoConfig

    folder, _ = _resolve_folder(spec)
    with _quiet_transformers():
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return _truncated_config(config, llm_layers, spec)[0]


@functools.cache
def _smollm2_vocabulary() -> int:
    from timellm.backbones.loading import shaped_tokenizer

    return len(shaped_tokenizer())


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
    no_llm = c.llm in ("none", "attention", "transformer")
    shape = None if no_llm else llm_shape(c.backbone, c.llm_layers, c.trust_remote_code)
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
        # for backward
        adapter += (shape.linear_parameters + shape.vocab * shape.hidden) * act
    elif training and stored < act:
        # the vocabulary widened to the compute dtype, kept for the mapping's gradient
        adapter += shape.vocab * shape.hidden * act
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
    workspace = RUNTIME + (shape.largest_matrix * act if stored != act or storage == "int8" else 0)
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
    """``TIMELLM_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix), a ceiling set by hand or by tests."""
    text = os.environ.get("TIMELLM_MEMORY_LIMIT")
    if not text:
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if text[-1:] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise ValueError(f"TIMELLM_MEMORY_LIMIT must be bytes or a size like 16G, found {text!r}") from None


def plan_storage(
    config: TimeLLMConfig, execution: ExecutionSettings, precision: str, device
) -> tuple[str, str]:
    """(storage, compute) of a run: ``execution.weights`` resolved (auto: see
    :func:`timellm.model.precision.resolve_weights`) and ``precision`` resolved on ``device``."""
    compute = resolve_precision(precision, device)
    if config.llm in ("none", "attention", "transformer"):
        return "fp32", compute
    if execution.weights == "auto" and compute == "fp32":
        shape = llm_shape(config.backbone, config.llm_layers, config.trust_remote_code)
        room = simulated_available() or available_memory(device)
        return resolve_weights("auto", precision, device, weight_bytes(shape, "fp32"), room), compute
    return resolve_weights(execution.weights, precision, device), compute


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
    """Estimate the run and refuse it, before anything is loaded, if it cannot fit.

    ``batch_windows`` windows of ``channels`` series a batch; ``batch_setting`` names the setting
    that sets it (advised when a smaller batch would fit). Raises
    :class:`InsufficientMemoryError` naming the estimate, what is free, and the settings
    (weights, gradient checkpointing, batch size, layers) that would fit.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_series = batch_windows * channels
    storage, compute = plan_storage(config, execution, precision, device)
    ckpt = execution.gradient_checkpointing

    def estimate(
        cfg=config, storage=storage, ckpt=ckpt, series=batch_series, chunk=execution.llm_batch
    ) -> MemoryEstimate:
        return estimate_memory(
            cfg,
            storage=storage,
            compute=compute,
            batch_series=series,
            training=training,
            gradient_checkpointing=ckpt,
            prompt_tokens=prompt_tokens,
            llm_batch=chunk,
        )

    found = estimate()
    room = simulated_available() or available_memory(device)
    if room is None:
        logger.info(
            "memory: %s; the memory available cannot be read here, so it is not checked", found.describe()
        )
        return found
    if found.total <= room:
        logger.info("memory: %s; %.2f GiB available", found.describe(), room / GiB)
        return found
    options = []
    for other in ("bf16", "int8"):
        if STORAGE_BYTES[other] < STORAGE_BYTES[storage]:
            options.append((f"weights={other}", estimate(storage=other)))
    if training and not ckpt:
        options.append(("gradient_checkpointing=true", estimate(ckpt=True)))
    if not training and (execution.llm_batch or batch_series) > 1 and batch_series > 1:
        options.append(("llm_batch=1", estimate(chunk=1)))
    for windows in (batch_windows // 4, 1):
        if 0 < windows < batch_windows:
            setting = batch_setting or ("train.batch_size" if training else "train.eval_batch_size")
            name = f"{setting}={windows}"
            options.append((name, estimate(series=windows * channels)))
    if config.llm_layers is None or config.llm_layers > 1:
        shape = llm_shape(config.backbone, config.llm_layers, config.trust_remote_code)
        fewer = max(1, shape.layers // 2)
        options.append((f"llm_layers={fewer}", estimate(cfg=dataclasses.replace(config, llm_layers=fewer))))
    fits = [f"{name} ({e.total / GiB:.1f} GiB)" for name, e in options if e.total <= room]
    advice = (
        "settings that fit: " + ", ".join(fits)
        if fits
        else "none of lighter weights, gradient checkpointing, a smaller batch or half the layers "
        "fits alone: combine them"
    )
    raise InsufficientMemoryError(
        f"this run needs about {found.describe()}, but {room / GiB:.2f} GiB are available on "
        f"{device.type}; {advice}"
    )
