"""A series' time column read as timestamps: datetimes or integer steps, with one-line errors.

Dates are read in the format of the first value, else as ISO 8601 of several precisions, and never
guessed day-first. Timestamps of several UTC offsets are converted to UTC, except daily (or
coarser) data across a daylight-saving change, which keeps its local dates.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from timellm.data.errors import TimestampError, quote_rows
from timellm.data.frequency import infer_frequency
from timellm.data.series import FrameFormat

logger = logging.getLogger(__name__)

OFFSET_SUFFIX = r"(?:Z|[+-]\d\d:?\d\d)$"  # a timestamp's UTC offset, as ISO 8601 writes it


def parse_times(ds: pd.Series, rows: np.ndarray, sid: Any, fmt: FrameFormat) -> pd.Index:
    """Timestamps of one series: datetimes, or integer steps; unparseable ones are an error."""
    column = f"time column {fmt.time_col!r}"
    if ds.isna().any():
        raise TimestampError(
            f"series {sid!r}: empty {column} {quote_rows(rows[ds.isna().to_numpy()])}; every row needs a timestamp"
        )
    if pd.api.types.is_bool_dtype(ds):
        raise TimestampError(f"{column} holds booleans; expected dates/times or integer steps")
    if pd.api.types.is_integer_dtype(ds):
        return pd.Index(ds.to_numpy(dtype=np.int64))
    if pd.api.types.is_float_dtype(ds):
        values = ds.to_numpy(dtype=np.float64)
        fractional = values != np.round(values)
        if not fractional.any():
            return pd.Index(values.astype(np.int64))
        raise TimestampError(
            f"series {sid!r}: {column} holds non-integer numbers ({values[fractional][0]!r}) "
            f"{quote_rows(rows[fractional])}; expected dates/times or integer steps"
        )
    if pd.api.types.is_datetime64_any_dtype(ds):
        return pd.DatetimeIndex(ds)
    periods = ds.map(lambda v: isinstance(v, pd.Period)).to_numpy(dtype=bool)
    if periods.all():  # pandas Periods (a PeriodIndex's values): each period's first instant
        try:
            return pd.PeriodIndex(ds.to_numpy()).to_timestamp(how="start")
        except (ValueError, TypeError) as err:  # periods of several frequencies
            raise TimestampError(
                f"series {sid!r}: {column} holds pandas Periods that cannot be read as one grid ({err}); "
                "convert them with .dt.to_timestamp() to dates of one frequency"
            ) from None
    try:
        times = _to_datetime(ds)
        # pandas 2 (statsforecast needs pandas < 3) returns timestamps of several offsets as objects,
        # and reads timestamps without an offset beside ones with an offset in that offset
        with_offset = ds.astype(str).str.strip().str.contains(OFFSET_SUFFIX)
        mixed = times.dtype == object or (with_offset.any() and not with_offset.all())
    except ValueError as err:  # pandas 3 refuses timestamps of several UTC offsets (a DST change)
        if "mixed timezones" not in str(err).lower():
            raise
        mixed = True
    if mixed:
        text = ds.astype(str).str.strip()
        naive = ~text.str.contains(OFFSET_SUFFIX).to_numpy()
        if naive.any():
            raise TimestampError(
                f"series {sid!r}: {column} mixes timestamps with a UTC offset and without one "
                f"(such as {ds.to_numpy()[naive][0]!r}) {quote_rows(rows[naive])}; give every timestamp an "
                "offset, or none"
            ) from None
        times = _to_datetime(ds, utc=True)
        offsets = ", ".join(sorted(set(text.str.extract(f"({OFFSET_SUFFIX})", expand=False).dropna()))[:4])
        local = _to_datetime(text.str.replace(OFFSET_SUFFIX, "", regex=True))  # the wall-clock times
        if _regular(local) and not _regular(times):
            # daily (or coarser) data across a daylight-saving change: regular on the local calendar,
            # not in UTC (a day of 23 or 25 hours); the dates are what the data means
            logger.info(
                "series %r: timestamps have several UTC offsets (%s); kept their local times, which are "
                "regular (in UTC they are not, across a daylight-saving change)",
                sid,
                offsets,
            )
            return pd.DatetimeIndex(local)
        logger.info(
            "series %r: timestamps have several UTC offsets (%s); converted them to UTC", sid, offsets
        )
    bad = times.isna().to_numpy()
    if bad.any():
        examples = ", ".join(repr(v) for v in ds.to_numpy()[bad][:3])
        hint = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if pd.to_datetime(ds, errors="coerce", dayfirst=True, format="mixed").notna().all():
                hint = (
                    " (they read as day-first dates, such as 31/01/2024; dates are never guessed day-first: "
                    "write them as 2024-01-31, or parse them with pandas.to_datetime(..., dayfirst=True))"
                )
        raise TimestampError(
            f"series {sid!r}: {column} has values that are not dates or times ({examples}) "
            f"{quote_rows(rows[bad])}{hint}; expected dates/times such as 2024-01-31 or 2024-01-31 13:00, "
            "or integer steps"
        )
    return pd.DatetimeIndex(times)


def _regular(times: pd.Series) -> bool:
    """Whether parsed timestamps lie on one frequency (sorted, without gaps)."""
    index = pd.DatetimeIndex(times.dropna()).sort_values()
    return len(index) == len(times) and not index.has_duplicates and infer_frequency(index) is not None


def _to_datetime(ds: pd.Series, utc: bool = False) -> pd.Series:
    """Parse in the format of the first value, else as ISO 8601 of several precisions; NaT if neither."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": every value is checked by the caller
        times = pd.to_datetime(ds, errors="coerce", utc=utc)
        if times.isna().any():  # ISO 8601 of several precisions ("2024-01-31", "2024-01-31 13:00")
            iso = pd.to_datetime(ds, errors="coerce", format="ISO8601", utc=utc)
            if iso.isna().sum() <= times.isna().sum():  # else the first value's format names fewer
                times = iso
    return times
