import logging
import os

# no test may reach a model hub: set before transformers/huggingface_hub are imported, so that a
# hub id fails at once and clearly instead of waiting on network timeouts
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from timellm import TimeLLMConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    logging.getLogger("timellm").setLevel(logging.INFO)


# the shape of a model that trains in seconds on a CPU (with a tiny random backbone)
TINY_MODEL = dict(
    seq_len=48, pred_len=12, patch_len=8, stride=4, d_model=8, d_ff=16, n_heads=2, num_prototypes=20
)


# `timellm forecast` / `backtest` options that train a tiny adapter in seconds
TINY_FORECAST = [
    "--backbone",
    "tiny-random-llama",
    "--max-steps",
    "2",
    "--set",
    "d_ff=16",
    "--set",
    "num_prototypes=20",
]


def tiny_config(backbone: str = "tiny-random-llama", **changes) -> TimeLLMConfig:
    """A small model on a tiny random backbone: seconds on a CPU."""
    base = dict(backbone=backbone, **TINY_MODEL, dataset="ETTh1")
    base.update(changes)
    return TimeLLMConfig(**base)


def shared_datasets():
    """The benchmark folder: $TIMELLM_DATA, or ../shared/datasets beside the checkout."""
    from pathlib import Path

    env = os.environ.get("TIMELLM_DATA")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return folder if folder.is_dir() else None


@pytest.fixture
def data_dir():
    folder = shared_datasets()
    if folder is None:
        pytest.skip(
            "benchmark data folder not found (set TIMELLM_DATA or put shared/datasets beside the checkout)"
        )
    return folder


# the head of a child process that kills itself with SIGKILL right after writing its N-th training
# checkpoint (N: TIMELLM_TEST_KILL_AFTER; 0 never): an interruption at a known point, with no cleanup
_DIE_AFTER_CHECKPOINTS = """
import os, signal
import timellm.training.checkpoint as _checkpoint
_kill_after, _saves, _save = int(os.environ["TIMELLM_TEST_KILL_AFTER"]), [], _checkpoint.save_training_state

def _save_then_maybe_die(*args, **kwargs):
    _save(*args, **kwargs)
    _saves.append(1)
    if len(_saves) == _kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

_checkpoint.save_training_state = _save_then_maybe_die
"""


def run_killed(script: str, kill_after: int, *args: str):
    """Run ``script`` (Python, reading ``sys.argv[1:]`` = ``args``) in a fresh process that dies by
    SIGKILL after its ``kill_after``-th checkpoint (0: runs to the end); its CompletedProcess."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TIMELLM_TEST_KILL_AFTER": str(kill_after)}
    code = _DIE_AFTER_CHECKPOINTS + script
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
