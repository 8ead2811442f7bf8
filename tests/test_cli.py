import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from timellm.cli import main


def run_cli(*args):
    # the checkout's own src first, whatever copy of timellm is installed
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "timellm.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_unknown_preset_is_one_line_and_exit_2(capsys):
    assert main(["train", "--preset", "ETTh1-97"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown preset 'ETTh1-97'" in err[0]


def test_bad_override_is_a_clear_error(capsys):
    assert main(["train", "--preset", "ETTh1-96-cpu", "--set", "lr=0.1"]) == 2
    assert "unknown setting 'lr'" in capsys.readouterr().err
    assert main(["train", "--preset", "ETTh1-96-cpu", "--set", "llm_layers"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["train", "--preset", "ETTh1-96-cpu", "--set", "seq_len=-3"]) == 2
    assert "seq_len must be a positive integer" in capsys.readouterr().err


def test_missing_data_is_one_line_without_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("TIMELLM_DATA", raising=False)
    result = run_cli(
        "train", "--preset", "ETTh2-96-cpu", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "ETTh2 data not found" in result.stderr
    assert "--data-dir FOLDER" in result.stderr and "data_dir=" not in result.stderr  # the CLI's words
    assert not (tmp_path / "run").exists()  # no empty run folder left behind


def test_bench_speed_options_are_the_clis():
    from timellm.cli.main import build_parser

    args = build_parser().parse_args(
        ["bench", "speed", "--dtypes", "fp32", "--paths", "fast", "--steps", "1"]
    )
    assert (args.which, args.dtypes, args.paths, args.modes, args.steps) == (
        "speed",
        ["fp32"],
        ["fast"],
        ["train", "infer"],
        1,
    )
    assert args.malloc == ["default", "tuned"] and args.out == "results/speed.csv"


def test_the_bench_commands_run_the_settings_their_options_name(monkeypatch):
    from timellm.experiments import memory_bench, speed

    ran = []
    monkeypatch.setattr(memory_bench, "memory_benchmark", lambda settings: ran.append(settings))
    monkeypatch.setattr(memory_bench, "markdown", lambda frame: "")
    monkeypatch.setattr(speed, "speed_benchmark", lambda settings: ran.append(settings))
    monkeypatch.setattr(speed, "report", lambda frame: "")
    assert (
        main(["bench", "memory", "--backbones", "a,b", "--batch", "3", "--steps", "4", "--infer-steps", "5"])
        == 0
    )
    assert (
        main(
            ["bench", "speed", "--dtypes", "fp32", "--malloc", "tuned", "--no-ladder", "--infer-batches", "2"]
        )
        == 0
    )
    memory, timed = ran
    assert memory == memory_bench.MemoryBenchSettings(
        backbones=("a", "b"), weights=("fp32", "bf16", "int8"), batch_size=3, train_steps=4, infer_batches=5
    )
    assert timed == speed.SpeedSettings(
        dtypes=("fp32",), mallocs=("tuned",), ladder=False, infer_batches=(2,), out="results/speed.csv"
    )
    assert main(["bench", "speed", "--layers", "2", "--set", "num_prototypes=100"]) == 0
    assert ran[-1].model_changes == {"num_prototypes": 100} and ran[-1].layers == 2  # the -cpu presets' shape
    assert main(["bench", "speed", "--set", "train.epochs=3"]) == 2  # a model setting only


def test_unknown_option_exits_2():
    result = run_cli("train", "--preset", "ETTh1-96", "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr


def test_evaluate_of_a_non_run_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_presets_lists_the_paper_and_cpu_settings(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("ETTh1-96 ", "ETTh1-720-cpu", "illness-60", "weather-192"):
        assert name in out


@pytest.mark.slow
def test_train_end_to_end_on_a_tiny_backbone(tmp_path, capsys):
    code = main(
        [
            "train",
            "--preset",
            "ETTh1-96-cpu",
            "--backbone",
            "tiny-random-gpt2",
            "--out",
            str(tmp_path / "run"),
            "--set",
            "llm_layers=1",
            "--set",
            "seq_len=48",
            "--set",
            "pred_len=12",
            "--set",
            "patch_len=8",
            "--set",
            "stride=4",
            "--set",
            "d_ff=16",
            "--set",
            "d_model=8",
            "--set",
            "num_prototypes=10",
            "--set",
            "epochs=1",
            "--set",
            "max_train_windows=48",
            "--set",
            "max_val_windows=16",
            "--set",
            "max_test_windows=40",
            "--set",
            "description=Test.",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Time-LLM" in out and "seasonal naive" in out and "40 of 2869 test windows" in out
    assert (tmp_path / "run" / "metrics.json").is_file()
    # the command recorded is the one main() was given, not the test runner's sys.argv
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["command"]
    assert recorded.startswith("timellm train --preset ETTh1-96-cpu --backbone tiny-random-gpt2")


def test_a_dataset_tunes_its_cpu_variant_without_touching_the_paper_preset(monkeypatch):
    from timellm.experiments import presets

    data = {
        "defaults": {
            "model": {"backbone": "tiny-random-llama", "seq_len": 48},
            "train": {"learning_rate": 0.01},
        },
        "variants": {"cpu": {"model": {"llm_layers": 1}, "train": {"learning_rate": 0.0002, "epochs": 3}}},
        "datasets": {
            "ETTh1": {"horizons": [96]},
            "illness": {
                "horizons": [24, 48],
                "variants": {
                    "cpu": {"train": {"learning_rate": 0.001}, "by_horizon": {48: {"train": {"epochs": 12}}}}
                },
            },
        },
    }
    monkeypatch.setattr(presets, "_files", lambda: [data])
    found = presets.all_presets()
    ili_cpu, ili_paper, etth1_cpu = (found[n] for n in ("illness-24-cpu", "illness-24", "ETTh1-96-cpu"))
    assert (ili_cpu.train.learning_rate, ili_cpu.train.epochs, ili_cpu.model.llm_layers) == (0.001, 3, 1)
    assert ili_paper.train.learning_rate == 0.01 and ili_paper.model.llm_layers is None
    assert etth1_cpu.train.learning_rate == 0.0002
    # a variant tuned for one horizon only: the others and the paper preset keep theirs
    assert (found["illness-48-cpu"].train.epochs, found["illness-48-cpu"].train.learning_rate) == (12, 0.001)
    assert found["illness-48"].train.epochs == found["illness-24"].train.epochs
