"""FLOP accounting of the benchmark: what one step of the fast or the plain path must compute,
and the matmul rates this machine reaches (the square peak, and the model's own product shapes).

The fraction of peak :mod:`timellm.experiments.speed` reports divides the first by the second.
"""

from __future__ import annotations

import time

import torch


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
