"""The model without its language model.

Tan et al. (NeurIPS 2024) ask whether Time-LLM's frozen LLM earns its cost by taking it out. Their
three ablations, as their code runs them for Time-LLM, keep the normalisation, the patch embedding
and the output head, and drop the prompt, the text prototypes and the reprogramming: the patch
embeddings go through nothing (``llm="none"``, w/o LLM), one randomly initialised self-attention
layer (``"attention"``, LLM2Attn) or one transformer encoder layer (``"transformer"``, LLM2Trsf),
trained with the rest. The random-weights LLM (``llm="random"``) is Time-LLM itself on a freshly
initialised backbone (:class:`~timellm.model.modeling.TimeLLM`). :mod:`timellm.model.variants`
builds and loads every variant of a config.
"""

from __future__ import annotations

import torch
from torch import nn

from timellm.model.adapter import TimeLLMBase
from timellm.model.config import LLM_FREE, ExecutionSettings, TimeLLMConfig
from timellm.model.layers import (
    FlattenHead,
    PatchEmbedding,
    SelfAttentionBlock,
    patchify,
)

__all__ = ["LLM_FREE", "LLMFreeTimeLLM"]


class LLMFreeTimeLLM(TimeLLMBase):
    """normalise -> patch -> (nothing | self-attention | transformer layer) -> head -> de-normalise.

    Time-LLM's frame in every other respect (saving, loading, parameter counts, execution
    settings), so that the harness and the forecasting API treat the ablations like the model.
    """

    def __init__(self, config: TimeLLMConfig, execution: ExecutionSettings | None = None):
        c = config
        if c.llm not in LLM_FREE:
            raise ValueError(f"LLMFreeTimeLLM builds llm={', '.join(LLM_FREE)}; found {c.llm!r}: use TimeLLM")
        super().__init__(config, execution)
        # the order of construction fixes the random draws: embedding, mixer, head
        self.patch_embedding = PatchEmbedding(c.patch_len, c.d_model, c.patch_embedding, c.dropout)
        if c.llm != "none" and c.d_model % c.n_heads:
            raise ValueError(
                f"the {c.llm} ablation needs n_heads ({c.n_heads}) to divide d_model ({c.d_model})"
            )
        if c.llm == "attention":
            self.mixer = SelfAttentionBlock(c.d_model, c.n_heads, c.attention_dropout, c.dropout)
        elif c.llm == "transformer":
            # feed-forward width 2048 is torch's default, which Tan et al.'s LLM2Trsf kept
            self.mixer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, dropout=c.dropout, batch_first=True)
        self.head = FlattenHead(c.d_model, c.num_patches, c.pred_len, c.dropout, zero=c.zero_head)

    def forecast_normalised(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised series (S, T) -> (S, H): patch embedding -> nothing, one attention or one
        transformer layer -> head (the rest of the forward pass is every variant's)."""
        c = self.config
        hidden = self.patch_embedding(patchify(x, c.patch_len, c.stride))  # (S, P, d_model)
        if c.llm != "none":
            hidden = self.mixer(hidden)  # (S, P, d_model)
        return self.head(hidden)  # (S, H)
