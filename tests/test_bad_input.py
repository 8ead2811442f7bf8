"""Bad input found by trying the commands as a new user: each is a right answer or one line on
stderr with exit status 2, no traceback and nothing written, naming settings as they are typed."""

import re

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_FORECAST, tiny_config
from timellm.cli import main
from timellm.data.errors import DataFileError
from timellm.evaluation.statistical import check_levels
from timellm.forecaster import TimeLLMForecaster
from timellm.model.config import ExecutionSettings
from timellm.model.variants import build_model


@pytest.fixture
def data(tmp_path):
    """A long CSV of two series, 200 rows each."""
    steps = np.arange(200)
    frame = pd.concat(
        pd.DataFrame({"unique_id": sid, "ds": steps, "y": np.sin(steps / (3 + k)) + k})
        for k, sid in enumerate(("a", "b"))
    )
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def one_line_error(capsys, *argv) -> str:
    """Run the command; it must fail with exit status 2 and one error line, without a traceback."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and not any("Traceback" in line for line in err)
    assert err[-1].startswith(f"timellm {argv[0]}: error: "), err
    return err[-1]


# --------------------------------------------------------------------------------------------
# backbones that cannot be read: the memory plan reads their config before anything loads


@pytest.mark.parametrize("backbone", ["no-such-model-xyz", "timellm-tests/uncached-model"])
def test_an_unknown_or_uncached_backbone_is_one_line(data, tmp_path, capsys, backbone):
    out = tmp_path / "forecasts.csv"
    message = one_line_error(capsys, "forecast", data, "--horizon", 12, "--backbone", backbone, "--out", out)
    assert f"could not load backbone {backbone!r}" in message and "alias" in message
    assert not out.exists()
    message = one_line_error(capsys, "info", "--preset", "ETTh1-96", "--backbone", backbone)
    assert f"could not load backbone {backbone!r}" in message


# --------------------------------------------------------------------------------------------
# settings


def test_a_memory_limit_must_be_a_positive_size(capsys, monkeypatch):
    for limit in ("-1G", "0", "lots"):
        monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", limit)
        message = one_line_error(capsys, "train", "--preset", "ETTh1-96-cpu", "--dry-run")
        assert "TIMELLM_MEMORY_LIMIT must be a positive size" in message and repr(limit) in message


def test_refusals_name_settings_as_they_are_typed(data, tmp_path, capsys, monkeypatch):
    """`--set weights=bf16` and `--set llm_layers=1` alike, in train as in forecast."""
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", "1.2G")
    cases = [
        ["train", "--preset", "ETTh1-96-cpu", "--set", "weights=fp32", "--set", "train.batch_size=512",
         "--out", tmp_path / "run"],
        ["forecast", data, "--horizon", 12, "--set", "weights=fp32", "--set", "train.batch_size=4096",
         "--set", "train.precision=fp32"],
    ]  # fmt: skip
    for argv in cases:
        message = one_line_error(capsys, *argv)
        assert "this run needs about" in message
        named = re.findall(r"(\S+ )?\b([a-z_.]+)=\S", message.split("; ", 1)[1])
        assert named and all(flag == "--set " for flag, _ in named), message
    assert not (tmp_path / "run").exists()
    message = one_line_error(capsys, "forecast", data, "--horizon", 12, "--calibration-origins", -1)
    assert message.endswith("--calibration-origins must be an integer of at least 0, found -1")


def test_a_saved_adapter_takes_how_it_forecasts_not_what_it_learns(data, tmp_path, capsys):
    save = [
        "forecast",
        data,
        "--horizon",
        12,
        "--save",
        tmp_path / "m",
        "--out",
        tmp_path / "f.csv",
        *TINY_FORECAST,
    ]
    assert main([str(a) for a in save]) == 0
    capsys.readouterr()
    use = ["forecast", str(data), "--model", str(tmp_path / "m")]
    assert main([*use, "--set", "train.eval_batch_size=1", "--set", "llm_batch=1"]) == 0
    assert "TimeLLM" in capsys.readouterr().out
    message = one_line_error(capsys, *use, "--set", "train.learning_rate=0.1")
    assert "--set learning_rate would train a new adapter" in message
    # the horizon is the adapter's own; without an adapter it must be given
    message = one_line_error(capsys, "forecast", data, *TINY_FORECAST)
    assert "--horizon is required" in message


def test_an_ensemble_larger_than_the_step_budget_is_refused(data, tmp_path, capsys):
    out = tmp_path / "f.csv"
    message = one_line_error(
        capsys, "forecast", data, "--horizon", 12, "--ensemble", 8, "--max-steps", 5, "--out", out
    )
    assert "--max-steps 5 is fewer than --ensemble 8" in message and "--max-steps 8 or more" in message
    assert not out.exists()
    with pytest.raises(ValueError, match="max_steps=5 is fewer than ensemble=8"):
        TimeLLMForecaster(12, max_steps=5, ensemble=8)


# --------------------------------------------------------------------------------------------
# data and outputs


def test_a_column_named_twice_is_refused(tmp_path, capsys):
    path = tmp_path / "wide.csv"
    path.write_text("ds,OT,OT\n" + "".join(f"{i},{i % 5},{i % 3}\n" for i in range(100)))
    message = one_line_error(capsys, "forecast", path, "--horizon", 6, "--wide", *TINY_FORECAST)
    assert "names the column 'OT' more than once" in message


def test_a_level_written_as_a_fraction_is_refused_alike_in_python_and_on_the_command_line(data, capsys):
    with pytest.raises(ValueError, match=r"level 0\.8 reads as a fraction.* e\.g\. 80 for a 80 % interval"):
        check_levels([0.8])
    assert check_levels([1, 80]) == (1, 80)
    message = one_line_error(capsys, "forecast", data, "--horizon", 12, "--level", "0.8")
    assert "--level: level 0.8 reads as a fraction" in message


def test_save_pretrained_onto_a_file_says_so(tmp_path):
    forecaster = TimeLLMForecaster(12, config=tiny_config(pred_len=12))
    forecaster.models = [build_model(forecaster.config, ExecutionSettings(), seed=0)]
    taken = tmp_path / "adapter"
    taken.write_text("not a folder")
    with pytest.raises(DataFileError, match=r"cannot write the adapter folder .*adapter: it is a file"):
        forecaster.save_pretrained(taken)
    with pytest.raises(FileExistsError, match="it is a file, not a folder"):
        forecaster.models[0].save_pretrained(taken)
    assert taken.read_text() == "not a folder"
