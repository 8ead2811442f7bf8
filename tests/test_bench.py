"""The benchmark's pieces: data windows, the FLOP formula, one measured configuration, the table."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import tiny_config
from timellm import TimeLLM
from timellm.experiments.flops import fast_path_flops, plain_path_flops
from timellm.experiments.measure import TRAIN_ROWS, RunSpec, etth1_windows, run_one
from timellm.model.config import ExecutionSettings
from timellm.model.layers import revin_normalize


@pytest.fixture
def etth1_like(tmp_path):
    rows = TRAIN_ROWS + 200
    values = np.sin(np.arange(rows) / 24.0) * 3 + 10
    path = tmp_path / "ETTh1.csv.gz"
    pd.DataFrame({"date": np.arange(rows), "HUFL": values * 2, "OT": values}).to_csv(path, index=False)
    return path


def test_windows_are_stride_one_and_standardised_on_the_training_rows(etth1_like):
    past, future = etth1_windows(etth1_like, seq_len=32, pred_len=8)
    assert past.shape == (TRAIN_ROWS + 200 - 40 + 1, 32) and future.shape == (past.shape[0], 8)
    torch.testing.assert_close(past[1, :-1], past[0, 1:])
    torch.testing.assert_close(future[0, 0], past[1, -1])
    frame = pd.read_csv(etth1_like)
    train = frame["OT"].to_numpy(np.float32)[:TRAIN_ROWS]
    assert past[0, 0].item() == pytest.approx((train[0] - train.mean()) / train.std(), abs=1e-5)
    with pytest.raises(ValueError, match="no column 'XX'"):
        etth1_windows(etth1_like, 32, 8, channel="XX")


def counted_flops(model: TimeLLM, x: torch.Tensor, train: bool) -> int:
    """FLOPs torch's counter sees in one training step (forward + backward) or inference forward."""
    with FlopCounterMode(display=False) as counter:
        if train:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("backbone", ["tiny-random-llama", "tiny-random-gpt2"])
@pytest.mark.parametrize("train", [True, False])
def test_the_flop_formula_counts_what_the_fast_path_multiplies(backbone, train):
    # torch's counter does not see the CPU flash-attention kernel: compare without QK^T and AV
    model = TimeLLM(
        tiny_config(backbone, dropout=0.0, attention_dropout=0.0, patch_embedding="linear"),
        execution=ExecutionSettings(attention="sdpa"),
    )
    x = torch.randn(4, 48, 1)
    model.train(train)
    with torch.no_grad():
        model(x)  # the prefix cache and E' (at inference) are built once, not per step
    counted = counted_flops(model, x, train)
    _, mask = model.statistics_token_ids(revin_normalize(x[..., 0])[0])
    formula = fast_path_flops(model, 4, len(model.prefix_ids), mask.shape[1], train, attention=False)
    assert formula == pytest.approx(counted, rel=2e-3)  # the patch embedding is left out


@pytest.mark.parametrize("backbone", ["tiny-random-llama", "tiny-random-gpt2"])
@pytest.mark.parametrize("train", [True, False])
def test_the_flop_formula_counts_what_the_plain_path_multiplies(backbone, train):
    config = tiny_config(
        backbone, dropout=0.0, attention_dropout=0.0, patch_embedding="linear", fast_path=False
    )
    model = TimeLLM(config)
    x = torch.randn(4, 48, 1)
    model.train(train)
    counted = counted_flops(model, x, train)
    _, mask = model.prompt_token_ids(revin_normalize(x[..., 0])[0])
    formula = plain_path_flops(model, 4, mask.shape[1], train, attention=False)
    assert formula == pytest.approx(counted, rel=2e-3)
    # the plain path computes more than the fast path for the same series
    stats_len = TimeLLM(tiny_config(backbone)).statistics_token_ids(revin_normalize(x[..., 0])[0])[1].shape[1]
    assert formula > fast_path_flops(model, 4, len(model.prefix_ids), stats_len, train, attention=False)


def tiny_spec(data, **changes) -> RunSpec:
    """A benchmark configuration on the tiny llama: 2 layers, 4 series of 48 steps, a small adapter."""
    fields = dict(
        backbone="tiny-random-llama",
        layers=2,
        batch=4,
        seq_len=48,
        pred_len=12,
        dtype="fp32",
        path="fast",
        mode="train",
        warmup=1,
        steps=1,
        threads=1,
        data=str(data),
        model_changes={"d_ff": 16, "d_model": 8, "num_prototypes": 20},
    )
    return RunSpec(**{**fields, **changes})


@pytest.mark.parametrize(
    ("path", "attention", "fused_adam"), [("plain", "eager", False), ("fast", "sdpa", True)]
)
def test_one_configuration_is_measured(etth1_like, path, attention, fused_adam):
    spec = tiny_spec(etth1_like, path=path, mode="train", steps=2, attention=attention, fused_adam=fused_adam)
    row = run_one(spec)
    assert row["uses_fast_path"] == (path == "fast")
    assert row["series_per_s"] > 0 and row["series_per_cpu_s"] > 0 and row["cpu_util"] > 0
    assert row["peak_rss_mb"] >= row["rss_after_load_mb"] > 0
    assert row["malloc"] in ("default", "tuned", "custom")
    assert row["attn_implementation"] == attention and row["fused_adam"] == fused_adam
    assert row["flops"] > 0 and row["flop_per_s"] > 0


def test_the_ladders_released_reprogramming_computes_what_ours_does(etth1_like):
    from timellm.experiments.measure import _build_model

    spec = tiny_spec(etth1_like, path="plain", mode="infer", steps=1)
    x = torch.randn(3, 48, 2)
    torch.manual_seed(0)
    ours = _build_model(spec).eval()
    torch.manual_seed(0)
    released = _build_model(replace(spec, reprogramming="released")).eval()
    assert "forward" in vars(released.reprogramming) and "forward" not in vars(ours.reprogramming)
    with torch.no_grad():
        torch.testing.assert_close(released(x), ours(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reprogramming must be"):
        _build_model(replace(spec, reprogramming="fused"))


def test_the_benchmark_runs_each_configuration_in_a_child_and_sweeps_inference_batches(etth1_like, tmp_path):
    from timellm.experiments.speed import SpeedSettings, report, speed_benchmark

    settings = SpeedSettings(
        backbone="tiny-random-llama",
        layers=2,
        batch=4,
        steps=1,
        infer_steps=2,
        warmup=1,
        dtypes=["fp32"],
        paths=["plain", "fast"],
        modes=["infer"],
        mallocs=["tuned"],
        threads=1,
        data=etth1_like,
        seq_len=48,
        pred_len=12,
        breakdown=False,
        ladder=False,
        infer_batches=[2, 8],
        profile=True,
        model_changes={"d_ff": 16, "d_model": 8, "num_prototypes": 20},
        out=tmp_path / "speed.csv",
    )
    frame = speed_benchmark(settings)
    assert list(frame["path"]) == ["plain", "fast"] and (frame["series_per_s"] > 0).all()
    assert frame.loc[frame.path == "fast", "attn_implementation"].item() == "timellm_grouped"
    sizes = pd.read_csv(tmp_path / "speed_batches.csv")
    assert list(sizes["batch"]) == [2, 8] and (sizes["path"] == "fast").all()
    assert (sizes["first_step_s"] > 0).all()
    ops = pd.read_csv(tmp_path / "speed_profile.csv")
    kinds = ops[ops["op"] == "(all)"]
    assert set(kinds["mode"]) == {"infer"} and abs(kinds["pct"].sum() - 100) < 1e-6
    assert "matmul" in set(kinds["kind"]) and (ops["ms_per_step"] > 0).all()
    text = report(frame)
    assert "fast-path inference by batch size" in text and "matmul peak" in text
    assert "by kind of operator" in text
