"""One hierarchy for data that cannot be used as given.

Every reader of a user's data (:mod:`timellm.data.frames`, and :mod:`timellm.data.sources` on top
of it) raises an :class:`InputDataError`: one line saying what was found, what is expected and
what to do. The subclasses say which part of the data was wrong, for callers that want to tell
them apart; the command line prints any of them and exits with status 2. Messages name the API
settings (``seq_len=...``, ``interpolate=True``), never command-line flags.
"""

from __future__ import annotations


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
