"""The one typed configuration object of a Time-LLM model.

Defaults are the paper's long-term forecasting settings (SPEC §1, §3). Sizes that the backbone
knows (hidden size, vocabulary, layer count) are deliberately absent: they are read from it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from timellm.model.precision import PRECISION_OF_AUTOCAST, WEIGHTS, spelled

LLMVariant = Literal["pretrained", "random", "attention", "transformer", "none"]
LLM_VARIANTS: tuple[str, ...] = ("pretrained", "random", "attention", "transformer", "none")
# the variants without a language model (Tan et al.'s ablations, timellm.model.ablations)
LLM_FREE: tuple[str, ...] = ("none", "attention", "transformer")
NORMALIZATIONS: tuple[str, ...] = ("revin", "last", "seasonal")  # layers.normalize


@dataclass(frozen=True)
class TimeLLMConfig:
    # --- backbone ---------------------------------------------------------------------------
    backbone: str = "smollm2-135m"  # alias, local folder, .gguf file or hub id of the frozen LLM
    llm_layers: int | None = None  # keep the first k layers; None keeps all (the paper: all 32 of LLaMA-7B)
    llm: LLMVariant = (
        "pretrained"  # ablations of Tan et al.: random weights, 1 attention/transformer layer, none
    )
    trust_remote_code: bool = False  # never run a hub repository's code unless the user asks

    # --- the forecasting problem ------------------------------------------------------------
    seq_len: int = 512  # look-back window T
    pred_len: int = 96  # horizon H

    # --- patching and embedding -------------------------------------------------------------
    patch_len: int = 16  # length of one patch
    stride: int = 8  # step between patches; the series is also end-padded by `stride`
    d_model: int = 32  # width of the patch embedding (the query side of reprogramming)
    patch_embedding: Literal["conv", "linear"] = "conv"  # released code: Conv1d k=3; the paper: linear

    # --- reprogramming ----------------------------------------------------------------------
    num_prototypes: int = 1000  # V': text prototypes mapped from the vocabulary (paper: 100 for M4)
    n_heads: int = 8  # K heads of the reprogramming cross-attention
    d_keys: int | None = None  # per-head width; None = d_ff as released (the paper text: d_model // K)
    attention_dropout: float = 0.1  # dropout on the reprogramming attention weights

    # --- output ------------------------------------------------------------------------------
    d_ff: int = 128  # channels of the LLM's last hidden state kept for the head
    dropout: float = 0.1  # patch-embedding and head dropout

    # --- prompt-as-prefix -------------------------------------------------------------------
    use_prompt: bool = True  # prepend the text prompt at all (ablation: w/o prompt)
    prompt_statistics: bool = True  # include min/max/median/trend/lags (ablation: w/o input statistics)
    dataset: str | None = None  # benchmark name whose packaged description is used (ETTh1, weather, ...)
    description: str | None = None  # the user's own domain description; takes precedence over `dataset`
    top_k_lags: int = 5  # number of autocorrelation lags quoted in the prompt

    # --- instance normalisation ---------------------------------------------------------------
    # "revin": each window's mean and std (the paper); "last": its last value and std, so that a
    # zero output repeats the last value (NLinear): steadier where the level shifts; "seasonal":
    # the forecast is a correction to seasonal naive with `period` (layers.normalize)
    normalization: Literal["revin", "last", "seasonal"] = "revin"
    period: int | None = None  # the seasonal period of normalization "seasonal" (ETTh: 24 hours)
    # start the output head at zero, so that the untrained model forecasts the normalisation's
    # centre (the mean, the last value or seasonal naive) and training learns a correction to it
    zero_head: bool = False

    # --- execution --------------------------------------------------------------------------
    fast_path: bool = True  # cache what is exact to cache (prompt K/V, tokens, E'); False: the plain oracle

    def __post_init__(self) -> None:
        positive = [
            "seq_len",
            "pred_len",
            "patch_len",
            "stride",
            "d_model",
            "d_ff",
            "num_prototypes",
            "n_heads",
        ]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, found {value!r}")
        if self.llm_layers is not None and (not isinstance(self.llm_layers, int) or self.llm_layers <= 0):
            raise ValueError(f"llm_layers must be a positive integer or None, found {self.llm_layers!r}")
        if self.d_keys is not None and self.d_keys <= 0:
            raise ValueError(f"d_keys must be a positive integer or None, found {self.d_keys!r}")
        if self.patch_len > self.seq_len:
            raise ValueError(f"patch_len ({self.patch_len}) must not exceed seq_len ({self.seq_len})")
        if self.patch_embedding not in ("conv", "linear"):
            raise ValueError(f"patch_embedding must be 'conv' or 'linear', found {self.patch_embedding!r}")
        if self.llm not in LLM_VARIANTS:
            raise ValueError(f"llm must be one of {', '.join(LLM_VARIANTS)}; found {self.llm!r}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), found {getattr(self, name)!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be 'revin', 'last' or 'seasonal', found {self.normalization!r}"
            )
        if self.normalization == "seasonal" and (
            not isinstance(self.period, int) or not 1 <= self.period <= self.seq_len
        ):
            raise ValueError(
                "normalization 'seasonal' needs period, the seasonal period in steps, between 1 and "
                f"seq_len={self.seq_len} (ETTh: period=24); found {self.period!r}"
            )
        if self.top_k_lags < 0 or self.top_k_lags > self.seq_len // 2:
            raise ValueError(f"top_k_lags must be in [0, seq_len // 2], found {self.top_k_lags}")

    @property
    def num_patches(self) -> int:
        """P = (T - patch_len) // stride + 2 (the end padding by `stride` adds one patch)."""
        return (self.seq_len - self.patch_len) // self.stride + 2

    @property
    def head_dim(self) -> int:
        """Per-head width of the reprogramming attention."""
        return self.d_keys if self.d_keys is not None else self.d_ff

    def replace(self, **changes: Any) -> TimeLLMConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown model setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def seasonal_correction(self, period: int) -> TimeLLMConfig:
        """This model as a correction to seasonal naive at ``period``: normalisation ``seasonal``
        and a zero head, so that the untrained model forecasts seasonal naive exactly."""
        return self.replace(normalization="seasonal", period=period, zero_head=True)

    def correctable(self, period: int) -> bool:
        """Whether :meth:`seasonal_correction` is an alternative to this model: it normalises by
        mean and standard deviation (RevIN) from a drawn head, and ``period`` is a season above one
        step that fits in the look-back."""
        return self.normalization == "revin" and not self.zero_head and 1 < period <= self.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimeLLMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown model setting(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TimeLLMConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no model config at {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class ExecutionSettings:
    """How a model runs, not what it computes: chosen per run, never saved with the adapter."""

    # run matmuls under torch.autocast in this dtype, on CPU and GPU; None: the weights' precision
    autocast_dtype: Literal["bfloat16", "float16"] | None = None
    # recompute each backbone layer in backward instead of keeping its activations: less memory,
    # about one more forward of the LLM per step (gradients do flow through it to the patch tokens)
    gradient_checkpointing: bool = False
    # the backbone's attention kernel: "sdpa", "eager", "grouped" (llama's eager attention per
    # key/value head, without copying keys and values per query head: fastpath.grouped_attention),
    # or "auto": the kernel the backbone was loaded with (SDPA), except the fast path's short cached
    # passes on CPU, where explicit matmuls are faster (they beat the CPU flash kernel, whose
    # backward is slow in bf16; see results/speed.md): grouped on llama, eager elsewhere. All
    # compute the same attention.
    attention: Literal["auto", "sdpa", "eager", "grouped"] = "auto"
    # torch.compile (inductor) of the LLM's norms and MLPs, fusing their elementwise chains:
    # "none", "inference" (calls without autograd: evaluation, forecasting) or "always". Measured
    # on a 2-core Xeon in fp32 (results/speed.md): +5-8 % with a first step 2.4-3.9x slower
    # (compiling); off by default: too small a gain for the compile time and the C compiler it needs
    compile: Literal["none", "inference", "always"] = "none"
    # what compile covers: "modules" (the norms and MLPs: seconds to compile) or "layers" (whole
    # decoder layers, attention and residuals included: more fused, a first call of half a minute
    # or more on a 2-core CPU; dynamo's recompilation limits are raised while the LLM runs)
    compile_scope: Literal["modules", "layers"] = "modules"
    # how the frozen LLM's weights are stored: "auto" (the run's compute precision: bf16 where bf16
    # is native, else fp32, or bf16 where fp32 would not fit in memory), "fp32", "bf16", "fp16"
    # (2 bytes a weight; where the run computes in fp32, each layer's weights are upcast as it
    # runs) or "int8" (torchao's weight-only int8, 1 byte a weight). The adapter, its optimiser,
    # the loss and the normalisation statistics stay fp32 whatever this is
    weights: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"  # precision.WEIGHTS
    # at most this many series through the frozen LLM at once when forecasting (no gradient): the
    # prompt's keys and values of every layer are held for these only, the memory that decides
    # whether a 7B backbone forecasts within a budget; None: the whole batch at once (fastest)
    llm_batch: int | None = None

    def __post_init__(self) -> None:
        if self.llm_batch is not None and (
            not isinstance(self.llm_batch, int) or isinstance(self.llm_batch, bool) or self.llm_batch <= 0
        ):
            raise ValueError(f"llm_batch must be a positive integer or None, found {self.llm_batch!r}")
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be {spelled(WEIGHTS, quoted=True)}, found {self.weights!r}")
        if self.autocast_dtype not in (None, *PRECISION_OF_AUTOCAST):
            autocasts = spelled([None, *PRECISION_OF_AUTOCAST], quoted=True)
            raise ValueError(f"autocast_dtype must be {autocasts}, found {self.autocast_dtype!r}")
        if self.compile not in ("none", "inference", "always"):
            raise ValueError(f"compile must be 'none', 'inference' or 'always', found {self.compile!r}")
        if self.compile_scope not in ("modules", "layers"):
            raise ValueError(f"compile_scope must be 'modules' or 'layers', found {self.compile_scope!r}")
        if self.compile_scope == "layers" and self.compile != "none" and self.gradient_checkpointing:
            raise ValueError(
                "compile_scope 'layers' and gradient_checkpointing both wrap the decoder layers: "
                "use compile_scope 'modules' with gradient checkpointing"
            )
        if self.attention not in ("auto", "sdpa", "eager", "grouped"):
            raise ValueError(
                f"attention must be 'auto', 'sdpa', 'eager' or 'grouped', found {self.attention!r}"
            )
