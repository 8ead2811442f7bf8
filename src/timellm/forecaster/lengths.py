"""How long the series must be: the checks of the forecaster's arguments and series lengths, and
the messages that say what to change (a shorter look-back where one the model accepts would fit,
else what takes the rows: the horizon, the windows, or longer series)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from timellm.data.errors import InputDataError, SeriesLengthError
from timellm.data.lookback import AUTO_SEQ_LEN_MAX, auto_seq_len, max_seq_len
from timellm.data.series import SeriesSet
from timellm.model.config import TimeLLMConfig

logger = logging.getLogger(__name__)

# validation windows per series by default (val_size = horizon + 19): a steadier early stopping than
# one window, and enough held-out forecasts to calibrate a 95 % interval from a single series
DEFAULT_VALIDATION_WINDOWS = 20


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive(name: str, value: Any) -> None:
    if not is_int(value) or value <= 0:
        raise InputDataError(f"{name} must be a positive integer, found {value!r}")


def least_seq_len(config: TimeLLMConfig) -> int:
    """The shortest look-back the model accepts: one patch, and room for the prompt's lags."""
    return max(config.patch_len, 2 * config.top_k_lags)


def advice(config: TimeLLMConfig, largest: int, takers: str | None = "a shorter horizon=...") -> str:
    """What to change when series are too short: the look-back if a shorter one the model
    accepts would fit, else what takes the rows (``takers``: the horizon, the windows), or
    longer series."""
    least = least_seq_len(config)
    if largest >= least:
        return f"lower the look-back with seq_len=...: at most {largest} for these series"
    ask = f"ask for {takers}, or give longer series" if takers else "give longer series"
    return f"no look-back fits (the model needs at least {least} steps), so a shorter one cannot help: {ask}"


def require_length(
    config: TimeLLMConfig,
    data: SeriesSet,
    needed: int,
    task: str,
    breakdown: str,
    largest: int,
    takers: str | None = "a shorter horizon=...",
) -> None:
    """Refuse series shorter than ``needed`` rows, naming the shortest and the longest look-back that fits."""
    short = [s for s in data if len(s) < needed]
    if not short:
        return
    shortest = min(short, key=len)
    more = f" (and {len(short) - 1} more series)" if len(short) > 1 else ""
    raise SeriesLengthError(
        f"series {shortest.id!r}{more} is too short: {len(shortest)} rows, but {task} needs at least "
        f"{needed} = {breakdown}; {advice(config, largest, takers)}"
    )


def require_training_rows(
    config: TimeLLMConfig,
    data: SeriesSet,
    lengths: list[int],
    val: int,
    largest: int,
    context: str = "",
    takers: str | None = "a shorter horizon=...",
) -> None:
    """Refuse data in which no series has a training window before its validation steps."""
    t, h = config.seq_len, config.pred_len
    if t <= largest:
        return
    where = f" {context}" if context else ""
    raise SeriesLengthError(
        f"no series is long enough to train on{where}: training needs look-back {t} + horizon {h} "
        f"+ validation {val} = {t + h + val} rows in at least one series, the longest has {max(lengths)}; "
        f"{advice(config, largest, takers)}; or lower val_size=..."
    )


def cutoffs(
    config: TimeLLMConfig, data: SeriesSet, n_windows: int, step_size: int | None, val: int | None = None
) -> dict[int, list[int]]:
    """Cross-validation cutoffs (rows of history) of every series, earliest first.

    With ``val`` (the data before the first cutoff is trained on) one series must also have a
    training window and ``val`` validation steps before its first cutoff.
    """
    check_positive("n_windows", n_windows)
    step = config.pred_len if step_size is None else step_size
    check_positive("step_size", step)
    span = config.pred_len + (n_windows - 1) * step
    breakdown = f"look-back {config.seq_len} + horizon {config.pred_len}"
    if n_windows > 1:
        breakdown += f" + {n_windows - 1} x step {step}"
    lengths = [len(s) for s in data]
    largest = max_seq_len(lengths, config.pred_len, val, n_windows=n_windows, step_size=step)
    takers = "a shorter horizon=..., fewer n_windows=... or a smaller step_size=..."
    task = f"cross-validation with {n_windows} window(s)"
    require_length(config, data, config.seq_len + span, task, breakdown, largest, takers)
    if val is not None:
        before = [n - span for n in lengths]
        require_training_rows(config, data, before, val, largest, "before the first cutoff", takers)
    return {i: [len(s) - span + k * step for k in range(n_windows)] for i, s in enumerate(data)}


def span(horizon: int, n_windows: int, step_size: int | None) -> int:
    """Rows of every series that cross-validation forecasts: its windows, ``step_size`` apart."""
    check_positive("n_windows", n_windows)
    step = horizon if step_size is None else step_size
    check_positive("step_size", step)
    return horizon + (n_windows - 1) * step


def default_val_size(config: TimeLLMConfig, data: SeriesSet, auto: bool) -> int:
    """The default validation steps of a fit on ``data``.

    The default is horizon + 19 (20 validation windows per series, enough to calibrate 95 %
    intervals) where the series leave room for it: with ``seq_len="auto"`` a look-back the
    model accepts in the shortest series, else a training window in the longest. Otherwise it
    is one horizon (one window per series, as few as validation can take), and the log says so.
    """
    c = config
    wide = c.pred_len + DEFAULT_VALIDATION_WINDOWS - 1
    if auto:  # seq_len="auto"
        room = auto_seq_len(min(len(s) for s in data), c.pred_len, wide) >= least_seq_len(c)
    else:
        room = max(len(s) for s in data) >= c.seq_len + c.pred_len + wide
    if room:
        return wide
    logger.info(
        "validation: the last %d steps of each series (one window): the series are too short for "
        "the default %d validation windows (val_size %d), so prediction intervals would have few "
        "windows to calibrate on",
        c.pred_len,
        DEFAULT_VALIDATION_WINDOWS,
        wide,
    )
    return c.pred_len


def auto_look_back(config: TimeLLMConfig, data: SeriesSet, val: int, context: str = "") -> TimeLLMConfig:
    """``config`` with the look-back of ``seq_len="auto"`` for ``data``: the rule of :func:`auto_seq_len`."""
    c = config
    shortest = min(data, key=len)
    look_back = auto_seq_len(len(shortest), c.pred_len, val)
    least = least_seq_len(c)
    if look_back < least:
        needed = 2 * least + c.pred_len - 1 + val
        raise SeriesLengthError(
            f"series {shortest.id!r} is too short{context} for an automatic look-back: {len(shortest)} "
            f"rows, but a look-back of at least {least} steps with horizon {c.pred_len} and validation "
            f"{val} needs {needed} (2 x {least} + {c.pred_len} - 1 + {val}); give longer series, "
            "a lower val_size=... or patch_len=..., or an explicit seq_len=..."
        )
    logger.info(
        "seq_len auto: look-back %d, the longest <= %d leaving at least as many training windows "
        "(%d rows - validation %d - horizon %d + 1, halved) in the shortest series %r%s",
        look_back,
        AUTO_SEQ_LEN_MAX,
        len(shortest),
        val,
        c.pred_len,
        shortest.id,
        context,
    )
    return c.replace(seq_len=look_back)
