"""M4 scores, the competition's way: sMAPE and MASE per series, averaged per frequency, and OWA
against the official Naive2 forecasts (the data side is :mod:`timellm.data.m4`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from timellm.data.m4 import (
    FREQUENCIES,
    M4FileNotFoundError,
    M4Frequency,
    _read_naive2,
    _select_naive2,
    get_frequency,
    load_m4,
)
from timellm.evaluation.metrics import mase_per_series, owa, smape_per_series

logger = logging.getLogger(__name__)


def _as_forecast_array(values, f: M4Frequency, n_series: int) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 3 and array.shape[-1] == 1:  # a model's (n, horizon, 1) output
        array = array[..., 0]
    if array.shape != (n_series, f.horizon):
        raise ValueError(
            f"forecasts for {f.name} must have shape ({n_series}, {f.horizon}) in the order of the test "
            f"file, found {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"forecasts for {f.name} contain NaN or infinite values")
    return array


def score_m4(forecasts: Mapping[str, np.ndarray], data_dir: str | Path) -> pd.DataFrame:
    """Score forecasts against the official test files, M4 style.

    forecasts: frequency name or letter -> (n_series, horizon) array (or (n, horizon, 1)) in the row
    order of ``{Frequency}-test``. Returns one row per frequency given plus "Average", columns
    ``series``, ``SMAPE``, ``MASE``, ``OWA``. "Average" is the mean over all series scored (so the
    frequencies weigh by their series counts); its OWA relates that to Naive2's mean over the same
    series. MASE needs the training series; without a train file MASE and OWA are NaN (logged).
    """
    if not forecasts:
        raise ValueError("score_m4 needs forecasts for at least one frequency")
    given = {get_frequency(k).name: v for k, v in forecasts.items()}
    if len(given) != len(forecasts):
        raise ValueError(f"forecasts name a frequency twice: {sorted(forecasts)}")
    naive2 = _read_naive2(data_dir)

    rows: dict[str, dict[str, float]] = {}
    for name, f in FREQUENCIES.items():
        if name not in given:
            continue
        data = load_m4(f, data_dir, train=False)
        assert data.test is not None
        pred = _as_forecast_array(given[name], f, len(data.ids))
        naive = _select_naive2(naive2, f, data.ids)
        row = {
            "series": float(len(data.ids)),
            "SMAPE": float(smape_per_series(pred, data.test).mean()),
            "naive2_SMAPE": float(smape_per_series(naive, data.test).mean()),
            "MASE": math.nan,
            "naive2_MASE": math.nan,
        }
        try:
            train = load_m4(f, data_dir).train
        except M4FileNotFoundError as err:
            logger.warning("%s: MASE and OWA not computed: %s", name, err)
        else:
            row["MASE"] = float(mase_per_series(pred, data.test, train, f.period).mean())
            row["naive2_MASE"] = float(mase_per_series(naive, data.test, train, f.period).mean())
        rows[name] = row

    table = pd.DataFrame.from_dict(rows, orient="index")
    weights = table["series"] / table["series"].sum()
    average = {"series": table["series"].sum()}
    for column in ("SMAPE", "naive2_SMAPE", "MASE", "naive2_MASE"):
        # a NaN in any frequency makes the overall value NaN: a partial average would mislead
        average[column] = float((table[column] * weights).sum(skipna=False))
    table.loc["Average"] = average
    table["OWA"] = [
        owa(r.SMAPE, r.MASE, r.naive2_SMAPE, r.naive2_MASE) for r in table.itertuples(index=False)
    ]
    table["series"] = table["series"].astype(int)
    table.index.name = "frequency"
    return table[["series", "SMAPE", "MASE", "OWA"]]


def weighted_m4(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The M4 overall scores of per-frequency results, weighted by their series counts.

    Each row needs ``series``, ``smape``, ``mase``, ``naive2_smape`` and ``naive2_mase``; OWA is
    recomputed from the weighted averages (as the competition does), not averaged.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("weighted_m4 needs at least one frequency's result")
    names = [r.get("frequency") for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"a frequency appears twice among {names}: average distinct frequencies")
    series = np.array([r["series"] for r in rows], dtype=np.float64)
    weights = series / series.sum()
    out: dict[str, float] = {"series": int(series.sum())}
    for key in ("smape", "mase", "naive2_smape", "naive2_mase"):
        out[key] = float(weights @ np.array([r[key] for r in rows], dtype=np.float64))
    out["owa"] = (
        owa(out["smape"], out["mase"], out["naive2_smape"], out["naive2_mase"])
        if all(math.isfinite(out[k]) for k in ("smape", "mase", "naive2_smape", "naive2_mase"))
        else math.nan
    )
    return out


# ------------------------------------------------------------------------------------------------
# zero-shot transfer
