"""One memory plan for every front door: `timellm info`, `--dry-run` and the refusal of `train`,
`forecast` and `backtest` print and refuse by the same estimate, and the advice names what can fit."""

import dataclasses
import re

import pandas as pd
import pytest

from conftest import TINY_FORECAST, tiny_config
from timellm.cli import main
from timellm.forecaster import TimeLLMForecaster
from timellm.model import memory
from timellm.model.config import ExecutionSettings
from timellm.model.memory import GiB, MemoryBatch, plan_memory

# the paper's ETTh1-96 on LLaMA-7B's shape, as docs/scaling.md runs it on a 24 GiB CPU (the case)
PAPER_7B = [
    "--preset", "ETTh1-96", "--set", "backbone=random-llama-7b", "--set", "weights=bf16",
    "--set", "gradient_checkpointing=true", "--set", "precision=bf16",
]  # fmt: skip


@pytest.fixture
def steady_process(monkeypatch):
    """One process base for every estimate (it is measured where the estimate is made)."""
    monkeypatch.setattr(memory, "current_rss", lambda: 400 * 2**20)


def _totals(text: str) -> dict[str, float]:
    """{"training" | "inference": GiB} of the plan lines of info or --dry-run."""
    found = re.findall(r"^\s+(training|inference)[^:]*: ([\d.]+) GiB for", text, re.M)
    return {kind: float(gib) for kind, gib in found}


@pytest.mark.real_backbone
def test_info_prints_the_estimate_that_train_refuses_by(tmp_path, monkeypatch, capsys, steady_process):
    """The issue's case: info said 32 windows x 1 channel fit; train tested 7 channels and refused."""
    monkeypatch.delenv("TIMELLM_DATA", raising=False)  # the packaged ETTh1.csv.gz
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", "24G")
    assert main(["info", *PAPER_7B]) == 0
    info = capsys.readouterr().out
    assert "inference, 32 windows x 7 channels" in info
    assert main(["train", *PAPER_7B, "--dry-run"]) == 2
    dry = capsys.readouterr()
    assert _totals(dry.out) == _totals(info) and len(_totals(info)) == 2
    run = tmp_path / "run"
    assert main(["train", *PAPER_7B, "--out", str(run)]) == 2
    refusal = capsys.readouterr().err.strip()
    assert len(refusal.splitlines()) == 1 and refusal == dry.err.strip()
    needed = float(re.search(r"needs about ([\d.]+) GiB for inference of 224 series", refusal).group(1))
    assert needed == _totals(info)["inference"]
    assert "--set llm_batch=1" in refusal and not run.exists()
    # the setting the refusal names is honoured by info too, and then the run fits
    assert main(["info", *PAPER_7B, "--set", "llm_batch=1"]) == 0
    lighter = _totals(capsys.readouterr().out)
    assert lighter["inference"] < _totals(info)["inference"] / 2
    assert main(["train", *PAPER_7B, "--set", "llm_batch=1", "--dry-run"]) == 0
    assert _totals(capsys.readouterr().out) == lighter


def test_the_test_batch_is_no_larger_than_the_windows_tested(monkeypatch, capsys, steady_process):
    common = ["--preset", "ETTh1-96-cpu", "--set", "backbone=tiny-random-llama"]
    assert main(["train", *common, "--dry-run"]) == 0
    assert "inference, 32 windows x 7 channels" in capsys.readouterr().out
    assert main(["train", *common, "--set", "max_test_windows=1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # one window of 7 series tested; validation batches of 32 single series are then the larger
    assert "inference, 32 series a batch" in out and "fits: a peak of about" in out


def test_a_dry_run_loads_nothing_and_writes_nothing(tmp_path, monkeypatch, capsys):
    def no_load(*args, **kwargs):
        raise AssertionError("a dry run loaded a backbone")

    monkeypatch.setattr("timellm.model.modeling.load_backbone", no_load)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "ETTh1-96-cpu", "--out", "run", "--dry-run"]) == 0
    assert "dry run of timellm train" in capsys.readouterr().out
    assert main(["example-data", "data.csv", "--rows", "400"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in ("forecast", "backtest"):
        code = main(
            [command, "data.csv", "--horizon", "12", "--out", "out.csv", "--plot", "p.png", "--dry-run"]
        )
        assert code == 0, capsys.readouterr().err
        assert "fits: a peak of about" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["data.csv"]
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", "100M")  # less than the process itself
    assert main(["forecast", "data.csv", "--horizon", "12", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the log lines before it, and one error line
    assert "Traceback" not in "".join(err) and err[-1].startswith("timellm forecast: error: this run needs")
    assert "nothing can fit" in err[-1]


def test_m4_and_transfer_plan_before_they_load(data_dir, capsys):
    assert main(["m4", "--frequency", "Hourly", "--data-dir", str(data_dir), "--dry-run"]) == 0
    assert "inference, 32 series a batch" in capsys.readouterr().out
    transfer = ["transfer", "--source", "ETTh1", "--target", "ETTh2", "--data-dir", str(data_dir)]
    assert main([*transfer, "--dry-run"]) == 0
    assert "x 7 channels" in capsys.readouterr().out


def _plan(config, limit, monkeypatch, **kw):
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", str(int(limit)))
    batches = kw.pop("batches", [MemoryBatch(True, 8, 1, "train.batch_size")])
    return plan_memory(config, ExecutionSettings(weights="fp32"), precision="fp32", batches=batches, **kw)[0]


def test_where_no_one_setting_fits_the_advice_combines_them(monkeypatch, steady_process):
    config = dataclasses.replace(tiny_config(), llm_layers=2)
    train = MemoryBatch(True, 8, 1, "train.batch_size")
    combined = dict(
        storage="int8", compute="fp32", batch_series=1, training=True, gradient_checkpointing=True
    )
    lightest = memory.estimate_memory(config, base=400 * 2**20, **combined).total
    plan = _plan(config, lightest, monkeypatch, batches=[train], layers_fixed=True)
    assert not plan.fits
    assert plan.advice == (
        "no one setting fits alone, together they do: weights=int8, gradient_checkpointing=true, "
        f"train.batch_size=1 ({lightest / GiB:.1f} GiB)"
    )
    plan = _plan(config, lightest - 2**20, monkeypatch, batches=[train], layers_fixed=True)
    assert plan.advice.startswith("nothing fits, not even weights=int8, gradient_checkpointing=true")


def test_under_a_limit_below_the_process_nothing_can_fit(monkeypatch, steady_process):
    plan = _plan(tiny_config(), 100 * 2**20, monkeypatch)
    assert plan.advice == "nothing can fit: this process alone holds 0.39 GiB before loading anything"


def test_a_saved_adapter_is_not_advised_fewer_layers(tmp_path, monkeypatch, capsys, steady_process):
    """--model cannot take llm_layers: its refusal names what it can take (llm_batch, the batch)."""
    frame = pd.DataFrame({"unique_id": "a", "ds": range(200), "y": [float(i % 7) for i in range(200)]})
    frame.to_csv(tmp_path / "data.csv", index=False)
    save = [
        "forecast",
        str(tmp_path / "data.csv"),
        "--horizon",
        "6",
        "--save",
        str(tmp_path / "m"),
        *TINY_FORECAST,
    ]
    assert main([*save, "--out", str(tmp_path / "f.csv")]) == 0
    capsys.readouterr()
    use = ["forecast", str(tmp_path / "data.csv"), "--model", str(tmp_path / "m"), "--dry-run"]
    assert main(use) == 0
    assert "inference, 32 series a batch" in capsys.readouterr().out
    need = TimeLLMForecaster.plan_pretrained(tmp_path / "m")[0].estimate.total
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", str(need - 1))
    assert main(use) == 2
    err = capsys.readouterr().err
    assert "--set train.eval_batch_size=" in err and "llm_layers" not in err
    # and the setting it names is taken with --model: it does not train
    assert main([*use, "--set", "train.eval_batch_size=1"]) in (0, 2)
    assert "would train a new adapter" not in capsys.readouterr().err
