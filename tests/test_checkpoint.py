"""Checkpoints: exact resume, atomic writes, clear errors for bad files, divergence, safety."""

import errno
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import timellm.training.checkpoint as ckpt
from conftest import run_killed, tiny_config
from timellm import build_model
from timellm.cli import main
from timellm.data import WindowDataset
from timellm.training.loop import NonFiniteLossError, TrainConfig, fit

SRC = Path(__file__).resolve().parents[1] / "src" / "timellm"


def synthetic(rows=300, channels=2):
    rng = np.random.default_rng(0)
    t = np.arange(rows)[:, None]
    return (
        np.sin(2 * np.pi * t / 24 + np.arange(channels)) + 0.1 * rng.standard_normal((rows, channels))
    ).astype(np.float32)


DATA = synthetic()
TRAIN, VAL = WindowDataset(DATA[:250], 48, 12), WindowDataset(DATA[200:], 48, 12, max_windows=10)
# dropout stays on: resuming must restore the generator that draws its masks
CONFIG = TrainConfig(
    epochs=2,
    batch_size=8,
    learning_rate=3e-3,
    schedule="onecycle",  # a per-step scheduler whose state matters mid-epoch
    patience=5,
    max_train_windows=48,  # 6 steps per epoch, a fresh subset each epoch
    checkpoint_every=2,
    deterministic=True,
)


def new_model(**changes):
    torch.manual_seed(0)
    return build_model(tiny_config(llm="none", **changes))  # the LLM plays no part in checkpointing


def train_with_snapshots(tmp_path, monkeypatch, config=CONFIG):
    """Train to the end, keeping a copy of every checkpoint as it was written."""
    snapshots = []
    save = ckpt.save_checkpoint

    def keep_a_copy(directory, tensors, state):
        out = save(directory, tensors, state)
        copy = tmp_path / f"snapshot{len(snapshots)}"
        shutil.copytree(out, copy)
        snapshots.append((copy, state["progress"]["epoch"], state["progress"]["batch"]))
        return out

    monkeypatch.setattr(ckpt, "save_checkpoint", keep_a_copy)
    model = new_model()
    result = fit(model, TRAIN, VAL, config, checkpoint_dir=tmp_path / "checkpoint")
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    return model, result, snapshots


def test_resuming_mid_epoch_or_at_an_epoch_end_gives_the_uninterrupted_run(tmp_path, monkeypatch):
    model, result, snapshots = train_with_snapshots(tmp_path, monkeypatch)
    assert [(e, b) for _, e, b in snapshots] == [(1, 2), (1, 4), (2, 0), (2, 2), (2, 4), (3, 0)]
    for snapshot, epoch, batch in (snapshots[1], snapshots[2]):  # mid-epoch 1, end of epoch 1
        resumed = new_model()
        again = fit(resumed, TRAIN, VAL, CONFIG, checkpoint_dir=snapshot, resume=True)
        assert again.history == result.history, (epoch, batch)
        assert (again.steps, again.best_epoch, again.epochs_run) == (result.steps, result.best_epoch, 2)
        for key, value in model.adapter_state_dict().items():
            assert torch.equal(value, resumed.adapter_state_dict()[key]), (epoch, batch, key)


def test_a_checkpoint_written_before_a_setting_existed_resumes_at_its_default(tmp_path, monkeypatch):
    from timellm.training.config import TrainConfig as Config

    as_dict = Config.to_dict
    # an earlier version wrote its checkpoints without time_budget (and its model without a field)
    monkeypatch.setattr(
        Config, "to_dict", lambda self: {k: v for k, v in as_dict(self).items() if k != "time_budget"}
    )
    model, result, snapshots = train_with_snapshots(tmp_path, monkeypatch)
    monkeypatch.setattr(Config, "to_dict", as_dict)
    resumed = new_model()
    again = fit(resumed, TRAIN, VAL, CONFIG, checkpoint_dir=snapshots[2][0], resume=True)
    assert again.history == result.history


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    writes = []
    write = ckpt._write_file

    def disk_fills_up(path, data):
        writes.append(path.name)
        if len(writes) > 5:  # the first checkpoint's 5 files fit, the second's first file does not
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(ckpt, "_write_file", disk_fills_up)
    with pytest.raises(ckpt.CheckpointError) as caught:
        fit(new_model(), TRAIN, VAL, CONFIG, checkpoint_dir=tmp_path / "checkpoint")
    message = str(caught.value)
    assert "the disk is full" in message and "adapter.safetensors" in message
    assert f"previous checkpoint {tmp_path / 'checkpoint'} is intact" in message
    assert not (tmp_path / "checkpoint.partial").exists()
    saved = ckpt.read_checkpoint(tmp_path / "checkpoint")  # verified: every file's sha256 matches
    assert saved.state["progress"]["global_step"] == 2
    monkeypatch.setattr(ckpt, "_write_file", write)
    fit(new_model(), TRAIN, VAL, CONFIG, checkpoint_dir=tmp_path / "checkpoint", resume=True)


def test_an_interrupted_swap_falls_back_to_the_previous_folder(tmp_path):
    folder = tmp_path / "checkpoint"
    ckpt.save_checkpoint(folder, {"adapter.safetensors": {"w": torch.ones(2)}}, {"step": 1})
    folder.rename(tmp_path / "checkpoint.previous")  # killed between the two renames
    assert ckpt.find_checkpoint(folder) == tmp_path / "checkpoint.previous"
    ckpt.save_checkpoint(folder, {"adapter.safetensors": {"w": torch.zeros(2)}}, {"step": 2})
    assert ckpt.find_checkpoint(folder) == folder and not (tmp_path / "checkpoint.previous").exists()


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data: the safetensors header still parses
    path.write_bytes(bytes(data))


def _garble(path):
    path.write_text('{"format": "timellm-checkpoint", "vers')


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        ("adapter.safetensors", _truncate, "truncated or corrupted"),
        ("optimizer.safetensors", _flip_a_byte, "truncated or corrupted"),
        ("state.json", _garble, "truncated or corrupted"),
        ("rng.safetensors", Path.unlink, "is missing"),
    ],
)
def test_a_damaged_checkpoint_is_a_clear_error_naming_the_file(tmp_path, name, damage, expected):
    config = CONFIG.replace(epochs=1, checkpoint_every=None)
    fit(new_model(), TRAIN, VAL, config, checkpoint_dir=tmp_path / "checkpoint")
    damage(tmp_path / "checkpoint" / name)
    with pytest.raises(ckpt.CheckpointError, match=expected) as caught:
        fit(new_model(), TRAIN, VAL, config, checkpoint_dir=tmp_path / "checkpoint", resume=True)
    assert str(tmp_path / "checkpoint" / name) in str(caught.value)


def test_a_checkpoint_of_another_model_or_shape_is_refused(tmp_path):
    config = CONFIG.replace(epochs=1, checkpoint_every=None)
    fit(new_model(), TRAIN, VAL, config, checkpoint_dir=tmp_path / "checkpoint")
    with pytest.raises(ckpt.CheckpointError) as caught:
        fit(new_model(d_model=4), TRAIN, VAL, config, checkpoint_dir=tmp_path / "checkpoint", resume=True)
    assert f"checkpoint {tmp_path / 'checkpoint' / 'state.json'} was made for another model" in str(
        caught.value
    )
    assert "d_model: 8 there, 4 here" in str(caught.value)
    # weights that do not fit, whatever the config says
    saved = ckpt.read_checkpoint(tmp_path / "checkpoint")
    path = saved.path / "adapter.safetensors"
    other = new_model(d_model=4).adapter_state_dict()
    with pytest.raises(ckpt.CheckpointError, match="made for another backbone or shape") as caught:
        ckpt.check_weights(path, saved.tensors["adapter.safetensors"], other)
    assert str(path) in str(caught.value)


class PoisonedAfter(torch.utils.data.Dataset):
    """The wrapped windows, with NaN targets from the ``start``-th item fetched on."""

    def __init__(self, dataset, start):
        self.dataset, self.start, self.fetched = dataset, start, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.fetched += 1
        past, future = self.dataset[index]
        return (past, torch.full_like(future, float("nan"))) if self.fetched > self.start else (past, future)


def test_a_non_finite_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    train = PoisonedAfter(TRAIN, start=5 * 8)  # batches 1-5 are clean, step 6 sees NaN
    with pytest.raises(NonFiniteLossError) as caught:
        fit(
            new_model(),
            train,
            VAL,
            CONFIG.replace(checkpoint_every=4, epochs=1),
            checkpoint_dir=tmp_path / "ck",
        )
    message = str(caught.value)
    assert "non-finite training loss (nan) at step 6 (epoch 1, batch 6)" in message
    assert f"the last good checkpoint is {tmp_path / 'ck'} (step 4, epoch 1, batch 4)" in message
    assert caught.value.step == 6 and caught.value.checkpoint == tmp_path / "ck"
    saved = ckpt.read_checkpoint(tmp_path / "ck")
    assert saved.state["progress"]["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in saved.tensors["adapter.safetensors"].values())


TINY_RUN = [
    "--preset",
    "ETTh1-96-cpu",
    "--set",
    "llm=none",
    "--set",
    "seq_len=48",
    "--set",
    "pred_len=12",
    "--set",
    "patch_len=8",
    "--set",
    "stride=4",
    "--set",
    "d_model=8",
    "--set",
    "d_ff=16",
    "--set",
    "epochs=1",
    "--set",
    "batch_size=8",
    "--set",
    "max_train_windows=32",
    "--set",
    "max_val_windows=8",
    "--set",
    "max_test_windows=8",
]


def test_the_cli_reports_divergence_in_one_line_and_exits_1(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        *TINY_RUN,
        "--set",
        "learning_rate=1e30",
        "--set",
        "checkpoint_every=1",
        "--out",
        str(run),
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err = err.strip().splitlines()[-1:]  # the log lines above it are the run's progress
    assert re.fullmatch(
        rf"timellm train: error: non-finite training loss \(\S+\) at step 2 \(epoch 1, batch 2\); "
        rf"training stopped, the last good checkpoint is {re.escape(str(run / 'checkpoint'))} \(step 1, .*\)",
        err[0],
    ), err[0]
    assert ckpt.read_checkpoint(run / "checkpoint").state["progress"]["global_step"] == 1
    assert not (run / "metrics.json").exists()


def test_resume_usage_errors(tmp_path, capsys):
    assert main(["train"]) == 2
    assert "train needs --preset NAME" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--set", "epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "--resume continues" in err and "drop --set" in err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", *TINY_RUN, "--out", str(run)]) == 0
    capsys.readouterr()
    assert not (run / "checkpoint").exists()  # a finished run keeps its adapter, not its optimiser state
    assert main(["train", "--resume", str(run)]) == 2
    assert "has no checkpoint to resume from (it has finished" in capsys.readouterr().err
    ckpt.save_checkpoint(run / "checkpoint", {"a.safetensors": {"w": torch.ones(1)}}, {})
    assert main(["train", *TINY_RUN, "--set", "epochs=5", "--out", str(run)]) == 2  # other settings
    err = capsys.readouterr().err
    assert "holds the checkpoint of an unfinished run with other settings (train differ)" in err
    assert f"timellm train --resume {run}" in err


KILLED_TRAIN = """
import sys
from timellm.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_train_run_killed_mid_epoch_ends_bit_exact_when_the_same_command_runs_again(tmp_path):
    from safetensors.torch import load_file

    def train(folder, kill_after):
        args = [*TINY_RUN, "--set", "epochs=3", "--set", "checkpoint_every=2", "--set", "deterministic=true"]
        return run_killed(KILLED_TRAIN, kill_after, "train", *args, "--out", str(tmp_path / folder))

    assert train("whole", 0).returncode == 0
    assert train("killed", 3).returncode == -9  # SIGKILL after the third checkpoint, in the second epoch
    assert (tmp_path / "killed" / "checkpoint").is_dir() and not (
        tmp_path / "killed" / "metrics.json"
    ).exists()
    again = train("killed", 0)  # the same command again
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in (tmp_path / "killed" / "train.log").read_text()
    whole, resumed = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("whole", "killed"))
    assert (resumed["mse"], resumed["mae"], resumed["steps"]) == (whole["mse"], whole["mae"], whole["steps"])
    adapters = [load_file(tmp_path / f / "adapter" / "adapter.safetensors") for f in ("whole", "killed")]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


def test_weights_are_never_unpickled_and_remote_code_is_opt_in():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for forbidden in ("torch.load", "import pickle", "trust_remote_code=True", "weights_only"):
            assert forbidden not in text, f"{path.name} uses {forbidden}"
    assert tiny_config().trust_remote_code is False


def test_a_backbone_folder_without_safetensors_is_refused(tmp_path):
    from timellm.backbones.loading import BackboneError, load_backbone
    from timellm.backbones.tiny import build_tokenizer

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 4, "vocab_size": 200})
    )
    build_tokenizer(bert_style=False).save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(BackboneError, match="safetensors"):
        load_backbone(str(folder))


def test_resuming_in_another_precision_than_the_checkpoint_says_so(tmp_path, caplog):
    config = TrainConfig(epochs=1, batch_size=8, max_train_windows=16)
    fit(new_model(), TRAIN, VAL, config, checkpoint_dir=tmp_path / "checkpoint")
    saved = ckpt.read_checkpoint(tmp_path / "checkpoint")
    state_file = saved.path / ckpt.STATE_FILE
    state = json.loads(state_file.read_text())
    assert state["precision"] in ("fp32", "bf16")  # what auto resolved to on this machine
    other = "fp16" if state["precision"] == "bf16" else "bf16"
    state_file.write_text(json.dumps({**state, "precision": other}))  # as if written on another machine
    fit(new_model(), TRAIN, VAL, config, checkpoint_dir=tmp_path / "checkpoint", resume=True)
    assert f"was trained in {other}; this machine continues in {state['precision']}" in caplog.text
