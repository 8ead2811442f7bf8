"""`timellm forecast`, `backtest` and `example-data`: the README example and every bad input."""

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from timellm.cli import main

# a model of a few hundred weights without any LLM: the CLI's data handling is what is tested here
SMALL = shlex.split(
    "--seq-len 48 --max-steps 2 --set llm=none --set patch_len=8 --set stride=4 --set d_model=8 --set d_ff=16"
)

# the README's example, word for word (the test adds a tiny backbone and budget)
README = [
    "timellm example-data etth1.csv",
    "timellm forecast etth1.csv --horizon 24 --level 80 95 --out forecasts.csv --plot forecasts.png "
    '--description "Hourly oil temperature and loads of an electricity transformer."',
    "timellm backtest etth1.csv --horizon 24 --windows 3 --level 80 95 --plot backtest.png",
]
README_TINY = shlex.split("--backbone tiny-random-llama --max-steps 2 --set d_ff=16 --set num_prototypes=20")
# statsforecast's AutoARIMA takes minutes on these hourly series (season 24): the test keeps the fast ones
README_FAST_BASELINES = ["--baselines", "AutoETS,AutoTheta,SeasonalNaive,Naive"]


INTERVALS = ["TimeLLM-lo-95", "TimeLLM-lo-80", "TimeLLM-hi-80", "TimeLLM-hi-95"]


def write_csv(path, changes=None, lengths=(80, 70)):
    parts = []
    for i, n in enumerate(lengths):
        t = np.arange(n)
        parts.append(
            pd.DataFrame(
                {
                    "unique_id": f"s{i}",
                    "ds": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
                    "y": 10 + np.sin(2 * np.pi * t / 24) + i,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True).astype({"y": object})
    for (row, column), value in (changes or {}).items():
        frame.loc[row, column] = value
    frame.to_csv(path, index=False)
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def one_line_error(capsys, *args) -> str:
    code, _, err = run(capsys, *args)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command in README:
        args = shlex.split(command)[1:]
        if args[0] != "example-data":
            args += README_TINY
        if args[0] == "backtest":
            args += README_FAST_BASELINES
        code, out, err = run(capsys, *args)
        assert code == 0, err
    forecasts = pd.read_csv(tmp_path / "forecasts.csv")
    assert list(forecasts.columns) == ["unique_id", "ds", "TimeLLM", *INTERVALS]
    assert forecasts.groupby("unique_id").size().to_dict() == {"HUFL": 24, "OT": 24}
    assert (tmp_path / "forecasts.png").stat().st_size > 10_000
    assert (tmp_path / "backtest.png").stat().st_size > 10_000
    assert "cover-80" in out and "width-95" in out
    assert "SeasonalNaive" in out and "overall" in out and "MASE" in out
    # seq_len auto on the 750 - 3 x 24 rows of HUFL before the first cutoff: (678 - 43 - 24 + 1) // 2
    assert "AutoETS" in out and "AutoTheta" in out and "look-back 306" in out


def test_forecast_with_a_saved_adapter_needs_no_training(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    code, _, err = run(
        capsys,
        "forecast",
        data,
        "--horizon",
        6,
        "--out",
        tmp_path / "a.csv",
        "--save",
        tmp_path / "m",
        *SMALL,
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "forecast", data, "--horizon", 6, "--out", tmp_path / "b.parquet", "--model", tmp_path / "m"
    )
    assert code == 0, err
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a.csv"), pd.read_parquet(tmp_path / "b.parquet").astype({"ds": str})
    )
    code, out, err = run(
        capsys,
        "backtest",
        data,
        "--horizon",
        6,
        "--windows",
        2,
        "--model",
        tmp_path / "m",
        "--baselines",
        "SeasonalNaive",
    )
    assert code == 0 and "SeasonalNaive" in out, err
    message = one_line_error(capsys, "forecast", data, "--horizon", 12, "--model", tmp_path / "m")
    assert "trained for horizon 6 and look-back 48, not horizon 12" in message
    message = one_line_error(
        capsys, "forecast", data, "--horizon", 6, "--seq-len", 24, "--model", tmp_path / "m"
    )
    assert "not look-back 24" in message
    message = one_line_error(
        capsys, "forecast", data, "--horizon", 6, "--max-steps", 5, "--model", tmp_path / "m"
    )
    assert "--max-steps would train a new adapter" in message


def test_a_constant_series_forecasts_that_constant(tmp_path, capsys):
    frame = pd.DataFrame({"ds": pd.date_range("2024-01-01", periods=70, freq="D"), "y": 4.5})
    frame.to_csv(tmp_path / "flat.csv", index=False)
    code, out, err = run(capsys, "forecast", tmp_path / "flat.csv", "--horizon", 5, *SMALL)
    assert code == 0, err
    forecast = pd.read_csv(io.StringIO(out))
    assert list(forecast.unique_id) == ["y"] * 5 and (forecast.TimeLLM == 4.5).all()


def test_wide_input_and_interpolation(tmp_path, capsys):
    ds = pd.date_range("2024-01-01", periods=80, freq="h")
    wide = pd.DataFrame({"time": ds, "a": np.sin(np.arange(80) / 4), "b": np.cos(np.arange(80) / 4)})
    wide.loc[40, "b"] = np.nan
    wide.to_csv(tmp_path / "wide.csv", index=False)
    message = one_line_error(
        capsys, "forecast", tmp_path / "wide.csv", "--horizon", 6, "--wide", "--time-col", "time", *SMALL
    )
    assert "series 'b': 1 missing value(s) at 2024-01-02 16:00:00 in rows 40" in message
    out_file = tmp_path / "f.csv"
    code, _, err = run(
        capsys,
        "forecast",
        tmp_path / "wide.csv",
        "--horizon",
        6,
        "--wide",
        "--time-col",
        "time",
        "--interpolate",
        "--out",
        out_file,
        *SMALL,
    )
    assert code == 0, err
    assert list(pd.read_csv(out_file).columns) == ["unique_id", "time", "TimeLLM"]


@pytest.mark.parametrize(
    "changes, args, expected",
    [
        ({}, ["--time-col", "when"], "no time column 'when' in the data; found columns: unique_id, ds, y"),
        ({}, ["--id-col", "series"], "no id column 'series'"),
        (
            {(5, "y"): "n/a?"},
            [],
            "series 's0': column 'y' has values that are not numbers ('n/a?') in rows 5",
        ),
        ({(85, "y"): None}, [], "series 's1': 1 missing value(s) at 2024-01-01 05:00:00 in rows 85"),
        ({(7, "ds"): "2024-01-01 06:00:00"}, [], "series 's0': duplicated timestamps"),
        ({(79, "ds"): "2024-01-05 09:30:00"}, [], "irregular timestamps"),
        ({(3, "ds"): "3rd of Jan"}, [], "not dates or times ('3rd of Jan')"),
        (
            {},
            ["--seq-len", "72"],
            "series 's1' is too short: 70 rows, but|needs at least 78 = look-back 72 + horizon 6|--seq-len",
        ),
        ({}, ["--horizon", "0"], "horizon must be a positive integer, found 0"),
        ({}, ["--horizon", "-2"], "horizon must be a positive integer, found -2"),
        ({}, ["--max-steps", "0"], "max_steps must be a positive integer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, changes, args, expected):
    data = write_csv(tmp_path / "data.csv", changes)
    for command in ("forecast", "backtest"):
        message = one_line_error(capsys, command, data, "--horizon", 6, *SMALL, *args)
        for fragment in expected.split("|"):
            assert fragment in message, message


def test_missing_or_empty_files(tmp_path, capsys):
    assert "does not exist" in one_line_error(capsys, "forecast", tmp_path / "none.csv", "--horizon", 3)
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in one_line_error(capsys, "backtest", tmp_path / "empty.csv", "--horizon", 3)
    (tmp_path / "header.csv").write_text("unique_id,ds,y\n")
    assert "no data rows" in one_line_error(capsys, "forecast", tmp_path / "header.csv", "--horizon", 3)


def test_backtest_prints_scores_per_series_and_overall(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv", lengths=(120, 100))
    code, out, err = run(
        capsys,
        "backtest",
        data,
        "--horizon",
        6,
        "--windows",
        2,
        "--out",
        tmp_path / "cv.csv",
        "--baselines",
        "SeasonalNaive",
        *SMALL,
    )
    assert code == 0, err
    assert "2 window(s) x horizon 6" in out and "seasonal period 24" in out
    rows = [line.split() for line in out.splitlines()]
    assert rows[2][:2] == ["s0", "TimeLLM"] and rows[3][0] == "SeasonalNaive"
    assert any(r[:1] == ["overall"] for r in rows)
    assert sum(r[-1:] == ["*"] for r in rows) == 3  # the best model of each series and overall
    cv = pd.read_csv(tmp_path / "cv.csv")
    assert (
        list(cv.columns) == ["unique_id", "ds", "cutoff", "TimeLLM", "y", "SeasonalNaive"] and len(cv) == 24
    )
    message = one_line_error(capsys, "backtest", data, "--horizon", 6, "--windows", 20, *SMALL)
    assert "cross-validation with 20 window(s) needs at least 168" in message and "--seq-len" in message


def test_errors_have_no_traceback_in_a_real_process(tmp_path):
    data = write_csv(tmp_path / "data.csv", {(2, "y"): "abc"})
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "timellm.cli", "forecast", str(data), "--horizon", "6", *SMALL],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("timellm forecast: error: series 's0'")


@pytest.mark.parametrize("level", ["0", "100", "abc", "-5"])
def test_bad_levels_are_one_line_errors(tmp_path, capsys, level):
    data = write_csv(tmp_path / "data.csv")
    for command in ("forecast", "backtest"):
        message = one_line_error(capsys, command, data, "--horizon", 6, "--level", "80", level, *SMALL)
        assert "--level" in message and "between 0 and 100" in message and repr(level)[1:-1] in message


def test_bad_baselines_and_seq_len_are_one_line_errors(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    message = one_line_error(capsys, "backtest", data, "--horizon", 6, "--baselines", "AutoETS,Prophet")
    assert "unknown baseline(s) 'Prophet'" in message
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and the error, status 2
        main(["forecast", str(data), "--horizon", "6", "--seq-len", "long"])
    assert exit_info.value.code == 2
    assert "expected a positive integer or auto, found 'long'" in capsys.readouterr().err


def test_forecast_with_intervals_and_a_backtest_plot_with_coverage(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv", lengths=(160, 140))
    small = [a for a in SMALL if a not in ("--seq-len", "48")]  # the default: --seq-len auto
    code, out, err = run(
        capsys,
        "forecast",
        data,
        "--horizon",
        6,
        "--level",
        95,
        80,
        "--out",
        tmp_path / "f.csv",
        "--plot",
        tmp_path / "f.png",
        *small,
    )
    assert code == 0, err
    assert "seq_len auto: look-back 55" in err  # (140 - 25 - 6 + 1) // 2
    forecasts = pd.read_csv(tmp_path / "f.csv")
    assert list(forecasts.columns)[2:] == [
        "TimeLLM",
        "TimeLLM-lo-95",
        "TimeLLM-lo-80",
        "TimeLLM-hi-80",
        "TimeLLM-hi-95",
    ]
    assert (forecasts["TimeLLM-lo-95"] <= forecasts["TimeLLM-lo-80"]).all()
    assert (tmp_path / "f.png").stat().st_size > 10_000
    code, out, err = run(
        capsys,
        "backtest",
        data,
        "--horizon",
        6,
        "--windows",
        2,
        "--level",
        80,
        "--baselines",
        "AutoETS,SeasonalNaive",
        "--plot",
        tmp_path / "bt.png",
        *small,
    )
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("series"))
    assert header.split() == ["series", "model", "MSE", "MAE", "MASE", "cover-80", "width-80", "seconds"]
    overall = [line.split() for line in out.splitlines() if line.startswith("overall")][0]
    assert overall[1] == "TimeLLM" and 0 <= float(overall[5]) <= 1 and float(overall[6]) > 0
    assert (tmp_path / "bt.png").stat().st_size > 10_000
