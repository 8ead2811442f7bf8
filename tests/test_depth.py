from pathlib import Path

import pandas as pd

from timellm.experiments.depth import depth_rows, write_depth
from timellm.experiments.report_runs import Run


def converged_run(layers, seed, mse, preset="ETTh1-96-converged", test_windows=2785):
    record = {
        "preset": preset,
        "dataset": "ETTh1",
        "model": {"llm": "pretrained", "llm_layers": layers, "pred_len": 96},
        "train": {"seed": seed, "learning_rate": 1e-4},
    }
    metrics = {"mse": mse, "mae": mse, "test_windows": test_windows, "test_windows_total": 2785, "steps": 10}
    return Run(Path(f"runs/L{layers}-s{seed}"), record, metrics)


ABLATION_SEEDS = pd.DataFrame(
    {
        "dataset": ["ETTh1", "ETTh1", "ETTh1", "ETTm2"],
        "pred_len": [96, 96, 96, 96],
        "variant": ["no-llm", "no-llm", "dlinear", "no-llm"],
        "budget": ["converged", "preset", "converged", "converged"],
        "seed": [2021, 2021, 2021, 2021],
        "mse": [0.37, 0.40, 0.38, 0.2],
        "test_windows": [2785, 2785, 2785, 2000],
        "test_windows_total": [2785, 2785, 2785, 11425],
        "ablation": ["ETTh1-96"] * 3 + ["ETTm2-96"],
    }
)


def test_depth_compares_converged_runs_at_each_depth_with_the_converged_model_without_llm(tmp_path):
    runs = [
        converged_run(2, 2021, 0.39),
        converged_run(2, 2022, 0.40),
        converged_run(6, 2021, 0.385),
        converged_run(30, 2021, 0.5, preset="ETTh1-96-cpu"),  # another budget: not a point of the curve
        converged_run(30, 2022, 0.5, test_windows=500),  # a subset of the test split: not comparable
    ]
    rows = depth_rows(runs, ABLATION_SEEDS)
    assert list(zip(rows["model"], rows["llm_layers"], rows["mse"], strict=True)) == [
        ("Time-LLM", 2, 0.39),
        ("Time-LLM", 2, 0.40),
        ("Time-LLM", 6, 0.385),
        ("w/o LLM", 0, 0.37),  # only the converged w/o-LLM row of the same dataset and horizon
    ]
    written = write_depth(runs, ABLATION_SEEDS, tmp_path)
    assert set(written) == {"depth_ETTh1-96"} and written["depth_ETTh1-96"].stat().st_size > 0
    table = pd.read_csv(tmp_path / "depth_ETTh1-96.csv")
    assert list(table["llm_layers"]) == [0, 2, 2, 6]


def test_no_depth_figure_from_a_single_depth(tmp_path):
    assert write_depth([converged_run(2, 2021, 0.39)], ABLATION_SEEDS, tmp_path) == {}
    assert not list(tmp_path.iterdir())
