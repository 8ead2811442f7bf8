"""Real offline backbones from their packages: proof that real pretrained weights are loaded."""

import pytest
import torch

from timellm import TimeLLM, TimeLLMConfig
from timellm.backbones.loading import load_backbone, resolve_backbone_folder

pytestmark = [pytest.mark.real_backbone, pytest.mark.slow]


def test_smollm2_loads_from_its_package_and_knows_paris():
    from transformers import AutoModelForCausalLM

    folder = resolve_backbone_folder("smollm2-135m")  # dequantised once, cached after
    backbone = load_backbone("smollm2-135m", llm_layers=2)
    assert backbone.total_layers == 30 and backbone.num_layers == 2
    assert backbone.hidden_size == 576 and backbone.vocab_size == 49152 and backbone.is_causal
    lm = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = backbone.tokenizer
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    out = lm.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][inputs["input_ids"].shape[1] :])
    # the truncated backbone holds exactly the first layers of the real model
    assert torch.equal(backbone.model.layers[1].mlp.up_proj.weight, lm.model.layers[1].mlp.up_proj.weight)


def test_time_llm_forward_on_smollm2():
    config = TimeLLMConfig(backbone="smollm2-135m", llm_layers=2, seq_len=96, pred_len=24, dataset="ETTh1")
    model = TimeLLM(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 96, 3))
    assert out.shape == (2, 24, 3) and torch.isfinite(out).all()
    assert model.num_parameters(trainable_only=True) > 49152 * 1000  # the V -> V' mapping alone


def test_time_llm_forward_on_minilm():
    backbone = load_backbone("minilm-l6")
    assert backbone.hidden_size == 384 and backbone.total_layers == 6 and not backbone.is_causal
    config = TimeLLMConfig(backbone="minilm-l6", seq_len=96, pred_len=24, dataset="weather")
    model = TimeLLM(config, backbone=backbone).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 96, 2))
    assert out.shape == (2, 24, 2) and torch.isfinite(out).all()
