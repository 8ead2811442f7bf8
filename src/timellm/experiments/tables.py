"""One Markdown table writer for every table the harness prints or commits (pandas' own
``to_markdown`` needs the tabulate package, which we do not depend on)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd


def plain_cell(value: Any, column: str, digits: int = 4) -> str:
    """Empty for missing values, ``digits`` decimals for floats, pipes escaped in text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    cell: Callable[[Any, str], str] = plain_cell,
    right: Sequence[str] = (),
) -> str:
    """A GitHub Markdown table of ``columns`` of ``frame`` (those it has, in that order).

    ``headers`` renames columns in the header row; ``cell(value, column)`` formats each value;
    ``right`` names the columns to right-align.
    """
    columns = [c for c in (columns if columns is not None else frame.columns) if c in frame.columns]
    headers = headers or {}
    lines = [
        "| " + " | ".join(headers.get(c, c) for c in columns) + " |",
        "|" + "".join("---:|" if c in right else "---|" for c in columns),
    ]
    for record in frame[columns].to_dict("records"):
        lines.append("| " + " | ".join(cell(record[c], c) for c in columns) + " |")
    return "\n".join(lines)
