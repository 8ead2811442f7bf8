"""Forecast plots: history, truth and forecast of a few windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def plot_forecasts(
    past: np.ndarray,
    pred: np.ndarray,
    true: np.ndarray,
    path: str | Path,
    *,
    channel: int = -1,
    count: int = 4,
    history: int | None = None,
    title: str = "",
    channel_name: str | None = None,
) -> Path:
    """Plot ``count`` evenly spaced windows of one channel to a PNG.

    past (W, T, N), pred (W, H, N), true (W, H, N); ``history`` past steps are shown (default 2 H).
    """
    plt = _pyplot()
    windows = np.linspace(0, past.shape[0] - 1, min(count, past.shape[0])).round().astype(int)
    horizon = pred.shape[1]
    history = min(history or 2 * horizon, past.shape[1])
    fig, axes = plt.subplots(len(windows), 1, figsize=(10, 2.4 * len(windows)), squeeze=False)
    for ax, w in zip(axes[:, 0], windows, strict=True):
        t_past = np.arange(-history, 0)
        t_future = np.arange(horizon)
        ax.plot(t_past, past[w, -history:, channel], color="0.4", lw=1, label="history")
        ax.plot(t_future, true[w, :, channel], color="black", lw=1.2, label="truth")
        ax.plot(t_future, pred[w, :, channel], color="tab:red", lw=1.4, label="forecast")
        ax.axvline(0, color="0.7", lw=0.8, ls="--")
        ax.set_ylabel(channel_name or f"channel {channel}")
        ax.set_title(f"test window {w}", fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_series_forecasts(
    history: pd.DataFrame,
    forecasts: pd.DataFrame,
    path: str | Path,
    *,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
    model_col: str = "TimeLLM",
    max_series: int = 6,
    history_steps: int | None = None,
) -> Path:
    """Plot the end of each series' history and its forecast, one panel per series, to a PNG.

    ``history``: long frame (id, time, target); ``forecasts``: long frame (id, time, model column).
    The first ``max_series`` series of ``forecasts`` are drawn, each with its last
    ``history_steps`` observations (default: four horizons), and the bands of any interval
    columns ``<model_col>-lo-<level>`` / ``-hi-<level>``.
    """
    fig, panels = _series_panels(forecasts, id_col, max_series, height=2.4)
    for ax, sid in panels:
        future = forecasts[forecasts[id_col] == sid]
        past = history[history[id_col] == sid]
        past = past.tail(history_steps or 4 * len(future))
        ax.plot(past[time_col], past[target_col], color="0.3", lw=1, label="history")
        ax.plot(future[time_col], future[model_col], color="tab:red", lw=1.4, label=model_col)
        for lo in sorted(c for c in future.columns if c.startswith(f"{model_col}-lo-")):
            hi = lo.replace("-lo-", "-hi-")
            label = f"{lo.rsplit('-', 1)[1]} % interval"
            ax.fill_between(
                future[time_col], future[lo], future[hi], color="tab:red", alpha=0.12, label=label
            )
    return _save_series_panels(fig, panels, forecasts[id_col].nunique(), path, legend_columns=2)


def _pyplot():
    """matplotlib's pyplot drawing into files (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series_panels(frame: pd.DataFrame, id_col: str, max_series: int, height: float) -> tuple[Any, list]:
    """A figure of one panel per series, for the first ``max_series`` series of ``frame``, each
    titled with its id: the figure and its (axes, series id) pairs."""
    ids = list(pd.unique(frame[id_col]))[:max_series]
    fig, axes = _pyplot().subplots(len(ids), 1, figsize=(10, height * len(ids)), squeeze=False)
    for ax, sid in zip(axes[:, 0], ids, strict=True):
        ax.set_title(str(sid), fontsize=9, loc="left")
    return fig, list(zip(axes[:, 0], ids, strict=True))


def _save_series_panels(fig, panels: list, total: int, path: str | Path, legend_columns: int) -> Path:
    """The legend on the first panel, a note when only the first of ``total`` series are drawn,
    dates along the x axes; then written as :func:`save_figure` does."""
    panels[0][0].legend(loc="upper left", fontsize=8, ncol=legend_columns)
    if len(panels) < total:
        fig.suptitle(f"first {len(panels)} of {total} series", fontsize=9)
    fig.autofmt_xdate()
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write as PNG (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_backtest(
    history: pd.DataFrame,
    cv: pd.DataFrame,
    path: str | Path,
    best: dict,
    *,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
    model_col: str = "TimeLLM",
    level: float | None = None,
    max_series: int = 4,
) -> Path:
    """Plot a backtest: per series, history, truth, Time-LLM and the best baseline, with intervals.

    ``history``: long frame of the whole series; ``cv``: the backtest frame (id, time, cutoff,
    model columns, their ``-lo-<level>`` / ``-hi-<level>`` intervals and the truth); ``best``: the
    baseline column drawn beside Time-LLM for each series. Each panel shows the windows and three
    horizons of history before the first cutoff; ``level`` draws that interval as a band.
    """
    fig, panels = _series_panels(cv, id_col, max_series, height=2.6)
    for ax, sid in panels:
        windows = cv[cv[id_col] == sid]
        horizon = int((windows["cutoff"] == windows["cutoff"].iloc[0]).sum())
        first = windows["cutoff"].min()
        series = history[history[id_col] == sid]
        past = series[series[time_col] <= first].tail(3 * horizon)
        ax.plot(past[time_col], past[target_col], color="0.4", lw=1, label="history")
        models = [(model_col, "tab:red")] + ([(best[sid], "tab:blue")] if sid in best else [])
        for n, (cutoff, window) in enumerate(windows.groupby("cutoff", sort=True)):
            ax.axvline(cutoff, color="0.75", lw=0.8, ls="--")
            ax.plot(
                window[time_col], window[target_col], color="black", lw=1.2, label="truth" if n == 0 else None
            )
            for model, color in models:
                ax.plot(window[time_col], window[model], color=color, lw=1.3, label=model if n == 0 else None)
                lo, hi = f"{model}-lo-{level:g}", f"{model}-hi-{level:g}"
                if level is not None and lo in window:
                    label = f"{model} {level:g} %" if n == 0 else None
                    ax.fill_between(
                        window[time_col], window[lo], window[hi], color=color, alpha=0.15, label=label
                    )
    return _save_series_panels(fig, panels, cv[id_col].nunique(), path, legend_columns=3)


def plot_data_curve(rows: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Test MSE and MAE against the share of training data (few-shot runs and the full run),
    beside the seasonal-naive and last-value forecasts of the same test windows.

    rows: one per run, columns ``percent, mse, mae, seasonal_naive_mse, seasonal_naive_mae,
    last_value_mse, last_value_mae`` (a ``long_term.csv``/``few_shot.csv`` row each).
    """
    plt = _pyplot()
    rows = rows.sort_values("percent")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ("mse", "mae"), strict=True):
        ax.plot(rows["percent"], rows[metric], "o-", label="Time-LLM")
        for name, style in (("seasonal_naive", "--"), ("last_value", ":")):
            column = f"{name}_{metric}"
            if column in rows and rows[column].notna().any():
                ax.axhline(
                    float(rows[column].iloc[0]), linestyle=style, color="grey", label=name.replace("_", " ")
                )
        ax.set_xscale("log")
        ax.set_xticks(rows["percent"].tolist(), [f"{p:g} %" for p in rows["percent"]])
        ax.set_xlabel("training data")
        ax.set_ylabel(f"test {metric.upper()}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_training_curves(panels: list[dict], path: str | Path, title: str) -> Path:
    """Training and validation loss against Adam steps, one panel per experiment, one colour per run.

    panels: each ``{"title": str, "runs": [(label, history), ...]}``, a history being a run's
    ``history.csv`` (columns ``steps``, ``train_loss``, ``val_loss``).
    """
    plt = _pyplot()
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for k, (label, history) in enumerate(panel["runs"]):
            colour = f"C{k}"
            ax.plot(history["steps"], history["val_loss"], "o-", color=colour, label=f"{label}: validation")
            ax.plot(history["steps"], history["train_loss"], ":", color=colour, label=f"{label}: training")
        ax.set_title(panel["title"], fontsize=8)
        ax.set_xlabel("Adam steps")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_learning_curves(curves: pd.DataFrame, labels: dict[str, str], path: str | Path, title: str) -> Path:
    """Validation loss (left) and test MSE (right) against training series-windows seen (log
    scale), one colour per variant and a line per seed; a ring marks the epoch validation kept.

    ``curves``: one row per (variant, seed, epoch) with ``series_windows``, ``val_loss``,
    ``test_mse``, ``kept`` and ``test_windows``; ``labels``: the variants to draw, in order, by name."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, (variant, label) in enumerate(labels.items()):
        for i, (_, run) in enumerate(curves[curves["variant"] == variant].groupby("seed")):
            for ax, column in zip(axes, ("val_loss", "test_mse"), strict=True):
                ax.plot(
                    run["series_windows"],
                    run[column],
                    "o-",
                    color=f"C{k}",
                    markersize=3,
                    alpha=1.0 if i == 0 else 0.5,
                    label=label if i == 0 else None,
                )
                kept = run[run["kept"]]
                ax.plot(kept["series_windows"], kept[column], "o", color=f"C{k}", mfc="none", markersize=9)
    windows = curves["test_windows"].dropna()
    test = f"test MSE ({int(windows.iloc[0])} evenly spaced test windows)" if len(windows) else "test MSE"
    for ax, ylabel in zip(axes, ("validation loss", test), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("training series-windows seen")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, frameon=False)
    fig.suptitle(f"{title} (ring: the epoch validation kept)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_depth(rows: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Test MSE against the number of frozen LLM layers: each seed a dot, the mean over seeds a
    line with its sample standard deviation; the w/o-LLM model (``llm_layers`` 0) a dashed line
    across, its spread shaded.

    ``rows``: one row per run with ``model`` ("Time-LLM" or "w/o LLM"), ``llm_layers``, ``seed``, ``mse``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    llm = rows[rows["model"] == "Time-LLM"]
    means = llm.groupby("llm_layers")["mse"].agg(["mean", "std", "count"]).reset_index()
    ax.plot(llm["llm_layers"], llm["mse"], "o", color="C0", alpha=0.35, markersize=4)
    ax.errorbar(
        means["llm_layers"], means["mean"], yerr=means["std"].fillna(0), fmt="o-", color="C0", capsize=3,
        label="Time-LLM (mean over seeds)",
    )  # fmt: skip
    for layers, mean, count in zip(means["llm_layers"], means["mean"], means["count"], strict=True):
        ax.annotate(f"{mean:.3f} ({count} seed{'s' if count > 1 else ''})", (layers, mean),
                    textcoords="offset points", xytext=(6, 6), fontsize=7)  # fmt: skip
    free = rows[rows["model"] == "w/o LLM"]["mse"]
    if len(free):
        spread = free.std() if len(free) > 1 else 0.0
        seeds = f"{len(free)} seed{'s' if len(free) > 1 else ''}"
        ax.axhline(free.mean(), color="C1", linestyle="--", label=f"w/o LLM {free.mean():.3f} ({seeds})")
        ax.axhspan(free.mean() - spread, free.mean() + spread, color="C1", alpha=0.15)
    ax.set_xscale("log")
    ax.set_xticks(list(means["llm_layers"]))
    ax.set_xticklabels([str(int(x)) for x in means["llm_layers"]])
    ax.minorticks_off()
    ax.set_xlabel("frozen LLM layers (SmolLM2-135M has 30)")
    ax.set_ylabel("test MSE")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
