import pytest
import torch

from timellm.backbones.loading import BackboneError, load_backbone


@pytest.mark.parametrize(
    "alias,causal", [("tiny-random-llama", True), ("tiny-random-gpt2", True), ("tiny-random-bert", False)]
)
def test_tiny_backbones_are_frozen_and_sized_from_their_config(alias, causal):
    backbone = load_backbone(alias, llm_layers=1)
    assert backbone.is_causal is causal
    assert backbone.num_layers == 1 and backbone.total_layers == 2
    assert backbone.hidden_size == backbone.config.hidden_size
    assert backbone.word_embeddings.shape == (backbone.vocab_size, backbone.hidden_size)
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert not backbone.model.training
    assert sum(p.numel() for p in backbone.model.parameters()) < 200_000


def test_tiny_backbones_are_the_same_every_time():
    a, b = load_backbone("tiny-random-llama"), load_backbone("tiny-random-llama")
    assert torch.equal(a.word_embeddings, b.word_embeddings)


def _save_tiny(tmp_path, kind):
    from transformers import AutoModel, Gemma2Config, GPT2Config, Qwen2Config

    from timellm.backbones.tiny import build_tokenizer

    tokenizer = build_tokenizer(bert_style=False)
    common = dict(vocab_size=len(tokenizer), num_attention_heads=2, num_key_value_heads=1)
    if kind == "qwen2":
        config = Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=3, **common)
    elif kind == "gemma2":
        config = Gemma2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=3, head_dim=8, **common)
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=3, n_head=2)
    model = AutoModel.from_config(config)
    folder = tmp_path / kind
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


@pytest.mark.parametrize("kind", ["qwen2", "gemma2", "gpt2"])
def test_a_local_folder_is_truncated_to_its_first_layers(tmp_path, kind):
    folder, full = _save_tiny(tmp_path, kind)
    backbone = load_backbone(str(folder), llm_layers=2)
    assert backbone.total_layers == 3 and backbone.num_layers == 2
    kept = dict(backbone.model.named_parameters())
    reference = dict(full.named_parameters())
    assert kept and set(kept) < set(reference)  # the third layer is gone
    for name, value in kept.items():
        assert torch.equal(value, reference[name]), name
    out = backbone.model(inputs_embeds=torch.randn(1, 5, 16)).last_hidden_state
    assert out.shape == (1, 5, 16)


def test_too_many_layers_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="only 2 layers"):
        load_backbone("tiny-random-llama", llm_layers=5)
    folder, _ = _save_tiny(tmp_path, "gpt2")
    with pytest.raises(BackboneError, match="only 3 layers"):
        load_backbone(str(folder), llm_layers=4)


def test_unloadable_specs_name_what_was_tried(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(str(tmp_path / "empty"))
    with pytest.raises(BackboneError, match="hub id"):
        load_backbone("no-such-org/no-such-model-xyz")


def test_random_init_changes_the_weights_but_not_the_shapes(tmp_path):
    folder, full = _save_tiny(tmp_path, "qwen2")
    pretrained = load_backbone(str(folder))
    random = load_backbone(str(folder), random_init=True)
    a, b = dict(pretrained.model.named_parameters()), dict(random.model.named_parameters())
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)
