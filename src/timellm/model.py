"""Time-LLM: normalise -> prompt -> patch -> reprogram -> frozen LLM -> head -> de-normalise.

Shapes: B windows, T look-back steps, N channels, H horizon; every channel is forecast on its own
with shared weights, so the model works on S = B*N univariate series. P patches, D the LLM width.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from timellm.backbones import Backbone, load_backbone
from timellm.config import TimeLLMConfig
from timellm.layers import (
    FlattenHead,
    PatchEmbedding,
    Reprogramming,
    SelfAttentionBlock,
    TextPrototypes,
    patchify,
    revin_denormalize,
    revin_normalize,
)
from timellm.prompt import dataset_description, input_statistics, prompt_prefix, statistics_texts

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
ADAPTER_FILE = "adapter.safetensors"
FORMAT_VERSION = "1"


class AdapterLoadError(ValueError):
    """A saved adapter does not fit the model it is loaded into; the message names the file."""


class TimeLLM(nn.Module):
    """A frozen language model reprogrammed to forecast: ``forward(past_values) -> forecasts``."""

    def __init__(self, config: TimeLLMConfig, backbone: Backbone | None = None):
        super().__init__()
        self.config = config
        c = config
        num_patches = c.num_patches
        self.patch_embedding = PatchEmbedding(c.patch_len, c.d_model, c.patch_embedding, c.dropout)
        self.backbone: Backbone | None = None
        if c.llm in ("none", "attention", "transformer"):
            # The ablations of Tan et al. (NeurIPS 2024) as their code runs them for Time-LLM: no
            # prompt, no text prototypes, no reprogramming; the patch embeddings go through nothing
            # (w/o LLM), one self-attention layer (LLM2Attn) or one transformer encoder layer
            # (LLM2Trsf), all randomly initialised and trained, then into a linear head.
            if c.llm != "none" and c.d_model % c.n_heads:
                raise ValueError(
                    f"the {c.llm} ablation needs n_heads ({c.n_heads}) to divide d_model ({c.d_model})"
                )
            if c.llm == "attention":
                self.mixer = SelfAttentionBlock(c.d_model, c.n_heads, c.attention_dropout, c.dropout)
            elif c.llm == "transformer":
                # feed-forward width 2048 is torch's default, which Tan et al.'s LLM2Trsf kept
                self.mixer = nn.TransformerEncoderLayer(
                    c.d_model, c.n_heads, dropout=c.dropout, batch_first=True
                )
            self.head = FlattenHead(c.d_model, num_patches, c.pred_len, c.dropout)
            return

        if backbone is None:
            backbone = _load_backbone_for(c, c.llm_layers)
        d_llm = backbone.hidden_size
        if c.d_ff > d_llm:
            raise ValueError(
                f"d_ff ({c.d_ff}) must not exceed the backbone's hidden size ({d_llm}, read from {backbone.name!r})"
            )
        self.prototypes = TextPrototypes(backbone.vocab_size, c.num_prototypes)
        self.reprogramming = Reprogramming(c.d_model, c.n_heads, c.head_dim, d_llm, c.attention_dropout)
        self.head = FlattenHead(c.d_ff, num_patches, c.pred_len, c.dropout)

        self.backbone = backbone
        self.llm = backbone.model  # frozen; never saved with the adapter
        tokenizer = backbone.tokenizer
        self.prefix_ids: list[int] = tokenizer(
            prompt_prefix(dataset_description(c.dataset, c.description), c.seq_len, c.pred_len)
        )["input_ids"]
        self.pad_id = int(tokenizer.pad_token_id)

    # ---------------------------------------------------------------------------------------
    # the forward pass

    def forward(self, past_values: torch.Tensor) -> torch.Tensor:
        """(B, T, N) look-back windows -> (B, H, N) forecasts on the same scale."""
        c = self.config
        if past_values.ndim != 3 or past_values.shape[1] != c.seq_len:
            raise ValueError(
                f"past_values must have shape (batch, seq_len={c.seq_len}, channels), found {tuple(past_values.shape)}"
            )
        b, t, n = past_values.shape
        series = past_values.permute(0, 2, 1).reshape(b * n, t)  # (S, T), channel independence
        x, mean, std = revin_normalize(series)  # (S, T)
        patches = self.patch_embedding(patchify(x, c.patch_len, c.stride))  # (S, P, d_model)

        if c.llm == "none":
            hidden = patches
        elif c.llm in ("attention", "transformer"):
            hidden = self.mixer(patches)  # (S, P, d_model)
        else:
            tokens = self.reprogramming(patches, self.prototypes(self.backbone.word_embeddings))  # (S, P, D)
            hidden = self._run_llm(x, tokens)[..., : c.d_ff]  # (S, P, d_ff)

        forecast = revin_denormalize(self.head(hidden), mean, std)  # (S, H)
        return forecast.reshape(b, n, c.pred_len).permute(0, 2, 1)  # (B, H, N)

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

    def _run_llm(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[prompt ; reprogrammed patches] through the frozen LLM: returns (S, P, D) at the patches."""
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
    # training mode, parameters, persistence

    def train(self, mode: bool = True) -> TimeLLM:
        super().train(mode)
        if self.backbone is not None:
            self.llm.eval()  # frozen: its dropout stays off whatever the adapter's mode
        return self

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable weights only: no frozen backbone weight is ever saved."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("llm.")}

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_FILE)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.adapter_state_dict().items()}
        metadata = {
            "format": "timellm-adapter",
            "version": FORMAT_VERSION,
            "config": json.dumps(self.config.to_dict()),
        }
        save_file(tensors, str(directory / ADAPTER_FILE), metadata=metadata)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, backbone: Backbone | None = None) -> TimeLLM:
        """Rebuild the model saved in ``directory``, loading the backbone its config names."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory} holds no {CONFIG_FILE}: not a saved Time-LLM adapter")
        config = TimeLLMConfig.load(directory / CONFIG_FILE)
        model = cls(config, backbone)
        model.load_adapter(directory / ADAPTER_FILE)
        return model

    def load_adapter(self, path: str | Path) -> None:
        """Load adapter weights with strict key and shape checks; errors name the file."""
        path = Path(path)
        try:
            tensors = load_file(str(path))
        except FileNotFoundError:
            raise AdapterLoadError(f"adapter file {path} does not exist") from None
        except (SafetensorError, OSError) as err:
            raise AdapterLoadError(f"adapter file {path} is truncated or corrupted: {err}") from None
        expected = self.adapter_state_dict()
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise AdapterLoadError(
                f"adapter file {path} does not match this model: missing {missing or 'none'}, "
                f"unexpected {unexpected or 'none'}"
            )
        for key, value in tensors.items():
            if value.shape != expected[key].shape:
                raise AdapterLoadError(
                    f"adapter file {path} was made for another backbone or shape: {key} has shape "
                    f"{tuple(value.shape)}, this model expects {tuple(expected[key].shape)}"
                )
        self.load_state_dict(tensors, strict=False)


def _load_backbone_for(config: TimeLLMConfig, layers: int | None) -> Backbone:
    if config.llm == "random":
        # a fixed seed, so that a saved random-LLM adapter reloads onto the very same random LLM
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return load_backbone(
                config.backbone, layers, random_init=True, trust_remote_code=config.trust_remote_code
            )
    return load_backbone(config.backbone, layers, trust_remote_code=config.trust_remote_code)
