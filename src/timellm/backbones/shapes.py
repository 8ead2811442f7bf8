"""Paper-scale backbones with random weights: LLaMA-7B's and Llama-3.2-1B's architectures.

The paper's backbone is LLaMA-7B, whose weights no offline package ships. These aliases build its
exact architecture (width, depth, heads, MLP) with random frozen weights, paired with SmolLM2's
tokenizer (vocabulary 49,152 instead of LLaMA's 32,000): the memory, the speed and every code path
are those of the paper's model, the forecasts are not. They are built one layer at a time straight
into the storage dtype, so building never holds more than the stored model and one layer.
"""

from __future__ import annotations

import copy
import logging

import torch

from timellm._malloc import release_free_memory
from timellm.backbones.errors import BackboneError
from timellm.backbones.storage import LOAD_DTYPES, store_weights

logger = logging.getLogger(__name__)

# LLaMA-7B (Touvron et al. 2023) and Llama-3.2-1B, as their config.json files give them
SHAPES: dict[str, dict] = {
    "random-llama-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
    },
    "random-llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
    },
}
SHAPE_ALIASES = tuple(SHAPES)


def shaped_config(alias: str, vocab_size: int, llm_layers: int | None = None):
    """The LlamaConfig of ``alias``, truncated to ``llm_layers`` (all if None); returns (config, total)."""
    from transformers import LlamaConfig

    if alias not in SHAPES:
        raise BackboneError(f"unknown shaped backbone {alias!r}; known: {', '.join(SHAPES)}")
    shape = SHAPES[alias]
    total = shape["num_hidden_layers"]
    layers = total if llm_layers is None else llm_layers
    if layers > total:
        raise BackboneError(f"llm_layers={llm_layers} but backbone {alias!r} has only {total} layers")
    config = LlamaConfig(vocab_size=vocab_size, **{**shape, "num_hidden_layers": layers})
    return config, total


def build_shaped_backbone(
    alias: str, tokenizer, llm_layers: int | None, storage: str, attn_implementation: str | None = None
):
    """Return (model, total_layers): ``alias`` with random weights (seed 0) stored in ``storage``."""
    from transformers import LlamaModel
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    config, total = shaped_config(alias, len(tokenizer), llm_layers)
    config.pad_token_id = tokenizer.pad_token_id
    config._attn_implementation = attn_implementation or "sdpa"
    layers = config.num_hidden_layers
    empty = copy.deepcopy(config)
    empty.num_hidden_layers = 0
    logger.info(
        "building %s: %d layers of width %d with random weights, stored in %s",
        alias,
        layers,
        config.hidden_size,
        storage,
    )
    dtype = LOAD_DTYPES[storage]  # int8: from bf16
    # the same weights every time, without touching the caller's random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _materialised(LlamaModel, empty, dtype)  # embeddings, final norm, rotary embedding
        model.apply(model._init_weights)
        store_weights(model, "bf16" if storage == "int8" else storage)  # int8 is for linears only
        for index in range(layers):
            layer = _materialised(LlamaDecoderLayer, config, dtype, layer_idx=index)
            layer.apply(model._init_weights)
            model.layers.append(store_weights(layer.requires_grad_(False), storage))
            release_free_memory()  # the layer's temporaries (bf16 before int8) leave the resident set
    model.config.num_hidden_layers = layers
    return model, total


def _materialised(cls, config, dtype: torch.dtype, **kwargs):
    """``cls(config)`` allocated once, directly in ``dtype`` (built on the meta device first); the
    caller initialises its weights. LLaMA's only buffer, the rotary frequencies, is recomputed."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    with torch.device("meta"):
        module = cls(config, **kwargs)
    module = module.to(dtype=dtype).to_empty(device="cpu")
    if isinstance(getattr(module, "rotary_emb", None), LlamaRotaryEmbedding):
        module.rotary_emb = LlamaRotaryEmbedding(config=config)
    left = [name for name, _ in module.named_buffers() if not name.startswith("rotary_emb.")]
    if left:
        raise BackboneError(f"cannot build {cls.__name__} on the meta device: buffers {left} need values")
    return module
