"""The fast path computes what the plain path computes: outputs and every adapter gradient."""

import pytest
import torch

from conftest import tiny_config
from timellm import TimeLLM
from timellm.backbones.loading import load_backbone
from timellm.model.config import ExecutionSettings
from timellm.model.layers import revin_normalize
from timellm.model.prompt import StatisticsTokenizer

DECODERS = ["tiny-random-llama", "tiny-random-gpt2"]


def twins(backbone_name: str, **changes) -> tuple[TimeLLM, TimeLLM]:
    """A fast-path and a plain-path model with the same backbone and the same adapter weights."""
    backbone = load_backbone(backbone_name)
    config = tiny_config(backbone_name, dropout=0.0, attention_dropout=0.0, **changes)
    fast = TimeLLM(config, backbone=backbone)
    plain = TimeLLM(config.replace(fast_path=False), backbone=backbone)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def varied_batch(seq_len: int = 48, channels: int = 2) -> torch.Tensor:
    """(4, T, N) windows so different that their statistics texts differ in length."""
    t = torch.arange(seq_len, dtype=torch.float32)
    series = torch.stack([torch.sin(t / 3), 3 * torch.randn(seq_len) + 5, -0.01 * t, torch.cos(t) + t / 7])
    return series[..., None].repeat(1, 1, channels) + 0.1 * torch.randn(4, seq_len, channels)


def step(model: TimeLLM, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad()
    out = model(x)
    torch.nn.functional.mse_loss(out, torch.ones_like(out)).backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(fast: dict, plain: dict) -> None:
    assert fast.keys() == plain.keys() and len(fast) > 0
    for name, expected in plain.items():
        if name == "reprogramming.key.bias":
            # a bias shared by all keys shifts every score of a query equally: softmax ignores it, its
            # exact gradient is 0 and both paths give rounding noise, small next to the key weights'
            scale = plain["reprogramming.key.weight"].abs().max()
            assert fast[name].abs().max() < 1e-5 * scale and expected.abs().max() < 1e-5 * scale
            continue
        torch.testing.assert_close(
            fast[name], expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()), msg=name
        )


@pytest.mark.parametrize(
    ("backbone", "attention"),
    [(b, a) for b in DECODERS for a in ("auto", "sdpa", "eager")] + [("tiny-random-llama", "grouped")],
)
def test_fast_and_plain_paths_agree_on_outputs_and_gradients(backbone, attention):
    fast, plain = twins(backbone)
    fast.execution = ExecutionSettings(attention=attention)
    assert fast.uses_fast_path and not plain.uses_fast_path
    x = varied_batch()
    normalised, _, _ = revin_normalize(x.permute(0, 2, 1).reshape(-1, x.shape[1]))
    _, stats_mask = fast.statistics_token_ids(normalised)
    assert len(set(stats_mask.sum(1).tolist())) > 1, "the test needs statistics of different lengths"
    _, prompt_mask = plain.prompt_token_ids(normalised)
    assert (prompt_mask.sum(1) < prompt_mask.shape[1]).any(), "the plain path must pad some prompts"

    fast_out, fast_grads = step(fast, x)
    plain_out, plain_grads = step(plain, x)
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-4, atol=1e-5)
    assert_same_gradients(fast_grads, plain_grads)
    # a second batch reuses the prefix cache and the memoised statistics tokens
    x2 = varied_batch()
    fast_out, fast_grads = step(fast, x2)
    plain_out, plain_grads = step(plain, x2)
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-4, atol=1e-5)
    assert_same_gradients(fast_grads, plain_grads)
    assert fast._prefix_cache.builds == 1


@pytest.mark.parametrize("backbone", DECODERS)
def test_fast_path_agrees_at_inference_and_caches_the_prototypes(backbone):
    fast, plain = twins(backbone)
    fast.eval(), plain.eval()
    x = varied_batch(channels=3)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    assert fast._prototype_cache.builds == 1
    assert plain._prototype_cache.builds == 0  # the oracle recomputes everything


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt_statistics": False},
        {"use_prompt": False},
        {"llm": "random"},
        {"normalization": "last"},
        {"normalization": "seasonal", "period": 4},
    ],
    ids=str,
)
def test_fast_path_agrees_without_statistics_without_prompt_and_on_a_random_llm(changes):
    fast, plain = twins("tiny-random-llama", **changes)
    assert fast.uses_fast_path == changes.get("use_prompt", True)
    x = varied_batch()
    fast_out, fast_grads = step(fast, x)
    plain_out, plain_grads = step(plain, x)
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-4, atol=1e-5)
    assert_same_gradients(fast_grads, plain_grads)


def test_the_prefix_cache_is_computed_once_and_never_mutated():
    fast, _ = twins("tiny-random-llama")
    x = varied_batch()
    step(fast, x)
    kept = [(k.clone(), v.clone()) for k, v in fast._prefix_cache.get(fast.llm, torch.float32)]
    assert kept[0][0].shape[0] == 1 and kept[0][0].shape[-2] == len(fast.prefix_ids)
    for _ in range(2):
        step(fast, x)
        with torch.no_grad():
            fast.eval()(x)
    assert fast._prefix_cache.builds == 1
    for (k, v), (k0, v0) in zip(fast._prefix_cache.get(fast.llm, torch.float32), kept, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)


@pytest.mark.parametrize("change", [{"description": "Hourly beehive weight in grams."}, {"pred_len": 7}])
def test_a_new_description_or_horizon_gets_its_own_prefix_cache(change):
    fast, plain = twins("tiny-random-llama")
    other_fast, other_plain = twins("tiny-random-llama", **change)
    assert other_fast.prefix_ids != fast.prefix_ids
    x = varied_batch()
    with torch.no_grad():
        fast.eval()(x)
        other = other_fast.eval()(x)
        torch.testing.assert_close(other, other_plain.eval()(x), rtol=1e-4, atol=1e-5)
    mine = fast._prefix_cache.get(fast.llm, torch.float32)[0][0]
    theirs = other_fast._prefix_cache.get(other_fast.llm, torch.float32)[0][0]
    assert mine.shape != theirs.shape or not torch.equal(mine, theirs)


def test_the_prefix_cache_follows_a_dtype_move():
    fast, plain = twins("tiny-random-gpt2")
    x = varied_batch()
    with torch.no_grad():
        fast.eval()(x)
        fast.double(), plain.double()
        out = fast.eval()(x.double())
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, plain.eval()(x.double()), rtol=1e-10, atol=1e-10)
    assert fast._prefix_cache.builds == 2
    assert fast._prefix_cache.get(fast.llm, torch.float64)[0][0].dtype == torch.float64


@pytest.mark.parametrize("changes", [{}, {"prompt_statistics": False}], ids=str)
def test_caches_made_in_inference_mode_serve_later_training(changes):
    fast, plain = twins("tiny-random-llama", **changes)
    x = varied_batch()
    with torch.inference_mode():
        first = fast.eval()(x)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), first, rtol=0, atol=0)
    fast_out, fast_grads = step(fast, x)
    plain_out, plain_grads = step(plain, x)
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-4, atol=1e-5)
    assert_same_gradients(fast_grads, plain_grads)


def test_bert_takes_the_plain_path():
    fast, plain = twins("tiny-random-bert")
    assert not fast.uses_fast_path and "bidirectional" in fast.fast_path_reason
    x = varied_batch()
    fast_out, fast_grads = step(fast, x)
    plain_out, plain_grads = step(plain, x)
    torch.testing.assert_close(fast_out, plain_out, rtol=0, atol=0)


def test_prototype_cache_is_invalidated_by_an_optimiser_step_not_by_the_mode():
    fast, _ = twins("tiny-random-llama")
    x = varied_batch()
    optimiser = torch.optim.Adam([p for p in fast.parameters() if p.requires_grad], lr=1e-2)
    with torch.no_grad():
        fast.eval()(x)
        fast.eval()(x)
    assert fast._prototype_cache.builds == 1
    before = fast._prototype_cache.get(fast.prototypes, fast.backbone.word_embeddings).clone()

    step(fast, x)  # training forwards compute E' afresh, with gradient
    assert fast._prototype_cache.builds == 1
    optimiser.step()
    with torch.no_grad():
        fast.eval()(x)
        fresh = fast.prototypes(fast.backbone.word_embeddings)
    assert fast._prototype_cache.builds == 2
    cached = fast._prototype_cache.get(fast.prototypes, fast.backbone.word_embeddings)
    assert not torch.equal(cached, before) and torch.equal(cached, fresh)
    # predict() on a model in training mode: eval, forward, back to train, batch after batch
    from timellm.model.predict import predict

    fast.train()
    for _ in range(3):
        predict(fast, x)
    assert fast.training and fast._prototype_cache.builds == 2


def test_seen_windows_need_no_tokenizer_call():
    fast, _ = twins("tiny-random-llama")
    calls = []
    tokenizer = fast._statistics_tokenizer.tokenizer
    fast._statistics_tokenizer.tokenizer = lambda texts, **kw: (
        calls.append(len(texts)) or tokenizer(texts, **kw)
    )
    x = varied_batch()
    step(fast, x)
    assert calls == [8]  # 4 windows x 2 channels, tokenised once
    step(fast, x)
    assert calls == [8]


def test_statistics_tokenizer_returns_the_tokenizer_ids_and_stays_bounded():
    tokenizer = load_backbone("tiny-random-llama").tokenizer
    memo = StatisticsTokenizer(tokenizer, max_entries=3)
    texts = [" min 1, max 2.5", " min -0.3, max 12", " min 1, max 2.5", " trend upward", " top 2 lags 3, 4"]
    expected = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert [list(ids) for ids in memo(texts)] == expected
    assert len(memo) == 3
    assert [list(ids) for ids in memo(texts[:2])] == expected[:2]


@pytest.mark.parametrize("backbone", DECODERS)
def test_gradient_checkpointing_gives_the_same_gradients(backbone):
    fast, plain = twins(backbone)
    x = varied_batch()
    _, expected = step(fast, x)
    for model in (fast, plain):
        model.execution = ExecutionSettings(gradient_checkpointing=True)
        out, grads = step(model, x)
        assert_same_gradients(grads, expected)


@pytest.mark.parametrize("backbone", DECODERS)
def test_bf16_autocast_keeps_the_paths_close(backbone):
    fast, plain = twins(backbone)
    bf16 = ExecutionSettings(autocast_dtype="bfloat16")
    fast.execution, plain.execution = bf16, bf16
    x = varied_batch()
    fast_out, _ = step(fast, x)
    plain_out, _ = step(plain, x)
    assert fast_out.dtype == torch.float32 and torch.isfinite(fast_out).all()
    torch.testing.assert_close(fast_out, plain_out, rtol=0.05, atol=0.05)
    assert fast.prototypes.mapping.weight.grad.dtype == torch.float32


def kernels_used(model: TimeLLM, x: torch.Tensor) -> set[str]:
    """The attention implementations the LLM's layers ran with during one training step."""
    seen = set()
    hooks = [
        m.register_forward_pre_hook(lambda module, args: seen.add(module.config._attn_implementation))
        for name, m in model.llm.named_modules()
        if name.endswith("self_attn") or name.endswith(".attn")
    ]
    step(model, x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize(
    ("fast_path", "attention", "expected"),
    [
        (True, "auto", "timellm_grouped"),
        (False, "auto", "sdpa"),
        (True, "sdpa", "sdpa"),
        (False, "eager", "eager"),
        (False, "grouped", "timellm_grouped"),
    ],
)
def test_the_attention_kernel_follows_the_setting_and_does_not_leak(fast_path, attention, expected):
    fast, plain = twins("tiny-random-llama")
    model = fast if fast_path else plain
    model.execution = ExecutionSettings(attention=attention)
    assert kernels_used(model, varied_batch()) == {expected}
    assert model.llm.config._attn_implementation == "sdpa"  # the backbone as loaded, after the call
    with pytest.raises(ValueError, match="attention must be"):
        ExecutionSettings(attention="flash")


def test_grouped_attention_is_the_eager_kernel_per_key_value_head():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    from timellm.model.fastpath import grouped_attention, grouped_eager_attention

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.training = 3, False
    query, key, value = torch.randn(2, 6, 5, 8), torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8)
    mask = torch.zeros(2, 1, 5, 9)
    mask[0, :, :, :3] = torch.finfo(torch.float32).min  # a left-padded series
    mask[:, :, torch.arange(5)[:, None] + 4 < torch.arange(9)] = torch.finfo(torch.float32).min  # causal
    for given in (mask, None):
        expected_out, expected_weights = eager_attention_forward(module, query, key, value, given, 8**-0.5)
        out, weights = grouped_eager_attention(module, query, key, value, given, scaling=8**-0.5)
        torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)
        out, weights = grouped_attention(module, query, key, value, given, scaling=8**-0.5)  # fused kernel
        torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-6)
        assert weights is None
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the mask follows the queries' dtype
            low, _ = grouped_attention(
                module, query.bfloat16(), key.bfloat16(), value.bfloat16(), given, 8**-0.5
            )
        torch.testing.assert_close(low.float(), expected_out, rtol=0.05, atol=0.05)
    module.training = True  # attention dropout in training: the explicit kernel, weights returned
    torch.manual_seed(1)
    out, weights = grouped_attention(module, query, key, value, mask, 8**-0.5, dropout=0.5)
    assert weights is not None and (weights == 0).any()


def test_grouped_attention_is_refused_where_it_does_not_fit():
    fast, _ = twins("tiny-random-gpt2")
    fast.execution = ExecutionSettings(attention="grouped")
    with pytest.raises(ValueError, match="attention 'grouped' is llama's"):
        step(fast, varied_batch())


def test_execution_settings_reject_unknown_dtypes():
    with pytest.raises(ValueError, match="autocast_dtype"):
        ExecutionSettings(autocast_dtype="float8")


@pytest.mark.real_backbone
@pytest.mark.slow
def test_fast_and_plain_paths_agree_on_smollm2():
    from timellm import TimeLLMConfig

    backbone = load_backbone("smollm2-135m", llm_layers=2)
    config = TimeLLMConfig(
        backbone="smollm2-135m",
        llm_layers=2,
        seq_len=96,
        pred_len=24,
        dataset="ETTh1",
        num_prototypes=50,
        dropout=0.0,
        attention_dropout=0.0,
    )
    fast = TimeLLM(config, backbone=backbone)
    plain = TimeLLM(config.replace(fast_path=False), backbone=backbone)
    plain.load_state_dict(fast.state_dict())
    x = varied_batch(seq_len=96, channels=1)
    _, stats_mask = fast.statistics_token_ids(revin_normalize(x[..., 0])[0])
    assert len(set(stats_mask.sum(1).tolist())) > 1, "the test needs statistics of different lengths"
    fast_out, fast_grads = step(fast, x)
    plain_out, plain_grads = step(plain, x)
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-4, atol=1e-4)
    assert_same_gradients(fast_grads, plain_grads)


@pytest.mark.real_backbone
@pytest.mark.slow
def test_minilm_takes_the_plain_path():
    from timellm import TimeLLMConfig

    model = TimeLLM(TimeLLMConfig(backbone="minilm-l6", seq_len=96, pred_len=24, dataset="weather"))
    assert not model.uses_fast_path and "bidirectional" in model.fast_path_reason


# --------------------------------------------------------------------------------------------
# caches that cannot go stale, a fast path that proves itself


def eval_forecast(model: TimeLLM, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def reference_forecast(model: TimeLLM, x: torch.Tensor) -> torch.Tensor:
    """What the plain path gives with ``model``'s current weights (it caches nothing)."""
    plain = TimeLLM(model.config.replace(fast_path=False), backbone=model.backbone)
    plain.load_state_dict(model.state_dict())
    return eval_forecast(plain, x)


def test_a_fused_adam_step_between_two_inference_calls_refreshes_the_prototypes():
    fast, _ = twins("tiny-random-llama")
    x = varied_batch()
    adam = torch.optim.Adam([p for p in fast.parameters() if p.requires_grad], lr=1e-2, fused=True)
    eval_forecast(fast, x)
    # a user's loop: a gradient step with the model left in eval mode (nothing calls train())
    fast.zero_grad()
    torch.nn.functional.mse_loss(fast(x), torch.ones(4, 12, 2)).backward()
    version = fast.prototypes.mapping.weight._version
    adam.step()
    assert fast.prototypes.mapping.weight._version == version  # what fooled a version-keyed cache
    torch.testing.assert_close(eval_forecast(fast, x), reference_forecast(fast, x), rtol=1e-5, atol=1e-6)
    assert fast._prototype_cache.builds == 2


def test_a_write_through_data_refreshes_the_prototypes():
    fast, _ = twins("tiny-random-llama")
    x = varied_batch()
    eval_forecast(fast, x)
    fast.prototypes.mapping.weight.data.mul_(0.5)  # EMA-style update: no version bump
    torch.testing.assert_close(eval_forecast(fast, x), reference_forecast(fast, x), rtol=1e-5, atol=1e-6)
    eval_forecast(fast, x)
    builds = fast._prototype_cache.builds
    eval_forecast(fast, x)
    assert fast._prototype_cache.builds == builds  # unchanged weights keep the cache


def test_the_content_fingerprint_sees_any_single_change():
    from timellm.model.fastpath import content_fingerprint

    layer = torch.nn.Linear(7, 5)
    before = content_fingerprint(layer)
    assert content_fingerprint(layer) == before
    with torch.no_grad():
        weight = layer.weight.data
        weight[2, 3], weight[3, 2] = weight[3, 2].clone(), weight[2, 3].clone()  # a swap keeps the sum
    assert content_fingerprint(layer) != before


def test_the_verified_architectures_are_the_ones_tested_here():
    from timellm.model.fastpath import VERIFIED_ARCHITECTURES

    assert {load_backbone(name).architecture for name in DECODERS} == VERIFIED_ARCHITECTURES


def tiny_qwen2():
    """A causal decoder outside the verified list (Qwen2, full attention), built in memory."""
    from transformers import Qwen2Config, Qwen2Model

    from timellm.backbones.loading import Backbone
    from timellm.backbones.tiny import build_tokenizer

    tokenizer = build_tokenizer(bert_style=False)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    model = Qwen2Model(config).requires_grad_(False).eval()
    return Backbone(model, tokenizer, "tiny-qwen2", is_causal=True, total_layers=2)


def test_an_unverified_architecture_checks_itself_on_its_first_batch(caplog):
    backbone = tiny_qwen2()
    config = tiny_config("tiny-qwen2", dropout=0.0, attention_dropout=0.0)
    fast = TimeLLM(config, backbone=backbone)
    plain = TimeLLM(config.replace(fast_path=False), backbone=backbone)
    plain.load_state_dict(fast.state_dict())
    assert fast.uses_fast_path and not fast._fast_path_verified
    x = varied_batch()
    fast_out, fast_grads = step(fast, x)
    plain_out, plain_grads = step(plain, x)
    assert "matches the plain path on the first batch" in caplog.text
    assert fast.uses_fast_path and fast._fast_path_verified
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-4, atol=1e-5)
    assert_same_gradients(fast_grads, plain_grads)


def test_a_fast_path_that_differs_falls_back_to_the_plain_path(monkeypatch, caplog):
    import timellm.model.modeling as modeling

    backbone = tiny_qwen2()
    config = tiny_config("tiny-qwen2", dropout=0.0, attention_dropout=0.0)
    fast = TimeLLM(config, backbone=backbone)
    plain = TimeLLM(config.replace(fast_path=False), backbone=backbone)
    plain.load_state_dict(fast.state_dict())
    wrong = modeling.run_patch_tokens
    monkeypatch.setattr(modeling, "run_patch_tokens", lambda *args: wrong(*args) + 1.0)  # a broken shortcut
    x = varied_batch()
    fast_out, fast_grads = step(fast, x)
    plain_out, plain_grads = step(plain, x)
    assert not fast.uses_fast_path and "differs from the plain path" in fast.fast_path_reason
    assert "'qwen2'" in fast.fast_path_reason and "takes the plain path" in caplog.text
    # the first batch ran the plain path with the fast path's eager attention kernel: rounding apart
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-5, atol=1e-6)
    assert_same_gradients(fast_grads, plain_grads)


def test_an_unfrozen_llm_takes_the_plain_path(caplog):
    fast, plain = twins("tiny-random-llama")
    fast.llm.layers[0].mlp.down_proj.weight.requires_grad_(True)
    try:
        fast_out, _ = step(fast, varied_batch())
        assert fast.llm.layers[0].mlp.down_proj.weight.grad is not None  # the LLM weight did train
        assert "frozen LLM" in caplog.text
        plain_out, _ = step(plain, varied_batch())
    finally:
        fast.llm.requires_grad_(False)
    assert fast._prefix_cache.builds == 0
    assert fast_out.shape == plain_out.shape


def test_the_kv_cache_goes_under_the_keyword_the_model_takes():
    from timellm.model.fastpath import llm_cache_kwargs

    class Current(torch.nn.Module):
        def forward(self, inputs_embeds=None, cache=None, **kwargs): ...

    class Older(torch.nn.Module):
        def forward(self, inputs_embeds=None, past_key_values=None, **kwargs): ...

    assert llm_cache_kwargs(Current(), "kv") == {"cache": "kv"}
    assert llm_cache_kwargs(Older(), "kv") == {"past_key_values": "kv"}


@pytest.mark.parametrize("backbone", DECODERS)
def test_the_fast_path_makes_no_deprecated_call(backbone):
    import warnings

    fast, _ = twins(backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        step(fast, varied_batch())
        eval_forecast(fast, varied_batch())


def test_compiled_norms_and_mlps_compute_what_the_eager_ones_do():
    from timellm.model.predict import predict

    fast, plain = twins("tiny-random-llama")
    x = varied_batch()
    expected_out, expected_grads = step(plain, x)
    expected = predict(plain, x)
    torch._dynamo.reset()
    fast.execution = ExecutionSettings(compile="inference")
    torch.testing.assert_close(predict(fast, x), expected, rtol=1e-4, atol=1e-5)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs > 0  # the compiled forwards ran
    out, _ = step(fast, x)  # "inference": training calls stay eager
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    fast.execution = ExecutionSettings(compile="always")
    out, grads = step(fast, x)
    torch.testing.assert_close(out, expected_out, rtol=1e-4, atol=1e-5)
    assert_same_gradients(grads, expected_grads)
    with pytest.raises(ValueError, match="compile must be"):
        ExecutionSettings(compile="yes")


def test_compiled_decoder_layers_compute_what_the_eager_ones_do():
    from timellm.model.fastpath import compiling
    from timellm.model.predict import predict

    fast, plain = twins("tiny-random-llama")
    x = varied_batch()
    expected = predict(plain, x)
    torch._dynamo.reset()
    fast.execution = ExecutionSettings(compile="always", compile_scope="modules")
    predict(fast, x)  # the norms and MLPs wrapped first: scope "layers" must replace them
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    fast.execution = ExecutionSettings(compile="inference", compile_scope="layers")
    torch.testing.assert_close(predict(fast, x), expected, rtol=1e-4, atol=1e-5)
    wrapped = {type(m).__name__ for m in fast.llm.modules() if "forward" in vars(m)}
    assert wrapped == {"LlamaDecoderLayer"}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # the layers compiled
    # the raised recompilation limits hold only while the LLM runs
    default = torch._dynamo.config.recompile_limit
    with compiling(True, layers=30):
        assert torch._dynamo.config.recompile_limit > default
    assert torch._dynamo.config.recompile_limit == default
    with pytest.raises(ValueError, match="compile_scope must be"):
        ExecutionSettings(compile_scope="model")
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        ExecutionSettings(compile="always", compile_scope="layers", gradient_checkpointing=True)
