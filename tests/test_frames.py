import numpy as np
import pandas as pd
import pytest

import timellm
import timellm.data.files as files
from timellm.data.errors import (
    ColumnError,
    DataError,
    DataFileError,
    InputDataError,
    SeriesLengthError,
    TimestampError,
    ValueDataError,
)
from timellm.data.example import example_frame
from timellm.data.files import check_output_path, check_table_path, read_table, write_table
from timellm.data.frames import prepare_series
from timellm.data.frequency import season_length
from timellm.data.lookback import max_seq_len
from timellm.data.series import FrameFormat


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
    expected.update({"7min": 1, "5h": 1, "24h": 1})  # no whole number of steps in a day: no season
    assert {f: season_length(to_offset(f)) for f in expected} == expected
    assert season_length(pd.DateOffset(months=1)) == 12 and season_length(pd.DateOffset(months=5)) == 1
    assert season_length(1) == 1


def test_example_frame_is_two_hourly_series_of_etth1():
    frame = example_frame(100)
    data = prepare_series(frame)
    assert data.ids == ["OT", "HUFL"] and [len(s) for s in data] == [100, 75]
    assert all(s.freq_name == "h" for s in data)


# ------------------------------------------------------------------------------------------------
# issue 17: no silently wrong answer


def test_one_error_hierarchy_for_bad_data():
    assert timellm.InputDataError is InputDataError
    for error in (ColumnError, DataError, DataFileError, SeriesLengthError, TimestampError, ValueDataError):
        assert issubclass(error, InputDataError) and issubclass(error, ValueError)


def test_ids_are_text_exactly_as_written(tmp_path):
    ids = ["007", "0070", "1", "1.0", "NA"]
    frame = pd.concat([long_frame((6,)).assign(unique_id=i) for i in ids], ignore_index=True)
    frame.to_csv(tmp_path / "ids.csv", index=False)
    data = prepare_series(read_table(tmp_path / "ids.csv", FrameFormat()))
    assert data.ids == ids  # not 7, 70, a merged 1.0 and a missing id
    (tmp_path / "empty_id.csv").write_text("unique_id,ds,y\na,1,1.0\n,2,2.0\n")
    with pytest.raises(ColumnError, match="id column 'unique_id' is empty in rows 1"):
        prepare_series(read_table(tmp_path / "empty_id.csv", FrameFormat()))
    (tmp_path / "na_value.csv").write_text("unique_id,ds,y\na,1,1.0\na,2,NA\n")
    with pytest.raises(ValueDataError, match="1 missing value"):  # NA is still missing as a value
        prepare_series(read_table(tmp_path / "na_value.csv", FrameFormat()))


def test_a_compressed_or_parquet_file_is_read_whatever_its_name(tmp_path):
    frame = long_frame()
    frame.to_csv(tmp_path / "real.csv.gz", index=False)
    (tmp_path / "named.csv").write_bytes((tmp_path / "real.csv.gz").read_bytes())
    pd.testing.assert_frame_equal(read_table(tmp_path / "named.csv"), read_table(tmp_path / "real.csv.gz"))
    frame.to_parquet(tmp_path / "table.parquet", index=False)
    (tmp_path / "parquet.csv").write_bytes((tmp_path / "table.parquet").read_bytes())
    pd.testing.assert_frame_equal(read_table(tmp_path / "parquet.csv"), frame)
    (tmp_path / "latin1.csv").write_bytes("unique_id,ds,y\n\xe9t\xe9,1,2\n".encode("latin-1"))
    with pytest.raises(DataFileError, match="expected UTF-8 text"):
        read_table(tmp_path / "latin1.csv")


def test_header_names_with_spaces_are_shown_with_their_spaces(tmp_path):
    (tmp_path / "spaces.csv").write_text("unique_id, ds, y\na, 2024-01-01, 1\n")
    with pytest.raises(ColumnError) as err:
        prepare_series(read_table(tmp_path / "spaces.csv", FrameFormat()))
    assert "found columns: unique_id, ' ds', ' y'" in str(err.value)
    assert "column ' ds' has spaces around its name" in str(err.value)


def test_a_saved_index_column_of_a_wide_table_is_refused(tmp_path):
    wide = pd.DataFrame({"ds": pd.date_range("2024", periods=30, freq="h"), "HUFL": 1.0, "OT": 2.0})
    wide.to_csv(tmp_path / "indexed.csv")  # pandas' default: the index as an unnamed first column
    with pytest.raises(ColumnError, match="column 0 .* no name .*'Unnamed: 0'.* index=False"):
        prepare_series(read_table(tmp_path / "indexed.csv"), FrameFormat(wide=True))
    wide.to_csv(tmp_path / "plain.csv", index=False)
    assert prepare_series(read_table(tmp_path / "plain.csv"), FrameFormat(wide=True)).ids == ["HUFL", "OT"]


@pytest.mark.parametrize("scale, value", [(1.0, 1e308), (1.0, -1e200), (1e300, None)])
def test_values_too_large_to_standardise_are_refused(scale, value):
    frame = long_frame()
    frame["y"] = (frame["y"] + 1) * scale
    if value is not None:
        frame.loc[35, "y"] = value
    with pytest.raises(ValueDataError, match="values as large as .* at most 1e\\+150.* rescale"):
        prepare_series(frame)
    frame["y"] = (long_frame()["y"] + 1) * 1e140  # large, but its statistics stay finite
    assert np.isfinite(np.std(prepare_series(frame).series[0].values))


def test_several_utc_offsets_are_converted_to_utc():
    # the change to daylight saving time in Berlin: +01:00, then +02:00; hourly throughout
    times = [
        "2024-03-31 00:00+01:00",
        "2024-03-31 01:00+01:00",
        "2024-03-31 03:00+02:00",
        "2024-03-31 04:00+02:00",
    ]
    series = prepare_series(pd.DataFrame({"ds": times, "y": [1.0, 2, 3, 4]})).series[0]
    assert series.freq_name == "h" and str(series.timestamps.tz) == "UTC"
    assert series.timestamps[2] == pd.Timestamp("2024-03-31 01:00", tz="UTC")
    with pytest.raises(TimestampError, match="mixes timestamps with a UTC offset and without one"):
        prepare_series(pd.DataFrame({"ds": [*times[:2], "2024-03-31 03:00"], "y": [1.0, 2, 3]}))


def test_day_first_dates_are_not_guessed_but_named():
    frame = pd.DataFrame({"ds": ["01/02/2024", "02/02/2024", "31/01/2024"], "y": [1.0, 2, 3]})
    with pytest.raises(TimestampError) as err:
        prepare_series(frame)
    assert "('31/01/2024')" in str(err.value) and "day-first" in str(err.value)


def test_missing_months_are_refused_or_filled_on_request():
    ds = pd.date_range("2020-01-01", periods=24, freq="MS").delete(10)
    frame = pd.DataFrame({"ds": ds, "y": np.arange(23.0)})
    with pytest.raises(TimestampError, match="1 timestamp.* missing .* MS .*2020-11-01"):
        prepare_series(frame)
    series = prepare_series(frame, interpolate=True).series[0]
    assert len(series) == 24 and series.timestamps[10] == pd.Timestamp("2020-11-01")
    assert 9 < series.values[10] < 10 and season_length(series.freq) == 12


def test_a_single_row_series_is_refused():
    frame = pd.concat([long_frame((5,)), long_frame((1,)).assign(unique_id="lonely")], ignore_index=True)
    with pytest.raises(SeriesLengthError, match="series 'lonely' has a single row in rows 5"):
        prepare_series(frame)


def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch):
    assert check_table_path(tmp_path / "new" / "f.csv") == tmp_path / "new" / "f.csv"
    assert check_table_path(tmp_path / "f.csv.gz") and check_table_path(tmp_path / "f.parquet")
    with pytest.raises(DataFileError, match="unknown format '.xlsx'"):
        check_table_path(tmp_path / "f.xlsx")
    with pytest.raises(DataFileError, match="unknown format"):
        write_table(long_frame(), tmp_path / "f.xlsx")  # nothing written as CSV text into an .xlsx
    assert not (tmp_path / "f.xlsx").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(DataFileError, match="is a file, not a folder"):
        check_table_path(tmp_path / "file" / "f.csv")
    with pytest.raises(DataFileError, match="it is a file"):
        check_output_path(tmp_path / "file", "adapter folder", folder=True)
    monkeypatch.setattr(files, "parquet_available", lambda: False)
    with pytest.raises(DataFileError, match="needs pyarrow"):
        check_table_path(tmp_path / "f.parquet")


def test_max_seq_len_counts_validation_and_windows():
    assert max_seq_len([59], 12, 12) == 35  # 35 + 12 + 12 = 59: one training window before validation
    assert max_seq_len([59], 12) == 59  # forecasting only reads the look-back
    assert max_seq_len([200, 59], 12, 12) == 47  # the long series trains; the short one validates
    assert max_seq_len([120, 100], 6, None, n_windows=2) == 88  # 100 - (6 + 6)
    # every series holds 3 windows (span 6 + 2 x 1); before the first cutoff one trains with 30 validation steps
    assert max_seq_len([120, 100], 6, 6, n_windows=3, step_size=1) == 100 - 8
    assert max_seq_len([120, 100], 6, 30, n_windows=3, step_size=1) == 120 - 8 - 30 - 6


def test_monthly_data_dated_mid_month_is_monthly_not_half_monthly(caplog):
    ds = pd.date_range("2010-01-01", periods=120, freq="MS") + pd.Timedelta(days=14)  # the 15th
    frame = pd.DataFrame({"ds": ds, "y": np.arange(120.0)})
    with caplog.at_level("WARNING", logger="timellm"):
        series = prepare_series(frame, interpolate=True).series[0]
    assert len(series) == 120 and "interpolat" not in caplog.text  # nothing invented
    assert season_length(series.freq) == 12
    future = series.future(12)
    assert list(future) == list(pd.date_range("2020-01-01", periods=12, freq="MS") + pd.Timedelta(days=14))
    # one month missing: refused, or filled as one month (not as 120 half-months)
    gappy = frame.drop(index=50)
    with pytest.raises(TimestampError, match="1 timestamp\\(s\\) missing"):
        prepare_series(gappy)
    filled = prepare_series(gappy, interpolate=True).series[0]
    assert (
        len(filled) == 120
        and filled.timestamps[50] == ds[50]
        and filled.values[50] == pytest.approx(50, abs=0.1)
    )
    quarterly = pd.DataFrame({"ds": ds[::3], "y": np.arange(40.0)})
    assert season_length(prepare_series(quarterly).series[0].freq) == 4


def test_magnitudes_too_small_to_standardise_are_refused():
    frame = long_frame()
    frame["y"] = (frame["y"] + 1) * 1e-199
    with pytest.raises(ValueDataError, match="no larger than .*e-19. in magnitude.*rescale the series"):
        prepare_series(frame)
    frame["y"] = (long_frame()["y"] + 1) * 1e-140  # small, but its statistics stay finite and non-zero
    assert np.std(prepare_series(frame).series[0].values) > 0
    frame["y"] = 0.0  # a constant zero series has nothing to standardise: allowed
    assert prepare_series(frame).series[0].values.max() == 0


def test_daily_data_across_a_daylight_saving_change_keeps_its_local_dates():
    days = pd.date_range("2024-03-25", periods=14, freq="D", tz="Europe/Berlin")
    frame = pd.DataFrame({"ds": [t.isoformat() for t in days], "y": np.arange(14.0)})
    series = prepare_series(frame).series[0]
    assert series.freq_name == "D" and series.timestamps[-1] == pd.Timestamp("2024-04-07")


def test_a_period_typed_time_column_is_read_as_the_periods_starts():
    frame = pd.DataFrame({"ds": pd.period_range("2020-01", periods=30, freq="M"), "y": np.arange(30.0)})
    series = prepare_series(frame).series[0]
    assert series.timestamps[0] == pd.Timestamp("2020-01-01") and season_length(series.freq) == 12
    quarters = pd.DataFrame({"ds": pd.period_range("2020Q1", periods=9, freq="Q"), "y": np.arange(9.0)})
    assert season_length(prepare_series(quarters).series[0].freq) == 4
