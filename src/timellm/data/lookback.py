"""How long a look-back (``seq_len``) series of given lengths allow, and the one
``seq_len="auto"`` picks."""

from __future__ import annotations

from collections.abc import Sequence

AUTO_SEQ_LEN_MAX = 512  # the paper's look-back for long-term forecasting: never more


def max_seq_len(
    lengths: Sequence[int],
    horizon: int,
    val_size: int | None = None,
    *,
    n_windows: int | None = None,
    step_size: int | None = None,
) -> int:
    """The longest look-back (``seq_len``) that series of these lengths allow; 0 or less: none.

    Forecasting (``val_size`` None, ``n_windows`` None) needs ``seq_len`` rows in every series.
    Training (``val_size`` given) needs ``seq_len + horizon`` rows in every series and
    ``seq_len + horizon + val_size`` in at least one: its training windows end before the last
    ``val_size`` steps, which are held out for validation. Cross-validation (``n_windows``) needs
    ``seq_len + horizon + (n_windows - 1) * step_size`` rows in every series, and with ``val_size``
    it trains on the rows before the first cutoff, which one series must have enough of.
    """
    if not lengths:
        return 0
    shortest, longest = min(lengths), max(lengths)
    span = (
        0 if n_windows is None else horizon + (n_windows - 1) * (horizon if step_size is None else step_size)
    )
    if n_windows is None and val_size is None:
        return shortest
    largest = shortest - (span or horizon)  # every series: the windows (or one training window)
    if val_size is not None:
        largest = min(largest, longest - span - val_size - horizon)  # one series trains
    return largest


def auto_seq_len(length: int, horizon: int, val_size: int, maximum: int = AUTO_SEQ_LEN_MAX) -> int:
    """The look-back ``seq_len="auto"`` picks for a series of ``length`` rows (the shortest one).

    The rule: the longest look-back T <= ``maximum`` that leaves at least T training windows. The
    training part has P = length - val_size rows and gives P - T - horizon + 1 windows, so
    T = min(maximum, (P - horizon + 1) // 2). A long series gets the paper's 512; a short one a
    look-back of about half its training part, so that it still yields as many windows as steps
    in its look-back. The result may be below what a model allows; the caller checks it.
    """
    return min(maximum, (length - val_size - horizon + 1) // 2)
