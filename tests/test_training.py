import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import tiny_config
from timellm import TimeLLM, build_model
from timellm.data import WindowDataset, load_splits
from timellm.evaluation.scoring import predict_windows
from timellm.experiments.presets import get_preset
from timellm.experiments.runs import evaluate_run, load_run, score_splits, train_and_test, train_seeds
from timellm.training.loop import TrainConfig, evenly_spaced, fit, make_adam, make_scheduler


def synthetic(rows=400, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    return (
        np.sin(2 * np.pi * t / 24 + np.arange(channels)) + 0.1 * rng.standard_normal((rows, channels))
    ).astype(np.float32)


def small_model():
    return TimeLLM(tiny_config(dropout=0.0, attention_dropout=0.0))


def test_two_epochs_lower_the_validation_loss():
    data = synthetic()
    train, val = WindowDataset(data[:300], 48, 12), WindowDataset(data[250:], 48, 12, max_windows=40)
    model = small_model()
    config = TrainConfig(
        epochs=2,
        batch_size=16,
        learning_rate=3e-3,
        patience=5,
        schedule="constant",
        seed=1,
        max_train_windows=160,
    )
    from accelerate import Accelerator

    from timellm.training.loop import mean_loss

    before = mean_loss(model, val, config, Accelerator())
    result = fit(model, train, val, config)
    assert result.epochs_run == 2 and len(result.history) == 2
    assert result.best_val_loss < before
    assert result.history[-1]["val_loss"] < before


def test_an_mae_run_reports_validation_mse_and_mae_of_the_adapter_it_keeps():
    from accelerate import Accelerator

    from timellm.training.loop import mean_losses

    data = synthetic()
    train, val = WindowDataset(data[:300], 48, 12), WindowDataset(data[250:], 48, 12, max_windows=30)
    config = TrainConfig(
        epochs=2, batch_size=16, learning_rate=3e-3, schedule="constant", loss="mae", seed=1, precision="fp32"
    )
    model = small_model()
    result = fit(model, train, val, config)
    assert set(result.val_scores) == {"mse", "mae"}
    # the training loss is MAE: the kept epoch's validation loss is its validation MAE
    assert result.val_scores["mae"] == pytest.approx(result.best_val_loss, rel=1e-6)
    kept = result.history[result.best_epoch - 1]  # every epoch's row carries its validation MSE and MAE
    assert {"mse": kept["val_mse"], "mae": kept["val_mae"]} == result.val_scores
    again = mean_losses(model, val, config, Accelerator(), ("mse", "mae"))
    assert again == pytest.approx(result.val_scores, rel=1e-6)
    past, future = next(iter(torch.utils.data.DataLoader(val, batch_size=len(val))))
    with torch.no_grad():
        pred = model.eval()(past)
    assert again["mae"] == pytest.approx(float((pred - future).abs().mean()), rel=1e-4)
    assert again["mse"] == pytest.approx(float((pred - future).square().mean()), rel=1e-4)
    with pytest.raises(ValueError, match="loss must be mse, mae or smape"):
        TrainConfig(loss="huber")


def test_a_kept_epoch_recorded_without_its_scores_is_scored_again(monkeypatch):
    # the history rows of a checkpoint written before they carried val_mse and val_mae
    from accelerate import Accelerator

    import timellm.training.loop as training

    monkeypatch.setattr(training, "_score_columns", lambda scores: {})
    data = synthetic()
    train, val = WindowDataset(data[:300], 48, 12), WindowDataset(data[250:], 48, 12, max_windows=20)
    config = TrainConfig(epochs=1, batch_size=16, max_train_windows=32, seed=1, precision="fp32")
    model = small_model()
    result = fit(model, train, val, config)
    assert "val_mse" not in result.history[-1]
    again = training.mean_losses(model, val, config, Accelerator(), ("mse", "mae"))
    assert result.val_scores == pytest.approx(again, rel=1e-6)


def test_early_stopping_restores_the_best_adapter(monkeypatch):
    import timellm.training.loop as training

    data = synthetic()
    train, val = WindowDataset(data[:300], 48, 12), WindowDataset(data[250:], 48, 12, max_windows=20)
    model = small_model()
    scripted = iter([1.0, 0.5, 0.7, 0.9, 0.2])  # best at epoch 2, then two worse epochs: stop
    states = []

    def scripted_losses(m, dataset, config, accelerator, names, desc="validate"):
        states.append({k: v.clone() for k, v in m.adapter_state_dict().items()})
        loss = next(scripted)
        return {name: loss for name in names}

    monkeypatch.setattr(training, "mean_losses", scripted_losses)
    config = TrainConfig(epochs=5, batch_size=16, learning_rate=1e-2, patience=2, max_train_windows=32)
    result = fit(model, train, val, config)
    assert result.epochs_run == 4 and result.best_epoch == 2 and result.best_val_loss == 0.5
    # the kept epoch's scores come from the pass that chose it: no pass after the last epoch
    assert len(states) == 4 and result.val_scores == {"mse": 0.5, "mae": 0.5}
    assert any(not torch.equal(states[1][k], states[3][k]) for k in states[1])  # training went on
    for key, value in model.adapter_state_dict().items():
        assert torch.equal(value, states[1][key]), key


def test_the_epoch_cap_draws_a_fresh_subset():
    data = synthetic(rows=600)
    train = WindowDataset(data, 48, 12)
    model = small_model()
    config = TrainConfig(epochs=1, batch_size=10, max_train_windows=30, schedule="constant")
    result = fit(model, train, WindowDataset(data[:100], 48, 12), config)
    assert result.steps == 3


@pytest.mark.parametrize("schedule", ["constant", "halving", "cosine", "onecycle"])
def test_schedules(schedule):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=0.1)
    config = TrainConfig(epochs=4, learning_rate=0.1, schedule=schedule)
    scheduler, every = make_scheduler(optimizer, config, steps_per_epoch=5)
    rates = []
    for _ in range(4):
        for _ in range(5):
            optimizer.step()
            if every == "step":
                scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
        if every == "epoch":
            scheduler.step()
    if schedule == "constant":
        assert rates == [0.1] * 4
    elif schedule == "halving":
        assert rates == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    else:
        assert rates[-1] < rates[0] or schedule == "onecycle"


def test_the_test_split_is_evaluated_whole():
    splits = load_splits("ETTh1", 48, 12)
    model = build_model(tiny_config(llm="none"))  # the window bookkeeping does not depend on the LLM
    _, pred, _ = predict_windows(model, splits.test, 48, 12, batch_size=1000)  # one partial batch
    assert pred.shape[0] == len(splits.test) - 48 - 12 + 1 == 2880 - 12 + 1
    metrics, _ = score_splits(model, splits, batch_size=64)
    assert metrics["test_windows"] == metrics["test_windows_total"] == 2869
    assert set(metrics["baselines"]) == {"last_value", "seasonal_naive"}


TINY_RUN = {
    "backbone": "tiny-random-llama",
    "llm_layers": None,
    "seq_len": 48,
    "pred_len": 12,
    "patch_len": 8,
    "stride": 4,
    "d_model": 8,
    "d_ff": 16,
    "n_heads": 2,
    "num_prototypes": 10,
    "epochs": 1,
    "max_train_windows": 64,
    "max_val_windows": 32,
    "max_test_windows": 50,
}


def test_a_run_writes_its_folder_and_reevaluates(tmp_path):
    preset = get_preset("ETTh1-96").with_overrides({**TINY_RUN, "attention": "eager"})
    metrics = train_and_test(preset, tmp_path / "run", command="test")
    for name in (
        "config.yaml",
        "metrics.json",
        "history.csv",
        "train.log",
        "forecast.png",
        "adapter/adapter.safetensors",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    assert metrics["test_windows"] == 50 and metrics["test_windows_total"] == 2869
    again = evaluate_run(tmp_path / "run", full=False)
    assert again["mse"] == pytest.approx(metrics["mse"], rel=1e-5)
    assert set(metrics["baselines"]["seasonal_naive"]) == {"mse", "mae"}
    assert "commit" in json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the run folder says what precision auto resolved to, and re-testing uses it
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert record["train"]["precision"] == "auto" and record["precision"] in ("fp32", "bf16")
    assert metrics["precision"] == again["precision"] == record["precision"]
    assert record["execution"] == {
        "gradient_checkpointing": False,
        "attention": "eager",
        "compile": "none",
        "compile_scope": "modules",
        "weights": "auto",
        "llm_batch": None,
    }
    # a record of an earlier version, with the execution settings among the training settings
    legacy = {k: v for k, v in record.items() if k != "execution"}
    legacy["train"] = {**record["train"], "attention": "sdpa", "gradient_checkpointing": False}
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(legacy))
    read, _ = load_run(tmp_path / "run")
    assert read["train"] == record["train"] and read["execution"]["attention"] == "sdpa"
    # a key this version does not know is an error, not dropped
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({**record, "calibration": "conformal"}))
    with pytest.raises(ValueError, match=r"config.yaml has unknown key\(s\) calibration"):
        load_run(tmp_path / "run")
    bad_train = {**record, "train": {**record["train"], "warmup": 3}}
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(bad_train))
    with pytest.raises(ValueError, match=r"unknown training setting\(s\): warmup"):
        evaluate_run(tmp_path / "run")


def test_fit_hands_back_the_model_in_its_own_precision():
    data = synthetic(rows=400)
    model = small_model()
    config = TrainConfig(epochs=1, batch_size=8, max_train_windows=16, precision="bf16")
    result = fit(model, WindowDataset(data, 48, 12), WindowDataset(data[:100], 48, 12), config)
    assert result.precision == "bf16"
    twin = small_model()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 48, data.shape[1])
    with torch.no_grad():  # no autocast wrapper left behind by accelerate: fp32, as when loaded
        torch.testing.assert_close(model.eval()(x), twin.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_a_monitor_scores_each_epoch_in_the_runs_precision_without_gradients(precision):
    data = synthetic(rows=400)
    seen = []

    def monitor(model):
        seen.append((torch.is_autocast_enabled("cpu"), torch.is_grad_enabled(), model.training))
        return {"probe": 1.0}

    config = TrainConfig(epochs=2, batch_size=8, max_train_windows=16, precision=precision)
    result = fit(
        small_model(), WindowDataset(data, 48, 12), WindowDataset(data[:100], 48, 12), config, monitor=monitor
    )
    assert seen == [(precision == "bf16", False, False)] * 2  # as validation: autocast, eval mode
    assert [row["probe"] for row in result.history if row["epoch"] > 0] == [1.0, 1.0]


def test_several_seeds_give_a_mean_and_a_spread(tmp_path):
    preset = get_preset("ETTh1-96").with_overrides({**TINY_RUN, "max_test_windows": 20})
    table = train_seeds(preset, tmp_path / "runs", [1, 2], command="test")
    per_seed = table[table["seed"].isin(["1", "2"])]
    assert list(table["seed"]) == ["1", "2", "mean", "std"]
    assert per_seed["mse"].nunique() == 2  # the seed changes the run
    mean, std = table.set_index("seed").loc["mean"], table.set_index("seed").loc["std"]
    assert mean.mse == pytest.approx(per_seed["mse"].mean()) and std.mse == pytest.approx(
        per_seed["mse"].std(ddof=1)
    )
    for seed in (1, 2):
        record = yaml.safe_load((tmp_path / "runs" / f"seed-{seed}" / "config.yaml").read_text())
        assert record["train"]["seed"] == seed
    assert (tmp_path / "runs" / "seeds.csv").is_file()
    # the same command again (say, after an interruption) keeps the seeds that have finished
    finished = (tmp_path / "runs" / "seed-1" / "metrics.json").stat().st_mtime_ns
    again = train_seeds(preset, tmp_path / "runs", [1, 2, 3], command="test")
    assert (tmp_path / "runs" / "seed-1" / "metrics.json").stat().st_mtime_ns == finished
    assert again.set_index("seed").loc["1", "mse"] == per_seed.set_index("seed").loc["1", "mse"]
    assert (tmp_path / "runs" / "seed-3" / "metrics.json").is_file()
    # other settings in the same folder train again
    train_seeds(preset.with_overrides({"epochs": 2}), tmp_path / "runs", [1], command="test")
    assert (tmp_path / "runs" / "seed-1" / "metrics.json").stat().st_mtime_ns != finished


def test_fused_adam_takes_the_steps_of_the_per_tensor_loop():
    torch.manual_seed(0)
    frozen = torch.nn.Parameter(torch.randn(3), requires_grad=False)
    weights = [torch.nn.Parameter(torch.randn(50, 40)), torch.nn.Parameter(torch.randn(40))]
    twins = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    fused, loop = make_adam([*weights, frozen], 1e-2), torch.optim.Adam(twins, lr=1e-2)
    assert fused.defaults["fused"] and len(fused.param_groups[0]["params"]) == 2  # the frozen one is left out
    for _ in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for w, t, g in zip(weights, twins, grads, strict=True):
            w.grad, t.grad = g.clone(), g.clone()
        fused.step()
        loop.step()
    for w, t in zip(weights, twins, strict=True):
        torch.testing.assert_close(w, t, rtol=1e-6, atol=1e-6)


def test_execution_settings_are_the_models_and_fit_leaves_them():
    from timellm.experiments.presets import PresetError, execution_dict
    from timellm.model.config import ExecutionSettings

    data = synthetic(rows=400)
    model = small_model()
    model.execution = ExecutionSettings(gradient_checkpointing=True, attention="sdpa")
    config = TrainConfig(epochs=1, batch_size=8, max_train_windows=16)
    result = fit(model, WindowDataset(data, 48, 12), WindowDataset(data[:100], 48, 12), config)
    assert np.isfinite(result.history[-1]["train_loss"])
    assert model.execution.gradient_checkpointing and model.execution.attention == "sdpa"
    # a preset (and --set) reaches them in their own section; a bare key is found there too
    preset = get_preset("ETTh1-96").with_overrides(
        {"gradient_checkpointing": True, "execution.attention": "sdpa"}
    )
    assert execution_dict(preset.execution) == {
        "gradient_checkpointing": True,
        "attention": "sdpa",
        "compile": "none",
        "compile_scope": "modules",
        "weights": "auto",
        "llm_batch": None,
    }
    assert preset.train == get_preset("ETTh1-96").train
    with pytest.raises(PresetError, match="attention must be"):
        get_preset("ETTh1-96").with_overrides({"attention": "flash"})
    with pytest.raises(PresetError, match="gradient_checkpointing must be"):
        get_preset("ETTh1-96").with_overrides({"gradient_checkpointing": "yes"})
    with pytest.raises(PresetError, match="unknown setting 'train.attention'"):
        get_preset("ETTh1-96").with_overrides({"train.attention": "sdpa"})


def test_a_non_finite_validation_loss_stops_training_like_a_non_finite_training_loss():
    from timellm.training.loop import NonFiniteLossError

    data = synthetic()
    broken = data[250:].copy()
    broken[-1] = np.inf  # an overflowing validation window: its loss is inf
    train, val = WindowDataset(data[:300], 48, 12), WindowDataset(broken, 48, 12)
    config = TrainConfig(epochs=2, batch_size=16, schedule="constant", seed=1, max_train_windows=32)
    with pytest.raises(NonFiniteLossError, match="non-finite validation loss .* after epoch 1"):
        fit(small_model(), train, val, config)  # never "restored the adapter of epoch 0"


def test_window_batches_are_the_loaders_batches_in_the_same_order():
    """The in-memory batches of the training loop: what a DataLoader would collate, item by item."""
    from torch.utils.data import DataLoader, Subset

    from timellm.data.windows import WindowDataset
    from timellm.training.loop import EpochSampler, WindowBatches

    array = np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32)
    for independent in (True, False):
        data = WindowDataset(array, 40, 10, independent)
        order = EpochSampler(len(data), 50, seed=7)
        expected = list(DataLoader(data, batch_size=8, sampler=order))
        batches = WindowBatches.of(data, 8, order)
        got = list(batches)
        assert len(got) == len(expected) == len(batches)
        for (past, future), (want_past, want_future) in zip(got, expected, strict=True):
            assert torch.equal(past, want_past) and torch.equal(future, want_future)
        assert torch.equal(list(batches.skip_first(2))[0][0], expected[2][0])  # resuming mid-epoch
        subset = Subset(data, [3, 9, 27])
        for (past, _), (want, _) in zip(
            WindowBatches.of(subset, 2), DataLoader(subset, batch_size=2), strict=True
        ):
            assert torch.equal(past, want)


def test_validate_start_keeps_the_untrained_adapter_where_training_only_hurts():
    """A zero head over seasonal naive is seasonal naive, exact on a periodic series: no epoch
    validates better, so the untrained adapter (epoch 0) is the one kept."""
    t = np.arange(400, dtype=np.float32)[:, None]
    periodic = np.sin(2 * np.pi * t / 24) + 0.5 * np.cos(2 * np.pi * t / 8)  # period 24
    noisy = periodic + 0.3 * np.random.default_rng(0).standard_normal(periodic.shape).astype(np.float32)
    train, val = WindowDataset(noisy[:300], 48, 12), WindowDataset(periodic[250:], 48, 12, max_windows=20)
    model = build_model(tiny_config(llm="none", normalization="seasonal", period=24, zero_head=True))
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-2, schedule="constant", seed=1)
    result = fit(model, train, val, config, validate_start=True)
    assert result.best_epoch == 0 and result.history[0]["epoch"] == 0 and result.history[0]["steps"] == 0
    assert result.best_val_loss < 1e-8 < min(h["val_loss"] for h in result.history[1:])
    assert all(float(p.detach().abs().max()) == 0 for p in model.head.parameters())  # the zero head, restored
    without = fit(
        build_model(tiny_config(llm="none", normalization="seasonal", period=24, zero_head=True)),
        train,
        val,
        config,
    )
    assert without.best_epoch >= 1 and without.history[0]["epoch"] == 1


@pytest.mark.parametrize("naive_loss", [0.0, float("inf")], ids=["adapter-loses", "adapter-wins"])
def test_choose_normalization_weighs_a_correction_to_seasonal_naive_on_validation(
    tmp_path, monkeypatch, naive_loss
):
    """Where the adapter validates worse than seasonal naive, a correction trains too and the
    better of the two on validation is kept, saved and tested; where it validates better, nothing
    else trains."""
    import timellm.training.loop as loop

    scored = []
    monkeypatch.setattr(
        loop, "seasonal_naive_loss", lambda windows, *args: scored.append(windows) or naive_loss
    )
    preset = get_preset("ETTh1-96").with_overrides({**TINY_RUN, "choose_normalization": True})
    metrics = train_and_test(preset, tmp_path / "run", command="test")
    # seasonal naive is scored on the validation windows fit scores the adapter on (max_val_windows)
    val = WindowDataset(load_splits("ETTh1", 48, 12).val, 48, 12)
    assert len(scored) == 1 and len(scored[0]) == len(evenly_spaced(val, 32)) < len(val)
    choice = metrics["normalization_choice"]
    assert choice["seasonal_naive"] == naive_loss and choice["revin"] > 0
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    if naive_loss == 0.0:
        assert choice["correction"] is not None
        assert (history.get("candidate") == "correction").sum() == 2  # epoch 0 (untrained) and 1
        better = "correction" if choice["correction"] < choice["revin"] else "revin"
    else:
        assert choice["correction"] is None and "candidate" not in history
        better = "revin"
    assert choice["kept"] == better
    assert metrics["normalization"] == ("seasonal" if better == "correction" else "revin")
    assert metrics["best_val_loss"] == choice[better]
    _, model = load_run(tmp_path / "run")  # the adapter saved is the one kept, and tests the same
    assert model.config.normalization == metrics["normalization"]
    assert evaluate_run(tmp_path / "run", full=False)["mse"] == pytest.approx(metrics["mse"], rel=1e-5)


def test_choose_normalization_needs_a_revin_adapter(tmp_path):
    preset = get_preset("ETTh1-96").with_overrides(
        {**TINY_RUN, "choose_normalization": True, "normalization": "last"}
    )
    with pytest.raises(ValueError, match="needs normalization=revin and zero_head=false .found last"):
        train_and_test(preset, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="choose_normalization must be true or false, found 'yes'"):
        train_and_test(preset.with_overrides({"choose_normalization": "yes"}), tmp_path / "run")
