import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_config
from test_ablation import write_hourly_csv
from timellm.cli import main
from timellm.experiments.explain import closest_words, explain_run, explain_window, text_prototypes
from timellm.experiments.folders import ADAPTER_DIR, RUN_CONFIG
from timellm.model.modeling import TimeLLM
from timellm.model.prompt import prompt_text
from timellm.model.variants import build_model

SHORT = "Test load."  # a short prompt: the tiny tokenizer has one token per character


def one_hot_model(prototype: int, token: int) -> TimeLLM:
    """A model whose prototype ``prototype`` is exactly the embedding of ``token``."""
    model = TimeLLM(tiny_config(description=SHORT))
    with torch.no_grad():
        model.prototypes.mapping.weight[prototype].zero_()
        model.prototypes.mapping.weight[prototype, token] = 1.0
        model.prototypes.mapping.bias[prototype] = 0.0
    return model


def test_a_prototype_equal_to_a_word_embedding_finds_that_word_first():
    probe = TimeLLM(tiny_config())
    token = probe.backbone.tokenizer.convert_tokens_to_ids("Q")
    model = one_hot_model(3, token)
    words = closest_words(model, top_k=4)
    assert len(words) == model.config.num_prototypes
    assert [w.prototype for w in words] == list(range(model.config.num_prototypes))
    assert words[3].tokens[0] == token and words[3].words[0] == "Q"
    assert words[3].similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert words[3].similarities == sorted(words[3].similarities, reverse=True)
    # chunking the similarity matrix changes nothing
    assert [w.tokens for w in closest_words(model, top_k=4, chunk=3)] == [w.tokens for w in words]


def test_explain_window_gives_the_prompt_and_a_distribution_over_prototypes():
    model = TimeLLM(tiny_config(description=SHORT))
    series = np.sin(np.arange(48) / 3.0).astype(np.float32)
    explanation = explain_window(model, series, top_prototypes=3)
    c = model.config
    assert explanation.attention.shape == (c.num_patches, c.num_prototypes)
    np.testing.assert_allclose(explanation.attention.sum(axis=1), 1.0, rtol=1e-5)
    assert explanation.prompt == prompt_text(series, c.pred_len, dataset=c.dataset, description=SHORT)
    assert len(explanation.top_prototypes) == 3
    weights = [w for _, w in explanation.top_prototypes]
    assert weights == sorted(weights, reverse=True)
    assert explanation.top_prototypes[0][0] == int(explanation.attention.mean(axis=0).argmax())
    assert explain_window(TimeLLM(tiny_config(use_prompt=False)), series).prompt == ""
    with pytest.raises(ValueError, match="seq_len=48"):
        explain_window(model, series[:40])


def test_a_model_without_prototypes_cannot_be_explained():
    with pytest.raises(ValueError, match="'none' variant has no text prototypes"):
        text_prototypes(build_model(tiny_config(llm="none")))


@pytest.fixture
def run_dir(tmp_path):
    """A run folder on a small CSV whose prototype 0 is the embedding of token 'Q'."""
    csv = write_hourly_csv(tmp_path / "load.csv")
    probe = TimeLLM(tiny_config())
    model = one_hot_model(0, probe.backbone.tokenizer.convert_tokens_to_ids("Q"))
    folder = tmp_path / "run"
    model.save_pretrained(folder / ADAPTER_DIR)
    record = {"test_dataset": "load", "data": {"csv": str(csv), "time_col": "date"}}
    (folder / RUN_CONFIG).write_text(yaml.safe_dump(record))
    return folder


def test_explain_run_writes_the_heat_map(run_dir, tmp_path):
    result = explain_run(run_dir, window=-1, channel="load0", heatmap=tmp_path / "attention.png")
    assert result["channel"] == "load0" and result["words"][0].words[0] == "Q"
    assert result["window"] == 96 - 12  # the last test window: 20 % of 480 rows, 48 before them
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown channel 'OT'"):
        explain_run(run_dir, channel="OT")
    with pytest.raises(ValueError, match="window must be in"):
        explain_run(run_dir, window=10_000)


def test_explain_cli(run_dir, tmp_path, capsys):
    assert main(["explain", str(run_dir), "--prototypes", "2", "--heatmap", str(tmp_path / "h.png")]) == 0
    out = capsys.readouterr().out
    assert "#0    Q 1.00" in out
    assert "prompt: Dataset description: Test load. Task: forecast the next 12 steps" in out
    assert "most attended prototypes" in out and (tmp_path / "h.png").is_file()
    assert main(["explain", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
