"""The frozen LLM's weight storage (weights=fp32|bf16|fp16|int8|auto) and the memory estimate."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import timellm.model.memory as memory
from conftest import tiny_config
from timellm import TimeLLM
from timellm.backbones import storage
from timellm.backbones.loading import load_backbone
from timellm.backbones.storage import torchao_available
from timellm.data import WindowDataset
from timellm.model.config import ExecutionSettings
from timellm.model.memory import InsufficientMemoryError, check_memory, estimate_memory, llm_shape
from timellm.model.precision import resolve_weights
from timellm.training.loop import TrainConfig, fit

RNG = np.random.default_rng(0)
DATA = (np.sin(np.arange(400)[:, None] / 6 + np.arange(2)) + 0.1 * RNG.standard_normal((400, 2))).astype(
    np.float32
)
PAST = torch.from_numpy(DATA[None, :48].copy())  # (1, 48, 2)


def build(weights: str, precision: str = "fp32", backbone: str = "tiny-random-llama", **changes) -> TimeLLM:
    torch.manual_seed(0)
    config = tiny_config(backbone, **changes)
    return TimeLLM(config, execution=ExecutionSettings(weights=weights), precision=precision)


@pytest.mark.parametrize("backbone", ["tiny-random-llama", "tiny-random-gpt2", "tiny-random-bert"])
@pytest.mark.parametrize("weights", ["bf16", "fp16"])
def test_narrow_weights_forecast_what_fp32_weights_forecast(backbone, weights):
    """Stored in 16 bits and widened as each layer runs: the fp32 forecast up to the weights' rounding."""
    wide, narrow = build("fp32", backbone=backbone).eval(), build(weights, backbone=backbone).eval()
    assert wide.backbone.storage == "fp32" and narrow.backbone.storage == weights
    with torch.no_grad():
        gap = (wide(PAST) - narrow(PAST)).abs().max()
    assert gap < 2e-2, gap  # bf16 keeps 8 bits of mantissa: about 4e-3 relative per weight
    # and under bf16 autocast the stored bf16 weights give what autocast makes of fp32 weights
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        gap = (wide(PAST) - build("bf16", backbone=backbone).eval()(PAST)).abs().max()
    assert gap < 5e-2, gap


def test_bf16_storage_trains_like_fp32_weights_under_autocast(caplog):
    """The same loss curve for a few steps; the adapter and its optimiser state stay fp32."""
    data = WindowDataset(DATA, 48, 12)
    config = TrainConfig(
        epochs=3, batch_size=8, max_train_windows=32, learning_rate=3e-3, precision="bf16", seed=1
    )
    curves = {}
    for weights in ("fp32", "bf16"):
        model = build(weights, precision="bf16")
        result = fit(model, data, WindowDataset(DATA[300:], 48, 12), config)
        curves[weights] = [row["train_loss"] for row in result.history]
        assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
        assert {v.dtype for v in model.adapter_state_dict().values()} == {torch.float32}
    np.testing.assert_allclose(curves["bf16"], curves["fp32"], rtol=2e-2)


def test_the_optimiser_state_is_fp32_and_no_frozen_weight_takes_a_gradient():
    model = build("bf16").train()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(PAST).pow(2).mean().backward()
    optimiser.step()
    for state in optimiser.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    assert all(p.grad is None for p in model.llm.parameters())


def test_a_saved_adapter_does_not_depend_on_the_storage(tmp_path):
    """Saved from a bf16-stored model, loaded onto fp32 weights (and back): the same adapter."""
    model = build("bf16")
    model.save_pretrained(tmp_path / "adapter")
    torch.manual_seed(5)  # another initialisation, overwritten by the load
    other = TimeLLM(tiny_config(), execution=ExecutionSettings(weights="fp32"), precision="fp32")
    other.load_adapter(tmp_path / "adapter" / "adapter.safetensors")
    for key, value in model.adapter_state_dict().items():
        assert torch.equal(value, other.adapter_state_dict()[key]), key
    with torch.no_grad():
        gap = (model.eval()(PAST) - other.eval()(PAST)).abs().max()
    assert gap < 2e-2


def test_resume_with_bf16_storage_gives_the_uninterrupted_run(tmp_path, monkeypatch):
    """Interrupted after its first checkpoint and resumed from a copy of it: the same run."""
    import shutil

    import timellm.training.checkpoint as ckpt

    data, val = WindowDataset(DATA[:300], 48, 12), WindowDataset(DATA[250:], 48, 12, max_windows=8)
    config = TrainConfig(epochs=2, batch_size=8, max_train_windows=24, checkpoint_every=2, deterministic=True)
    save, copies = ckpt.save_checkpoint, []

    def keep_a_copy(directory, tensors, state):
        out = save(directory, tensors, state)
        copies.append(shutil.copytree(out, tmp_path / f"copy{len(copies)}"))
        return out

    monkeypatch.setattr(ckpt, "save_checkpoint", keep_a_copy)
    whole = fit(build("bf16"), data, val, config, checkpoint_dir=tmp_path / "whole")
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    resumed = build("bf16")
    assert resumed.backbone.storage == "bf16"
    again = fit(resumed, data, val, config, checkpoint_dir=copies[0], resume=True)
    assert again.history == whole.history


@pytest.mark.skipif(not torchao_available(), reason="torchao (weights=int8) is not installed")
def test_int8_weights_forecast_and_train():
    model = build("int8")
    assert model.backbone.storage == "int8"
    with torch.no_grad():
        gap = (model.eval()(PAST) - build("fp32").eval()(PAST)).abs().max()
    assert torch.isfinite(gap) and gap < 5e-2
    model.train()
    before = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(PAST).pow(2).mean().backward()
    optimiser.step()
    assert any(not torch.equal(v, model.adapter_state_dict()[k]) for k, v in before.items())


def test_auto_follows_the_compute_precision_and_falls_back_to_bf16_where_fp32_would_not_fit(caplog):
    assert resolve_weights("auto", "bf16", "cpu") == "bf16"
    assert resolve_weights("auto", "fp32", "cpu") == "fp32"
    assert resolve_weights("int8", "fp32", "cpu") == "int8"
    with caplog.at_level("INFO"):
        assert (
            resolve_weights("auto", "fp32", "cpu", fp32_bytes=10 * 2**30, available_bytes=8 * 2**30) == "bf16"
        )
    assert "stored in bf16 and computed in fp32" in caplog.text
    with pytest.raises(ValueError, match="weights must be one of"):
        resolve_weights("int4", "fp32", "cpu")
    with pytest.raises(ValueError, match="weights must be"):
        ExecutionSettings(weights="int4")


def test_auto_picks_bf16_storage_itself_when_fp32_weights_exceed_the_memory(monkeypatch):
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", "1K")  # less than any fp32 backbone
    model = build("auto", precision="fp32")
    assert model.backbone.storage == "bf16"


# --------------------------------------------------------------------------------------------
# the estimate


def test_the_estimate_counts_the_weights_in_their_storage():
    config = tiny_config()
    shape = llm_shape(config.backbone, config.llm_layers)
    loaded = load_backbone(config.backbone)
    assert shape.parameters == sum(p.numel() for p in loaded.model.parameters())
    sizes = {
        w: estimate_memory(config, storage=w, compute="fp32", batch_series=4, training=False, base=0).weights
        for w in ("fp32", "bf16", "int8")
    }
    assert sizes["fp32"] == 2 * sizes["bf16"] == 4 * shape.parameters
    assert sizes["int8"] < sizes["bf16"]


def test_the_estimate_grows_with_the_batch_and_checkpointing_saves_activations(monkeypatch):
    config = tiny_config()
    deep = memory.LLMShape(  # LLaMA-7B's sizes, without building it
        parameters=6_600_000_000,
        linear_parameters=6_400_000_000,
        linear_rows=1_000_000,
        largest_matrix=200_000_000,
        layers=32,
        hidden=4096,
        intermediate=11008,
        kv_width=4096,
        vocab=32000,
    )
    monkeypatch.setattr(memory, "llm_shape", lambda *args: deep)

    def total(**kw):
        base = dict(storage="bf16", compute="bf16", batch_series=8, training=True, base=0)
        return estimate_memory(config, **{**base, **kw})

    assert total(batch_series=64).total > total().total
    assert total(gradient_checkpointing=True).activations < total().activations
    assert total(training=False).adapter < total().adapter  # no gradient, no Adam moments


def test_a_run_that_cannot_fit_is_refused_before_loading_with_settings_that_fit(monkeypatch):
    """Simulated free memory between the bf16 and the fp32 need: the error names what fits."""
    monkeypatch.setattr(memory, "current_rss", lambda: 0)  # the same process base in every estimate
    config = dataclasses.replace(tiny_config(), num_prototypes=20)
    need = {
        w: estimate_memory(config, storage=w, compute="fp32", batch_series=8, training=True).total
        for w in ("fp32", "bf16")
    }
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", str((need["fp32"] + need["bf16"]) // 2))

    def no_load(*args, **kwargs):
        raise AssertionError("the backbone was loaded although the run cannot fit")

    monkeypatch.setattr("timellm.model.modeling.load_backbone", no_load)
    with pytest.raises(InsufficientMemoryError, match=r"needs about .* GiB .* available .* weights=bf16"):
        check_memory(
            config, ExecutionSettings(weights="fp32"), precision="fp32", batch_windows=8, training=True
        )
    fits = check_memory(
        config, ExecutionSettings(weights="bf16"), precision="fp32", batch_windows=8, training=True
    )
    assert fits.storage == "bf16"


def test_memory_limit_setting_is_parsed(monkeypatch):
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", "1.5G")
    assert memory.simulated_available() == int(1.5 * 2**30)
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="TIMELLM_MEMORY_LIMIT"):
        memory.simulated_available()


@pytest.mark.real_backbone
def test_the_paper_scale_shapes_have_the_papers_sizes():
    """LLaMA-7B's architecture (6.6 B parameters with SmolLM2's 49,152-word vocabulary), counted on
    the meta device; one layer of the 1B shape built for real, stored in bf16."""
    seven = llm_shape("random-llama-7b", None)
    assert (seven.layers, seven.hidden, seven.intermediate, seven.vocab) == (32, 4096, 11008, 49152)
    assert 6.6e9 < seven.parameters < 6.8e9
    one = load_backbone("random-llama-1b", 1, weights="bf16")
    assert one.storage == "bf16" and one.num_layers == 1 and one.total_layers == 16
    assert sum(p.numel() for p in one.model.parameters()) == llm_shape("random-llama-1b", 1).parameters
    weight = one.model.layers[0].mlp.gate_proj.weight
    assert 0.015 < float(weight.float().std()) < 0.025  # LLaMA's initialisation, not empty memory


def test_llm_batch_forecasts_what_the_whole_batch_forecasts():
    """At most k series through the LLM at once (inference): the same forecasts, less memory."""
    past = torch.from_numpy(np.stack([DATA[i : i + 48] for i in range(0, 120, 20)]))  # (6, 48, 2)
    whole = build("fp32").eval()
    chunked = build("fp32").eval()
    chunked.execution = dataclasses.replace(chunked.execution, llm_batch=5)  # 12 series: 5, 5, 2
    with torch.no_grad():
        torch.testing.assert_close(chunked(past), whole(past), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="llm_batch must be"):
        ExecutionSettings(llm_batch=0)


@pytest.mark.skipif(not torchao_available(), reason="torchao (weights=int8) is not installed")
def test_int8_backward_gives_the_input_gradient_of_the_dequantised_weights():
    int8, wide = load_backbone("tiny-random-llama", weights="int8"), load_backbone("tiny-random-llama")
    grads = []
    for backbone in (int8, wide):
        x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
        backbone.model(inputs_embeds=x).last_hidden_state.sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=2e-2 * float(grads[1].abs().max()))


@pytest.mark.parametrize("transposed", [False, True])
def test_a_stored_matrix_multiplies_chunk_by_chunk_as_its_widened_copy(monkeypatch, transposed):
    monkeypatch.setattr(storage, "WIDENING_CHUNK", 3 * 11)  # 3 rows a chunk, the last one short
    a, stored = torch.randn(5, 7 if not transposed else 11), torch.randn(7, 11).bfloat16()
    product = storage.matmul_stored_t(a, stored) if transposed else storage.matmul_stored(a, stored)
    expected = a @ (stored.float().T if transposed else stored.float())
    torch.testing.assert_close(product, expected, rtol=1e-6, atol=1e-6)


def test_every_widening_reuses_one_buffer_per_thread():
    first = storage.widened(torch.randn(64, 32).bfloat16(), torch.float32)
    second = storage.widened(torch.randn(8, 4).bfloat16(), torch.float32)
    assert second.data_ptr() == first.data_ptr()


@pytest.mark.parametrize("backbone", ["tiny-random-llama", "tiny-random-gpt2"])
def test_bf16_storage_in_fp32_gives_the_outputs_and_gradients_of_its_widened_weights(monkeypatch, backbone):
    """The chunked widening (linears, and GPT-2's transposed Conv1D) against an fp32 backbone
    holding the same values: equal up to fp32 rounding, forward and backward."""
    monkeypatch.setattr(storage, "WIDENING_CHUNK", 100)  # several chunks on every matrix
    narrow, wide = load_backbone(backbone, weights="bf16"), load_backbone(backbone)
    wide.model.load_state_dict({k: v.float() for k, v in narrow.model.state_dict().items()})
    results = []
    for loaded in (narrow, wide):
        x = torch.randn(
            2, 5, loaded.hidden_size, generator=torch.Generator().manual_seed(0), requires_grad=True
        )
        out = loaded.model(inputs_embeds=x).last_hidden_state
        out.pow(2).sum().backward()
        results.append((out.detach(), x.grad))
    (narrow_out, narrow_grad), (wide_out, wide_grad) = results
    assert narrow_out.dtype == torch.float32
    torch.testing.assert_close(narrow_out, wide_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(narrow_grad, wide_grad, rtol=1e-5, atol=1e-5)


def test_the_estimate_is_within_15_percent_of_the_measured_peaks():
    """Every cell `timellm bench memory` measured (results/memory.csv): the current estimate,
    from the cell's config and its measured process base, against the measured peak."""
    import pandas as pd

    from timellm.experiments.memory_bench import estimated_peaks

    path = Path(__file__).resolve().parents[1] / "results" / "memory.csv"
    if not path.is_file():
        pytest.skip("no results/memory.csv: run `timellm bench memory`")
    measured = pd.read_csv(path)
    measured = measured[measured["status"] == "ok"]
    assert len(measured) >= 6
    for row in measured.itertuples():
        estimate = estimated_peaks(row._asdict())
        for phase in ("train", "infer"):
            peak = getattr(row, f"{phase}_peak_gib")
            assert abs(estimate[phase] - peak) <= 0.15 * peak, (
                row.backbone,
                row.weights,
                phase,
                estimate,
                peak,
            )


def test_info_prints_the_estimate_without_loading_anything(monkeypatch, capsys):
    from timellm.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("timellm info loaded a backbone")

    monkeypatch.setattr("timellm.model.modeling.load_backbone", no_load)
    assert main(["info", "--preset", "ETTh1-96", "--backbone", "tiny-random-llama"]) == 0
    out = capsys.readouterr().out
    assert "frozen parameters" in out and "trainable parameters" in out
    assert "training, 24 series a step:" in out and "GiB" in out and "available on" in out


def test_train_refuses_a_run_that_cannot_fit_in_one_line_before_writing_anything(
    tmp_path, monkeypatch, capsys, data_dir
):
    from timellm.cli import main

    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", "1M")
    run = tmp_path / "run"
    code = main(
        ["train", "--preset", "ETTh1-96-cpu", "--set", "backbone=tiny-random-llama", "--set", "llm_layers=2",
         "--data-dir", str(data_dir), "--out", str(run)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "this run needs about" in err and "available" in err
    assert not run.exists()


def test_a_new_memory_table_keeps_the_sections_written_below_it(tmp_path):
    from timellm.experiments.memory_bench import kept_sections

    path = tmp_path / "memory.md"
    path.write_text("# Memory\n\n| a | b |\n|---|---|\n\n## Measured by hand\n\ntext\n")
    assert kept_sections(path) == "\n## Measured by hand\n\ntext\n"
    assert kept_sections(tmp_path / "absent.md") == ""


@pytest.mark.slow
def test_bench_memory_measures_each_cell_in_a_child_and_writes_its_table(tmp_path):
    import pandas as pd

    from timellm.experiments.memory_bench import MemoryBenchSettings, memory_benchmark

    small = dict(
        seq_len=48, pred_len=12, patch_len=8, stride=4, d_model=8, d_ff=16, n_heads=2, num_prototypes=20
    )
    settings = MemoryBenchSettings(
        backbones=("tiny-random-llama",), weights=("fp32", "bf16"), train_steps=1, infer_batches=1,
        precision="fp32", out=str(tmp_path), model_changes=small,
    )  # fmt: skip
    frame = memory_benchmark(settings)
    assert list(frame.status) == ["ok", "ok"], frame.status.tolist()
    assert (frame.train_peak_gib >= frame.after_load_gib).all() and (frame.infer_series_per_s > 0).all()
    written = pd.read_csv(tmp_path / "memory.csv")
    assert set(written.weights) == {"fp32", "bf16"} and written.commit.notna().all()
    assert "| tiny-random-llama | bf16 |" in (tmp_path / "memory.md").read_text()


def test_where_the_free_memory_cannot_be_read_nothing_is_refused(monkeypatch):
    monkeypatch.setattr(memory, "_proc_field", lambda path, field: None)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert memory.available_memory("cpu") is None
    found = check_memory(tiny_config(), ExecutionSettings(), precision="fp32", batch_windows=8, training=True)
    assert found.total > 0
