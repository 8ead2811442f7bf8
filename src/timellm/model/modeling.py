"""Time-LLM: normalise -> prompt -> patch -> reprogram -> frozen LLM -> head -> de-normalise.

Shapes: B windows, T look-back steps, N channels, H horizon; every channel is forecast on its own
with shared weights, so the model works on S = B*N univariate series. P patches, D the LLM width.
The frame around the middle (channel independence, normalise, de-normalise) and the adapter on
disk are every variant's (:class:`~timellm.model.adapter.TimeLLMBase`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from timellm.backbones.loading import Backbone, load_backbone
from timellm.model.adapter import ADAPTER_FILE, TimeLLMBase, saved_config
from timellm.model.config import LLM_FREE, ExecutionSettings, TimeLLMConfig
from timellm.model.fastpath import (
    GROUPED_ARCHITECTURES,
    VERIFIED_ARCHITECTURES,
    PromptPrefixCache,
    PrototypeCache,
    attention_kernel,
    checkpointing,
    compiling,
    extend_cache,
    fast_path_agrees,
    fast_path_unsupported_reason,
    install_compiled_modules,
    install_layer_checkpointing,
    register_grouped_attention,
    run_patch_tokens,
)
from timellm.model.layers import (
    FlattenHead,
    PatchEmbedding,
    Reprogramming,
    TextPrototypes,
    patchify,
)
from timellm.model.memory import plan_storage
from timellm.model.prompt import (
    StatisticsTokenizer,
    dataset_description,
    input_statistics,
    prompt_prefix,
    statistics_texts,
    statistics_token_bound,
)

logger = logging.getLogger(__name__)


class TimeLLM(TimeLLMBase):
    """A frozen language model reprogrammed to forecast: ``forward(past_values) -> forecasts``.

    ``execution`` says how to run (autocast, gradient checkpointing, the frozen weights' storage);
    it may be replaced at any time and is never saved; its ``weights=auto`` stores the frozen LLM
    in what ``precision`` (the run's: auto, fp32, bf16, fp16) computes in on this machine.
    ``config.fast_path`` caches what is exact to cache (see :mod:`timellm.model.fastpath`);
    ``fast_path=False`` is the plain computation it is tested against. A config without an LLM is
    an ablation (:class:`~timellm.model.ablations.LLMFreeTimeLLM`):
    :func:`timellm.model.variants.build_model` builds whichever variant a config names.
    """

    def __init__(
        self,
        config: TimeLLMConfig,
        backbone: Backbone | None = None,
        execution: ExecutionSettings | None = None,
        precision: str = "auto",
    ):
        super().__init__(config, execution)
        c = config
        if c.llm in LLM_FREE:
            raise ValueError(
                f"llm={c.llm!r} has no LLM: build it with timellm.model.variants.build_model "
                "(load a saved one with load_model)"
            )
        # what the fast path keeps between calls (see timellm.model.fastpath); E' in _text_prototypes
        self._prototype_cache = PrototypeCache()
        self._prefix_cache: PromptPrefixCache | None = None
        self._statistics_tokenizer: StatisticsTokenizer | None = None
        num_patches = c.num_patches
        self.patch_embedding = PatchEmbedding(c.patch_len, c.d_model, c.patch_embedding, c.dropout)
        if backbone is None:
            backbone = load_backbone_for(c, c.llm_layers, self.execution, precision)
        else:
            check_backbone_matches(c, backbone)
        d_llm = backbone.hidden_size
        if c.d_ff > d_llm:
            raise ValueError(
                f"d_ff ({c.d_ff}) must not exceed the backbone's hidden size ({d_llm}, read from {backbone.name!r}); "
                f"use d_ff={d_llm} or less"
            )
        self.prototypes = TextPrototypes(backbone.vocab_size, c.num_prototypes)
        self.reprogramming = Reprogramming(c.d_model, c.n_heads, c.head_dim, d_llm, c.attention_dropout)
        self.head = FlattenHead(c.d_ff, num_patches, c.pred_len, c.dropout, zero=c.zero_head)

        self.backbone = backbone
        self.llm = backbone.model  # frozen; never saved with the adapter
        tokenizer = backbone.tokenizer
        self.prefix_ids: list[int] = tokenizer(
            prompt_prefix(dataset_description(c.dataset, c.description), c.seq_len, c.pred_len)
        )["input_ids"]
        self.pad_id = int(tokenizer.pad_token_id)
        self._check_positions()
        # an architecture the tests do not compare fast = plain on compares itself on its first batch
        self._fast_path_verified = backbone.architecture in VERIFIED_ARCHITECTURES
        self._warned_unfrozen = False
        if not c.fast_path:
            self.fast_path_reason = "config.fast_path is False"
        elif not c.use_prompt:
            self.fast_path_reason = "no prompt to cache (use_prompt is False)"
        else:
            self.fast_path_reason = fast_path_unsupported_reason(self.llm, backbone.is_causal)
            if self.fast_path_reason is None:
                self._prefix_cache = PromptPrefixCache(self.prefix_ids)
                self._statistics_tokenizer = StatisticsTokenizer(tokenizer)
            else:
                logger.info("%s takes the plain path: %s", backbone.name, self.fast_path_reason)

    def _check_positions(self) -> None:
        """The longest LLM input (prompt + patches) must fit the backbone's positions."""
        c, limit = self.config, self.backbone.max_positions
        if limit is None:
            return
        prefix = len(self.prefix_ids) if c.use_prompt else 0
        stats = (
            statistics_token_bound(self.backbone.tokenizer, c.seq_len, c.top_k_lags)
            if c.use_prompt and c.prompt_statistics
            else 0
        )
        needed = prefix + stats + c.num_patches
        if needed > limit:
            raise ValueError(
                f"the LLM input needs up to {needed} positions ({prefix} prompt-prefix tokens + up to "
                f"{stats} statistics tokens + {c.num_patches} patches) but backbone {self.backbone.name!r} "
                f"has {limit} (max_position_embeddings): use fewer patches (a shorter seq_len=..., a larger "
                "stride or patch_len), a shorter prompt (prompt_statistics=False, or a shorter description=..., "
                f"which has {len(c.description or '')} characters) or a backbone with more positions"
            )

    # ---------------------------------------------------------------------------------------
    # the forward pass

    def forecast_normalised(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised series (S, T) -> their normalised forecasts (S, H): patch -> reprogram ->
        frozen LLM -> head. The LLM-free ablations replace this part only."""
        c = self.config
        patches = self.patch_embedding(patchify(x, c.patch_len, c.stride))  # (S, P, d_model)
        prototypes = self._text_prototypes(self.backbone.word_embeddings)  # (V', D)
        tokens = self.reprogramming(patches, prototypes)  # (S, P, D)
        with checkpointing(self.execution.gradient_checkpointing):
            hidden = self.run_llm(x, tokens)[..., : c.d_ff]  # (S, P, d_ff)
        return self.head(hidden)  # (S, H)

    def _text_prototypes(self, vocabulary: torch.Tensor) -> torch.Tensor:
        """E' (V', D). The fast path keeps it while nothing can change it: eval mode without autograd.

        In training it is recomputed every forward: the mapping weights move after every step.
        """
        if self.config.fast_path and not self.training and not torch.is_grad_enabled():
            return self._prototype_cache.get(self.prototypes, vocabulary)
        return self.prototypes(vocabulary)

    def prompt_token_ids(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt token ids and mask for normalised series x: (S, T) -> (S, L), (S, L)."""
        c = self.config
        if not c.use_prompt:
            empty = torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device)
            return empty, empty
        if c.prompt_statistics:
            texts = statistics_texts(input_statistics(x, c.top_k_lags))
            stats_ids = self.backbone.tokenizer(texts, add_special_tokens=False)["input_ids"]
        else:
            stats_ids = [[] for _ in range(x.shape[0])]
        rows = [self.prefix_ids + ids for ids in stats_ids]
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: the patch tokens always come last
            ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, length - len(row) :] = 1
        return ids.to(x.device), mask.to(x.device)

    def statistics_token_ids(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded statistics token ids and mask (fast path): (S, T) -> (S, Ls), (S, Ls).

        Token ids come from the memo of :class:`~timellm.prompt.StatisticsTokenizer`: a window's
        text never changes, so after the first epoch no tokenizer runs in the training loop.
        """
        if not self.config.prompt_statistics:
            empty = torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device)
            return empty, empty
        rows = self._statistics_tokenizer(statistics_texts(input_statistics(x, self.config.top_k_lags)))
        lengths = torch.tensor([len(row) for row in rows])  # (S,)
        length = int(lengths.max()) if len(rows) else 0
        mask = torch.arange(length) >= (length - lengths)[:, None]  # (S, Ls) left padding
        ids = torch.full(mask.shape, self.pad_id, dtype=torch.long)
        ids[mask] = torch.tensor([i for row in rows for i in row], dtype=torch.long)  # row-major fill
        return ids.to(x.device), mask.long().to(x.device)

    def run_llm(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[prompt ; reprogrammed patches] through the frozen LLM: returns (S, P, D) at the patches.

        Without gradient, at most ``execution.llm_batch`` series at a time (each series runs on
        its own in the LLM, so the chunks give what the whole batch gives, up to rounding).
        """
        chunk = self.execution.llm_batch
        if chunk is None or torch.is_grad_enabled() or tokens.shape[0] <= chunk:
            return self._run_llm_batch(x, tokens)
        parts = [
            self._run_llm_batch(x[i : i + chunk], tokens[i : i + chunk]) for i in range(0, len(x), chunk)
        ]
        return torch.cat(parts)  # (S, P, D)

    def _run_llm_batch(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.execution.gradient_checkpointing:
            install_layer_checkpointing(self.llm)  # idempotent; acts only inside checkpointing(True)
        compiled, scope = self._compiles_now(), self.execution.compile_scope
        layers = 0
        if compiled:
            # idempotent; acts only inside compiling(True)
            count = install_compiled_modules(self.llm, scope)
            layers = count if scope == "layers" else 0
        kernel = self.attention_kernel_for(tokens.device)
        with attention_kernel(self.llm.config, kernel), compiling(compiled, layers):
            if self.uses_fast_path and self._llm_is_frozen():
                if not self._fast_path_verified:
                    return self._run_llm_checked(x, tokens)
                return self._run_llm_fast(x, tokens)
            return self._run_llm_plain(x, tokens)

    def _llm_is_frozen(self) -> bool:
        """The prompt caches run without gradient: exact only while no LLM weight trains."""
        if self.backbone.is_frozen:
            return True
        if not self._warned_unfrozen:
            logger.warning(
                "%s has weights that take a gradient: the fast path holds only for a frozen LLM, "
                "taking the plain path while they do",
                self.backbone.name,
            )
            self._warned_unfrozen = True
        return False

    def _run_llm_checked(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """First batch on an architecture without a test of fast = plain: run both, compare, and
        keep the fast path only if it computes what the plain path computes."""
        with torch.no_grad():
            fast, plain = self._run_llm_fast(x, tokens), self._run_llm_plain(x, tokens)
        agree, gap = fast_path_agrees(fast, plain)
        architecture = self.backbone.architecture
        if agree:
            logger.info(
                "%s (%s): the fast path matches the plain path on the first batch (gap %.1e); using it",
                self.backbone.name,
                architecture,
                gap,
            )
            self._fast_path_verified = True
            return self._run_llm_fast(x, tokens) if torch.is_grad_enabled() else fast
        self.fast_path_reason = (
            f"its fast path differs from the plain path on the first batch on architecture "
            f"{architecture!r} (gap {gap:.1e} of the largest activation)"
        )
        self._prefix_cache = None
        logger.warning("%s takes the plain path: %s", self.backbone.name, self.fast_path_reason)
        return self._run_llm_plain(x, tokens) if torch.is_grad_enabled() else plain

    def _compiles_now(self) -> bool:
        """Whether this LLM call runs compiled modules (ExecutionSettings.compile and compile_scope)."""
        choice = self.execution.compile
        return choice == "always" or (choice == "inference" and not torch.is_grad_enabled())

    def attention_kernel_for(self, device: torch.device) -> str | None:
        """The attention implementation to run the LLM with (None: as loaded); see ExecutionSettings."""
        choice = self.execution.attention
        grouped_fits = self.llm.config.model_type in GROUPED_ARCHITECTURES
        if choice == "grouped":
            if not grouped_fits:
                raise ValueError(
                    f"attention 'grouped' is llama's eager attention per key/value head; this backbone "
                    f"is {self.llm.config.model_type!r}: use auto, sdpa or eager"
                )
            return register_grouped_attention()
        if choice != "auto":
            return choice
        loaded = self.llm.config._attn_implementation
        if self.uses_fast_path and device.type == "cpu" and loaded == "sdpa":
            return register_grouped_attention() if grouped_fits else "eager"
        return None

    def _run_llm_fast(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Prefix cache (kept) -> statistics tokens (no grad) -> patch tokens (grad): (S, P, D)."""
        s = tokens.shape[0]
        prefix = self._prefix_cache.get(self.llm, tokens.dtype)  # per layer (1, h, Lp, hd)
        ids, stats_mask = self.statistics_token_ids(x)  # (S, Ls)
        past = extend_cache(self.llm, prefix, ids, stats_mask, tokens.dtype)  # per layer (S, h, Lp + Ls, hd)
        lp = prefix[0][0].shape[-2]
        past_mask = torch.cat([stats_mask.new_ones(s, lp), stats_mask], dim=1)  # (S, Lp + Ls)
        return run_patch_tokens(self.llm, past, past_mask, tokens)  # (S, P, D)

    def _run_llm_plain(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The whole [left pads ; prefix ; stats ; patches] sequence in one call: the oracle."""
        s, p, _ = tokens.shape
        ids, prompt_mask = self.prompt_token_ids(x)  # (S, L)
        prompt = self.llm.get_input_embeddings()(ids).to(tokens.dtype)  # (S, L, D)
        embeds = torch.cat([prompt, tokens], dim=1)  # (S, L + P, D)
        mask = torch.cat([prompt_mask, torch.ones(s, p, dtype=torch.long, device=tokens.device)], dim=1)
        # positions count real tokens only, so padding never shifts a series' positions
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state[:, -p:]  # (S, P, D)

    # ---------------------------------------------------------------------------------------
    # training mode, loading

    def train(self, mode: bool = True) -> TimeLLM:
        # the E' kept for inference stays: its key holds a fingerprint of the mapping weights, so a
        # training step invalidates it, while eval -> train -> eval without a step (``predict`` on
        # a model in training mode, batch after batch) reuses it
        super().train(mode)
        if self.backbone is not None:
            self.llm.eval()  # frozen: its dropout stays off whatever the adapter's mode
        return self

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        backbone: Backbone | None = None,
        execution: ExecutionSettings | None = None,
        precision: str = "auto",
    ) -> TimeLLM:
        """Rebuild the model saved in ``directory``, loading the backbone its config names (its
        weights stored as ``execution.weights`` resolves for ``precision``). A saved LLM-free
        variant is refused: :func:`timellm.model.variants.load_model` loads any variant."""
        directory = Path(directory)
        model = cls(saved_config(directory), backbone, execution=execution, precision=precision)
        model.load_adapter(directory / ADAPTER_FILE)
        return model


def check_backbone_matches(config: TimeLLMConfig, backbone: Backbone) -> None:
    """A given backbone must be the one the config names, with the layer count it asks for:
    ``save_pretrained`` records the config, and ``from_pretrained`` rebuilds that backbone."""
    if not _same_spec(backbone.name, config.backbone):
        raise ValueError(
            f"the backbone given ({backbone.name!r}) is not the config's backbone ({config.backbone!r}): "
            "load the one the config names, or set backbone to the one you load"
        )
    wanted = config.llm_layers if config.llm_layers is not None else backbone.total_layers
    if backbone.num_layers != wanted:
        asked = f"llm_layers={config.llm_layers}" if config.llm_layers is not None else "all layers"
        raise ValueError(
            f"backbone {backbone.name!r} has {backbone.num_layers} of its {backbone.total_layers} layers but "
            f"the config asks for {asked}: load it with llm_layers={config.llm_layers}, or set "
            f"llm_layers={backbone.num_layers}"
        )


def _same_spec(a: str, b: str) -> bool:
    if a == b:
        return True
    path_a, path_b = Path(a).expanduser(), Path(b).expanduser()
    return path_a.exists() and path_b.exists() and path_a.resolve() == path_b.resolve()


def load_backbone_for(
    config: TimeLLMConfig, layers: int | None, execution: ExecutionSettings, precision: str = "auto"
) -> Backbone:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights, _ = plan_storage(dataclasses.replace(config, llm_layers=layers), execution, precision, device)
    if config.llm == "random":
        # a fixed seed, so that a saved random-LLM adapter reloads onto the very same random LLM
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return load_backbone(
                config.backbone,
                layers,
                random_init=True,
                trust_remote_code=config.trust_remote_code,
                weights=weights,
            )
    return load_backbone(config.backbone, layers, trust_remote_code=config.trust_remote_code, weights=weights)
