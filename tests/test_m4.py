import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from timellm.data.m4 import (
    FREQUENCIES,
    M4FileNotFoundError,
    M4WindowDataset,
    forecast_inputs,
    get_frequency,
    load_m4,
    load_naive2,
    read_train,
    validation_set,
)
from timellm.evaluation.baselines import last_value_forecast, seasonal_naive_forecast
from timellm.evaluation.m4 import score_m4


def _find_data_dir() -> Path | None:
    candidates = [os.environ.get("TIMELLM_DATA"), Path(__file__).resolve().parents[2] / "shared" / "datasets"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "m4" / "submission-Naive2.csv.gz").is_file():
            return Path(candidate)
    return None


DATA_DIR = _find_data_dir()
needs_data = pytest.mark.skipif(
    DATA_DIR is None,
    reason="M4 files not found: set TIMELLM_DATA to the datasets folder (holding m4/) or place ../shared/datasets",
)

# the M4 competition's published Naive2 scores
NAIVE2_SMAPE = {"Yearly": 16.342, "Quarterly": 11.012, "Weekly": 9.161, "Daily": 3.045, "Hourly": 18.383}
NAIVE2_MASE = {"Weekly": 2.777, "Hourly": 2.395}


def _write_csv_gz(path: Path, rows: list[tuple[str, list[float]]], width: int | None = None) -> None:
    """An M4-style file: quoted V1..Vk header, the id, the values, empty cells after a short row."""
    width = width or max(len(v) for _, v in rows)
    lines = [",".join(f'"V{i + 1}"' for i in range(width + 1))]
    for series_id, values in rows:
        cells = [f'"{v:g}"' for v in values] + [""] * (width - len(values))
        lines.append(",".join([f'"{series_id}"', *cells]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


@pytest.fixture
def tiny_m4(tmp_path: Path) -> Path:
    """A datasets folder with three ragged Weekly series (horizon 13), their test rows and Naive2."""
    rng = np.random.default_rng(0)
    histories = [rng.uniform(50, 150, size=n).round(2).tolist() for n in (20, 31, 15)]
    tests = [rng.uniform(50, 150, size=13).round(2).tolist() for _ in histories]
    ids = ["W1", "W2", "W3"]
    _write_csv_gz(tmp_path / "m4" / "Weekly-train.csv.gz", list(zip(ids, histories, strict=True)))
    _write_csv_gz(tmp_path / "m4" / "Weekly-test.csv.gz", list(zip(ids, tests, strict=True)))
    naive = [("Y1", [1.0] * 6)] + [(i, [h[-1]] * 13) for i, h in zip(ids, histories, strict=True)]
    header = "id," + ",".join(f"F{i}" for i in range(1, 49))
    body = [f"{i}," + ",".join([f"{v:g}" for v in vals] + ["NA"] * (48 - len(vals))) for i, vals in naive]
    with gzip.open(tmp_path / "m4" / "submission-Naive2.csv.gz", "wt") as handle:
        handle.write("\n".join([header, *body]) + "\n")
    return tmp_path


# ------------------------------------------------------------------------------------------------
# the frequency table


def test_frequency_table_matches_the_competition():
    table = {f.letter: (f.horizon, f.period) for f in FREQUENCIES.values()}
    assert table == {"Y": (6, 1), "Q": (8, 4), "M": (18, 12), "W": (13, 1), "D": (14, 1), "H": (48, 24)}
    assert sum(f.num_series for f in FREQUENCIES.values()) == 100_000
    assert get_frequency("h") is get_frequency("Hourly") is FREQUENCIES["Hourly"]
    assert FREQUENCIES["Hourly"].seq_len == 96
    with pytest.raises(ValueError, match="unknown M4 frequency 'Minutely'"):
        get_frequency("Minutely")


# ------------------------------------------------------------------------------------------------
# files


def test_ragged_train_rows_lose_their_padding(tiny_m4):
    ids, series = read_train(tiny_m4 / "m4" / "Weekly-train.csv.gz")
    assert ids == ["W1", "W2", "W3"]
    assert [len(s) for s in series] == [20, 31, 15]
    assert all(s.dtype == np.float64 and np.isfinite(s).all() for s in series)
    data = load_m4("W", tiny_m4)
    assert data.test.shape == (3, 13)
    assert data.ids == ids


def test_a_gap_inside_a_history_is_an_error(tmp_path):
    path = tmp_path / "Weekly-train.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('"V1","V2","V3","V4"\n"W1","1","","3"\n')
    with pytest.raises(ValueError, match="W1 must be a run of values"):
        read_train(path)


def test_missing_file_names_it_and_says_who_supplies_it(tiny_m4):
    with pytest.raises(M4FileNotFoundError, match=r"Yearly-train\.csv\.gz .*supplied by the user") as info:
        load_m4("Yearly", tiny_m4)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in str(info.value)


def test_train_and_test_ids_must_align(tiny_m4):
    _write_csv_gz(tiny_m4 / "m4" / "Weekly-test.csv.gz", [("W1", [1.0] * 13), ("W3", [1.0] * 13)])
    with pytest.raises(
        ValueError, match="train and test files disagree: 3 vs 2 series, first difference at row 1"
    ):
        load_m4("Weekly", tiny_m4)


@needs_data
def test_real_files_load_and_align():
    data = load_m4("Hourly", DATA_DIR)
    assert len(data.ids) == len(data.train) == 414
    assert data.test.shape == (414, 48)
    assert min(len(s) for s in data.train) >= 700


# ------------------------------------------------------------------------------------------------
# windows and the validation split


def test_validation_never_touches_the_test_file(tiny_m4):
    (tiny_m4 / "m4" / "Weekly-test.csv.gz").unlink()  # the test file cannot leak if it is not there
    data = load_m4("Weekly", tiny_m4, test=False)
    x, y = data.validation_set()
    assert x.shape == (3, 26, 1) and y.shape == (3, 13, 1)
    for i, series in enumerate(data.train):
        assert np.allclose(y[i, :, 0].numpy(), series[-13:], rtol=1e-6)
        context = series[:-13][-26:]
        assert np.allclose(x[i, -len(context) :, 0].numpy(), context, rtol=1e-6)
    # no training target reaches into the validation target
    windows = data.training_windows(holdout=True)
    for s, c in zip(windows.series_index, windows.cut, strict=True):
        assert c + 13 <= len(data.train[s]) - 13


@needs_data
def test_real_validation_targets_are_training_data_not_the_test_set():
    data = load_m4("Weekly", DATA_DIR)
    _, y = data.validation_set()
    tails = np.stack([s[-13:] for s in data.train])
    assert np.allclose(y[..., 0].numpy(), tails, rtol=1e-6)
    assert not np.allclose(y[..., 0].numpy(), data.test, rtol=1e-3)
    inputs = data.forecast_inputs()
    assert inputs.shape == (359, 26, 1)
    assert np.allclose(inputs[:, -1, 0].numpy(), [s[-1] for s in data.train], rtol=1e-6)


def test_window_dataset_enumerates_cut_points_and_pads_the_front():
    series = [np.arange(1.0, 11.0), np.arange(100.0, 104.0)]  # lengths 10 and 4
    ds = M4WindowDataset(series, seq_len=4, horizon=2, holdout=False)
    # cut points 1..8 of the first series, 1..2 of the second
    assert len(ds) == 8 + 2
    x, y = ds[0]
    assert x.shape == (4, 1) and y.shape == (2, 1) and x.dtype == torch.float32
    assert x[:, 0].tolist() == [1.0, 1.0, 1.0, 1.0]  # one real value, repeated at the front
    assert y[:, 0].tolist() == [2.0, 3.0]
    x, y = ds[7]  # the last window of the first series: its target ends at the series' end
    assert x[:, 0].tolist() == [5.0, 6.0, 7.0, 8.0] and y[:, 0].tolist() == [9.0, 10.0]
    x, y = ds[9]
    assert x[:, 0].tolist() == [100.0, 100.0, 100.0, 101.0] and y[:, 0].tolist() == [102.0, 103.0]

    recent = M4WindowDataset(series, seq_len=4, horizon=2, holdout=True, max_windows_per_series=3)
    assert recent.cut.tolist() == [4, 5, 6]  # the second series (2 values after the holdout) has none
    assert recent[2][1][:, 0].tolist() == [7.0, 8.0]


def test_forecast_inputs_are_the_last_points_of_the_full_history():
    series = [np.arange(10.0), np.array([5.0, 6.0])]
    x = forecast_inputs(series, seq_len=4)
    assert x.shape == (2, 4, 1)
    assert x[:, :, 0].tolist() == [[6.0, 7.0, 8.0, 9.0], [5.0, 5.0, 5.0, 6.0]]
    with pytest.raises(ValueError, match="more than horizon=2"):
        validation_set(series, seq_len=4, horizon=2)


# ------------------------------------------------------------------------------------------------
# scoring


def test_score_of_perfect_and_naive2_forecasts(tiny_m4):
    data = load_m4("Weekly", tiny_m4)
    perfect = score_m4({"W": data.test}, tiny_m4)
    assert perfect.loc["Weekly", "SMAPE"] == 0 and perfect.loc["Weekly", "MASE"] == 0
    assert perfect.loc["Average", "OWA"] == 0
    naive = load_naive2("Weekly", tiny_m4, data.ids)
    assert naive[:, 0] == pytest.approx([s[-1] for s in data.train])
    table = score_m4({"Weekly": torch.tensor(naive)[..., None]}, tiny_m4)  # a model's (n, H, 1)
    assert table.loc["Weekly", "OWA"] == pytest.approx(1.0)
    assert table.loc["Average", "series"] == 3
    with pytest.raises(ValueError, match=r"Weekly must have shape \(3, 13\).*found \(3, 12\)"):
        score_m4({"Weekly": naive[:, :12]}, tiny_m4)


@needs_data
@pytest.mark.parametrize("name", sorted(NAIVE2_SMAPE))
def test_naive2_reproduces_the_published_smape(name):
    data = load_m4(name, DATA_DIR, train=False)
    table = score_m4({name: load_naive2(name, DATA_DIR, data.ids)}, DATA_DIR)
    assert table.loc[name, "SMAPE"] == pytest.approx(NAIVE2_SMAPE[name], abs=0.01)
    if name not in NAIVE2_MASE:  # no train file here: MASE cannot be computed
        assert math.isnan(table.loc[name, "MASE"])


@needs_data
def test_naive2_reproduces_the_published_mase_and_scores_owa_one():
    forecasts = {}
    for name in NAIVE2_MASE:
        data = load_m4(name, DATA_DIR, train=False)
        forecasts[name] = load_naive2(name, DATA_DIR, data.ids)
    table = score_m4(forecasts, DATA_DIR)
    for name, expected in NAIVE2_MASE.items():
        assert table.loc[name, "MASE"] == pytest.approx(expected, abs=0.01)
        assert table.loc[name, "SMAPE"] == pytest.approx(NAIVE2_SMAPE[name], abs=0.01)
    assert table["OWA"].to_numpy() == pytest.approx(1.0)
    # the overall row weighs each frequency by its number of series
    weights = np.array([359, 414]) / 773
    assert table.loc["Average", "SMAPE"] == pytest.approx(weights @ [9.161, 18.383], abs=0.01)


@needs_data
def test_naive_baselines_on_the_forecast_inputs_reproduce_the_published_benchmarks():
    """End to end: forecast inputs -> a baseline -> score; the M4 benchmarks sNaive and Naive1."""
    hourly, weekly = load_m4("Hourly", DATA_DIR), load_m4("Weekly", DATA_DIR)
    table = score_m4(
        {
            "Hourly": seasonal_naive_forecast(hourly.forecast_inputs(), 48, period=24),
            "Weekly": last_value_forecast(weekly.forecast_inputs(), 13),
        },
        DATA_DIR,
    )
    assert table.loc["Hourly", ["SMAPE", "MASE"]].tolist() == pytest.approx([13.912, 1.193], abs=0.01)
    assert table.loc["Weekly", ["SMAPE", "MASE"]].tolist() == pytest.approx([9.161, 2.777], abs=0.01)
