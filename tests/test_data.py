import gzip

import numpy as np
import pytest

from timellm.data import DataError, WindowDataset, load_splits, read_benchmark
from timellm.data.benchmarks import borders


@pytest.mark.parametrize(
    "name,seq_len,pred_len,rows",
    [
        ("ETTh1", 512, 96, (8640, 2880 + 512, 2880 + 512)),
        ("ETTm1", 512, 96, (34560, 11520 + 512, 11520 + 512)),
        ("weather", 512, 96, (36887, 5270 + 512, 10539 + 512)),
        ("illness", 104, 24, (676, 97 + 104, 193 + 104)),
    ],
)
def test_split_lengths_match_the_standard_splits(data_dir, name, seq_len, pred_len, rows):
    splits = load_splits(name, seq_len, pred_len, data_dir)
    assert (len(splits.train), len(splits.val), len(splits.test)) == rows
    raw = read_benchmark(name, data_dir)
    values = raw.drop(columns="date").to_numpy()
    starts, ends = borders(splits_kind(name), len(raw), seq_len)
    # the val/test splits start seq_len rows before their border: the first target is the border row
    assert np.allclose(splits.test[seq_len] * splits.std + splits.mean, values[ends[1]], rtol=1e-5, atol=1e-3)
    assert np.allclose(splits.val[seq_len] * splits.std + splits.mean, values[ends[0]], rtol=1e-5, atol=1e-3)
    assert ends[2] == len(raw) or name.startswith("ETT")


def splits_kind(name):
    return {"ETTh1": "ett_hour", "ETTm1": "ett_minute"}.get(name, "ratio")


def test_scaler_is_fit_on_training_rows_only():
    splits = load_splits("ETTh1", 96, 24)  # the packaged copy
    assert np.allclose(splits.train.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(splits.train.std(axis=0), 1, atol=1e-3)
    raw = read_benchmark("ETTh1").drop(columns="date").to_numpy()
    assert np.allclose(splits.mean, raw[:8640].mean(axis=0), rtol=1e-5)
    assert not np.allclose(splits.mean, raw.mean(axis=0), rtol=1e-3)


def test_percent_shrinks_only_the_training_split():
    full = load_splits("ETTh1", 512, 96)
    few = load_splits("ETTh1", 512, 96, percent=10)
    # the first 10% of the 8640 - 512 - 96 + 1 = 8033 training windows: 803 windows
    assert len(few.train) - 512 - 96 + 1 == 803
    assert np.array_equal(few.val, full.val) and np.array_equal(few.test, full.test)
    assert np.array_equal(few.mean, full.mean)
    assert np.array_equal(few.train, full.train[: len(few.train)])


def test_windows_have_stride_one_and_channel_independence():
    array = np.arange(40, dtype=np.float32).reshape(20, 2)
    ci = WindowDataset(array, 5, 3)
    assert len(ci) == (20 - 5 - 3 + 1) * 2
    x, y = ci[3]  # window 1, channel 1
    assert x.shape == (5, 1) and y.shape == (3, 1)
    assert x[:, 0].tolist() == array[1:6, 1].tolist() and y[:, 0].tolist() == array[6:9, 1].tolist()
    whole = WindowDataset(array, 5, 3, channel_independent=False)
    assert len(whole) == 13 and whole[12][1][-1].tolist() == array[-1].tolist()
    sub = WindowDataset(array, 5, 3, channel_independent=False, max_windows=4)
    assert len(sub) == 4 and sub[3][1][-1].tolist() == array[-1].tolist()


def test_a_modified_file_fails_its_checksum(tmp_path):
    folder = tmp_path / "ETT-small"
    folder.mkdir()
    text = gzip.decompress((read_benchmark.__globals__["find_file"]("ETTh1")).read_bytes())
    (folder / "ETTh1.csv").write_bytes(text.replace(b"2016-07-01", b"2016-07-02", 1))
    with pytest.raises(DataError, match="sha256"):
        read_benchmark("ETTh1", tmp_path)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="ETTh2 data not found"):
        load_splits("ETTh2", 96, 24, tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_splits("ETTh2", 96, 24, tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown benchmark"):
        load_splits("ETTh9", 96, 24)
    with pytest.raises(DataError, match="percent"):
        load_splits("ETTh1", 96, 24, percent=0)


def test_etth1_is_packaged_without_a_data_folder(monkeypatch):
    monkeypatch.delenv("TIMELLM_DATA", raising=False)
    assert read_benchmark("ETTh1").shape == (17420, 8)
