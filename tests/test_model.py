import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from timellm import AdapterLoadError, TimeLLM, TimeLLMConfig
from timellm.backbones.loading import load_backbone
from timellm.model.adapter import ADAPTER_FILE
from timellm.model.prompt import dataset_description, prompt_prefix
from timellm.model.variants import build_model, load_model

BACKBONES = ["tiny-random-llama", "tiny-random-gpt2", "tiny-random-bert"]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize(
    "seq_len,pred_len,patch_len,stride,channels",
    [(48, 12, 8, 4, 1), (64, 24, 16, 8, 3), (37, 5, 6, 5, 2), (24, 48, 1, 1, 1)],
)
def test_output_shape(backbone, seq_len, pred_len, patch_len, stride, channels):
    config = tiny_config(backbone, seq_len=seq_len, pred_len=pred_len, patch_len=patch_len, stride=stride)
    model = TimeLLM(config)
    out = model(torch.randn(3, seq_len, channels))
    assert out.shape == (3, pred_len, channels)
    assert torch.isfinite(out).all()
    assert config.num_patches == (seq_len - patch_len) // stride + 2


def test_linear_patch_embedding_and_paper_head_dim():
    model = TimeLLM(tiny_config(patch_embedding="linear", d_keys=4))
    assert isinstance(model.patch_embedding.proj, torch.nn.Linear)
    assert model.reprogramming.query.out_features == 4 * 2
    assert model(torch.randn(2, 48, 1)).shape == (2, 12, 1)


def test_wrong_input_shape_is_a_clear_error():
    model = TimeLLM(tiny_config())
    with pytest.raises(ValueError, match=r"seq_len=48.*found \(2, 40, 1\)"):
        model(torch.randn(2, 40, 1))


def test_d_ff_larger_than_the_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="d_ff .* hidden size"):
        TimeLLM(tiny_config(d_ff=4096))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_an_optimiser_step_moves_the_adapter_only(backbone):
    model = TimeLLM(tiny_config(backbone))
    model.train()
    frozen = {k: v.clone() for k, v in model.llm.state_dict().items()}
    adapter = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=1e-2)
    loss = torch.nn.functional.mse_loss(model(torch.randn(4, 48, 2)), torch.randn(4, 12, 2))
    loss.backward()
    assert model.patch_embedding.proj.weight.grad is not None
    assert model.patch_embedding.proj.weight.grad.abs().sum() > 0
    optimiser.step()
    for k, v in model.llm.state_dict().items():
        assert torch.equal(v, frozen[k]), f"backbone weight {k} changed"
    for part in ("patch_embedding", "prototypes", "reprogramming", "head"):
        keys = [k for k in adapter if k.startswith(part + ".")]
        assert keys, part
        assert any(not torch.equal(model.adapter_state_dict()[k], adapter[k]) for k in keys), part
    # everything of the LLM is frozen, its word embeddings too
    assert not model.llm.get_input_embeddings().weight.requires_grad
    assert not model.llm.training


def test_trainable_parameter_count_includes_the_mapping_layer():
    model = TimeLLM(tiny_config())
    vocab = model.backbone.vocab_size
    mapping = vocab * 20 + 20
    assert model.prototypes.mapping.weight.numel() + model.prototypes.mapping.bias.numel() == mapping
    assert model.num_parameters(trainable_only=True) == sum(
        v.numel() for v in model.adapter_state_dict().values()
    )
    assert model.num_parameters() > model.num_parameters(trainable_only=True)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_padded_prompts_give_the_same_output_as_alone(backbone):
    model = TimeLLM(tiny_config(backbone)).eval()
    t = torch.arange(48, dtype=torch.float32)
    # very different series: their statistics texts (hence prompt lengths) differ
    batch = torch.stack([torch.sin(t / 3), 1e4 * torch.randn(48), -t * 0.001234567, torch.cos(t)])[..., None]
    ids, mask = model.prompt_token_ids(torch.nn.functional.normalize(batch[..., 0], dim=-1))
    assert (mask.sum(1) != mask.shape[1]).any(), "the test needs prompts of different lengths"
    with torch.no_grad():
        together = model(batch)
        for i in range(batch.shape[0]):
            alone = model(batch[i : i + 1])
            torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-4, atol=1e-5)


def test_prompt_is_left_padded_so_patches_come_last():
    model = TimeLLM(tiny_config())
    ids, mask = model.prompt_token_ids(torch.randn(3, 48) * torch.tensor([[1.0], [1000.0], [0.001]]))
    assert (mask[:, -1] == 1).all()
    for row in mask:  # zeros then ones
        first = int(row.argmax())
        assert row[first:].all() and not row[:first].any()


def test_save_and_load_give_identical_predictions(tmp_path):
    model = TimeLLM(tiny_config()).eval()
    with torch.no_grad():
        model.head.linear.weight.mul_(3)  # make sure loading is not re-initialising
    x = torch.randn(2, 48, 3)
    expected = model(x)
    model.save_pretrained(tmp_path)
    loaded = TimeLLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    saved = load_file(str(tmp_path / ADAPTER_FILE))
    assert not any(k.startswith("llm.") for k in saved)
    assert sum(v.numel() for v in saved.values()) == model.num_parameters(trainable_only=True)
    assert TimeLLMConfig.load(tmp_path / "config.json") == model.config


def test_loading_checks_keys_and_shapes_strictly(tmp_path):
    TimeLLM(tiny_config()).save_pretrained(tmp_path / "a")
    other = TimeLLM(tiny_config(d_model=4))
    with pytest.raises(AdapterLoadError, match=r"adapter.safetensors was made for another backbone or shape"):
        other.load_adapter(tmp_path / "a" / ADAPTER_FILE)
    gpt2 = build_model(tiny_config("tiny-random-gpt2", llm="none"))
    with pytest.raises(AdapterLoadError, match="does not match this model"):
        gpt2.load_adapter(tmp_path / "a" / ADAPTER_FILE)
    (tmp_path / "a" / ADAPTER_FILE).write_bytes(b"garbage")
    with pytest.raises(AdapterLoadError, match="truncated or corrupted"):
        TimeLLM.from_pretrained(tmp_path / "a")


def test_a_given_backbone_is_reused():
    backbone = load_backbone("tiny-random-gpt2")
    model = TimeLLM(tiny_config("tiny-random-gpt2"), backbone=backbone)
    assert model.llm is backbone.model


def test_a_backbone_that_is_not_the_configs_is_refused():
    with pytest.raises(
        ValueError, match=r"backbone given \('tiny-random-gpt2'\) is not the config's backbone"
    ):
        TimeLLM(tiny_config("tiny-random-llama"), backbone=load_backbone("tiny-random-gpt2"))
    one_layer = load_backbone("tiny-random-llama", llm_layers=1)
    # without the check, save_pretrained would record all layers and from_pretrained rebuild 2
    with pytest.raises(ValueError, match=r"has 1 of its 2 layers but the config asks for all layers"):
        TimeLLM(tiny_config(), backbone=one_layer)
    with pytest.raises(ValueError, match=r"asks for llm_layers=2: load it with llm_layers=2"):
        TimeLLM(tiny_config(llm_layers=2), backbone=one_layer)
    model = TimeLLM(tiny_config(llm_layers=1), backbone=one_layer)
    assert model.backbone.num_layers == 1


@pytest.mark.parametrize("backbone", BACKBONES)
def test_prompt_and_patches_beyond_the_position_limit_are_refused_at_construction(backbone):
    # tiny backbones have 2048 positions: 2049 patches alone pass them
    config = tiny_config(backbone, seq_len=2048, patch_len=1, stride=1, top_k_lags=5)
    with pytest.raises(ValueError) as err:
        TimeLLM(config)
    message = str(err.value)
    text = prompt_prefix(dataset_description("ETTh1"), 2048, 12)
    prefix = len(load_backbone(backbone).tokenizer(text)["input_ids"])
    assert f"{prefix} prompt-prefix tokens" in message and "2049 patches" in message
    assert f"backbone {backbone!r} has 2048 (max_position_embeddings)" in message
    assert "seq_len" in message and "prompt_statistics=False" in message
    # the bound counts the longest statistics text: a character tokenizer takes it character by character
    stats = int(message.split("up to ")[2].split(" statistics")[0])
    longest = " Input statistics: min -1.23e-05, max -1.23e-05, median -1.23e-05, trend downward,"
    assert stats == len(longest + " top 5 lags 1024, 1023, 1022, 1021, 1020.")
    TimeLLM(tiny_config(backbone, seq_len=1024, patch_len=2, stride=2))  # 513 patches + the prompt fit


@pytest.mark.real_backbone
@pytest.mark.slow
def test_minilm_with_one_step_patches_over_512_steps_is_refused_up_front():
    config = TimeLLMConfig(backbone="minilm-l6", seq_len=512, pred_len=96, patch_len=1, stride=1)
    with pytest.raises(ValueError, match=r"513 patches\) but backbone 'minilm-l6' has 512"):
        TimeLLM(config)


@pytest.mark.parametrize("variant", ["random", "attention", "transformer", "none"])
def test_ablation_variants_run_and_train(variant, tmp_path):
    model = build_model(tiny_config(llm=variant))
    out = model(torch.randn(2, 48, 2))
    assert out.shape == (2, 12, 2)
    out.sum().backward()
    assert model.patch_embedding.proj.weight.grad is not None
    model.save_pretrained(tmp_path)
    model.eval()
    x = torch.randn(2, 48, 2)
    torch.testing.assert_close(load_model(tmp_path).eval()(x), model(x))


def test_no_prompt_and_no_statistics_variants():
    plain = TimeLLM(tiny_config(use_prompt=False))
    ids, mask = plain.prompt_token_ids(torch.randn(2, 48))
    assert ids.shape == (2, 0)
    no_stats = TimeLLM(tiny_config(prompt_statistics=False))
    ids, mask = no_stats.prompt_token_ids(torch.randn(2, 48))
    assert torch.equal(ids[0], ids[1]) and mask.all()
    assert no_stats(torch.randn(2, 48, 1)).shape == (2, 12, 1)


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        TimeLLMConfig(seq_len=0)
    with pytest.raises(ValueError, match="unknown model setting"):
        TimeLLMConfig().replace(nonsense=1)
    with pytest.raises(ValueError, match="llm must be one of"):
        TimeLLMConfig(llm="gpt5")
    with pytest.raises(ValueError, match="normalization must be 'revin', 'last' or 'seasonal', found 'mean'"):
        TimeLLMConfig(normalization="mean")
    for period in (None, 0, 513):
        with pytest.raises(ValueError, match="normalization 'seasonal' needs period"):
            TimeLLMConfig(normalization="seasonal", period=period)


@pytest.mark.parametrize("normalization", ["revin", "last", "seasonal"])
def test_a_zero_head_forecasts_the_normalisations_centre(normalization):
    """zero_head: the untrained forecast is the centre (mean, last value or seasonal naive)."""
    config = tiny_config(
        seq_len=24, pred_len=10, patch_len=8, stride=4, normalization=normalization, period=4
    )
    torch.manual_seed(0)
    model = TimeLLM(config.replace(zero_head=True))
    torch.manual_seed(0)
    default = TimeLLM(config)
    # only the head's weights differ from the default initialisation
    for (name, ours), theirs in zip(model.state_dict().items(), default.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs) != name.startswith("head."), name
    x = torch.randn(2, 24, 3) * 4 + 7
    centre = {
        "revin": x.mean(dim=1, keepdim=True).expand(2, 10, 3),
        "last": x[:, -1:, :].expand(2, 10, 3),
        "seasonal": x[:, [20, 21, 22, 23] * 2 + [20, 21], :],
    }[normalization]
    torch.testing.assert_close(model.eval()(x), centre, atol=1e-5, rtol=1e-5)
    # a training step moves it away from the centre: the head's gradient is not zero
    model.train()
    torch.nn.functional.mse_loss(model(x), x[:, :10]).backward()
    assert model.head.linear.weight.grad.abs().sum() > 0


def test_reprogramming_matches_the_released_formula():
    from timellm.experiments.measure import released_attention, released_reprogramming
    from timellm.model.layers import Reprogramming

    torch.manual_seed(0)
    layer = Reprogramming(d_model=8, n_heads=4, d_keys=6, d_llm=20).eval()
    patches, prototypes = torch.randn(5, 7, 8), torch.randn(30, 20)
    expected = released_reprogramming(layer, patches, prototypes)
    weights = released_attention(layer, patches, prototypes)
    torch.testing.assert_close(layer(patches, prototypes), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.attention(patches, prototypes), weights, rtol=1e-5, atol=1e-6)


def test_keep_mask_is_unbiased_and_seeded():
    from timellm.model.layers import keep_mask

    torch.manual_seed(3)
    keep, scale = keep_mask((64, 1001), 0.1, torch.device("cpu"))
    torch.manual_seed(3)
    again, _ = keep_mask((64, 1001), 0.1, torch.device("cpu"))
    assert keep.shape == (64, 1001) and keep.dtype == torch.bool
    assert torch.equal(keep, again)
    assert abs(keep.float().mean().item() - 0.9) < 0.01  # 64,064 draws: std of the mean ~0.0012
    assert scale == pytest.approx(1 / (1 - 6554 / 65536))
    full, one = keep_mask((3, 3), 0.0, torch.device("cpu"))
    assert full.all() and one == 1.0


def test_reprogramming_dropout_in_training_is_unbiased():
    from timellm.model.layers import Reprogramming

    torch.manual_seed(1)
    layer = Reprogramming(d_model=8, n_heads=2, d_keys=4, d_llm=12, attention_dropout=0.5)
    patches, prototypes = torch.randn(1, 3, 8), torch.randn(10, 12)
    expected = layer.eval()(patches, prototypes)
    layer.train()
    samples = torch.stack([layer(patches, prototypes) for _ in range(4000)])
    assert not torch.allclose(samples[0], samples[1])  # the mask changes from call to call
    torch.testing.assert_close(samples.mean(0), expected, rtol=0.0, atol=0.05)
