import numpy as np
import pandas as pd
import pytest

from test_ablation import write_hourly_csv
from timellm.data.benchmarks import DataError
from timellm.data.errors import ColumnError, InputDataError, TimestampError
from timellm.data.sources import DataSource, csv_splits, infer_period


def test_wide_and_long_csv_give_the_same_splits(tmp_path):
    wide_path = write_hourly_csv(tmp_path / "wide.csv", rows=300, channels=2)
    wide = pd.read_csv(wide_path)
    long = wide.melt(id_vars="date", var_name="series", value_name="y").sample(frac=1, random_state=0)
    long.to_csv(tmp_path / "long.csv", index=False)
    a = csv_splits(wide_path, 24, 6, time_col="date")
    b = csv_splits(tmp_path / "long.csv", 24, 6, time_col="date", id_col="series", target_cols=["y"])
    assert a.columns == b.columns == ["load0", "load1"]
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert a.period == 24  # hourly rows
    assert a.train.shape == (210, 2) and a.test.shape == (60 + 24, 2)  # 70 % / 20 %, seq_len before
    np.testing.assert_allclose(a.train.mean(axis=0), 0, atol=1e-6)  # scaled with train rows only


def test_a_source_round_trips_through_a_dict(tmp_path):
    source = DataSource(csv=str(tmp_path / "x.csv"), time_col="t", target_cols=("a", "b"), period=7)
    assert DataSource.from_dict(source.to_dict()) == source
    assert DataSource.from_dict(DataSource(benchmark="ETTh1").to_dict()).benchmark == "ETTh1"
    with pytest.raises(DataError, match="either a benchmark or a CSV"):
        DataSource()


def test_period_inference_and_csv_errors(tmp_path):
    assert infer_period(pd.Series(pd.date_range("2024", periods=5, freq="15min"))) == 96
    assert infer_period(pd.Series(pd.date_range("2024", periods=5, freq="MS"))) == 12
    assert infer_period(pd.Series(pd.date_range("2024", periods=5, freq="7min"))) is None
    path = tmp_path / "plain.csv"
    pd.DataFrame({"y": np.arange(200.0)}).to_csv(path, index=False)
    with pytest.raises(DataError, match="pass period="):
        csv_splits(path, 24, 6)
    assert csv_splits(path, 24, 6, period=5).period == 5
    with pytest.raises(ColumnError, match=r"no column\(s\) \['z'\]"):
        csv_splits(path, 24, 6, target_cols=["z"], period=5)
    with pytest.raises(DataError, match="fewer than seq_len"):
        csv_splits(path, 96, 24, period=5)
    hours = [
        "2024-01-01 00:00",
        "2024-01-01 01:00",
        "2024-01-01 02:00",
        "2024-01-01 00:00",
        "2024-01-01 01:00",
    ]
    gappy = pd.DataFrame({"t": hours, "id": [1, 1, 1, 2, 2]})
    gappy["v"] = 1.0
    gappy.to_csv(tmp_path / "gappy.csv", index=False)
    with pytest.raises(TimestampError, match=r"series \['2'\] .* lack values"):
        csv_splits(tmp_path / "gappy.csv", 1, 1, time_col="t", id_col="id", period=1)


def test_csv_sources_follow_the_rules_of_the_one_reader(tmp_path):
    wide = pd.read_csv(write_hourly_csv(tmp_path / "wide.csv", rows=300, channels=2))
    long = wide.melt(id_vars="date", var_name="series", value_name="y")
    long["series"] = long["series"].map({"load0": "007", "load1": "0070"})
    long.to_csv(tmp_path / "ids.csv", index=False)
    splits = csv_splits(tmp_path / "ids.csv", 24, 6, time_col="date", id_col="series", target_cols=["y"])
    assert splits.columns == ["007", "0070"]  # ids as written, not 7 and 70
    duplicated = long.copy()
    duplicated.loc[1, "date"] = duplicated.loc[0, "date"]
    duplicated.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(TimestampError, match="series '007': duplicated timestamps"):
        csv_splits(tmp_path / "dup.csv", 24, 6, time_col="date", id_col="series", target_cols=["y"])
    huge = wide.copy()
    huge.loc[7, "load1"] = 1e300
    huge.to_csv(tmp_path / "huge.csv", index=False)
    with pytest.raises(InputDataError, match="series 'load1': .* values as large as 1e\\+300 in rows 7"):
        csv_splits(tmp_path / "huge.csv", 24, 6, time_col="date")
    wide.drop(columns="date").to_csv(tmp_path / "steps.csv", index=False)  # no time column: rows in order
    steps = csv_splits(tmp_path / "steps.csv", 24, 6, period=24)
    np.testing.assert_array_equal(
        steps.train, csv_splits(tmp_path / "wide.csv", 24, 6, time_col="date").train
    )
