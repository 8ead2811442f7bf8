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
    message = one_line_error(
        capsys, "forecast", data, "--horizon", 6, "--set", "d_ff=8", "--model", tmp_path / "m"
    )
    assert "--set d_ff would train a new adapter" in message
    # how the saved adapter runs is not training: its frozen weights stored in bf16, one series at a time
    code, out, err = run(
        capsys, "forecast", data, "--horizon", 6, "--model", tmp_path / "m", "--set", "weights=bf16",
        "--set", "llm_batch=1",
    )  # fmt: skip
    assert code == 0 and "TimeLLM" in out, err


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
        ({}, ["--max-steps", "0"], "--max-steps must be a positive integer"),
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
    assert "cross-validation with 20 window(s) needs at least 168" in message
    # the windows take the rows, not the look-back: a shorter look-back cannot help, and is not advised
    assert "fewer --windows" in message and "--seq-len" not in message
    message = one_line_error(
        capsys, "backtest", data, "--horizon", 6, "--windows", 10, "--seq-len", 60, *SMALL[2:]
    )
    assert "--seq-len ...: at most" in message  # here it can


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
    message = one_line_error(capsys, "forecast", data, "--horizon", 6, "--val-size", 6, "--level", 95, *SMALL)
    assert "a 95 % interval needs at least 19 held-out validation windows" in message
    assert (
        "this forecaster has 2: fit it with a larger --val-size ..." in message
    )  # the option, not val_size=
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
    assert header.split() == [
        "series",
        "model",
        "MSE",
        "MAE",
        "MASE",
        "cover-80",
        "width-80",
        "MSIS-80",
        "seconds",
    ]
    overall = [line.split() for line in out.splitlines() if line.startswith("overall")][0]
    assert overall[1] == "TimeLLM" and 0 <= float(overall[5]) <= 1 and float(overall[6]) > 0
    assert (tmp_path / "bt.png").stat().st_size > 10_000


# ------------------------------------------------------------------------------------------------
# issue 17: a user's data never gets a silently wrong answer; every check before training


def refused_before_training(capsys, *args) -> str:
    """The one error line of a command that must fail before any training step."""
    code, _, err = run(capsys, *args)
    assert code == 2 and "Traceback" not in err, err
    assert "training on" not in err, err  # refused before training started
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def scaled(path, factor):
    frame = pd.read_csv(write_csv(path))
    frame["y"] *= factor
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("command", ["forecast", "backtest"])
def test_values_that_cannot_be_standardised_are_refused(tmp_path, capsys, command):
    data = write_csv(tmp_path / "one.csv", {(3, "y"): 1e308})
    message = refused_before_training(capsys, command, data, "--horizon", 6, *SMALL)
    assert "series 's0': column 'y' has values as large as 1e+308 in rows 3" in message
    message = refused_before_training(
        capsys, command, scaled(tmp_path / "all.csv", 1e300), "--horizon", 6, *SMALL
    )
    assert "at most 1e+150" in message and "rescale the series" in message


def test_ids_with_leading_zeros_come_back_as_written(tmp_path, capsys):
    frame = pd.read_csv(write_csv(tmp_path / "data.csv"))
    frame["unique_id"] = frame["unique_id"].map({"s0": "007", "s1": "0070"})
    frame.to_csv(tmp_path / "zeros.csv", index=False)
    code, out, err = run(capsys, "forecast", tmp_path / "zeros.csv", "--horizon", 6, *SMALL)
    assert code == 0, err
    assert pd.read_csv(io.StringIO(out), dtype={"unique_id": str}).unique_id.unique().tolist() == [
        "007",
        "0070",
    ]
    frame["unique_id"] = frame["unique_id"].map({"007": "1", "0070": "1.0"})
    frame.loc[frame.index[-30:], "unique_id"] = "NA"  # an id, not a missing value
    frame.to_csv(tmp_path / "ones.csv", index=False)
    code, out, err = run(
        capsys, "forecast", tmp_path / "ones.csv", "--horizon", 6, "--seq-len", 16, *SMALL[2:]
    )
    assert code == 0, err
    ids = pd.read_csv(io.StringIO(out), dtype={"unique_id": str}, keep_default_na=False).unique_id.unique()
    assert ids.tolist() == ["1", "1.0", "NA"]


def test_a_saved_pandas_index_in_a_wide_table_is_refused(tmp_path, capsys):
    ds = pd.date_range("2024-01-01", periods=80, freq="h")
    pd.DataFrame({"ds": ds, "HUFL": np.sin(np.arange(80) / 4), "OT": np.cos(np.arange(80) / 4)}).to_csv(
        tmp_path / "wide.csv"  # with pandas' default index=True
    )
    message = refused_before_training(
        capsys, "forecast", tmp_path / "wide.csv", "--wide", "--horizon", 6, *SMALL
    )
    assert "column 0 of the data has no name in the header (read as 'Unnamed: 0')" in message
    assert "index=False" in message


@pytest.mark.parametrize(
    "option", [["--target-col", "TimeLLM"], ["--id-col", "cutoff"], ["--time-col", "SeasonalNaive"]]
)
def test_input_columns_named_like_an_output_column_are_refused(tmp_path, capsys, option):
    frame = pd.read_csv(write_csv(tmp_path / "data.csv"))
    names = {"--target-col": "y", "--id-col": "unique_id", "--time-col": "ds"}
    frame.rename(columns={names[option[0]]: option[1]}).to_csv(tmp_path / "clash.csv", index=False)
    for command in ("forecast", "backtest"):
        message = refused_before_training(
            capsys, command, tmp_path / "clash.csv", "--horizon", 6, *option, *SMALL
        )
        assert f"{option[0]} '{option[1]}' clashes with the column '{option[1]}'" in message


def test_a_description_too_long_for_the_backbone_is_refused_before_training(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    tiny = [
        "--backbone",
        "tiny-random-llama",
        "--seq-len",
        48,
        "--set",
        "d_ff=16",
        "--set",
        "num_prototypes=20",
    ]
    message = refused_before_training(
        capsys, "forecast", data, "--horizon", 6, *tiny, "--description", "word " * 9600
    )
    assert "the LLM input needs up to" in message and "backbone 'tiny-random-llama' has 2048" in message
    assert "a shorter --description" in message and "48000 characters" in message


def test_a_d_ff_too_wide_for_the_backbone_names_the_option(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    message = refused_before_training(
        capsys, "forecast", data, "--horizon", 6, "--backbone", "tiny-random-llama", "--seq-len", 48
    )
    assert (
        "d_ff (128) must not exceed the backbone's hidden size (32" in message and "--set d_ff=32" in message
    )


def test_outputs_are_checked_before_training(tmp_path, capsys, monkeypatch):
    import timellm.data.files as files

    data = write_csv(tmp_path / "data.csv")
    message = refused_before_training(
        capsys, "forecast", data, "--horizon", 6, "--out", tmp_path / "f.xlsx", *SMALL
    )
    assert "unknown format '.xlsx'" in message and not (tmp_path / "f.xlsx").exists()
    assert "unknown format" in one_line_error(capsys, "example-data", tmp_path / "e.xlsx")
    (tmp_path / "file").write_text("")
    message = refused_before_training(
        capsys,
        "forecast",
        data,
        "--horizon",
        6,
        "--out",
        tmp_path / "f.csv",
        "--save",
        tmp_path / "file" / "m",
        *SMALL,
    )
    assert "cannot write the --save folder" in message and "is a file, not a folder" in message
    assert not (tmp_path / "f.csv").exists()
    monkeypatch.setattr(files, "parquet_available", lambda: False)  # as without pyarrow
    for command in ("forecast", "backtest"):
        message = refused_before_training(
            capsys, command, data, "--horizon", 6, "--out", tmp_path / "x.parquet", *SMALL
        )
        assert "writing the --out file" in message and "needs pyarrow" in message


def test_the_advised_look_back_is_one_that_fits(tmp_path, capsys):
    data = write_csv(tmp_path / "short.csv", lengths=(59,))
    message = refused_before_training(capsys, "forecast", data, "--horizon", 12, *SMALL)
    assert "lower the look-back with --seq-len ...: at most 35" in message
    code, out, err = run(capsys, "forecast", data, "--horizon", 12, "--seq-len", 35, *SMALL[2:])
    assert code == 0, err
    assert len(pd.read_csv(io.StringIO(out))) == 12


def test_awkward_but_valid_input_gives_the_right_answer(tmp_path, capsys):
    months = pd.date_range("2015-01-01", periods=80, freq="MS").delete(30)  # one month missing
    frame = pd.DataFrame({"ds": months, "y": np.sin(np.arange(79) / 3)})
    frame.to_csv(tmp_path / "monthly.csv", index=False)
    message = refused_before_training(capsys, "forecast", tmp_path / "monthly.csv", "--horizon", 6, *SMALL)
    assert (
        "1 timestamp(s) missing from its grid of step MS (first: 2017-07-01" in message
        and "--interpolate" in message
    )
    code, out, err = run(
        capsys, "forecast", tmp_path / "monthly.csv", "--horizon", 6, "--interpolate", *SMALL
    )
    assert code == 0, err
    assert pd.read_csv(io.StringIO(out)).ds.iloc[0] == "2021-09-01"  # 80 months from 2015-01, then the next

    berlin = pd.date_range("2024-03-30", periods=80, freq="h", tz="Europe/Berlin")  # across the DST change
    frame = pd.DataFrame({"ds": berlin.strftime("%Y-%m-%d %H:%M%z"), "y": np.sin(np.arange(80) / 4)})
    frame.to_csv(tmp_path / "dst.csv", index=False)
    code, out, err = run(capsys, "forecast", tmp_path / "dst.csv", "--horizon", 6, *SMALL)
    assert code == 0, err
    assert pd.read_csv(io.StringIO(out)).ds.iloc[0] == str(
        berlin[-1].tz_convert("UTC") + pd.Timedelta(hours=1)
    )

    write_csv(tmp_path / "plain.csv")
    (tmp_path / "packed.csv").write_bytes(__import__("gzip").compress((tmp_path / "plain.csv").read_bytes()))
    code, out, err = run(capsys, "forecast", tmp_path / "packed.csv", "--horizon", 6, *SMALL)
    assert code == 0, err
    _, plain, _ = run(capsys, "forecast", tmp_path / "plain.csv", "--horizon", 6, *SMALL)
    assert out == plain


def test_misleading_answers_are_now_clear(tmp_path, capsys):
    dates = pd.date_range("2024-01-01", periods=80, freq="D").strftime("%d/%m/%Y")
    pd.DataFrame({"ds": dates, "y": np.arange(80.0)}).to_csv(tmp_path / "dayfirst.csv", index=False)
    message = refused_before_training(capsys, "forecast", tmp_path / "dayfirst.csv", "--horizon", 6, *SMALL)
    assert "('13/01/2024'" in message and "day-first" in message
    rows = "\n".join(f"a, 2024-01-01 {h:02d}:00, {h}" for h in range(24))
    (tmp_path / "spaces.csv").write_text("unique_id, ds, y\n" + rows + "\n")
    message = refused_before_training(capsys, "forecast", tmp_path / "spaces.csv", "--horizon", 6, *SMALL)
    assert "found columns: unique_id, ' ds', ' y'" in message and "spaces around its name" in message
    data = write_csv(tmp_path / "data.csv")
    message = refused_before_training(capsys, "backtest", data, "--horizon", 6, "--season", 100, *SMALL)
    assert "--season 100 is not shorter than the history before the first cutoff of any series" in message
    code, out, err = run(capsys, "backtest", data, "--horizon", 6, "--season", 70, *SMALL)
    assert code == 0, err
    assert "series 's1': 64 rows before the first cutoff, not more than one season (70)" in err


# issue 27: no command overwrites its input; names that clash with the output; a series named overall


def test_an_output_that_is_an_input_is_refused_and_nothing_written(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    before = data.read_bytes()
    for command in ("forecast", "backtest"):
        message = refused_before_training(capsys, command, data, "--horizon", 6, "--out", data, *SMALL)
        assert f"cannot write the --out file {data}: it would overwrite the input {data}" in message
    link = tmp_path / "same.csv"
    link.symlink_to(data)
    message = refused_before_training(capsys, "backtest", data, "--horizon", 6, "--scores", link, *SMALL)
    assert "would overwrite the input" in message
    relative = Path(os.path.relpath(data))  # the same file by another spelling
    message = refused_before_training(capsys, "forecast", relative, "--horizon", 6, "--out", data, *SMALL)
    assert "would overwrite the input" in message
    assert data.read_bytes() == before
    code, _, err = run(capsys, "forecast", data, "--horizon", 6, "--save", tmp_path / "m", *SMALL)
    assert code == 0, err
    config = (tmp_path / "m" / "config.json").read_bytes()
    message = one_line_error(
        capsys,
        "forecast",
        data,
        "--horizon",
        6,
        "--model",
        tmp_path / "m",
        "--out",
        tmp_path / "m" / "config.json",
    )
    assert "would overwrite the input" in message or "unknown format" in message
    message = one_line_error(
        capsys, "forecast", tmp_path / "m" / "config.json", "--horizon", 6, "--save", tmp_path / "m", *SMALL
    )
    assert "cannot write the --save folder" in message and "would overwrite the input" in message
    assert (tmp_path / "m" / "config.json").read_bytes() == config


@pytest.mark.parametrize(
    "option, name",
    [("--target-col", "Naive"), ("--time-col", "AutoETS"), ("--id-col", "model"), ("--target-col", "MASE")],
)
def test_column_names_that_clash_with_any_output_column_are_refused(tmp_path, capsys, option, name):
    data = write_csv(tmp_path / "data.csv")
    frame = pd.read_csv(data).rename(columns={"y": "Naive", "ds": "AutoETS", "unique_id": "model"})
    frame.to_csv(data, index=False)
    message = refused_before_training(capsys, "backtest", data, "--horizon", 6, option, name, *SMALL)
    assert f"'{name}' clashes with the column '{name}'" in message


def test_a_series_named_overall_is_refused_in_a_backtest(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    frame = pd.read_csv(data)
    frame.loc[frame.unique_id == "s1", "unique_id"] = "overall"
    frame.to_csv(data, index=False)
    message = refused_before_training(
        capsys, "backtest", data, "--horizon", 6, "--out", tmp_path / "cv.csv", *SMALL
    )
    assert "a series is named 'overall'" in message and not (tmp_path / "cv.csv").exists()


def test_a_series_id_that_looks_like_a_setting_is_quoted_as_written(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv", lengths=(80, 20))
    frame = pd.read_csv(data)
    frame.loc[frame.unique_id == "s1", "unique_id"] = "val_size=3"
    frame.to_csv(data, index=False)
    message = refused_before_training(capsys, "forecast", data, "--horizon", 6, *SMALL)
    assert "series 'val_size=3'" in message and "--seq-len" in message


def test_backtest_table_and_scores_file_have_msis_per_level(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv", lengths=(160, 150))
    frame = pd.read_csv(data)
    frame["y"] += np.random.default_rng(0).normal(0, 0.3, len(frame))  # a seasonal naive error: MSIS defined
    frame.to_csv(data, index=False)
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
        "SeasonalNaive,Naive",
        "--scores",
        tmp_path / "scores.csv",
        *SMALL,
    )
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("series"))
    assert "cover-80" in header and "width-80" in header and "MSIS-80" in header
    scores = pd.read_csv(tmp_path / "scores.csv", dtype={"unique_id": str})
    assert {"MSIS-80", "best-MSIS-80"} <= set(scores.columns)
    assert scores.groupby("unique_id")["best-MSIS-80"].sum().eq(1).all()
    marked = [
        line for line in out.splitlines() if any(f"{v:.3f}*" in line for v in scores["MSIS-80"].dropna())
    ]
    assert len(marked) == 3  # the best MSIS of s0, s1 and overall


def test_the_baseline_budget_is_an_option_and_a_dropped_model_says_how_to_keep_it(
    tmp_path, capsys, monkeypatch
):
    from timellm.evaluation import statistical

    real = statistical._model

    class Slow:
        def __init__(self, model):
            self.model = model

        def forecast(self, **kwargs):
            import time

            time.sleep(1.0)
            return self.model.forecast(**kwargs)

    monkeypatch.setattr(
        statistical,
        "_model",
        lambda name, season: Slow(real(name, season)) if name == "AutoTheta" else real(name, season),
    )
    data = write_csv(tmp_path / "data.csv")
    code, out, err = run(
        capsys,
        "backtest",
        data,
        "--horizon",
        6,
        "--baselines",
        "AutoTheta,Naive",
        "--baseline-budget",
        0.2,
        *SMALL,
    )
    assert code == 0, err
    assert (
        "AutoTheta dropped: it ran past its time budget of 0.2 s" in err
        and "--baseline-budget SECONDS" in err
    )
    assert "AutoTheta" not in out and "Naive" in out
