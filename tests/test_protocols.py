"""The paper's other protocols: M4 runs, few-shot, zero-shot transfer and the reproduction report."""

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import tiny_config
from timellm.cli import main
from timellm.data.benchmarks import load_splits
from timellm.data.m4 import load_m4
from timellm.data.windows import WindowDataset
from timellm.evaluation.m4 import weighted_m4
from timellm.evaluation.metrics import mase_per_series, smape_per_series
from timellm.evaluation.scoring import naive_references
from timellm.experiments.presets import PresetError, get_m4_preset, m4_presets
from timellm.experiments.protocols import _m4_model, transfer_preset
from timellm.experiments.report import ZERO_SHOT_CURVES, write_report
from timellm.experiments.report_markdown import render_markdown
from timellm.experiments.report_runs import classify, collect_runs
from timellm.experiments.report_tables import PAPER_M4_AVERAGE, build_tables
from timellm.model.config import ExecutionSettings

TINY = [
    "--backbone",
    "tiny-random-llama",
    "--set",
    "llm_layers=1",
    "--set",
    "d_model=8",
    "--set",
    "d_ff=16",
    "--set",
    "n_heads=2",
    "--set",
    "num_prototypes=10",
    "--set",
    "epochs=1",
    "--set",
    "description=Test.",
]


def _write_m4_file(path: Path, rows: dict[str, np.ndarray]) -> None:
    """The competition's layout: quoted V1.. header, the id, values, empty cells after short rows."""
    width = max(len(v) for v in rows.values())
    lines = [",".join(f'"V{i + 1}"' for i in range(width + 1))]
    for series_id, values in rows.items():
        cells = [f'"{v:.3f}"' for v in values] + [""] * (width - len(values))
        lines.append(",".join([f'"{series_id}"', *cells]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


@pytest.fixture
def weekly_m4(tmp_path: Path) -> Path:
    """A data folder with four ragged Weekly series (horizon 13), their test rows and Naive2."""
    rng = np.random.default_rng(0)
    train, test = {}, {}
    for k, length in enumerate((60, 75, 52, 90)):
        t = np.arange(length + 13)
        series = 100 + 10 * np.sin(2 * np.pi * t / 7) + 0.2 * t + rng.normal(0, 1, len(t))
        train[f"W{k + 1}"], test[f"W{k + 1}"] = series[:length], series[length:]
    _write_m4_file(tmp_path / "m4" / "Weekly-train.csv.gz", train)
    _write_m4_file(tmp_path / "m4" / "Weekly-test.csv.gz", test)
    naive2 = ["id," + ",".join(f"F{i}" for i in range(1, 49))]
    for series_id, history in train.items():
        values = [f"{history[-1]:.3f}"] * 13 + ["NA"] * 35
        naive2.append(f"{series_id}," + ",".join(values))
    with gzip.open(tmp_path / "m4" / "submission-Naive2.csv.gz", "wt") as handle:
        handle.write("\n".join(naive2) + "\n")
    return tmp_path


# ------------------------------------------------------------------------------------------------
# M4


def test_m4_presets_follow_the_short_term_setting(capsys):
    presets = m4_presets()
    for name, (seq_len, horizon) in {
        "m4-Hourly": (96, 48),
        "m4-Weekly": (26, 13),
        "m4-Yearly": (12, 6),
    }.items():
        for preset in (presets[name], presets[f"{name}-cpu"]):
            m, t = preset.model, preset.train
            # the cpu variant's Weekly looks back 4 x horizon (chosen on validation, m4.yaml)
            expected = 4 * horizon if preset.name == "m4-Weekly-cpu" else seq_len
            assert (m.seq_len, m.pred_len, m.patch_len, m.stride) == (expected, horizon, 1, 1)
            assert (m.d_model, m.d_ff, m.num_prototypes, t.loss) == (8, 32, 100, "smape")
    assert presets["m4-Weekly-cpu"].model.normalization == "last"
    assert presets["m4-Weekly"].model.normalization == presets["m4-Hourly"].model.normalization == "revin"
    hourly = presets["m4-Hourly-cpu"].model
    assert (hourly.normalization, hourly.period, hourly.zero_head) == ("seasonal", 24, True)
    assert presets["m4-Hourly"].model.llm_layers is None and presets["m4-Hourly-cpu"].model.llm_layers == 2
    assert get_m4_preset("h", "paper") == presets["m4-Hourly"]
    with pytest.raises(PresetError, match="unknown M4 preset 'm4-Hourly-gpu'"):
        get_m4_preset("Hourly", "gpu")
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "m4-Hourly-cpu" in out and "ETTh1-96-cpu" in out


@pytest.mark.slow
def test_m4_run_end_to_end_on_a_tiny_folder(weekly_m4, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["m4", "--frequency", "W", "--data-dir", str(weekly_m4), "--out", str(out), *TINY]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Weekly" in printed and "SMAPE" in printed

    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["protocol"] == "m4" and record["frequency"] == "Weekly"
    assert record["preset"] == "m4-Weekly-cpu" and record["train"]["loss"] == "smape"
    assert (out / "adapter" / "adapter.safetensors").is_file() and (out / "forecast.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())

    # the forecast file is the M4 submission layout, and the scores are those of its numbers
    forecast = pd.read_csv(out / "forecast.csv", index_col="id")
    data = load_m4("Weekly", weekly_m4)
    assert list(forecast.index) == data.ids and forecast.shape == (4, 13)
    pred = forecast.to_numpy()
    assert metrics["smape"] == pytest.approx(smape_per_series(pred, data.test).mean(), rel=1e-5)
    assert metrics["mase"] == pytest.approx(mase_per_series(pred, data.test, data.train, 1).mean(), rel=1e-5)
    naive2 = np.stack([np.full(13, round(s[-1], 3)) for s in data.train])
    assert metrics["naive2_smape"] == pytest.approx(smape_per_series(naive2, data.test).mean(), rel=1e-5)
    expected_owa = 0.5 * (
        metrics["smape"] / metrics["naive2_smape"] + metrics["mase"] / metrics["naive2_mase"]
    )
    assert metrics["owa"] == pytest.approx(expected_owa)
    # training windows exclude each series' last horizon (the validation target): 4 series x cut points
    assert metrics["train_windows"] == sum(len(s) - 13 - 13 for s in data.train)
    assert metrics["series"] == 4 and metrics["command"].startswith("timellm m4 --frequency W")
    assert main(["evaluate", str(out)]) == 2
    assert "is an M4 run" in capsys.readouterr().err
    assert metrics["variant"] == "time-llm" and metrics["commit"] is not None


def test_m4_reference_and_llm_free_rows_in_the_same_pipeline(weekly_m4, tmp_path, capsys):
    common = ["m4", "--frequency", "W", "--data-dir", str(weekly_m4), *TINY]
    assert main([*common, "--out", str(tmp_path / "runs" / "dlinear"), "--reference", "dlinear"]) == 0
    assert main([*common, "--out", str(tmp_path / "runs" / "no-llm"), "--set", "llm=none"]) == 0
    dlinear = json.loads((tmp_path / "runs" / "dlinear" / "metrics.json").read_text())
    no_llm = json.loads((tmp_path / "runs" / "no-llm" / "metrics.json").read_text())
    assert dlinear["variant"] == "dlinear" and no_llm["variant"] == "llm=none"
    assert dlinear["series"] == no_llm["series"] == 4 and np.isfinite(dlinear["owa"])
    assert not (tmp_path / "runs" / "dlinear" / "adapter").exists()  # no Time-LLM adapter to save
    tables = build_tables(collect_runs(tmp_path / "runs"), tmp_path / "runs")
    assert set(tables["m4"]["variant"]) == {"dlinear", "llm=none"}


def test_m4_runs_that_differ_only_in_their_seed_are_one_row(weekly_m4, tmp_path):
    common = ["m4", "--frequency", "W", "--data-dir", str(weekly_m4), *TINY, "--reference", "dlinear"]
    owa = []
    for seed in (7, 8):
        assert main([*common, "--out", str(tmp_path / "runs" / f"s{seed}"), "--set", f"seed={seed}"]) == 0
        owa.append(json.loads((tmp_path / "runs" / f"s{seed}" / "metrics.json").read_text())["owa"])
    table = build_tables(collect_runs(tmp_path / "runs"), tmp_path / "runs")["m4"]
    weekly = table[table["frequency"] == "Weekly"]
    assert len(weekly) == 1 and owa[0] != owa[1]
    row = weekly.iloc[0]
    assert row.seeds == "7,8" and row.owa == pytest.approx(np.mean(owa))
    assert row.owa_std == pytest.approx(np.std(owa, ddof=1))
    average = table[table["run"] == "(weighted average)"].iloc[0]
    assert average.smape == pytest.approx(row.smape)


def test_an_m4_preset_tuned_for_one_frequency_still_averages_with_the_others(tmp_path):
    root = tmp_path / "runs"
    for frequency, series, epochs, smape in (("Hourly", 414, 15, 17.0), ("Weekly", 359, 30, 8.0)):
        record = {
            "protocol": "m4",
            "preset": f"m4-{frequency}-cpu",
            "frequency": frequency,
            "dataset": "m4",
            "model": {"llm_layers": 2, "backbone": "smollm2-135m"},
            "train": {"epochs": epochs, "max_train_windows": 960, "seed": 2021},
        }
        metrics = {
            "protocol": "m4",
            "frequency": frequency,
            "series": series,
            "smape": smape,
            "mase": 2.0,
            "owa": 0.9,
            "naive2_smape": 18.0,
            "naive2_mase": 2.4,
            "variant": "time-llm",
            "backbone": "smollm2-135m",
            "llm_layers": 2,
        }
        _fake_run(root / frequency, record, metrics)
    table = build_tables(collect_runs(root), root)["m4"]
    average = table[table["frequency"].str.startswith("Average")]
    assert len(average) == 1 and average.iloc[0].series == 773
    others = table[table["frequency"].str.startswith("Others")]  # the paper's pooled W + D + H row
    assert len(others) == 1 and others.iloc[0].smape == average.iloc[0].smape
    assert average.iloc[0].smape == pytest.approx((414 * 17.0 + 359 * 8.0) / 773)
    assert average.iloc[0].budget == (
        "2 layers, <= 15 epochs, <= 960 windows/epoch; Weekly: 2 layers, <= 30 epochs, <= 960 windows/epoch"
    )


def test_an_m4_variant_can_tune_one_frequency(monkeypatch):
    from timellm.experiments import presets

    data = {
        "defaults": {"model": {"backbone": "tiny-random-llama"}, "train": {"learning_rate": 0.01}},
        "variants": {
            "cpu": {
                "train": {"epochs": 3},
                "by_frequency": {"Weekly": {"model": {"seq_len": 52, "normalization": "last"}}},
            }
        },
        "frequencies": ["Weekly", "Hourly"],
    }
    monkeypatch.setattr(presets, "_m4_file", lambda: data)
    found = m4_presets()
    weekly, hourly = found["m4-Weekly-cpu"], found["m4-Hourly-cpu"]
    assert (weekly.model.seq_len, weekly.model.normalization, weekly.train.epochs) == (52, "last", 3)
    assert (hourly.model.seq_len, hourly.model.normalization, hourly.train.epochs) == (96, "revin", 3)
    assert found["m4-Weekly"].model.seq_len == 26  # the paper's preset keeps 2 x horizon
    data["variants"]["cpu"]["by_frequency"] = {"weekly": {"model": {"seq_len": 52}}}
    with pytest.raises(
        PresetError, match="tunes unknown frequencies weekly; expected some of Weekly, Hourly"
    ):
        m4_presets()


def test_m4_dlinear_reference_takes_the_models_normalisation(weekly_m4, tmp_path):
    config = tiny_config(seq_len=26, pred_len=13, patch_len=1, stride=1)
    for kind in ("revin", "last"):
        model = _m4_model(config.replace(normalization=kind), "dlinear", ExecutionSettings(), seed=0)
        assert model.normalization == kind
    seasonal = config.replace(normalization="seasonal", period=4, zero_head=True)
    model = _m4_model(seasonal, "dlinear", ExecutionSettings(), seed=0)
    assert (model.normalization, model.period) == ("seasonal", 4) and not model.trend.weight.any()
    common = ["m4", "--frequency", "W", "--data-dir", str(weekly_m4), *TINY, "--reference", "dlinear"]
    assert main([*common, "--out", str(tmp_path / "last"), "--set", "normalization=last"]) == 0
    record = (tmp_path / "last" / "config.yaml").read_text()
    assert "normalization: last" in record


def test_m4_refit_trains_again_on_the_whole_series_for_the_chosen_epochs(weekly_m4, tmp_path):
    common = ["m4", "--frequency", "W", "--data-dir", str(weekly_m4), *TINY, "--reference", "dlinear"]
    common += ["--set", "epochs=3", "--set", "patience=3"]
    assert main([*common, "--out", str(tmp_path / "once")]) == 0
    assert main([*common, "--out", str(tmp_path / "refit"), "--set", "refit=true"]) == 0
    once = json.loads((tmp_path / "once" / "metrics.json").read_text())
    refit = json.loads((tmp_path / "refit" / "metrics.json").read_text())
    assert not once["refit"] and refit["refit"]
    # the selection run is the same; the refit adds the chosen number of epochs over more windows
    assert refit["best_epoch"] == once["best_epoch"] and refit["best_val_loss"] == once["best_val_loss"]
    history = pd.read_csv(tmp_path / "refit" / "history.csv")
    again = history[history["refit"].eq(True)]
    assert len(again) == once["best_epoch"] and again["val_loss"].isna().all()
    assert refit["steps"] > once["steps"]
    assert refit["smape"] != once["smape"]  # forecast by the refit model
    assert main([*common, "--out", str(tmp_path / "bad"), "--set", "refit=maybe"]) == 2


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "timellm.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_m4_missing_train_file_is_one_line_and_exit_2(weekly_m4, tmp_path):
    out = tmp_path / "run"
    result = run_cli("m4", "--frequency", "Weekly", "Yearly", "--data-dir", str(weekly_m4), "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "Yearly-train.csv.gz" in lines[0] and "supplied by the user" in lines[0]
    assert not out.exists()  # nothing trained before the missing file was found


def test_m4_horizon_is_fixed_by_the_competition(weekly_m4, tmp_path, capsys):
    args = ["m4", "--frequency", "Weekly", "--data-dir", str(weekly_m4), "--out", str(tmp_path / "r")]
    assert main([*args, "--set", "pred_len=10"]) == 2
    assert "horizon is fixed at 13" in capsys.readouterr().err
    assert main([*args, "--set", "max_test_windows=5"]) == 2
    assert "every series is forecast" in capsys.readouterr().err


def test_weighted_m4_weighs_by_series_and_recomputes_owa():
    rows = [
        {
            "frequency": "Hourly",
            "series": 414,
            "smape": 10.0,
            "mase": 1.0,
            "naive2_smape": 18.0,
            "naive2_mase": 2.4,
        },
        {
            "frequency": "Weekly",
            "series": 359,
            "smape": 8.0,
            "mase": 2.5,
            "naive2_smape": 9.0,
            "naive2_mase": 2.8,
        },
    ]
    total = weighted_m4(rows)
    w = np.array([414, 359]) / 773
    assert total["series"] == 773
    assert total["smape"] == pytest.approx(w @ [10.0, 8.0])
    assert total["owa"] == pytest.approx(
        0.5 * (total["smape"] / (w @ [18.0, 9.0]) + total["mase"] / (w @ [2.4, 2.8]))
    )
    with pytest.raises(ValueError, match="appears twice"):
        weighted_m4([rows[0], rows[0]])


# ------------------------------------------------------------------------------------------------
# few-shot and zero-shot


@pytest.mark.parametrize("percent", [10, 5])
def test_few_shot_keeps_the_first_percent_of_training_windows(data_dir, percent):
    full = WindowDataset(load_splits("ETTh1", 512, 96, data_dir).train, 512, 96, channel_independent=False)
    splits = load_splits("ETTh1", 512, 96, data_dir, percent=percent)
    few = WindowDataset(splits.train, 512, 96, channel_independent=False)
    assert len(full) == 8033
    assert len(few) == 8033 * percent // 100  # 803 and 401 windows
    assert np.array_equal(few[len(few) - 1][1], full[len(few) - 1][1])  # the first ones, unchanged


@pytest.mark.slow
def test_percent_on_the_command_line_shrinks_the_training_set(data_dir, tmp_path):
    out = tmp_path / "few"
    sizes = ["--set", "seq_len=48", "--set", "pred_len=12", "--set", "patch_len=8", "--set", "stride=4"]
    caps = ["--set", "max_train_windows=24", "--set", "max_val_windows=8", "--set", "max_test_windows=8"]
    args = ["train", "--preset", "ETTh1-96-cpu", "--percent", "5", "--data-dir", str(data_dir)]
    assert main([*args, "--out", str(out), *TINY, *sizes, *caps]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["percent"] == 5
    windows = (8640 - 48 - 12 + 1) * 5 // 100  # 429 windows x 7 channels
    assert f"ETTh1: {windows * 7} training and" in (out / "train.log").read_text()
    assert classify(yaml.safe_load((out / "config.yaml").read_text()), {}) == "few_shot"


def test_transfer_picks_the_source_preset_and_variant():
    assert transfer_preset("ETTh1", 96).name == "ETTh1-96-cpu"
    assert transfer_preset("ETTh2", 192, "paper").name == "ETTh2-192"
    assert transfer_preset("ETTm1", 96, "demo").run["max_test_windows"] == 300
    with pytest.raises(PresetError, match="unknown preset 'ETTh1-97-cpu'"):
        transfer_preset("ETTh1", 97)


@pytest.mark.slow
def test_transfer_trains_on_the_source_and_tests_on_the_target(data_dir, tmp_path, capsys):
    out = tmp_path / "zs"
    sizes = ["--set", "seq_len=48", "--set", "pred_len=12", "--set", "patch_len=8", "--set", "stride=4"]
    caps = ["--set", "max_train_windows=24", "--set", "max_val_windows=8", "--set", "max_test_windows=6"]
    args = ["transfer", "--source", "ETTh1", "--target", "ETTh2", "--data-dir", str(data_dir)]
    assert main([*args, "--out", str(out), *TINY, *sizes, *caps]) == 0
    assert "zero-shot ETTh1 -> ETTh2" in capsys.readouterr().out
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert (record["preset"], record["dataset"], record["test_dataset"]) == ("ETTh1-96-cpu", "ETTh1", "ETTh2")
    assert record["model"]["dataset"] == "ETTh1"  # the source's prompt: the target is unseen
    metrics = json.loads((out / "metrics.json").read_text())
    # the test windows are ETTh2's: its naive references on the same windows match
    target = load_splits("ETTh2", 48, 12, data_dir)
    windows = WindowDataset(target.test, 48, 12, channel_independent=False, max_windows=6)
    past = np.stack([windows[i][0].numpy() for i in range(len(windows))])
    true = np.stack([windows[i][1].numpy() for i in range(len(windows))])
    for name, scores in naive_references(past, true, 24).items():
        assert metrics["baselines"][name] == pytest.approx(scores)
    assert metrics["test_windows_total"] == len(target.test) - 48 - 12 + 1
    assert classify(record, metrics) == "zero_shot"
    # the report draws its training curve, titled with the target's test scores
    written, _ = write_report(out, tmp_path / "report")
    assert set(written) == {"zero_shot"} and (tmp_path / "report" / ZERO_SHOT_CURVES).stat().st_size > 0

    assert main([*args[:4], "ETTh1", "--data-dir", str(data_dir), "--out", str(tmp_path / "same")]) == 2
    assert "a target other than the source" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the report


def _fake_run(folder: Path, record: dict, metrics: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(record))
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _long_term(dataset, pred_len, mse, mae, *, test_dataset=None, percent=100, epochs=2):
    record = {
        "preset": f"{dataset}-{pred_len}-cpu",
        "dataset": dataset,
        "test_dataset": test_dataset or dataset,
        "percent": percent,
        "command": f"timellm train --preset {dataset}-{pred_len}-cpu",
        "model": {"backbone": "smollm2-135m", "llm_layers": 2, "pred_len": pred_len},
        "train": {"epochs": epochs, "max_train_windows": 1200},
    }
    metrics = {
        "mse": mse,
        "mae": mae,
        "pred_len": pred_len,
        "backbone": "smollm2-135m",
        "llm_layers": 2,
        "test_windows": 100,
        "test_windows_total": 100,
        "baselines": {"last_value": {"mse": 1.0, "mae": 0.8}, "seasonal_naive": {"mse": 0.9, "mae": 0.7}},
        "command": record["command"],
    }
    return record, metrics


def _m4(frequency, series, smape, mase, naive2_smape, naive2_mase):
    record = {
        "protocol": "m4",
        "frequency": frequency,
        "model": {"backbone": "smollm2-135m", "llm_layers": 2},
    }
    metrics = {
        "protocol": "m4",
        "frequency": frequency,
        "series": series,
        "smape": smape,
        "mase": mase,
        "owa": 0.5 * (smape / naive2_smape + mase / naive2_mase),
        "naive2_smape": naive2_smape,
        "naive2_mase": naive2_mase,
        "backbone": "smollm2-135m",
        "llm_layers": 2,
        "command": f"timellm m4 --frequency {frequency}",
        # Weekly's period is 1: its seasonal naive is the last value (Naive1)
        "baselines": {
            "seasonal_naive" if frequency == "Hourly" else "naive1": {"smape": 2 * smape, "mase": 1.0}
        },
    }
    return record, metrics


def test_report_tables_per_protocol_beside_the_paper(tmp_path, capsys):
    root = tmp_path / "runs"
    _fake_run(root / "h1-96", *_long_term("ETTh1", 96, 0.40, 0.42))
    for h, mse in zip((96, 192, 336, 720), (0.30, 0.34, 0.38, 0.42), strict=True):
        # the preset tuned at one horizon: its four horizons still make one average
        _fake_run(root / f"h2-{h}", *_long_term("ETTh2", h, mse, 0.4, epochs=10 if h == 336 else 2))
    _fake_run(root / "few", *_long_term("ETTh1", 96, 0.5, 0.5, percent=10))
    _fake_run(root / "zs", *_long_term("ETTh1", 96, 0.45, 0.44, test_dataset="ETTh2"))
    _fake_run(root / "m4" / "Hourly", *_m4("Hourly", 414, 15.0, 1.2, 18.383, 2.395))
    _fake_run(root / "m4" / "Weekly", *_m4("Weekly", 359, 10.0, 3.0, 9.161, 2.777))
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.yaml").write_text("dataset: ETTh1\n")

    out = tmp_path / "report"
    assert main(["report", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## M4 short-term forecasting" in printed and "not in SPEC" not in printed
    assert {p.name for p in out.iterdir()} == {
        f"{kind}{p}.{ext}"
        for p in ("long_term", "few_shot", "zero_shot", "m4")
        for kind, ext in (("", "csv"), ("report_", "md"))
    } | {"few_shot_ETTh1-96.png"}  # the few-shot run beside the full run of its dataset and horizon

    long_term = pd.read_csv(out / "long_term.csv")
    h1 = long_term[long_term["run"] == "h1-96"].iloc[0]
    assert (h1.paper_mse, h1.paper_mae) == (0.362, 0.392)  # SPEC §5, per horizon
    assert h1.rel_mse == pytest.approx((0.40 - 0.362) / 0.362)
    average = long_term[long_term["run"] == "(average)"].iloc[0]
    assert average.dataset == "ETTh2" and average.mse == pytest.approx(0.36)
    assert average.paper_mse == 0.334 and average.rel_mse == pytest.approx((0.36 - 0.334) / 0.334)
    common, tuned = (
        "2 layers, <= 2 epochs, <= 1200 windows/epoch",
        "2 layers, <= 10 epochs, <= 1200 windows/epoch",
    )
    assert average.budget == f"{common}; at 336: {tuned}"

    # every row beside its own cell: the same share of data, the same transfer pair and horizon
    few = pd.read_csv(out / "few_shot.csv").iloc[0]
    assert few.percent == 10 and (few.paper_mse, few.paper_mae) == (0.448, 0.460)
    assert few.rel_mse == pytest.approx((0.5 - 0.448) / 0.448)
    zero = pd.read_csv(out / "zero_shot.csv").iloc[0]
    assert zero.target == "ETTh2" and (zero.paper_mse, zero.paper_mae) == (0.279, 0.337)
    # the baselines' four-horizon averages stand beside average rows only
    assert math.isnan(h1.paper_dlinear_avg_mse) and average.paper_dlinear_avg_mse == 0.431

    m4 = pd.read_csv(out / "m4.csv").set_index("frequency")
    assert list(m4.index) == ["Hourly", "Weekly", "Others (Hourly, Weekly)", "Average (Hourly, Weekly)"]
    assert math.isnan(m4.loc["Hourly", "paper_owa"]) and "Others" in m4.loc["Hourly", "paper_note"]
    others = m4.loc["Others (Hourly, Weekly)"]
    assert (others.paper_smape, others.paper_mase, others.paper_owa) == (4.795, 3.178, 1.006)
    total = m4.loc["Average (Hourly, Weekly)"]
    assert total.smape == pytest.approx((414 * 15.0 + 359 * 10.0) / 773)
    assert (total.paper_smape, total.paper_mase, total.paper_owa) == PAPER_M4_AVERAGE
    # 773 series against the paper's 100,000: another quantity, so no relative figure
    assert "not like for like" in total.paper_note and math.isnan(total.rel_owa)
    assert total.snaive_smape == pytest.approx(2 * total.smape) and total.snaive_mase == pytest.approx(1.0)
    assert "timellm m4 --frequency Hourly" in (out / "report_m4.md").read_text()


def test_report_of_a_folder_without_runs(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no run folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_folder_of_tables_is_rendered_again_beside_the_paper(tmp_path):
    root = tmp_path / "runs"
    for h in (96, 192, 336, 720):
        _fake_run(root / f"h1-{h}", *_long_term("ETTh1", h, 0.4, 0.42))
    _fake_run(root / "zs", *_long_term("ETTm2", 96, 0.37, 0.38, test_dataset="ETTm1"))
    _fake_run(root / "m4" / "Hourly", *_m4("Hourly", 414, 15.0, 1.2, 18.383, 2.395))
    first = tmp_path / "first"
    write_report(root, first)
    long_term = pd.read_csv(first / "long_term.csv")
    long_term.loc[:, ["paper_mse", "rel_mse", "paper_note"]] = [0.0, 0.0, "stale"]  # an older report's cells
    long_term.to_csv(first / "long_term.csv", index=False)
    before = pd.read_csv(first / "zero_shot.csv")

    again = tmp_path / "again"
    written, _ = write_report(first, again)  # no run folder there: the tables themselves
    assert set(written) == {"long_term", "zero_shot", "m4"}
    table = pd.read_csv(again / "long_term.csv")
    assert list(table["paper_mse"]) == [0.362, 0.398, 0.430, 0.442, 0.408]
    assert list(table["mse"]) == pytest.approx([0.4] * 5)  # the numbers are untouched
    zero = pd.read_csv(again / "zero_shot.csv")
    assert zero.loc[0, "paper_mse"] == 0.359 and zero.loc[0, "mse"] == before.loc[0, "mse"]
    m4 = pd.read_csv(again / "m4.csv")
    assert list(m4["frequency"]) == ["Hourly", "Others (Hourly)", "Average (Hourly)"]


def test_report_merges_runs_that_differ_only_in_their_seed(tmp_path):
    root = tmp_path / "runs"
    for seed, mse, mae in ((2021, 0.40, 0.42), (2022, 0.42, 0.43), (2023, 0.44, 0.47)):
        record, metrics = _long_term("ETTh1", 96, mse, mae)
        record["train"]["seed"] = seed
        metrics["commit"] = "abc123"
        _fake_run(root / f"s{seed}", record, metrics)
    other, other_metrics = _long_term("ETTh1", 96, 0.5, 0.5)
    other["train"] = {**other["train"], "seed": 2021, "epochs": 8}  # another budget: its own row
    _fake_run(root / "longer", other, other_metrics)

    table = build_tables(collect_runs(root), root)["long_term"]
    merged = table[table["seeds"] == "2021,2022,2023"].iloc[0]
    assert merged.mse == pytest.approx(0.42) and merged.mae == pytest.approx(0.44)
    assert merged.mse_std == pytest.approx(0.02) and merged.mae_std == pytest.approx(
        np.std([0.42, 0.43, 0.47], ddof=1)
    )
    assert merged.rel_mse == pytest.approx((0.42 - 0.362) / 0.362) and merged.commit == "abc123"
    single = table[table["run"] == "longer"].iloc[0]
    assert single.mse == 0.5 and pd.isna(single.mse_std) and pd.isna(single.seeds)
    assert len(table) == 2


def test_report_names_the_normalisation_each_seed_chose(tmp_path):
    root = tmp_path / "runs"
    for seed, kept in ((2021, "revin"), (2022, "seasonal"), (2023, "revin")):
        record, metrics = _long_term("ETTh1", 96, 0.5, 0.45, percent=10)
        record["train"]["seed"] = seed
        record["model"]["normalization"] = "revin"
        record["run"] = {"choose_normalization": True}
        metrics["normalization"] = kept
        _fake_run(root / f"s{seed}", record, metrics)
    record, metrics = _long_term("ETTh1", 96, 0.5, 0.45)
    record["model"]["normalization"] = "revin"
    _fake_run(root / "full", record, metrics)

    tables = build_tables(collect_runs(root), root)
    assert tables["few_shot"].iloc[0].normalization == "chosen: revin, seasonal, revin"
    assert tables["long_term"].iloc[0].normalization == "revin"
    assert "| chosen: revin, seasonal, revin |" in render_markdown("few_shot", tables["few_shot"])


def test_zero_shot_curves_draw_a_correction_apart_from_the_adapter(tmp_path, monkeypatch):
    """A run that chose its normalisation trained twice: each training is its own curve, and the
    one not kept says so."""
    import timellm.plotting

    record, metrics = _long_term("ETTh2", 96, 0.5, 0.43, test_dataset="ETTh1")
    metrics["normalization_choice"] = {"kept": "correction"}
    _fake_run(tmp_path / "runs" / "zs", record, metrics)
    pd.DataFrame(
        {
            "steps": [84, 168, 0, 84],
            "train_loss": [0.6, 0.5, None, 0.6],
            "val_loss": [0.30, 0.29, 0.27, 0.28],
            "candidate": [None, None, "correction", "correction"],
        }
    ).to_csv(tmp_path / "runs" / "zs" / "history.csv", index=False)
    drawn = []
    monkeypatch.setattr(timellm.plotting, "plot_training_curves", lambda panels, *args: drawn.extend(panels))
    write_report(tmp_path / "runs", tmp_path / "report")
    (panel,) = drawn
    (adapter, first), (correction, second) = panel["runs"]
    assert adapter == "seed None (not kept)" and list(first["steps"]) == [84, 168]
    assert correction == "seed None, correction" and list(second["steps"]) == [0, 84]
