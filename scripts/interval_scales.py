"""Backtest a file as `timellm backtest FILE --horizon H --windows W --level 80 95` does (every default),
write its forecasts and scores, then re-calibrate Time-LLM's conformal intervals on the same trained
adapter in other ways, and score each: another look-back scale (the mean absolute step of the
look-back instead of its standard deviation), and each series calibrated on its own held-out
windows' scores instead of the scores pooled over every series.

    python scripts/interval_scales.py FILE HORIZON WINDOWS OUT_PREFIX

writes OUT_PREFIX_cv.csv, OUT_PREFIX_scores.csv and OUT_PREFIX_scales.csv (results/practitioner.md).
"""

import json
import logging
import sys
import time

import numpy as np
import pandas as pd

from timellm import TimeLLMForecaster
from timellm.data.files import read_table
from timellm.data.series import SeriesSet
from timellm.evaluation import conformal
from timellm.evaluation.backtest import mase_scale, score_backtest
from timellm.forecaster import lengths

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
path, h, n_windows, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
levels = (80, 95)
fc = TimeLLMForecaster(h, max_steps=100)  # the budget practitioner/*_scales.csv were measured with
df = read_table(path, fc.format)
start = time.perf_counter()
cv, scores = fc.backtest(df, n_windows=n_windows, level=levels)
total = time.perf_counter() - start
cv.to_csv(out + "_cv.csv", index=False)
scores.to_csv(out + "_scores.csv", index=False)
data = fc.history
span = lengths.span(fc.horizon, n_windows, None)
before = SeriesSet([s.head(len(s) - span) for s in data], data.format)
val = fc._val_size(None, before)
windows = lengths.cutoffs(fc.config, data, n_windows, None)
order = [(i, c) for i, cs in windows.items() for c in cs]
series, ends = [data.series[i] for i, _ in order], [c for _, c in order]
forecasts = list(cv["TimeLLM"].to_numpy().reshape(len(order), h))
variants = {"spread": conformal.look_back_spread}
variants["diff1"] = lambda pasts: np.mean(np.abs(np.diff(np.asarray(pasts, float), axis=1)), axis=1)
rows = []
periods = scores.attrs["season"]
scales = {s.id: mase_scale(s.values[: windows[i][0]], periods[s.id]) for i, s in enumerate(data)}
spread = conformal.look_back_spread


def pooled() -> list[dict[str, np.ndarray]]:
    """Intervals from one set of scores pooled over every series (the forecaster's calibration)."""
    fc.calibration, fc.calibration_constant = fc._conformity_scores(list(before), val)
    return fc._intervals(series, ends, forecasts, levels)


def per_series() -> list[dict[str, np.ndarray]]:
    """Intervals of each series from its own held-out windows' scores only."""
    own = {s.id: fc._conformity_scores([s], val) for s in before}
    bands = []
    for s, end, pred in zip(series, ends, forecasts, strict=True):
        fc.calibration, fc.calibration_constant = own[s.id]
        bands += fc._intervals([s], [end], [pred], levels)
    return bands


for name, scale, grouping in (
    ("spread", spread, pooled),
    ("diff1", variants["diff1"], pooled),
    ("spread, per series", spread, per_series),
):
    conformal.look_back_spread = scale
    bands = grouping()
    alt = cv.copy()
    for col in bands[0]:
        alt[col] = np.concatenate([b[col] for b in bands])
    sc = score_backtest(alt, fc.format, scales, ("TimeLLM",), levels)
    r = sc[sc.unique_id == "overall"].iloc[0].to_dict()
    rows.append(
        {
            "scale": name,
            "calibration_windows": len(fc.calibration),
            **{k: r[k] for k in sc.columns if k.startswith(("coverage", "width", "MSIS"))},
        }
    )
print(json.dumps({"file": path, "seconds": round(total, 1), "seq_len": fc.seq_len, "val": val}))
print(scores[scores.unique_id == "overall"].to_string())
print(pd.DataFrame(rows).to_string())
pd.DataFrame(rows).to_csv(out + "_scales.csv", index=False)
