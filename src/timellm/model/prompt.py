"""Prompt-as-Prefix: the text the language model reads before the reprogrammed patches.

A prompt has a part shared by every series of a run (the dataset description and the task
instruction, the *prefix*) and a part per series (its input statistics). They are tokenised
separately and concatenated as token ids, so the shared part's tokens are identical for every
series: that is what lets the fast path compute it once.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources

import torch

from timellm.model.layers import normalize


@dataclass(frozen=True)
class InputStatistics:
    """Statistics of a batch of (normalised) series, each a tensor with a leading batch axis S."""

    minimum: torch.Tensor  # (S,)
    maximum: torch.Tensor  # (S,)
    median: torch.Tensor  # (S,)
    upward: torch.Tensor  # (S,) bool: sum of first differences > 0
    lags: torch.Tensor  # (S, k) int64: lags 1..T/2 of largest autocorrelation, strongest first


def autocorrelation(x: torch.Tensor) -> torch.Tensor:
    """Non-circular autocorrelation of each row: (S, T) -> (S, T), lag 0 first.

    The series is zero-padded to 2T before the FFT so that lag k only pairs x[t] with x[t+k]
    (no wrap-around); the released code's circular version mixes the two ends of the window.
    """
    length = x.shape[-1]
    spectrum = torch.fft.rfft(x.float(), n=2 * length, dim=-1)
    return torch.fft.irfft(spectrum * spectrum.conj(), n=2 * length, dim=-1)[..., :length]


def input_statistics(x: torch.Tensor, top_k: int = 5) -> InputStatistics:
    """Vectorised statistics of a batch of series ``x`` of shape (S, T); no loop over series."""
    if x.ndim != 2:
        raise ValueError(f"expected series of shape (batch, length), found {tuple(x.shape)}")
    length = x.shape[-1]
    x = x.detach().float()
    acf = autocorrelation(x)[:, 1 : length // 2 + 1]  # lags 1..T/2: lag 0 is trivially maximal
    k = min(top_k, acf.shape[-1])
    lags = torch.topk(acf, k, dim=-1).indices + 1
    return InputStatistics(
        minimum=x.min(dim=-1).values,
        maximum=x.max(dim=-1).values,
        median=x.median(dim=-1).values,
        upward=x.diff(dim=-1).sum(dim=-1) > 0,
        lags=lags,
    )


def format_number(value: float) -> str:
    """Three significant digits: enough for the LLM, a fraction of the tokens of a full float repr."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.3g}"
    return "0" if text in ("-0", "0") else text


def statistics_texts(stats: InputStatistics) -> list[str]:
    """The per-series part of the prompt, one string per series."""
    minimum, maximum, median = stats.minimum.tolist(), stats.maximum.tolist(), stats.median.tolist()
    upward, lags = stats.upward.tolist(), stats.lags.tolist()
    return [
        f" Input statistics: min {format_number(lo)}, max {format_number(hi)}, median {format_number(mid)},"
        f" trend {'upward' if up else 'downward'}, top {len(lag)} lags {', '.join(map(str, lag))}."
        for lo, hi, mid, up, lag in zip(minimum, maximum, median, upward, lags, strict=True)
    ]


def statistics_token_bound(tokenizer, seq_len: int, top_k: int) -> int:
    """The most tokens a statistics text of a ``seq_len`` window can take with ``tokenizer``.

    The longest texts have the longest numbers (three significant digits: "-1.23e-05" or
    "-0.000123", nine characters), a downward trend and the largest lags (up to seq_len // 2);
    several such texts are tokenised and the longest counts.
    """
    k = min(top_k, seq_len // 2)
    lags = torch.arange(seq_len // 2, seq_len // 2 - k, -1, dtype=torch.long)[None]  # (1, k)
    texts = []
    for value in (-1.23e-05, -8.88e-07, -0.000123, -0.000987, -123.0, -99.9):
        number = torch.tensor([value])
        stats = InputStatistics(number, number, number, torch.tensor([False]), lags)
        texts += statistics_texts(stats)
    return max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


class StatisticsTokenizer:
    """Token ids of statistics texts, each text tokenised once and then looked up.

    The statistics text of a window is a pure function of the window, so every epoch asks for the
    same texts again: after the first epoch a step costs dictionary lookups instead of a tokenizer
    call. We memoise whole texts rather than map numbers to token ids vectorised, because subword
    tokenisation is not compositional (how " 0.123," splits depends on its neighbours): only the
    real text gives the plain path's ids for every tokenizer. Measured with SmolLM2's tokenizer,
    32 ETTh1 series, one CPU thread: tokenising the batch takes 1.3 ms, looking it up 4 µs (a
    plain training step of the 6-layer model takes about 10 s, so either is far below 0.1%).

    Ids are stored as ``array('i')``: about 420 bytes per distinct text with its key (~49 tokens),
    so 2^18 entries (the default bound) stay near 110 MB; the least recently used go first.
    """

    def __init__(self, tokenizer, max_entries: int = 1 << 18):
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self._ids: OrderedDict[str, array] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __call__(self, texts: list[str]) -> list[array]:
        """Token ids (no special tokens) of each text, in order."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        if missing:
            for text, ids in zip(
                missing, self.tokenizer(missing, add_special_tokens=False)["input_ids"], strict=True
            ):
                self._ids[text] = array("i", ids)
        out = []
        for text in texts:
            out.append(self._ids[text])
            self._ids.move_to_end(text)
        while len(self._ids) > self.max_entries:
            self._ids.popitem(last=False)
        return out


def available_descriptions() -> list[str]:
    files = resources.files("timellm.model") / "descriptions"
    return sorted(p.name.removesuffix(".txt") for p in files.iterdir() if p.name.endswith(".txt"))


def dataset_description(dataset: str | None = None, description: str | None = None) -> str:
    """The domain text of the prompt: the user's own if given, else the packaged one of ``dataset``."""
    if description is not None and description.strip():
        return " ".join(description.split())
    if dataset is None:
        return "A numeric time series."
    path = resources.files("timellm.model") / "descriptions" / f"{dataset}.txt"
    if not path.is_file():
        raise ValueError(
            f"no packaged description for dataset {dataset!r}; known: {', '.join(available_descriptions())}. "
            "Pass your own with description=..."
        )
    return path.read_text().strip()


def prompt_prefix(description: str, seq_len: int, pred_len: int) -> str:
    """The part of the prompt shared by every series of a run."""
    return (
        f"Dataset description: {description} "
        f"Task: forecast the next {pred_len} steps given the previous {seq_len} steps."
    )


def prompt_text(
    series,
    pred_len: int,
    *,
    dataset: str | None = None,
    description: str | None = None,
    top_k_lags: int = 5,
    statistics: bool = True,
    normalization: str = "revin",
) -> str:
    """The exact prompt text the model gives the LLM for one raw (un-normalised) series.

    ``series`` is any 1-D sequence of numbers: the look-back window. It is normalised as the model
    does (``normalization``: "revin", "last" or "seasonal", see :func:`timellm.model.layers.normalize`) before
    its statistics are computed.
    """
    x = torch.as_tensor(series, dtype=torch.float32)
    if x.ndim != 1 or x.numel() < 2:
        raise ValueError(f"expected a 1-D series of at least 2 values, found shape {tuple(x.shape)}")
    prefix = prompt_prefix(dataset_description(dataset, description), x.numel(), pred_len)
    if not statistics:
        return prefix
    # "seasonal" normalises the input window as "revin" (only the forecast's centre differs)
    normalised, _, _ = normalize(x[None], "revin" if normalization == "seasonal" else normalization)
    return prefix + statistics_texts(input_statistics(normalised, top_k_lags))[0]
