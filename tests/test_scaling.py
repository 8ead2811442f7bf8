"""End to end through the command line: SIGKILL then --resume, and two data-parallel processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from timellm.data import WindowDataset, load_splits
from timellm.experiments.runs import evaluate_run, load_run
from timellm.training.checkpoint import read_checkpoint
from timellm.training.loop import TrainConfig, adapter_sha256, evenly_spaced, mean_loss

SRC = str(Path(__file__).resolve().parents[1] / "src")
TIMEOUT = 300


def tiny(**settings):
    """`timellm train` arguments for a tiny LLaMA run on the packaged ETTh1."""
    base = dict(
        llm_layers=1,
        seq_len=48,
        pred_len=12,
        patch_len=8,
        stride=4,
        d_model=8,
        d_ff=16,
        num_prototypes=10,
        batch_size=8,
        max_val_windows=16,
        description="Test.",
    )
    base.update(settings)
    args = ["train", "--preset", "ETTh1-96-cpu", "--backbone", "tiny-random-llama"]
    for key, value in base.items():
        args += ["--set", f"{key}={value}"]
    return args


def environment(**extra):
    # the subprocesses must import this checkout, not whatever timellm the interpreter has installed
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **extra}


def timellm(*args):
    return [sys.executable, "-m", "timellm.cli", *map(str, args)]


def mid_epoch_checkpoint(folder: Path) -> bool:
    for candidate in (folder, folder.with_name(folder.name + ".previous")):
        try:
            return json.loads((candidate / "state.json").read_text())["progress"]["batch"] > 0
        except (OSError, ValueError, KeyError):
            continue
    return False


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = tiny(
        epochs=2,
        max_train_windows=160,  # 20 steps per epoch
        checkpoint_every=4,
        schedule="onecycle",
        deterministic="true",
        max_test_windows=16,
    )
    full = subprocess.Popen(
        timellm(*args, "--out", tmp_path / "full"), env=environment(), stderr=subprocess.PIPE, text=True
    )
    killed = subprocess.Popen(
        timellm(*args, "--out", tmp_path / "killed"),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "killed" / "checkpoint"
    deadline = time.monotonic() + TIMEOUT
    while not mid_epoch_checkpoint(checkpoint):
        assert killed.poll() is None, "the run ended before its first mid-epoch checkpoint"
        assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(TIMEOUT) == -signal.SIGKILL
    saved = read_checkpoint(checkpoint)  # complete and verified despite the kill
    assert saved.state["progress"]["batch"] > 0 and saved.state["progress"]["epoch"] == 1

    resumed = subprocess.run(
        timellm("train", "--resume", tmp_path / "killed"),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert full.wait(TIMEOUT) == 0, full.stderr.read()[-2000:]
    assert "resumed from" in (tmp_path / "killed" / "train.log").read_text()
    assert not checkpoint.exists()

    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for key in ("best_epoch", "epochs_run", "steps", "test_windows", "adapter_sha256"):
        assert a[key] == b[key], key
    for key in ("mse", "mae", "best_val_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "full" / "history.csv"), pd.read_csv(tmp_path / "killed" / "history.csv")
    )


@pytest.mark.slow
def test_two_processes_keep_identical_adapters_and_count_every_window_once(tmp_path):
    run = tmp_path / "run"
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # with ACCELERATE_USE_CPU=1: two gloo processes on the CPU
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "timellm.cli",
    ]
    # 101 test windows in batches of 16 and 16 validation windows x 7 channels in batches of 16:
    # neither splits evenly over two processes, so the samplers pad with repeated windows
    args = tiny(epochs=1, max_train_windows=64, max_test_windows=101, eval_batch_size=16)
    result = subprocess.run(
        [*launch, *args, "--out", run],
        env=environment(ACCELERATE_USE_CPU="1"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run folder:") == 1  # only the main process reports
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 4  # 8 batches shared by 2 processes

    # the same weights on both processes, and they are the ones saved
    saved = adapter_sha256(load_file(run / "adapter" / "adapter.safetensors"))
    assert metrics["adapter_sha256"] == [saved, saved]

    # every window scored exactly once: one process scoring everything agrees
    assert metrics["test_windows"] == 101 and metrics["test_windows_total"] == 2869
    again = evaluate_run(run, full=False)
    assert again["test_windows"] == 101
    assert again["mse"] == pytest.approx(metrics["mse"], rel=1e-6)
    assert again["mae"] == pytest.approx(metrics["mae"], rel=1e-6)
    from accelerate import Accelerator

    _, model = load_run(run)
    val = WindowDataset(load_splits("ETTh1", 48, 12).val, 48, 12)
    config = TrainConfig(eval_batch_size=16)
    single = mean_loss(model, evenly_spaced(val, 16), config, Accelerator())
    assert single == pytest.approx(metrics["best_val_loss"], rel=1e-6)
