import numpy as np
import pandas as pd

from timellm.experiments.tables import markdown_table, plain_cell


def test_markdown_table():
    frame = pd.DataFrame({"path": ["plain", "fast"], "series_per_s": [1.0, 2.345], "x": [np.nan, 1.0]})
    two_digits = lambda value, column: plain_cell(value, column, 2)  # noqa: E731
    assert markdown_table(frame, ["path", "series_per_s", "x"], cell=two_digits).splitlines() == [
        "| path | series_per_s | x |",
        "|---|---|---|",
        "| plain | 1.00 |  |",
        "| fast | 2.35 | 1.00 |",
    ]


def test_markdown_table_headers_alignment_and_missing_columns():
    frame = pd.DataFrame({"name": ["a|b"], "mse": [0.12345]})
    lines = markdown_table(
        frame, ["name", "mse", "absent"], headers={"mse": "MSE"}, right=["mse"]
    ).splitlines()
    assert lines == ["| name | MSE |", "|---|---:|", "| a\\|b | 0.1235 |"]
