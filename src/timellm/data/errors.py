"""One hierarchy for data that cannot be used as given.

Every reader of a user's data (:mod:`timellm.data.frames`, and :mod:`timellm.data.sources` on top
of it) raises an :class:`InputDataError`: one line saying what was found, what is expected and
what to do. The subclasses say which part of the data was wrong, for callers that want to tell
them apart; the command line prints any of them and exits with status 2. Messages name the API
settings (``seq_len=...``, ``interpolate=True``), never command-line flags, and quote columns and
rows the one way the helpers at the end write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_LISTED = 5  # rows or values quoted in one error message


class InputDataError(ValueError):
    """The user's data cannot be used as given; the message says what was wrong and what is expected."""


class DataFileError(InputDataError):
    """A file cannot be read or written: missing, empty, unreadable, or its format needs a package."""


class ColumnError(InputDataError):
    """Columns are missing, unnamed, or clash with the columns a forecast is written to."""


class TimestampError(InputDataError):
    """Timestamps are unparseable, duplicated, irregular or missing from the series' grid."""


class ValueDataError(InputDataError):
    """Values are not numbers, missing, infinite, or too large to be standardised."""


class SeriesLengthError(InputDataError):
    """A series is too short for the look-back, horizon, validation and windows asked for."""


class DataError(InputDataError):
    """A benchmark or its data folder is missing or malformed, or a data source is misdescribed."""


def quote_columns(columns: Sequence[Any]) -> str:
    """Column names for a message; quoted when a name has spaces around it (they are invisible)."""
    names = [repr(c) if isinstance(c, str) and c != c.strip() else str(c) for c in columns]
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


def row_list(rows: Sequence[int] | np.ndarray) -> str:
    """Row positions for a message: the first few, and how many there are in all."""
    rows = [int(r) for r in rows]
    shown = ", ".join(map(str, rows[:MAX_LISTED]))
    return shown + (f" ... ({len(rows)} in all)" if len(rows) > MAX_LISTED else "")


def quote_rows(rows: np.ndarray) -> str:
    """'rows 3, 4 (table positions from 0)' for the given positions; -1 marks an added timestamp."""
    given = rows[rows >= 0]
    if not len(given):
        return "at timestamps added to fill gaps"
    return f"in rows {row_list(given)} (table positions, counting from 0)"
