"""The trainable pieces of Time-LLM and the parameter-free transforms around them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from timellm.backbones.storage import matmul_stored, matmul_stored_t
from timellm.model.config import NORMALIZATIONS

REVIN_EPS = 1e-5


def revin_normalize(
    x: torch.Tensor, eps: float = REVIN_EPS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Instance normalisation without affine parameters, over the last axis.

    x: (S, T) -> (normalised (S, T), mean (S, 1), std (S, 1)), std the population std with eps.
    """
    mean = x.mean(dim=-1, keepdim=True).detach()
    std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + eps).detach()
    return (x - mean) / std, mean, std


def revin_denormalize(y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo :func:`revin_normalize` on a forecast y: (S, H)."""
    return y * std + mean


def normalize(
    x: torch.Tensor,
    kind: str = "revin",
    *,
    pred_len: int | None = None,
    period: int | None = None,
    eps: float = REVIN_EPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-series normalisation of x (S, T) -> (normalised (S, T), forecast centre, scale (S, 1)).

    The forecast is ``head output * scale + centre`` (:func:`revin_denormalize`), so a zero output
    forecasts the centre:

    * ``"revin"``: the window's mean and std (:func:`revin_normalize`, the paper); centre (S, 1).
    * ``"last"``: the window's last value as the centre and its std as the scale, so the normalised
      window ends at 0 and a zero output repeats the last value (NLinear's subtract-last, Zeng et
      al. 2023). Where the level breaks inside the window, the mean lies between the two levels and
      the forecast has to climb back from it; the last value is already on the new level.
    * ``"seasonal"``: the input as ``"revin"``, but the centre is the seasonal-naive forecast of the
      window, its last ``period`` values repeated over ``pred_len`` steps (S, pred_len): the model
      learns a correction to seasonal naive instead of the whole forecast.
    """
    if kind == "revin":
        return revin_normalize(x, eps)
    if kind == "last":
        last = x[..., -1:].detach()
        std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + eps).detach()
        return (x - last) / std, last, std
    if kind == "seasonal":
        if pred_len is None or period is None or not 1 <= period <= x.shape[-1]:
            raise ValueError(
                f"seasonal normalisation needs pred_len and a period in [1, {x.shape[-1]}] (the "
                f"look-back); found pred_len {pred_len!r}, period {period!r}"
            )
        normalised, _, std = revin_normalize(x, eps)
        steps = torch.arange(pred_len, device=x.device) % period + (x.shape[-1] - period)  # (H,)
        return normalised, x[..., steps].detach(), std
    raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}; found {kind!r}")


def patchify(x: torch.Tensor, patch_len: int, stride: int) -> torch.Tensor:
    """(S, T) -> (S, P, patch_len), after repeating the last value `stride` times at the end."""
    padded = F.pad(x[:, None, :], (0, stride), mode="replicate")[:, 0]  # (S, T + stride)
    return padded.unfold(dimension=-1, size=patch_len, step=stride)  # (S, P, patch_len)


class PatchEmbedding(nn.Module):
    """Patches to d_model: a Conv1d across neighbouring patches (released code) or a linear map (paper)."""

    def __init__(self, patch_len: int, d_model: int, kind: str = "conv", dropout: float = 0.1):
        super().__init__()
        self.kind = kind
        if kind == "conv":
            # kernel 3 over the patch axis, circular padding, no bias: the released TokenEmbedding
            self.proj = nn.Conv1d(
                patch_len, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False
            )
            nn.init.kaiming_normal_(self.proj.weight, mode="fan_in", nonlinearity="leaky_relu")
        elif kind == "linear":
            self.proj = nn.Linear(patch_len, d_model)
        else:
            raise ValueError(f"patch embedding must be 'conv' or 'linear', found {kind!r}")
        self.dropout = nn.Dropout(dropout)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(S, P, patch_len) -> (S, P, d_model)."""
        if self.kind == "conv":
            out = self.proj(patches.transpose(1, 2)).transpose(1, 2)
        else:
            out = self.proj(patches)
        return self.dropout(out)


class _NarrowVocabularyMap(torch.autograd.Function):
    """E' = W E + b with the vocabulary E (V, D) stored narrower than W computes (bf16 storage in
    an fp32 run): E is widened a chunk of rows at a time, in forward and again in backward
    (:func:`~timellm.backbones.storage.matmul_stored`), and only the stored E is kept for backward.

    Widening E whole and handing it to the Linear kept an fp32 copy of the vocabulary for the
    weight gradient (384 MiB for a 49,152 x 2048 vocabulary), more than bf16 storage saves on a
    few layers of a 1B model.
    """

    @staticmethod
    def forward(ctx, vocabulary, weight, bias):
        ctx.save_for_backward(vocabulary, weight)
        return matmul_stored(weight, vocabulary).add_(bias[:, None])  # (V', V) @ (V, D)

    @staticmethod
    def backward(ctx, grad):
        vocabulary, weight = ctx.saved_tensors
        want_vocabulary, want_weight, want_bias = ctx.needs_input_grad
        grad_weight = matmul_stored_t(grad, vocabulary) if want_weight else None  # dE' E^T (V', V)
        grad_bias = grad.sum(dim=1) if want_bias else None
        # a frozen vocabulary never asks; one that was unfrozen gets W^T dE' in its storage
        grad_vocabulary = (weight.T @ grad).to(vocabulary.dtype) if want_vocabulary else None
        return grad_vocabulary, grad_weight, grad_bias


class TextPrototypes(nn.Module):
    """E' = W E: V' prototypes as learned mixtures of the frozen vocabulary embeddings (V, D)."""

    def __init__(self, vocab_size: int, num_prototypes: int):
        super().__init__()
        self.mapping = nn.Linear(vocab_size, num_prototypes)

    def forward(self, word_embeddings: torch.Tensor) -> torch.Tensor:
        """(V, D) -> (V', D)."""
        weight = self.mapping.weight
        if word_embeddings.dtype == weight.dtype or torch.is_autocast_enabled(word_embeddings.device.type):
            return self.mapping(word_embeddings.T).T
        # a vocabulary stored narrower (weights=bf16) in a run that computes in fp32
        return _NarrowVocabularyMap.apply(word_embeddings, weight, self.mapping.bias)


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, device: torch.device
) -> tuple[torch.Tensor, float]:
    """A dropout keep-mask of ``shape`` and the scale 1 / P(keep) that keeps the expectation.

    Drawn as 16-bit random words, four per 64-bit draw of the generator: on CPU this is about 7x
    cheaper than ``bernoulli_``, whose one draw per element was 5 % of a training step. The drop
    probability is ``p`` rounded to a multiple of 1/65536 (0.1 -> 0.100006) and the scale uses the
    rounded value, so the output stays unbiased; the default generator is used, so seeding torch
    repeats the masks.
    """
    n = math.prod(shape)
    words = torch.empty(-(-n // 4), dtype=torch.int64, device=device).random_(-(2**63), None)
    dropped = round(p * 65536)
    keep = words.view(torch.int16)[:n].view(shape) >= dropped - 32768
    return keep, 65536 / (65536 - dropped)


class Reprogramming(nn.Module):
    """Multi-head cross-attention: patch embeddings query the text prototypes.

    Computed as one batched product per head over all series and patches, (K, S*P, dk) @ (K, dk, V'),
    so the (S*P x V') score matrices are never permuted or copied; the 1/sqrt(dk) scale is applied to
    the queries and the dropout scale to the values (small tensors) rather than to the scores. On CPU
    the attention dropout draws its mask with :func:`keep_mask`.
    """

    def __init__(self, d_model: int, n_heads: int, d_keys: int, d_llm: int, attention_dropout: float = 0.1):
        super().__init__()
        self.n_heads = n_heads
        self.d_keys = d_keys
        self.query = nn.Linear(d_model, d_keys * n_heads)
        self.key = nn.Linear(d_llm, d_keys * n_heads)
        self.value = nn.Linear(d_llm, d_keys * n_heads)
        self.out = nn.Linear(d_keys * n_heads, d_llm)
        self.dropout = nn.Dropout(attention_dropout)

    def _weights(self, patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Attention weights (K, S*P, V') of each patch over the prototypes, per head."""
        s, p, _ = patches.shape
        q = self.query(patches).view(s * p, self.n_heads, self.d_keys).transpose(0, 1)  # (K, S*P, dk)
        k = self.key(prototypes).view(-1, self.n_heads, self.d_keys).permute(1, 2, 0)  # (K, dk, V')
        return torch.softmax(torch.bmm(q * (1 / math.sqrt(self.d_keys)), k), dim=-1)

    def attention(self, patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Attention weights (S, K, P, V') of each patch over the prototypes, per head."""
        s, p, _ = patches.shape
        return self._weights(patches, prototypes).view(self.n_heads, s, p, -1).transpose(0, 1)

    def forward(self, patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """(S, P, d_model), (V', D) -> (S, P, D)."""
        s, p, _ = patches.shape
        weights = self._weights(patches, prototypes)  # (K, S*P, V')
        v = self.value(prototypes).view(-1, self.n_heads, self.d_keys).transpose(0, 1)  # (K, V', dk)
        rate = self.dropout.p
        if self.training and rate > 0:
            if weights.device.type == "cpu":
                keep, scale = keep_mask(weights.shape, rate, weights.device)
                weights, v = torch.where(keep, weights, 0.0), v * scale  # no cast of the mask
            else:  # one fused kernel on accelerators
                weights = self.dropout(weights)
        out = torch.bmm(weights, v)  # (K, S*P, dk)
        return self.out(out.transpose(0, 1).reshape(s, p, self.n_heads * self.d_keys))  # (S, P, D)


class FlattenHead(nn.Module):
    """(S, P, C) -> (S, H): flatten channels-major (C x P, as released), linear, dropout."""

    def __init__(
        self, channels: int, num_patches: int, pred_len: int, dropout: float = 0.1, zero: bool = False
    ):
        super().__init__()
        self.linear = nn.Linear(channels * num_patches, pred_len)
        if zero:  # initialised (the random stream consumed as usual), then zeroed
            nn.init.zeros_(self.linear.weight), nn.init.zeros_(self.linear.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(hidden.transpose(1, 2).flatten(start_dim=1)))


class SelfAttentionBlock(nn.Module):
    """One randomly initialised multi-head self-attention layer: LayerNorm(x + Dropout(MHA(x))).

    The "LLM2Attn" ablation of Tan et al. (NeurIPS 2024): their code wraps the attention in a
    residual connection and a post-LayerNorm, without biases, so we do the same.
    """

    def __init__(self, d_model: int, n_heads: int, attention_dropout: float = 0.1, dropout: float = 0.1):
        super().__init__()
        self.attention = nn.MultiheadAttention(
            d_model, n_heads, dropout=attention_dropout, bias=False, batch_first=True
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(S, P, d_model) -> (S, P, d_model)."""
        mixed = self.attention(x, x, x, need_weights=False)[0]
        return self.norm(x + self.dropout(mixed))
