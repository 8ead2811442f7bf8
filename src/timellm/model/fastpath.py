"""The fast path: the plain path's forecasts and gradients, computing only what changes (SPEC §1).

In a causal decoder the hidden states of a position depend only on the tokens before it. So

1. the prompt prefix shared by every series (description + task instruction) runs through the
   LLM once, without gradient, and its key/value cache is kept (:class:`PromptPrefixCache`);
2. per batch, each series' statistics tokens run without gradient on top of that cache, laid out
   ``[prefix][pad ...][stats]`` with the pads masked out and every real token at the position the
   plain path gives it (:func:`extend_cache`);
3. only the reprogrammed patch tokens run with gradient, reading the prefix + statistics cache
   (:func:`run_patch_tokens`).

Attention is invariant to where a masked-out pad sits, and positions come from ``position_ids``,
not from the slot index, so ``[prefix][pads][stats]`` computes what the plain path's left-padded
``[pads][prefix][stats]`` computes. Caches go through transformers' own cache classes. The cache
that is read by the patch tokens is :class:`FrozenKVLayer`: it never grows, so it can be read twice
(gradient checkpointing replays a layer in backward) and nothing kept between calls is mutated.

Bidirectional encoders (BERT) let every prompt position see the patches: there the shortcut is not
exact and the model takes the plain path (:func:`fast_path_unsupported_reason`). Causal decoders
whose architecture the test suite does not compare with the plain path (anything but
:data:`VERIFIED_ARCHITECTURES`) check themselves on their first batch (:func:`fast_path_agrees`).

The caches are keyed on what they depend on: the prefix cache on the frozen LLM's weights (their
storage and version counters, bumped by every in-place write through autograd's view of them;
the fast path only runs while every LLM weight is frozen), E' on a content fingerprint of the
trainable mapping weights (:func:`content_fingerprint`: a fused optimiser step changes them
without bumping their version counters).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
from collections.abc import Iterator

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (batch, kv_heads, length, head_dim)

# model types (``config.model_type``) whose fast path tests/test_fast_path.py compares with the plain
# path, outputs and gradients; other causal decoders check themselves on their first batch
VERIFIED_ARCHITECTURES = frozenset({"llama", "gpt2"})


def fast_path_unsupported_reason(model: nn.Module, is_causal: bool) -> str | None:
    """Why the cached computation would differ from the plain one for this backbone, or None."""
    if not is_causal:
        return "a bidirectional encoder lets every prompt position attend to the patch tokens"
    config = model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(kind != "full_attention" for kind in layer_types):
        return f"layers other than full attention ({sorted(set(layer_types))})"
    if (
        layer_types is None
        and getattr(config, "sliding_window", None)
        and getattr(config, "use_sliding_window", True)
    ):
        return "sliding-window attention"
    return None


def fast_path_agrees(fast: torch.Tensor, plain: torch.Tensor) -> tuple[bool, float]:
    """Whether the fast path's hidden states equal the plain path's up to rounding; and the gap.

    fast, plain: (S, P, D). The tolerance is relative to the largest activation: 1e-3 in 32-bit,
    5e-2 in 16-bit (the two paths round differently, their sums run in other orders).
    """
    scale = float(plain.abs().max()) or 1.0
    gap = float((fast.float() - plain.float()).abs().max()) / scale
    tolerance = 1e-3 if plain.dtype in (torch.float32, torch.float64) else 5e-2
    return gap <= tolerance, gap


def llm_cache_kwargs(llm: nn.Module, cache: Cache | None) -> dict:
    """The keyword that passes a KV cache to ``llm``: ``cache`` in current transformers (5.2x), where
    ``past_key_values`` is deprecated, and ``past_key_values`` in the releases before it."""
    return {"cache": cache} if _takes_cache_keyword(type(llm)) else {"past_key_values": cache}


@functools.cache
def _takes_cache_keyword(model_class: type) -> bool:
    return "cache" in inspect.signature(model_class.forward).parameters


def returned_cache(output) -> Cache:
    """The cache a transformers model returned, under its current name or the older one."""
    names = {f.name for f in dataclasses.fields(output)}
    return output.cache if "cache" in names else output.past_key_values


def _autocast_state(device: torch.device) -> tuple[bool, torch.dtype | None]:
    if not torch.is_autocast_enabled(device.type):
        return False, None
    return True, torch.get_autocast_dtype(device.type)


def _weights_signature(module: nn.Module) -> tuple:
    """Changes when a weight is replaced (device/dtype moves) or modified in place through autograd's
    view of it (``load_state_dict``, ``no_grad`` in-place ops); not by writes to ``.data``."""
    return tuple((p.data_ptr(), p.dtype, p._version) for p in module.parameters())


_PROBES: dict[tuple[int, torch.device], torch.Tensor] = {}


def _probe(length: int, device: torch.device) -> torch.Tensor:
    """A fixed, irregular, positive vector of ``length`` (float32): the weights of a fingerprint."""
    key = (length, device)
    if key not in _PROBES:
        golden = 0.6180339887498949
        _PROBES[key] = 1.5 + torch.cos(torch.arange(length, dtype=torch.float64) * golden).float().to(device)
    return _PROBES[key]


@torch.no_grad()
def content_fingerprint(module: nn.Module) -> tuple[float, ...]:
    """One number per weight that changes when any of its values does: a weighted sum over rows
    and columns (one matrix-vector product, a read of the weights: far cheaper than using them).

    Unlike version counters it sees every kind of update: fused optimiser steps, writes to
    ``.data``, EMA copies, swapped values. Only a change below the float32 rounding of a row's
    weighted sum (about 1e-7 of its size) could pass unseen. On SmolLM2's mapping (1000 x 49152)
    it takes 20 ms where computing E' takes 500 ms (2 busy CPU cores).
    """
    prints = []
    for p in module.parameters():
        matrix = p.detach().float().reshape(p.shape[0] if p.ndim > 1 else 1, -1)  # (rows, cols)
        rows = matrix @ _probe(matrix.shape[1], p.device)  # (rows,)
        prints.append(float(rows.double() @ _probe(matrix.shape[0], p.device).double()))
    return tuple(prints)


class FrozenKVLayer(DynamicLayer):
    """A cache layer holding fixed past keys/values (batch, kv_heads, length, head_dim).

    ``update`` returns past + new keys/values for attention but stores nothing: reading the layer
    never changes it, so one instance can be read again when a layer is recomputed in backward.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class PromptPrefixCache:
    """Key/value cache of the prompt prefix shared by every series, computed once.

    The prefix ids are fixed when the model is built (they depend on description, seq_len and
    pred_len: a new config builds a new model and so a new cache). The cache is recomputed when
    the LLM's weights move (device or dtype) or change, or when the compute dtype or autocast
    state changes, so that it always equals what the plain path computes for the prefix.
    """

    def __init__(self, prefix_ids: list[int]):
        self.prefix_ids = list(prefix_ids)
        self._key: tuple | None = None
        self._kv: KV | None = None
        self.builds = 0  # how many times the prefix was run (tests check it is not every call)

    def get(self, llm: nn.Module, dtype: torch.dtype) -> KV:
        """Per layer (1, kv_heads, Lp, head_dim) keys and values of the prefix."""
        device = llm.get_input_embeddings().weight.device
        key = (dtype, device, _autocast_state(device), _weights_signature(llm))
        if self._kv is None or key != self._key:
            self._kv = self._build(llm, dtype, device)
            self._key = key
            self.builds += 1
        return self._kv

    def clear(self) -> None:
        self._key, self._kv = None, None

    @torch.no_grad()
    def _build(self, llm: nn.Module, dtype: torch.dtype, device: torch.device) -> KV:
        ids = torch.tensor([self.prefix_ids], dtype=torch.long, device=device)  # (1, Lp)
        embeds = llm.get_input_embeddings()(ids).to(dtype)  # (1, Lp, D)
        out = llm(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(ids.shape[1], device=device)[None],
            use_cache=True,
            **llm_cache_kwargs(llm, DynamicCache()),
        )
        return [(layer.keys, layer.values) for layer in returned_cache(out).layers]


@torch.no_grad()
def extend_cache(llm: nn.Module, prefix: KV, ids: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> KV:
    """Run left-padded per-series tokens after the shared prefix; return the combined cache.

    ids, mask: (S, Ls) left-padded token ids and their mask. Returns per layer
    (S, kv_heads, Lp + Ls, head_dim) keys and values, laid out [prefix][pad ...][tokens]. Real
    tokens get positions Lp, Lp + 1, ...: those the plain path gives them after Lp prefix tokens.
    """
    s, lp = ids.shape[0], prefix[0][0].shape[-2]
    if ids.shape[1] == 0:
        return [(k.expand(s, -1, -1, -1), v.expand(s, -1, -1, -1)) for k, v in prefix]
    # a fresh cache per call, seeded with copies: the kept prefix tensors are never appended to
    cache = DynamicCache([(k.expand(s, -1, -1, -1), v.expand(s, -1, -1, -1)) for k, v in prefix])
    embeds = llm.get_input_embeddings()(ids).to(dtype)  # (S, Ls, D)
    attention_mask = torch.cat([mask.new_ones(s, lp), mask], dim=1)  # (S, Lp + Ls): past and current
    position_ids = lp + (mask.cumsum(-1) - 1).clamp(min=0)  # (S, Ls)
    out = llm(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **llm_cache_kwargs(llm, cache),
    )
    return [(layer.keys, layer.values) for layer in returned_cache(out).layers]


def run_patch_tokens(llm: nn.Module, past: KV, past_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The patch tokens (with gradient) through the LLM after a cached prompt.

    past: per layer (S, kv_heads, L, head_dim); past_mask: (S, L), 1 at real prompt tokens;
    tokens: (S, P, D). Returns the last hidden states (S, P, D). Positions continue after each
    series' own number of real prompt tokens, as in the plain path.
    """
    s, p, _ = tokens.shape
    cache = Cache(layers=[FrozenKVLayer(k, v) for k, v in past])
    attention_mask = torch.cat([past_mask, past_mask.new_ones(s, p)], dim=1)  # (S, L + P)
    position_ids = past_mask.sum(-1, keepdim=True) + torch.arange(p, device=tokens.device)  # (S, P)
    out = llm(
        inputs_embeds=tokens,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        **llm_cache_kwargs(llm, cache),
    )
    return out.last_hidden_state


@contextlib.contextmanager
def attention_kernel(config, implementation: str | None) -> Iterator[None]:
    """Run attention with ``implementation`` ("sdpa", "eager") inside; None: unchanged.

    ``config`` is the LLM's config: transformers picks the kernel from its
    ``_attn_implementation`` at every forward, so setting it for the duration of a call switches
    kernels without reloading anything.
    """
    previous = config._attn_implementation
    if implementation is None or implementation == previous:
        yield
        return
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = previous


# --------------------------------------------------------------------------------------------
# grouped-query attention without repeating keys and values

GROUPED_ATTENTION = "timellm_grouped"  # its name among transformers' attention functions
GROUPED_ARCHITECTURES = frozenset({"llama"})  # whose attention modules call it as llama's eager one


def grouped_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Llama's attention, computed per key/value head instead of per query head.

    query: (S, H, Q, hd); key, value: (S, G, L, hd) with G key/value heads, H = G·r. The eager
    kernel first copies every key and value head r times (``repeat_kv``: 2·r·S·G·L·hd values, and
    their sum in backward), then runs H small (Q x hd) @ (hd x L) products. Here the r query heads
    that share a key/value head are stacked into one (r·Q x hd) block: no copies of K and V, G
    products r times taller, the same scores. Without attention dropout (the frozen LLM: always)
    the stacked blocks go through torch's fused scaled-dot-product kernel, which never writes the
    (r·Q x L) scores and weights out (the mask is expanded to the stacked rows: S·r·Q·L values,
    no more than the scores it replaces), and no weights are returned; with dropout in training it
    is :func:`grouped_eager_attention`. Returns the output (S, Q, H, hd) and the weights or None.
    """
    if dropout > 0 and module.training:
        return grouped_eager_attention(module, query, key, value, attention_mask, scaling, dropout)
    s, h, q_len, head_dim = query.shape
    groups, length = key.shape[1], key.shape[-2]
    repeats = h // groups
    stacked = query.reshape(s, groups, repeats * q_len, head_dim)  # (S, G, r·Q, hd)
    if attention_mask is not None:  # (S, 1, Q, L), additive: the same for every head
        attention_mask = attention_mask[:, :, None].expand(s, 1, repeats, q_len, length)
        attention_mask = attention_mask.reshape(s, 1, repeats * q_len, length).to(query.dtype)
    out = nn.functional.scaled_dot_product_attention(
        stacked, key, value, attn_mask=attention_mask, scale=scaling
    )
    return out.view(s, h, q_len, head_dim).transpose(1, 2).contiguous(), None  # (S, Q, H, hd)


def grouped_eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`grouped_attention` with explicit scores and weights: Llama's eager kernel per
    key/value head. The scale multiplies the queries (Q·hd values) rather than the scores (Q·L):
    the same result up to rounding. Softmax runs in float32 as in the eager kernel. Returns the
    output (S, Q, H, hd) and the weights (S, H, Q, L)."""
    s, h, q_len, head_dim = query.shape
    groups, length = key.shape[1], key.shape[-2]
    repeats = h // groups
    stacked = (query * scaling).reshape(s, groups, repeats * q_len, head_dim)  # (S, G, r·Q, hd)
    scores = torch.matmul(stacked, key.transpose(2, 3))  # (S, G, r·Q, L)
    if attention_mask is not None:  # (S, 1, Q, L), additive: the same for every head
        scores = (scores.view(s, groups, repeats, q_len, length) + attention_mask[:, :, None]).view_as(scores)
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value)  # (S, G, r·Q, hd)
    out = out.view(s, h, q_len, head_dim).transpose(1, 2).contiguous()  # (S, Q, H, hd)
    return out, weights.view(s, h, q_len, length)


@functools.cache
def register_grouped_attention() -> str:
    """Make :func:`grouped_attention` a transformers attention function (once per process); its name.

    It takes the eager kernel's masks (additive, one per query and key position): transformers
    builds no mask at all for an attention function it has no mask function for.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(GROUPED_ATTENTION, grouped_attention)
    AttentionMaskInterface.register(GROUPED_ATTENTION, eager_mask)
    return GROUPED_ATTENTION


# --------------------------------------------------------------------------------------------
# gradient checkpointing that keeps reading the prompt cache
#
# transformers' own checkpointing drops past_key_values and only acts on modules in training
# mode; our frozen LLM stays in eval mode and the patch tokens must read the cache. So each
# decoder layer's forward is wrapped once to go through torch.utils.checkpoint when the
# current call asked for it (a context variable) and autograd is recording.

_CHECKPOINT_LAYERS: contextvars.ContextVar[bool] = contextvars.ContextVar("timellm_checkpoint", default=False)


def _maybe_checkpointed(forward, config, *args, **kwargs):
    if _CHECKPOINT_LAYERS.get() and torch.is_grad_enabled():
        # the recomputation in backward runs outside the caller's attention_kernel(): it must
        # use the kernel of the forward it replays
        kernel = config._attn_implementation

        def replay(*args, **kwargs):
            with attention_kernel(config, kernel):
                return forward(*args, **kwargs)

        return torch.utils.checkpoint.checkpoint(replay, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def install_layer_checkpointing(llm: nn.Module) -> int:
    """Wrap every decoder/encoder layer of ``llm`` (idempotent); return how many layers there are.

    The wrapper changes nothing unless :func:`checkpointing` is active: it is safe on a backbone
    shared by several models.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in llm.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(
            f"gradient checkpointing needs a transformers model built from GradientCheckpointingLayer "
            f"layers; {type(llm).__name__} has none"
        )
    for layer in layers:
        if "forward" not in vars(layer):
            layer.forward = functools.partial(
                _maybe_checkpointed, type(layer).forward.__get__(layer), llm.config
            )
    return len(layers)


@contextlib.contextmanager
def _switched(variable: contextvars.ContextVar[bool], enabled: bool) -> Iterator[None]:
    token = variable.set(enabled)
    try:
        yield
    finally:
        variable.reset(token)


def checkpointing(enabled: bool) -> contextlib.AbstractContextManager:
    """Within this context, wrapped layers recompute their activations in backward if ``enabled``."""
    return _switched(_CHECKPOINT_LAYERS, enabled)


# --------------------------------------------------------------------------------------------
# torch.compile of the LLM's memory-bound pieces
#
# Between its matrix products a decoder layer runs chains of elementwise operations (RMSNorm's
# square, mean, rsqrt and two products; the MLP's SiLU and product), each a full pass over the
# activations in memory. Inductor fuses each chain into one loop. The norms and MLPs are pure
# tensor functions, so they compile without graph breaks (dynamic shapes: the statistics length
# changes from batch to batch); the attention modules, which read cache objects, stay as they are.
# Like checkpointing, each module's forward is wrapped once and takes the compiled version only
# inside :func:`compiling`, so a backbone shared by several models is unaffected elsewhere.

_COMPILE_MODULES: contextvars.ContextVar[bool] = contextvars.ContextVar("timellm_compile", default=False)
# class-name endings of the modules compiled, per ExecutionSettings.compile_scope: the norms and MLPs
# alone, or whole decoder layers (attention included, so the residual adds and the rotary embedding
# fuse too)
COMPILED_KINDS = {"modules": ("RMSNorm", "MLP"), "layers": ("DecoderLayer",)}
_SCOPE_MARK = "timellm_compile_scope"  # on a compiled wrapper: the scope that installed it
# recompilations dynamo may keep per decoder layer under scope "layers": all layers share one
# ``forward`` code object, and each layer instance and pass shape (prompt, patches, their lengths)
# is a cache entry of its own; dynamo's default limit (8 per code object) would fall back to eager
RECOMPILES_PER_LAYER = 8


def _maybe_compiled(forward, compiled, *args, **kwargs):
    return compiled(*args, **kwargs) if _COMPILE_MODULES.get() else forward(*args, **kwargs)


def install_compiled_modules(llm: nn.Module, scope: str = "modules") -> int:
    """Wrap the modules of ``scope`` in ``llm`` with a compiled twin (idempotent); return how many.

    A wrapper another scope installed is removed first. Compilation itself happens on the first
    call inside :func:`compiling` (seconds to a minute, once per process and shape family).
    """
    kinds = COMPILED_KINDS[scope]
    count = 0
    for module in llm.modules():
        installed = getattr(vars(module).get("forward"), _SCOPE_MARK, None)
        if installed is not None and installed != scope:
            del module.forward  # the class's forward again
        if not type(module).__name__.endswith(kinds):
            continue
        count += 1
        if "forward" in vars(module):  # this scope's wrapper, or gradient checkpointing's
            continue
        forward = type(module).forward.__get__(module)
        wrapper = functools.partial(_maybe_compiled, forward, torch.compile(forward, dynamic=True))
        setattr(wrapper, _SCOPE_MARK, scope)
        module.forward = wrapper
    return count


@contextlib.contextmanager
def compiling(enabled: bool, layers: int = 0) -> Iterator[None]:
    """Within this context, wrapped modules run their compiled forward if ``enabled``.

    ``layers`` > 0 (scope "layers": that many decoder layers compiled) raises dynamo's
    recompilation limits to fit them, for the duration of the context only.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(_switched(_COMPILE_MODULES, enabled))
        if enabled and layers:
            import torch._dynamo

            limit = RECOMPILES_PER_LAYER * (layers + 1)
            stack.enter_context(
                torch._dynamo.config.patch(
                    recompile_limit=max(limit, torch._dynamo.config.recompile_limit),
                    accumulated_recompile_limit=max(
                        8 * limit, torch._dynamo.config.accumulated_recompile_limit
                    ),
                )
            )
        yield


# --------------------------------------------------------------------------------------------
# text prototypes at inference


class PrototypeCache:
    """E' kept while it cannot change: inference without autograd.

    The key holds a content fingerprint of the mapping weights (:func:`content_fingerprint`: a
    fused Adam step bumps no version counter), their storage and dtype (moves), the frozen
    vocabulary's storage and version, and the autocast state.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._value: torch.Tensor | None = None
        self.builds = 0

    def get(self, prototypes: nn.Module, vocabulary: torch.Tensor) -> torch.Tensor:
        """(V, D) vocabulary -> (V', D) prototypes, recomputed only when the key changes."""
        key = (
            _weights_signature(prototypes),
            content_fingerprint(prototypes),
            vocabulary.data_ptr(),
            vocabulary._version,
            vocabulary.dtype,
            _autocast_state(vocabulary.device),
        )
        if self._value is None or key != self._key:
            self._value = prototypes(vocabulary)
            self._key = key
            self.builds += 1
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None
