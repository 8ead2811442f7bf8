"""The paper's published figures (SPEC §5), one cell per row of our tables.

Time-LLM with LLaMA-7B (Jin et al., ICLR 2024), MSE / MAE on the standardised scale; M4 as SMAPE /
MASE / OWA. Every table of :mod:`timellm.experiments.report` sets each of its rows beside the cell
of the same dataset, horizon, share of training data, transfer pair or M4 frequency, and an average
row beside the paper's average: a row is never set against an average of other rows.
"""

from __future__ import annotations

from typing import Any

HORIZONS = {"illness": (24, 36, 48, 60)}  # every other benchmark: 96, 192, 336, 720
DEFAULT_HORIZONS = (96, 192, 336, 720)


def horizons(dataset: str) -> tuple[int, ...]:
    return HORIZONS.get(dataset, DEFAULT_HORIZONS)


# long-term forecasting, look-back 512 (ILI 104): the four-horizon averages (Table 1)
LONG_TERM_AVERAGE = {
    "ETTh1": (0.408, 0.423),
    "ETTh2": (0.334, 0.383),
    "ETTm1": (0.329, 0.372),
    "ETTm2": (0.251, 0.313),
    "weather": (0.225, 0.257),
    "electricity": (0.158, 0.252),
    "traffic": (0.388, 0.264),
    "illness": (1.435, 0.801),
}


def _cell(text: str) -> tuple[float, float]:
    """``"0.362/0.392"`` -> (mse, mae)."""
    mse, mae = text.split("/")
    return float(mse), float(mae)


def _per_horizon(dataset: str, cells: str) -> dict[tuple[str, int], tuple[float, float]]:
    """``"0.362/0.392 0.398/0.418 ..."`` in horizon order -> {(dataset, horizon): (mse, mae)}."""
    return {
        (dataset, horizon): _cell(cell)
        for horizon, cell in zip(horizons(dataset), cells.split(), strict=True)
        if cell != "-"
    }


def _per_model(models: tuple[str, ...], rows: dict[str, str]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{dataset: "mse/mae mse/mae"}``, a cell per model as the paper's table sets them side by
    side -> {model: {dataset: (mse, mae)}}."""
    table: dict[str, dict[str, tuple[float, float]]] = {model: {} for model in models}
    for dataset, cells in rows.items():
        for model, cell in zip(models, cells.split(), strict=True):
            table[model][dataset] = _cell(cell)
    return table


LONG_TERM = {
    **_per_horizon("ETTh1", "0.362/0.392 0.398/0.418 0.430/0.427 0.442/0.457"),
    **_per_horizon("ETTh2", "0.268/0.328 0.329/0.375 0.368/0.409 0.372/0.420"),
    **_per_horizon("ETTm1", "0.272/0.334 0.310/0.358 0.352/0.384 0.383/0.411"),
    **_per_horizon("ETTm2", "0.161/0.253 0.219/0.293 0.271/0.329 0.352/0.379"),
    **_per_horizon("weather", "0.147/0.201 0.189/0.234 0.262/0.279 0.304/0.316"),
    **_per_horizon("electricity", "0.131/0.224 0.152/0.241 0.160/0.248 0.192/0.298"),
    **_per_horizon("traffic", "0.362/0.248 0.374/0.247 0.385/0.271 0.430/0.288"),
    **_per_horizon("illness", "1.285/0.727 1.404/0.814 1.523/0.807 1.531/0.854"),
}

# the baselines' four-horizon averages (SPEC §5 gives no per-horizon baseline cell): beside our
# average rows only
BASELINES_AVERAGE = _per_model(
    ("patchtst", "dlinear"),
    {
        "ETTh1": "0.413/0.430 0.423/0.437",
        "ETTh2": "0.330/0.379 0.431/0.447",
        "ETTm1": "0.351/0.380 0.357/0.378",
        "ETTm2": "0.255/0.315 0.267/0.333",
        "weather": "0.225/0.264 0.248/0.300",
        "electricity": "0.161/0.252 0.166/0.263",
        "traffic": "0.390/0.263 0.433/0.295",
        "illness": "1.443/0.797 2.169/1.041",
    },
)

# few-shot: (percent, dataset, horizon) -> cell; (percent, dataset, "avg") -> the paper's average,
# which at 5 % covers three horizons for ETTh1 and ETTh2 (the paper has no 720 row there)
FEW_SHOT: dict[tuple[float, str, Any], tuple[float, float]] = {}
for _percent, _rows in (
    (
        10.0,
        {
            "ETTh1": "0.448/0.460 0.484/0.483 0.589/0.540 0.700/0.604 0.556/0.522",
            "ETTh2": "0.275/0.326 0.374/0.373 0.406/0.429 0.427/0.449 0.370/0.394",
            "ETTm1": "0.346/0.388 0.373/0.416 0.413/0.426 0.485/0.476 0.404/0.427",
            "ETTm2": "0.177/0.261 0.241/0.314 0.274/0.327 0.417/0.390 0.277/0.323",
        },
    ),
    (
        5.0,
        {
            "ETTh1": "0.483/0.464 0.629/0.540 0.768/0.626 - 0.627/0.543",
            "ETTh2": "0.336/0.397 0.406/0.425 0.405/0.432 - 0.382/0.418",
            "ETTm1": "0.316/0.377 0.450/0.464 0.450/0.424 0.483/0.471 0.425/0.434",
            "ETTm2": "0.174/0.261 0.215/0.287 0.273/0.330 0.433/0.412 0.274/0.323",
        },
    ),
):
    for _dataset, _cells in _rows.items():
        for _horizon, _text in zip((*DEFAULT_HORIZONS, "avg"), _cells.split(), strict=True):
            if _text != "-":
                FEW_SHOT[(_percent, _dataset, _horizon)] = _cell(_text)

# zero-shot: (source, target, horizon or "avg") -> cell. The averages of ETTh2 -> ETTm2 and
# ETTm1 -> ETTm2 differ from the mean of their horizons as printed (SPEC §5 marks them (!)).
ZERO_SHOT: dict[tuple[str, str, Any], tuple[float, float]] = {}
ZERO_SHOT_AVERAGE_MISPRINTED = {("ETTh2", "ETTm2"), ("ETTm1", "ETTm2")}
for (_source, _target), _cells in {
    ("ETTh1", "ETTh2"): "0.279/0.337 0.351/0.374 0.388/0.415 0.391/0.420 0.353/0.387",
    ("ETTh1", "ETTm2"): "0.189/0.293 0.237/0.312 0.291/0.365 0.372/0.390 0.273/0.340",
    ("ETTh2", "ETTh1"): "0.450/0.452 0.465/0.461 0.501/0.482 0.501/0.502 0.479/0.474",
    ("ETTh2", "ETTm2"): "0.174/0.276 0.233/0.315 0.291/0.337 0.392/0.417 0.272/0.341",
    ("ETTm1", "ETTh2"): "0.321/0.369 0.389/0.410 0.408/0.433 0.406/0.436 0.381/0.412",
    ("ETTm1", "ETTm2"): "0.169/0.257 0.227/0.318 0.290/0.338 0.375/0.367 0.268/0.320",
    ("ETTm2", "ETTh2"): "0.298/0.356 0.359/0.397 0.367/0.412 0.393/0.434 0.354/0.400",
    ("ETTm2", "ETTm1"): "0.359/0.397 0.390/0.420 0.421/0.445 0.487/0.488 0.414/0.438",
}.items():
    for _horizon, _text in zip((*DEFAULT_HORIZONS, "avg"), _cells.split(), strict=True):
        ZERO_SHOT[(_source, _target, _horizon)] = _cell(_text)

# M4 (SMAPE, MASE, OWA) per frequency as the paper prints them: Weekly, Daily and Hourly only
# together, as "Others"; and weighted over all 100,000 series
M4_FREQUENCY = {
    "Yearly": (13.419, 3.005, 0.789),
    "Quarterly": (10.110, 1.178, 0.889),
    "Monthly": (12.980, 0.963, 0.903),
}
M4_OTHERS = (4.795, 3.178, 1.006)
M4_OTHERS_FREQUENCIES = ("Weekly", "Daily", "Hourly")
M4_AVERAGE = (11.983, 1.595, 0.859)
M4_ALL_SERIES = 100_000

# Time-LLM's rows without a cell of their own (e.g. M4 Hourly) say where the paper's figure is
M4_NO_CELL = "paper: no separate cell (its Others row pools Weekly, Daily and Hourly)"


def long_term_cell(dataset: str, horizon: Any) -> tuple[tuple[float, float] | None, str]:
    """The paper's cell of one long-term row and its label; a horizon the paper has no cell for
    (a look-back other than 512 is still the paper's horizon) gets None."""
    if horizon == "avg":
        paper = LONG_TERM_AVERAGE.get(dataset)
        return paper, f"paper: {dataset} average over 4 horizons" if paper else "paper: no cell"
    paper = LONG_TERM.get((dataset, horizon))
    return paper, f"paper: {dataset}-{horizon}" if paper else "paper: no cell"


def few_shot_cell(percent: float, dataset: str, horizon: Any) -> tuple[tuple[float, float] | None, str]:
    paper = FEW_SHOT.get((float(percent), dataset, horizon))
    label = f"{percent:g} % of the training windows"
    if paper is None:
        return None, f"paper: no cell at {label}"
    if horizon == "avg":
        covered = 3 if (float(percent), dataset, 720) not in FEW_SHOT else 4
        return paper, f"paper: {dataset} at {label}, average over {covered} horizons"
    return paper, f"paper: {dataset}-{horizon} at {label}"


def zero_shot_cell(source: str, target: str, horizon: Any) -> tuple[tuple[float, float] | None, str]:
    paper = ZERO_SHOT.get((source, target, horizon))
    if paper is None:
        return None, f"paper: no cell for {source} -> {target}"
    if horizon == "avg":
        note = f"paper: {source} -> {target} average over 4 horizons"
        if (source, target) in ZERO_SHOT_AVERAGE_MISPRINTED:
            note += " (as printed; it differs from the mean of its horizons)"
        return paper, note
    return paper, f"paper: {source} -> {target}, {horizon}"


def m4_cell(frequency: str) -> tuple[tuple[float, float, float] | None, str]:
    if frequency in M4_FREQUENCY:
        return M4_FREQUENCY[frequency], f"paper: M4 {frequency}"
    if frequency in M4_OTHERS_FREQUENCIES:
        return None, M4_NO_CELL
    return None, "paper: no cell"
