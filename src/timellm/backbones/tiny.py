"""Tiny randomly initialised backbones for tests: a LLaMA, a GPT-2 and a BERT built in memory.

They have real architectures and a real (character-level) tokenizer, so every code path of the
model runs, in milliseconds and without any file. Their weights are random: they forecast nothing.
"""

from __future__ import annotations

import string

import torch

from timellm.backbones.errors import BackboneError

HIDDEN = 32
LAYERS = 2
HEADS = 4
MAX_POSITIONS = 2048
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer(bert_style: bool):
    """A character-level tokenizer over printable ASCII, made with the `tokenizers` library."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\t\n\r\x0b\x0c"]
    vocab = {token: i for i, token in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[BOS] $A", special_tokens=[("[BOS]", vocab["[BOS]"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_tiny_backbone(alias: str, llm_layers: int | None, attn_implementation: str | None = None):
    """Return (model, tokenizer, total_layers) for one of the tiny-random aliases."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    layers = LAYERS if llm_layers is None else llm_layers
    if layers > LAYERS:
        raise BackboneError(f"llm_layers={llm_layers} but backbone {alias!r} has only {LAYERS} layers")
    tokenizer = build_tokenizer(bert_style=alias == "tiny-random-bert")
    vocab = len(tokenizer)
    # LLaMA's and BERT's configs name their sizes alike; GPT-2's has names of its own
    size = dict(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
    )
    if alias == "tiny-random-llama":
        config = LlamaConfig(
            **size, num_key_value_heads=HEADS // 2, pad_token_id=0, bos_token_id=2, eos_token_id=3
        )
        cls = LlamaModel
    elif alias == "tiny-random-gpt2":
        config = GPT2Config(
            vocab_size=vocab, n_embd=HIDDEN, n_layer=layers, n_head=HEADS, n_positions=MAX_POSITIONS,
            bos_token_id=2, eos_token_id=3,
        )  # fmt: skip
        cls = GPT2Model
    elif alias == "tiny-random-bert":
        config = BertConfig(**size, pad_token_id=0)
        cls = BertModel
    else:
        raise BackboneError(f"unknown tiny backbone {alias!r}")
    config._attn_implementation = attn_implementation or "sdpa"
    # the same weights every time, without touching the caller's random state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(config)
    return model, tokenizer, LAYERS
