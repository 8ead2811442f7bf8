"""A small real data set in a user's long format, extracted from the packaged ETTh1."""

from __future__ import annotations

import pandas as pd

from timellm.data.benchmarks import read_benchmark
from timellm.data.errors import InputDataError

EXAMPLE_SERIES = ("OT", "HUFL")  # ETTh1's oil temperature and high useful load


def example_frame(rows: int = 1000) -> pd.DataFrame:
    """A small real data set in long format (``unique_id``, ``ds``, ``y``) from the packaged ETTh1.

    The last ``rows`` hours of the transformer's oil temperature (``OT``) and the last
    ``3 * rows // 4`` hours of its high useful load (``HUFL``): two hourly series of different
    lengths. ETTh1 is redistributed unmodified under CC BY-ND 4.0 (see ``data/ETTh1.md``); this
    extract is made on the user's machine.
    """
    if not isinstance(rows, int) or rows < 2:
        raise InputDataError(f"rows must be an integer of at least 2, found {rows!r}")
    table = read_benchmark("ETTh1")
    rows = min(rows, len(table))
    parts = []
    for name, length in zip(EXAMPLE_SERIES, (rows, 3 * rows // 4), strict=True):
        part = table.tail(length)
        parts.append(
            pd.DataFrame({"unique_id": name, "ds": part["date"].to_numpy(), "y": part[name].to_numpy()})
        )
    return pd.concat(parts, ignore_index=True)
