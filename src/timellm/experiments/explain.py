"""What did the reprogramming learn? Text prototypes read as words, and what a window attends to.

Jin et al. (Figure 5) interpret the text prototypes E' = W E through the vocabulary words nearest
to them; that code was never released. Here: for each prototype, the words whose frozen input
embeddings have the largest cosine similarity with it; for one test window, the prompt the LLM
reads and the prototypes its patches attend to most (reprogramming attention averaged over heads),
optionally as a patch-by-prototype heat map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from timellm.data.sources import DataSource
from timellm.model.adapter import TimeLLMBase
from timellm.model.layers import normalize, patchify
from timellm.model.modeling import TimeLLM
from timellm.model.prompt import prompt_text
from timellm.plotting import save_figure


@dataclass(frozen=True)
class PrototypeWords:
    """The vocabulary tokens nearest to one text prototype, most similar first."""

    prototype: int
    tokens: list[int]
    words: list[str]
    similarities: list[float]


@dataclass(frozen=True)
class WindowExplanation:
    """One look-back window of one channel: its prompt and its patches' attention over prototypes."""

    prompt: str  # exactly what the LLM reads before the patches ("" without a prompt)
    attention: np.ndarray  # (P, V'): each patch's attention over the prototypes, averaged over heads
    top_prototypes: list[tuple[int, float]]  # (prototype, mean attention over patches), largest first


def _check_explainable(model: TimeLLMBase) -> None:
    if model.backbone is None:
        raise ValueError(
            f"the {model.config.llm!r} variant has no text prototypes to explain (no LLM, no reprogramming)"
        )


def word_text(tokenizer, token_id: int) -> str:
    """A token as readable text: decoded, with invisible ones shown by their repr."""
    text = tokenizer.decode([token_id])
    return text.strip() if text.strip() else repr(text)


@torch.no_grad()
def text_prototypes(model: TimeLLM) -> torch.Tensor:
    """E' = W E of a trained model: (V', D)."""
    _check_explainable(model)
    return model.prototypes(model.backbone.word_embeddings).float()


@torch.no_grad()
def closest_words(model: TimeLLM, top_k: int = 5, chunk: int = 256) -> list[PrototypeWords]:
    """For every prototype the ``top_k`` vocabulary tokens of largest cosine similarity."""
    if top_k < 1:
        raise ValueError(f"top_k must be positive, found {top_k}")
    prototypes = F.normalize(text_prototypes(model), dim=-1)  # (V', D)
    vocabulary = F.normalize(model.backbone.word_embeddings.float(), dim=-1)  # (V, D)
    k = min(top_k, vocabulary.shape[0])
    out: list[PrototypeWords] = []
    tokenizer = model.backbone.tokenizer
    for start in range(0, prototypes.shape[0], chunk):  # (chunk, V) at a time: V' x V can be large
        sims, ids = (prototypes[start : start + chunk] @ vocabulary.T).topk(k, dim=-1)
        for offset, (row_ids, row_sims) in enumerate(zip(ids.tolist(), sims.tolist(), strict=True)):
            words = [word_text(tokenizer, t) for t in row_ids]
            out.append(PrototypeWords(start + offset, row_ids, words, row_sims))
    return out


@torch.no_grad()
def explain_window(model: TimeLLM, series, top_prototypes: int = 5) -> WindowExplanation:
    """Prompt and reprogramming attention of one raw look-back window ``series`` (seq_len values)."""
    _check_explainable(model)
    c = model.config
    x = torch.as_tensor(np.asarray(series, dtype=np.float32))
    if x.ndim != 1 or x.numel() != c.seq_len:
        raise ValueError(f"expected one series of seq_len={c.seq_len} values, found shape {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    normalised, _, _ = normalize(x[None], c.normalization, pred_len=c.pred_len, period=c.period)  # (1, T)
    patches = model.patch_embedding(patchify(normalised, c.patch_len, c.stride))  # (1, P, d_model)
    weights = model.reprogramming.attention(patches, text_prototypes(model))  # (1, K, P, V')
    model.train(was_training)
    attention = weights[0].mean(dim=0)  # (P, V')
    mean = attention.mean(dim=0)  # (V',)
    values, ids = mean.topk(min(top_prototypes, mean.numel()))
    prompt = ""
    if c.use_prompt:
        prompt = prompt_text(
            x,
            c.pred_len,
            dataset=c.dataset,
            description=c.description,
            top_k_lags=c.top_k_lags,
            statistics=c.prompt_statistics,
            normalization=c.normalization,
        )
    return WindowExplanation(prompt, attention.numpy(), list(zip(ids.tolist(), values.tolist(), strict=True)))


def plot_attention(
    attention: np.ndarray,
    words: list[PrototypeWords],
    path: str | Path,
    *,
    max_prototypes: int = 40,
    title: str = "",
) -> Path:
    """Heat map of patch-to-prototype attention (P, V'): the ``max_prototypes`` most attended rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.argsort(-attention.mean(axis=0))[:max_prototypes]  # most attended first
    labels = [f"#{j} " + " / ".join(words[j].words[:3]) for j in shown]
    fig, ax = plt.subplots(figsize=(max(6, 0.12 * attention.shape[0] + 4), 0.28 * len(shown) + 1.8))
    image = ax.imshow(attention[:, shown].T, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.set_xlabel("patch (oldest to newest)")
    ax.set_ylabel("text prototype (nearest words)")
    fig.colorbar(image, ax=ax, label="attention (mean over heads)")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def explain_run(
    run_dir: str | Path,
    *,
    window: int = 0,
    channel: str | int | None = None,
    top_words: int = 5,
    top_prototypes: int = 5,
    heatmap: str | Path | None = None,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Explain a run folder's model: words per prototype, and test window ``window`` of ``channel``.

    ``window`` indexes the test windows (negative counts from the end); ``channel`` is a column name
    or index (default: the last column, the target of the ETT benchmarks).
    """
    from timellm.experiments.runs import load_run

    record, model = load_run(run_dir)
    _check_explainable(model)
    c = model.config
    source = DataSource.from_dict(record["data"]) if "data" in record else DataSource(record["test_dataset"])
    splits = source.load(c.seq_len, c.pred_len, data_dir)
    windows = splits.test.shape[0] - c.seq_len - c.pred_len + 1
    if not -windows <= window < windows:
        raise ValueError(f"window must be in [{-windows}, {windows - 1}], found {window}")
    window %= windows
    if channel is None:
        index = splits.channels - 1
    elif isinstance(channel, int) or str(channel).lstrip("-").isdigit():
        index = int(channel) % splits.channels
    elif channel in splits.columns:
        index = splits.columns.index(channel)
    else:
        raise ValueError(f"unknown channel {channel!r}; the data has {', '.join(splits.columns)}")
    words = closest_words(model, top_words)
    series = splits.test[window : window + c.seq_len, index]
    explanation = explain_window(model, series, top_prototypes)
    name = splits.columns[index]
    if heatmap is not None:
        plot_attention(
            explanation.attention,
            words,
            heatmap,
            title=f"{splits.name} test window {window}, {name}: patch-to-prototype attention",
        )
    return {
        "dataset": splits.name,
        "window": window,
        "channel": name,
        "words": words,
        "explanation": explanation,
        "heatmap": Path(heatmap) if heatmap is not None else None,
    }
