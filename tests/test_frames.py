import numpy as np
import pandas as pd
import pytest

from timellm.data.frames import (
    FrameFormat,
    InputDataError,
    example_frame,
    prepare_series,
    read_table,
    season_length,
    write_table,
)


def long_frame(lengths=(30, 20), freq="h", start="2024-01-01"):
    parts = []
    for i, n in enumerate(lengths):
        ds = pd.date_range(start, periods=n, freq=freq)
        parts.append(pd.DataFrame({"unique_id": f"s{i}", "ds": ds, "y": np.arange(n, dtype=float) + 100 * i}))
    return pd.concat(parts, ignore_index=True)


def test_long_frame_series_of_different_lengths_keep_their_order_and_frequency():
    data = prepare_series(long_frame((30, 20)))
    assert data.ids == ["s0", "s1"]
    assert [len(s) for s in data] == [30, 20]
    s1 = data.series[1]
    assert s1.freq_name == "h"
    assert list(s1.future(2)) == list(pd.date_range("2024-01-01 20:00", periods=2, freq="h"))
    np.testing.assert_array_equal(s1.values, np.arange(20) + 100.0)


def test_wide_frame_trims_the_empty_ends_of_shorter_series():
    ds = pd.date_range("2024-01-01", periods=6, freq="D")
    wide = pd.DataFrame({"date": ds, "a": np.arange(6.0), "b": [np.nan, 1, 2, 3, 4, np.nan]})
    data = prepare_series(wide, FrameFormat(time_col="date", wide=True))
    assert data.ids == ["a", "b"]
    assert len(data.series[1]) == 4 and data.series[1].timestamps[0] == ds[1]
    assert data.series[0].freq_name == "D"


def test_two_columns_without_id_are_one_series_named_after_the_values():
    frame = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=5, freq="MS"), "sales": range(5)})
    data = prepare_series(frame, FrameFormat(time_col="when", target_col="sales"))
    assert data.ids == ["sales"]
    assert list(data.series[0].future(1)) == [pd.Timestamp("2024-06-01")]  # month starts continue


def test_unsorted_rows_are_sorted_and_nothing_is_lost():
    frame = long_frame((12,))
    shuffled = frame.sample(frac=1.0, random_state=0)
    a, b = prepare_series(frame).series[0], prepare_series(shuffled).series[0]
    np.testing.assert_array_equal(a.values, b.values)
    assert a.timestamps.equals(b.timestamps)


def test_integer_steps_are_a_frequency():
    frame = pd.DataFrame({"unique_id": "a", "ds": [10, 12, 14, 16], "y": [1.0, 2, 3, 4]})
    series = prepare_series(frame).series[0]
    assert series.freq == 2 and list(series.future(2)) == [18, 20]


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda f: f.rename(columns={"ds": "time"}),
            ["no time column 'ds'", "found columns: unique_id, time, y", "time_col="],
        ),
        (lambda f: f.rename(columns={"y": "value"}), ["no value column 'y'", "target_col=", "wide=True"]),
        (
            lambda f: f.assign(extra=1).rename(columns={"unique_id": "id"}),
            ["no id column 'unique_id'", "id_col="],
        ),
    ],
)
def test_unknown_columns_say_what_was_found_and_how_to_name_them(change, expected):
    with pytest.raises(InputDataError) as err:
        prepare_series(change(long_frame()))
    for text in expected:
        assert text in str(err.value)


def test_non_numeric_values_name_the_series_and_rows():
    frame = long_frame((10, 10)).astype({"y": object})
    frame.loc[13, "y"] = "12,5"
    with pytest.raises(InputDataError, match=r"series 's1'.*not numbers \('12,5'\) in rows 13"):
        prepare_series(frame)


def test_missing_values_are_refused_or_interpolated_on_request():
    frame = long_frame((10, 10))
    frame.loc[[14, 15], "y"] = np.nan
    with pytest.raises(InputDataError) as err:
        prepare_series(frame)
    message = str(err.value)
    assert "series 's1': 2 missing value(s) at 2024-01-01 04:00:00" in message
    assert "rows 14, 15" in message and "interpolate=True" in message
    filled = prepare_series(frame, interpolate=True).series[1].values
    np.testing.assert_allclose(filled, np.arange(10) + 100.0)  # a straight line is restored exactly


def test_missing_timestamps_are_refused_or_filled_on_request():
    frame = long_frame((10,)).drop(index=[4, 5])
    with pytest.raises(
        InputDataError, match=r"2 timestamp\(s\) missing .* 2024-01-01 04:00:00.*interpolate=True"
    ):
        prepare_series(frame)
    series = prepare_series(frame, interpolate=True).series[0]
    assert len(series) == 10 and series.freq_name == "h"
    np.testing.assert_allclose(series.values, np.arange(10.0))


def test_duplicated_timestamps_name_the_rows():
    frame = long_frame((10,))
    frame.loc[7, "ds"] = frame.loc[6, "ds"]
    with pytest.raises(InputDataError, match=r"duplicated timestamps .* rows 6, 7"):
        prepare_series(frame)


def test_irregular_timestamps_cannot_be_given_a_frequency():
    frame = long_frame((6,))
    frame.loc[5, "ds"] = pd.Timestamp("2024-01-01 07:30")
    with pytest.raises(InputDataError, match="irregular timestamps .* no frequency can be inferred"):
        prepare_series(frame, interpolate=True)


def test_unparseable_timestamps_are_named():
    frame = long_frame((5,)).astype({"ds": str})
    frame.loc[3, "ds"] = "yesterday"
    with pytest.raises(InputDataError, match=r"not dates or times \('yesterday'\) in rows 3"):
        prepare_series(frame)


def test_iso_dates_of_several_precisions_parse_but_nothing_is_guessed():
    frame = pd.DataFrame({"ds": ["2024-01-01", "2024-01-02 00:00", "2024-01-03T00:00:00"], "y": [1.0, 2, 3]})
    assert prepare_series(frame).series[0].freq_name == "D"
    frame.loc[1, "ds"] = "2nd of Jan"
    with pytest.raises(InputDataError, match="not dates or times"):
        prepare_series(frame)


def test_read_table_errors_are_one_line(tmp_path):
    with pytest.raises(InputDataError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputDataError, match="is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("unique_id,ds,y\n")
    with pytest.raises(InputDataError, match="no data rows"):
        read_table(tmp_path / "header.csv")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputDataError, match="not a readable Parquet file") as err:
        read_table(tmp_path / "bad.parquet")
    assert "\n" not in str(err.value)


def test_parquet_and_csv_round_trip(tmp_path):
    frame = long_frame((5, 3))
    for name in ("data.parquet", "data.csv"):
        back = prepare_series(read_table(write_table(frame, tmp_path / name)))
        assert [len(s) for s in back] == [5, 3] and back.series[0].freq_name == "h"


def test_season_length_follows_the_frequency():
    from pandas.tseries.frequencies import to_offset

    expected = {"h": 24, "15min": 96, "D": 7, "W-SUN": 52, "MS": 12, "QS-OCT": 4, "YE-DEC": 1, "2h": 12}
    assert {f: season_length(to_offset(f)) for f in expected} == expected
    assert season_length(1) == 1


def test_example_frame_is_two_hourly_series_of_etth1():
    frame = example_frame(100)
    data = prepare_series(frame)
    assert data.ids == ["OT", "HUFL"] and [len(s) for s in data] == [100, 75]
    assert all(s.freq_name == "h" for s in data)
