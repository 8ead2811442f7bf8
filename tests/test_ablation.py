import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import TINY_MODEL, run_killed, tiny_config
from timellm.cli import main
from timellm.data.sources import DataSource
from timellm.experiments import ablation
from timellm.experiments.ablation import (
    BUDGETS,
    COLUMNS,
    RECIPES,
    SEEDS_CSV,
    TABLE_CSV,
    TABLE_MD,
    TUNING_CSV,
    VARIANTS,
    Recipe,
    resolve_budget,
    resolve_variants,
    run_ablation,
    run_ablation_seeds,
)
from timellm.experiments.folders import RUN_CONFIG
from timellm.experiments.presets import get_preset
from timellm.model.memory import InsufficientMemoryError
from timellm.model.modeling import TimeLLM
from timellm.model.variants import build_model, load_model
from timellm.training.loop import TrainConfig


def tiny_preset(**changes):
    settings = dict(
        backbone="tiny-random-llama",
        **TINY_MODEL,
        description="Test load.",  # a short prompt: the tiny tokenizer has one token per character
        batch_size=16,
        max_test_windows=12,
    )
    settings.update(changes)
    return get_preset("ETTh1-96").with_overrides(settings)


def write_hourly_csv(path, rows=480, channels=2):
    rng = np.random.default_rng(0)
    t = np.arange(rows)
    frame = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=rows, freq="h")})
    for c in range(channels):
        frame[f"load{c}"] = np.sin(2 * np.pi * t / 24 + c) + 0.1 * rng.standard_normal(rows)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def hourly_csv(tmp_path):
    return DataSource(csv=str(write_hourly_csv(tmp_path / "load.csv")), time_col="date")


def test_ablation_writes_one_row_per_variant_with_every_column(tmp_path, hourly_csv):
    table = run_ablation(tiny_preset(), tmp_path / "abl", budget="tiny", source=hourly_csv)
    written = pd.read_csv(tmp_path / "abl" / TABLE_CSV)
    assert list(written["variant"]) == list(VARIANTS)
    assert list(written.columns) == COLUMNS
    for column in ("variant", "mse", "mae", "trainable_params", "train_seconds", "infer_seconds"):
        assert written[column].notna().all(), column
    assert (written["test_windows"] == 12).all()  # every variant on the same test windows
    full = table.set_index("variant").loc["time-llm"]
    for row in table.itertuples():
        assert math.isclose(row.mse_vs_full_pct, 100 * (row.mse - full.mse) / full.mse, rel_tol=1e-9)
    rows = table.set_index("variant")
    assert rows.loc["seasonal-naive", "trainable_params"] == 0
    # the three LLM-free ablations train the same patch embedding and a head of width d_model
    assert rows.loc["no-llm", "trainable_params"] < rows.loc["llm2attn", "trainable_params"]
    assert rows.loc["no-prompt", "trainable_params"] == rows.loc["time-llm", "trainable_params"]
    markdown = (tmp_path / "abl" / TABLE_MD).read_text()
    assert markdown.count("\n") == len(VARIANTS) + 2 and "| w/o LLM |" in markdown
    # the Time-LLM variants leave run folders that `timellm explain` reads
    assert (tmp_path / "abl" / "time-llm" / "seed-2021" / "adapter" / "adapter.safetensors").is_file()
    assert (tmp_path / "abl" / "random-llm" / "seed-2021" / "config.yaml").is_file()
    assert (written["test_series_per_s"] > 0).all()


def test_the_same_seed_gives_the_same_numbers(tmp_path, hourly_csv):
    def ablate(folder, variants, **changes):
        return run_ablation(
            tiny_preset(**changes), tmp_path / folder, variants=variants, budget="tiny", source=hourly_csv
        )

    first = ablate("a", "time-llm,dlinear")
    again = ablate("b", ["dlinear", "time-llm"])
    for column in ("mse", "mae", "best_val_loss", "trainable_params"):
        assert list(first[column]) == list(again[column]), column
    other = ablate("c", "time-llm,dlinear", seed=7)
    assert list(other["mse"]) != list(first["mse"])


def test_several_seeds_give_each_variant_a_mean_and_a_spread(tmp_path, hourly_csv):
    variants = "time-llm,dlinear,seasonal-naive"
    table = run_ablation_seeds(
        tiny_preset(), tmp_path / "s", [1, 2], variants=variants, budget="tiny", source=hourly_csv
    )
    every = pd.read_csv(tmp_path / "s" / "ablation_seeds.csv")
    assert len(every) == 6 and set(every["seed"]) == {1, 2}
    for row in table.itertuples():
        runs = every[every["variant"] == row.variant]
        assert row.seeds == 2
        assert math.isclose(row.mse, runs["mse"].mean()) and math.isclose(
            row.mse_std, runs["mse"].std(ddof=1)
        )
        assert math.isclose(row.mae_std, runs["mae"].std(ddof=1))
    rows = table.set_index("variant")
    assert rows.loc["time-llm", "mse_std"] > 0 and rows.loc["seasonal-naive", "mse_std"] == 0
    assert math.isclose(
        rows.loc["dlinear", "mse_vs_full_pct"],
        100 * (rows.loc["dlinear", "mse"] - rows.loc["time-llm", "mse"]) / rows.loc["time-llm", "mse"],
    )
    assert list(pd.read_csv(tmp_path / "s" / TABLE_CSV).columns) == COLUMNS
    assert " ± " in (tmp_path / "s" / TABLE_MD).read_text()
    assert (tmp_path / "s" / "time-llm" / "seed-2" / "adapter" / "adapter.safetensors").is_file()
    with pytest.raises(ValueError, match="two distinct seeds"):
        run_ablation_seeds(tiny_preset(), tmp_path / "t", [1], source=hourly_csv)


def test_an_interrupted_ablation_continues_where_it_stopped(tmp_path, hourly_csv):
    def ablate(variants, seeds, **changes):
        return run_ablation(
            tiny_preset(**changes),
            tmp_path / "r",
            variants=variants,
            budget="tiny",
            source=hourly_csv,
            seeds=seeds,
        )

    ablate("dlinear,seasonal-naive", [1])
    first = pd.read_csv(tmp_path / "r" / SEEDS_CSV)
    table = ablate("dlinear,seasonal-naive,no-llm", [1, 2])  # a later pass: more variants and seeds
    every = pd.read_csv(tmp_path / "r" / SEEDS_CSV)
    kept = ["variant", "seed", "mse", "train_seconds"]  # the finished rows were kept, not rerun
    assert len(every) == 6 and every.iloc[:2][kept].equals(first[kept])
    assert list(table["seeds"]) == [2, 2, 2]
    with pytest.raises(ValueError, match="other settings"):
        ablate("dlinear", [1], d_model=16)  # another model in the same folder: refused
    # a folder written before an execution setting existed ran at that setting's default
    record = yaml.safe_load((tmp_path / "r" / RUN_CONFIG).read_text())
    del record["execution"]["llm_batch"]
    (tmp_path / "r" / RUN_CONFIG).write_text(yaml.safe_dump(record, sort_keys=False))
    assert len(ablate("dlinear", [1, 2])) == 1


def test_converged_budget_chooses_each_variants_learning_rate_on_validation(tmp_path, hourly_csv):
    table = run_ablation(
        tiny_preset(),
        tmp_path / "c",
        variants="dlinear,seasonal-naive",
        budget="converged",
        source=hourly_csv,
        seeds=[1, 2],
    )
    tuning = pd.read_csv(tmp_path / "c" / TUNING_CSV)
    assert list(tuning["learning_rate"]) == list(RECIPES["small"].learning_rates)
    assert (tuning["seed"] == 1).all() and tuning["chosen"].sum() == 1  # searched once, on the first seed
    best = tuning.loc[tuning["best_val_loss"].idxmin()]
    assert bool(best.chosen)
    every = pd.read_csv(tmp_path / "c" / SEEDS_CSV).set_index(["variant", "seed"])
    assert every.loc[("dlinear", 1), "learning_rate"] == best.learning_rate
    assert every.loc[("dlinear", 2), "learning_rate"] == best.learning_rate
    assert every.loc[("dlinear", 1), "best_val_loss"] == pytest.approx(best.best_val_loss)
    assert every.loc[("dlinear", 1), "batch_size"] == RECIPES["small"].train["batch_size"]
    assert table.set_index("variant").loc["dlinear", "seeds"] == 2


def test_budgets_and_variants_resolve_or_fail_clearly():
    base = TrainConfig(epochs=10, max_train_windows=None)
    assert resolve_budget(base, None) == base
    assert resolve_budget(base, "tiny").max_train_windows == BUDGETS["tiny"]["max_train_windows"]
    custom = resolve_budget(base, "1500x2")
    assert (custom.max_train_windows, custom.epochs) == (1500, 2)
    with pytest.raises(ValueError, match="unknown budget 'lots'"):
        resolve_budget(base, "lots")
    assert [v.name for v in resolve_variants("dlinear, time-llm")] == ["time-llm", "dlinear"]
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['gpt4'\]"):
        resolve_variants("gpt4,dlinear")


@pytest.mark.parametrize("variant", ["none", "attention", "transformer"])
def test_llm_free_ablations_are_those_of_tan_et_al(variant):
    """No prompt, no prototypes, no reprogramming, no backbone: patch embedding -> mixer -> head."""
    model = build_model(tiny_config(llm=variant))
    assert model.backbone is None
    assert not hasattr(model, "prototypes") and not hasattr(model, "reprogramming")
    c = model.config
    assert model.head.linear.in_features == c.d_model * c.num_patches
    if variant == "attention":
        assert model.mixer.attention.num_heads == c.n_heads
    x = torch.randn(3, c.seq_len, 2)
    assert model(x).shape == (3, c.pred_len, 2)


def test_ablate_cli_on_a_csv_prints_the_markdown_table(tmp_path, capsys):
    csv = write_hourly_csv(tmp_path / "mine.csv")
    tiny = [
        "--backbone=tiny-random-llama",
        "--set=seq_len=48",
        "--set=pred_len=12",
        "--set=patch_len=8",
        "--set=stride=4",
        "--set=d_model=8",
        "--set=max_test_windows=20",
    ]
    args = ["ablate", "--preset", "ETTh1-96", *tiny, "--budget", "64x1", "--csv", str(csv)]
    args += [
        "--time-col",
        "date",
        "--variants",
        "no-llm,dlinear,seasonal-naive",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| variant | MSE | MAE |" in out and "| DLinear |" in out and "| seasonal naive |" in out
    assert "mine, horizon 12, 20 test windows" in out
    assert (tmp_path / "o" / TABLE_CSV).is_file()
    assert main([*args[:-1], str(tmp_path / "seeds"), "--seeds", "1,2"]) == 0
    assert " ± " in capsys.readouterr().out and (tmp_path / "seeds" / SEEDS_CSV).is_file()


def test_ablate_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["ablate", "--preset", "ETTh1-96-cpu", "--time-col", "date"]) == 2
    assert "describe a --csv file" in capsys.readouterr().err
    assert main(["ablate", "--preset", "ETTh1-96-cpu", "--budget", "huge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown budget 'huge'" in capsys.readouterr().err
    assert main(["ablate", "--preset", "ETTh1-96-cpu", "--variants", "bogus"]) == 2
    assert "unknown variant(s) ['bogus']" in capsys.readouterr().err
    missing = tmp_path / "nope.csv"
    assert (
        main(["ablate", "--preset", "ETTh1-96-cpu", "--csv", str(missing), "--out", str(tmp_path / "y")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    pd.DataFrame({"load": np.arange(300.0)}).to_csv(tmp_path / "steps.csv", index=False)
    assert main(["ablate", "--preset", "ETTh1-96-cpu", "--csv", str(tmp_path / "steps.csv")]) == 2
    assert "pass --period ... (e.g. 24 for hourly rows)" in capsys.readouterr().err  # the option, not period=
    frame = pd.read_csv(write_hourly_csv(tmp_path / "dup.csv", rows=300))
    frame.loc[3, "date"] = frame.loc[2, "date"]
    frame.to_csv(tmp_path / "dup.csv", index=False)
    args = ["ablate", "--preset", "ETTh1-96-cpu", "--csv", str(tmp_path / "dup.csv"), "--time-col", "date"]
    assert main(args) == 2
    assert "duplicated timestamps (first: 2024-01-01 02:00:00) in rows 2, 3" in capsys.readouterr().err


def test_ablate_dry_run_plans_each_variant_with_an_llm_and_refuses_what_cannot_fit(
    tmp_path, capsys, monkeypatch
):
    csv = write_hourly_csv(tmp_path / "load.csv", rows=2000)
    args = ["ablate", "--preset", "ETTh1-96-cpu", "--csv", str(csv), "--time-col", "date", "--dry-run"]
    args += ["--budget", "converged", "--variants", "time-llm,no-llm,dlinear", "--out", str(tmp_path / "a")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        "timellm ablate, Time-LLM" in out and "training, 256 series a step" in out
    )  # the LLM recipe's batch
    assert "w/o LLM" not in out and not (tmp_path / "a").exists()  # no LLM, no plan; nothing written
    monkeypatch.setenv("TIMELLM_MEMORY_LIMIT", "1G")
    assert main(args) == 2  # the ablation's own refusal
    assert "GiB" in capsys.readouterr().err
    with pytest.raises(InsufficientMemoryError):
        run_ablation(
            get_preset("ETTh1-96-cpu"), tmp_path / "b", variants="time-llm", budget="converged",
            source=DataSource(csv=str(csv), time_col="date"),
        )  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_statsforecast_models_score_the_same_test_windows_on_request(tmp_path, hourly_csv):
    assert "autoets" not in [v.name for v in resolve_variants(None)]  # slow: only when named
    table = run_ablation(
        tiny_preset(seq_len=96),  # four days of hours: enough for a seasonal ETS or Theta
        tmp_path / "sf",
        variants="seasonal-naive,autotheta,autoets",
        budget="tiny",
        source=hourly_csv,
    )
    assert list(table["variant"]) == ["seasonal-naive", "autoets", "autotheta"]
    assert (table["test_windows"] == 12).all() and table["mse"].notna().all()
    assert (table["trainable_params"] == 0).all() and (table["infer_seconds"] > 0).all()
    # a sine of period 24 with noise: the seasonal models beat a MSE of the series' variance (1 after scaling)
    assert (table["mse"] < 1).all()


def _fake_ablation(folder, dataset, mses):
    """An ablation folder as `timellm ablate` leaves it: its record and its rows per variant and seed."""
    from timellm.experiments.folders import RunFolder

    RunFolder(folder).create(
        {"dataset": dataset, "budget": "converged", "model": {"pred_len": 96}, "test_windows_total": 50}
        | {
            "command": f"timellm ablate --preset {dataset}-96-cpu --variants time-llm --seeds 1,2 --out {folder.name}"
        }
    )
    rows = [
        {"variant": v, "label": VARIANTS[v].label, "kind": VARIANTS[v].kind, "seed": seed, "mse": m, "mae": m}
        | {"train_seconds": 1.0, "test_series_per_s": 10.0, "epochs_run": 3, "test_windows": 50}
        | {"learning_rate": 0.01, "commit": "abc"}
        for v, by_seed in mses.items()
        for seed, m in by_seed.items()
    ]
    pd.DataFrame(rows).to_csv(folder / SEEDS_CSV, index=False)


def test_the_summary_reads_every_dataset_and_pairs_variants_with_time_llm_by_seed(tmp_path):
    from timellm.experiments.ablation_summary import PAIRED_CSV, sign_test
    from timellm.experiments.report import write_report

    root = tmp_path / "runs"
    _fake_ablation(
        root / "a", "ETTh1", {"time-llm": {1: 0.40, 2: 0.42}, "no-llm": {1: 0.41, 2: 0.44, 3: 0.5}}
    )
    _fake_ablation(root / "b", "ETTh2", {"time-llm": {1: 0.30}, "no-llm": {1: 0.29}, "dlinear": {1: 0.33}})
    written, markdown = write_report(root, tmp_path / "out")
    assert "ablation" in written and "Paired over (dataset, seed)" in markdown
    summary = pd.read_csv(tmp_path / "out" / "ablation_summary.csv").set_index(["dataset", "variant"])
    etth1 = summary.loc[("ETTh1", "no-llm")]
    assert etth1.seeds == 3 and etth1.mse == pytest.approx((0.41 + 0.44 + 0.5) / 3)
    assert etth1.mse_vs_time_llm_pct == pytest.approx(100 * (etth1.mse / 0.41 - 1))
    paired = pd.read_csv(tmp_path / "out" / PAIRED_CSV).set_index("variant")
    no_llm = paired.loc["no-llm"]
    # seed 3 has no Time-LLM partner: three pairs, two of them worse without the LLM
    assert (no_llm.pairs, no_llm.worse, no_llm.better, no_llm.datasets) == (3, 2, 1, 2)
    assert no_llm.sign_p == pytest.approx(sign_test(2, 3)) == pytest.approx(1.0)
    assert no_llm.median_change_pct == pytest.approx(100 * 0.01 / 0.40)
    assert (tmp_path / "out" / "ablation_summary.png").stat().st_size > 0
    # every row names its own command, whatever pass of the folder ran last; the summary its seeds
    seeds = pd.read_csv(tmp_path / "out" / "ablation_summary_seeds.csv").set_index(
        ["dataset", "variant", "seed"]
    )
    assert (
        seeds.loc[("ETTh1", "no-llm", 3)].command
        == "timellm ablate --preset ETTh1-96-cpu --variants no-llm --seeds 3 --out a"
    )
    assert etth1.command == "timellm ablate --preset ETTh1-96-cpu --variants no-llm --seeds 1,2,3 --out a"
    assert sign_test(0, 10) == pytest.approx(2 / 1024) and sign_test(10, 10) == pytest.approx(2 / 1024)


def test_build_model_builds_every_variant_of_the_config():
    from timellm.model.ablations import LLMFreeTimeLLM
    from timellm.model.adapter import TimeLLMBase

    for llm in ("none", "attention", "transformer"):
        model = build_model(tiny_config(llm=llm), seed=3)
        assert type(model) is LLMFreeTimeLLM and isinstance(model, TimeLLMBase)
        with pytest.raises(ValueError, match="has no LLM: build it with timellm.model.variants.build_model"):
            TimeLLM(tiny_config(llm=llm))  # the class is the model with an LLM, and only that
        same = build_model(tiny_config(llm=llm), seed=3)
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))
    full = build_model(tiny_config(), seed=3)
    assert type(full) is TimeLLM and isinstance(full, TimeLLMBase) and full.backbone is not None
    with pytest.raises(ValueError, match="has no LLM"):
        build_model(tiny_config(llm="none"), backbone=full.backbone)


def test_a_variant_of_our_model_is_seeded_once_by_build_model(monkeypatch):
    from timellm.experiments import ablation

    monkeypatch.setattr(ablation, "seed_everything", lambda seed: pytest.fail("seeded outside build_model"))
    ctx = ablation._Context(None, tiny_config(), TrainConfig(), None, None, None, {})
    for name in ("time-llm", "random-llm", "no-llm"):
        variant = VARIANTS[name]
        model = ablation._build(variant, ctx, seed=5)
        config = ctx.model.replace(**variant.overrides)
        shared = (
            ctx.backbones.get((config.backbone, config.llm_layers)) if config.llm == "pretrained" else None
        )
        same = build_model(config, ctx.execution, 5, shared)
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))


def test_a_saved_llm_free_adapter_loads_back_as_its_variant(tmp_path):
    model = build_model(tiny_config(llm="attention"))
    model.save_pretrained(tmp_path / "a")
    loaded = load_model(tmp_path / "a")  # whichever variant was saved
    x = torch.randn(2, model.config.seq_len, 3)
    model.eval(), loaded.eval()
    assert type(loaded) is type(model) and torch.equal(model(x), loaded(x))
    with pytest.raises(ValueError, match="has no LLM"):  # TimeLLM loads the model with an LLM only
        TimeLLM.from_pretrained(tmp_path / "a")


# the converged budget of the variants with an LLM, shrunk to the tiny backbone: the same logic
TINY_LLM_RECIPE = Recipe(
    "llm",
    {"batch_size": 8, "epochs": 3, "patience": 3, "schedule": "halving", "max_train_windows": 48},
    (1e-3, 3e-3, 1e-2),
    trial={"epochs": 1, "max_train_windows": 24},
)


def test_the_llm_recipe_tries_each_rate_briefly_and_trains_the_chosen_one_in_full(
    tmp_path, hourly_csv, monkeypatch
):
    monkeypatch.setitem(RECIPES, "llm", TINY_LLM_RECIPE)
    preset = tiny_preset().with_overrides({"curve_test_windows": 5})
    run_ablation(
        preset, tmp_path / "l", variants="time-llm", budget="converged", source=hourly_csv, seeds=[1]
    )
    tuning = pd.read_csv(tmp_path / "l" / TUNING_CSV)
    assert list(tuning["learning_rate"]) == [1e-3, 3e-3, 1e-2]
    assert (tuning["epochs_run"] == 1).all() and (tuning["series_windows"] == 24).all()  # the short try
    assert tuning["chosen"].sum() == 1
    row = pd.read_csv(tmp_path / "l" / SEEDS_CSV).iloc[0]
    assert row.learning_rate == tuning.loc[tuning["chosen"].astype(bool), "learning_rate"].iloc[0]
    assert row.epochs_run == 3 and row.series_windows == 3 * 48 and row.batch_size == 8  # the full recipe
    assert isinstance(row.machine, str) and "threads" in row.machine
    history = pd.read_csv(tmp_path / "l" / "time-llm" / "seed-1" / "history.csv")
    assert list(history["series_windows"]) == [48, 96, 144]
    assert history["test_mse"].notna().all() and history["test_mae"].notna().all()  # the learning curve
    assert not (tmp_path / "l" / "time-llm" / "seed-1" / "checkpoint").exists()  # removed once finished
    from timellm.experiments.ablation_summary import write_ablation_summary

    written = write_ablation_summary(tmp_path, tmp_path / "out")
    figure = next(path for name, path in written.items() if name.startswith("learning_curve_"))
    curve = pd.read_csv(figure.with_suffix(".csv"))
    assert figure.stat().st_size > 0 and list(curve["series_windows"]) == [48, 96, 144]
    assert curve["kept"].sum() == 1 and (curve["test_windows"] == 5).all()


def test_a_best_rate_at_an_end_of_the_grid_is_followed_by_a_try_beyond_it(tmp_path, hourly_csv, monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(RECIPES, "llm", replace(TINY_LLM_RECIPE, beyond_edge=True))
    losses = {1e-3: 0.5, 3e-3: 0.6, 1e-2: 0.7, 3e-4: 0.4}  # the lowest rate is best, and lower is better
    real_fit = ablation._fit

    def fit_with_losses(variant, ctx, train, seed, folder):
        model, result = real_fit(variant, ctx, train, seed, folder)
        if "tuning" in str(folder):
            result.best_val_loss = losses[train.learning_rate]
        return model, result

    monkeypatch.setattr(ablation, "_fit", fit_with_losses)
    run_ablation(
        tiny_preset(), tmp_path / "e", variants="time-llm", budget="converged", source=hourly_csv, seeds=[1]
    )
    tuning = pd.read_csv(tmp_path / "e" / TUNING_CSV)
    assert list(tuning["learning_rate"]) == [1e-3, 3e-3, 1e-2, 3e-4]  # one grid step beyond, once
    assert tuning.loc[tuning["chosen"].astype(bool), "learning_rate"].tolist() == [3e-4]
    assert [ablation._round_rate(r) for r in (9e-5, 0.009, 2e-4, 0.03)] == [1e-4, 1e-2, 3e-4, 3e-2]


def test_an_interrupted_rate_search_keeps_the_rates_it_tried(tmp_path, hourly_csv, monkeypatch):
    monkeypatch.setitem(RECIPES, "llm", TINY_LLM_RECIPE)
    fits = []
    real_fit = ablation._fit

    def fit_then_fail(variant, ctx, train, seed, folder):
        if len(fits) == 2:
            raise KeyboardInterrupt
        fits.append(train.learning_rate)
        return real_fit(variant, ctx, train, seed, folder)

    monkeypatch.setattr(ablation, "_fit", fit_then_fail)
    ablate = lambda: run_ablation(  # noqa: E731
        tiny_preset(), tmp_path / "i", variants="time-llm", budget="converged", source=hourly_csv, seeds=[1]
    )
    with pytest.raises(KeyboardInterrupt):
        ablate()
    assert list(pd.read_csv(tmp_path / "i" / TUNING_CSV)["learning_rate"]) == [1e-3, 3e-3]
    fits.clear()
    monkeypatch.setattr(ablation, "_fit", lambda *a: (fits.append(a[2].learning_rate), real_fit(*a))[1])
    ablate()
    assert fits[0] == 1e-2 and len(fits) == 2  # the rate not yet tried, then the chosen one in full


def test_the_swap_variants_train_at_the_rate_time_llm_chose(tmp_path, hourly_csv, monkeypatch):
    monkeypatch.setitem(RECIPES, "llm", TINY_LLM_RECIPE)
    losses = {1e-3: 0.6, 3e-3: 0.4, 1e-2: 0.5}  # Time-LLM's tries: the middle rate wins
    real_fit = ablation._fit
    fitted = []

    def fit_with_losses(variant, ctx, train, seed, folder):
        fitted.append((variant.name, "tuning" in str(folder), train.learning_rate))
        model, result = real_fit(variant, ctx, train, seed, folder)
        if "tuning" in str(folder):
            result.best_val_loss = losses[train.learning_rate]
        return model, result

    monkeypatch.setattr(ablation, "_fit", fit_with_losses)
    ablate = lambda folder, variants: run_ablation(  # noqa: E731
        tiny_preset(), tmp_path / folder, variants=variants, budget="converged", source=hourly_csv, seeds=[1]
    )
    with pytest.raises(ValueError, match="random-llm trains at the learning rate time-llm chose"):
        ablate("alone", "random-llm")  # no rate chosen in that folder: refused before anything runs
    assert fitted == [] and not (tmp_path / "alone").exists()
    dry = ["ablate", "--preset", "ETTh1-96-cpu", "--budget", "converged", "--dry-run"]
    assert main([*dry, "--variants", "random-llm", "--out", str(tmp_path / "alone")]) == 2  # said up front
    assert main([*dry, "--variants", "time-llm,random-llm", "--out", str(tmp_path / "alone")]) == 0

    ablate("s", "time-llm,random-llm,no-prompt")
    tuning = pd.read_csv(tmp_path / "s" / TUNING_CSV)
    assert set(tuning["variant"]) == {"time-llm"}  # the swaps search no rate of their own
    rows = pd.read_csv(tmp_path / "s" / SEEDS_CSV).set_index("variant")
    assert rows.loc[["time-llm", "random-llm", "no-prompt"], "learning_rate"].tolist() == [3e-3] * 3
    assert [f for f in fitted if f[0] != "time-llm"] == [
        ("random-llm", False, 3e-3),
        ("no-prompt", False, 3e-3),
    ]
    fitted.clear()
    ablate("s", "no-statistics")  # later, alone: the rate is read from the folder
    assert fitted == [("no-statistics", False, 3e-3)]


def test_converged_time_llm_rows_join_the_long_term_table_beside_its_earlier_rows(
    tmp_path, hourly_csv, monkeypatch
):
    from timellm.experiments.report import write_report

    monkeypatch.setitem(RECIPES, "llm", TINY_LLM_RECIPE)
    out = tmp_path / "results"
    out.mkdir()
    earlier = {  # a row an earlier report wrote: another budget of the same dataset and horizon
        "run": "ETTh1-96-cpu", "dataset": "load", "target": "load", "pred_len": 12, "percent": 100,
        "backbone": "tiny-random-llama", "llm_layers": 2, "mse": 0.5, "mae": 0.5, "budget": "2 layers",
        "steps": 10, "test_windows": 12, "test_windows_total": 300, "command": "timellm train", "commit": "x",
    }  # fmt: skip
    pd.DataFrame([earlier]).to_csv(out / "long_term.csv", index=False)
    for seeds in ([1], [2]):  # seeds run by separate commands are one experiment
        command = f"timellm ablate --budget converged --seeds {seeds[0]} --out runs"
        run_ablation(
            tiny_preset(), tmp_path / "runs" / "load-12", variants="time-llm", budget="converged",
            source=hourly_csv, seeds=seeds, command=command,
        )  # fmt: skip
        write_report(tmp_path / "runs", out, update=True)
    table = pd.read_csv(out / "long_term.csv")
    assert len(table) == 2 and table["run"].iloc[0] == "ETTh1-96-cpu"  # kept, and filled in
    assert table["series_windows"].iloc[0] == 10 * 24  # steps x the preset's batch
    converged = table.iloc[1]
    seeds = pd.read_csv(tmp_path / "runs" / "load-12" / SEEDS_CSV)
    assert converged.seeds == "1,2" and math.isclose(converged.mse, seeds["mse"].mean())
    assert converged.budget.startswith("converged recipe (lr ") and converged.batch_size == 8
    assert converged.series_windows == 3 * 48 and converged.steps == seeds["steps"].mean()
    assert converged.command == "timellm ablate --budget converged --seeds 1,2 --out runs"
    assert "converged recipe" in (out / "report_long_term.md").read_text()
    assert converged.test_windows == 12  # the ablation's subset, until re-tested on the whole split
    # beside it, the naive references on the same windows, as the ablation's own naive rows score them
    naive = run_ablation(
        tiny_preset(), tmp_path / "naive", variants="last-value,seasonal-naive", budget="converged",
        source=hourly_csv,
    ).set_index("variant")  # fmt: skip
    for ref in ("last-value", "seasonal-naive"):
        for metric in ("mse", "mae"):
            column = f"{ref.replace('-', '_')}_{metric}"
            assert math.isclose(converged[column], naive.loc[ref, metric], rel_tol=1e-6), column
    for seed in (1, 2):
        assert (
            main(["evaluate", str(tmp_path / "runs" / "load-12" / "time-llm" / f"seed-{seed}"), "--save"])
            == 0
        )
    write_report(tmp_path / "runs", out, update=True)
    whole = pd.read_csv(out / "long_term.csv").iloc[1]
    assert len(pd.read_csv(out / "long_term.csv")) == 2 and whole.seeds == "1,2"
    assert whole.test_windows == whole.test_windows_total > 12 and whole.mse != converged.mse
    assert whole.command.endswith("timellm evaluate runs/time-llm/seed-S --save (each seed S)")


KILLED_ABLATION = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from timellm.experiments import ablation
from timellm.experiments.ablation import Recipe, run_ablation
from timellm.data.sources import DataSource
from timellm.experiments.presets import get_preset

ablation.RECIPES["llm"] = Recipe(
    "llm",
    {"batch_size": 8, "epochs": 3, "patience": 3, "schedule": "halving", "max_train_windows": 48,
     "checkpoint_every": 2, "deterministic": True},
    (3e-3,),
)
preset = get_preset("ETTh1-96").with_overrides(dict(
    backbone="tiny-random-llama", seq_len=48, pred_len=12, patch_len=8, stride=4, d_model=8, d_ff=16,
    n_heads=2, num_prototypes=20, description="Test load.", max_test_windows=12))
run_ablation(preset, sys.argv[1], variants="time-llm", budget="converged", seeds=[1],
             source=DataSource(csv=sys.argv[2], time_col="date"))
"""


@pytest.mark.slow
def test_an_ablation_row_killed_mid_epoch_ends_bit_exact_when_run_again(tmp_path, hourly_csv):
    def run(folder, kill_after):
        return run_killed(KILLED_ABLATION, kill_after, str(tmp_path / folder), hourly_csv.csv)

    assert run("whole", 0).returncode == 0
    killed = run("killed", 4)  # SIGKILL after the 4th checkpoint: mid-epoch 2 (3 batches an epoch)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoint = tmp_path / "killed" / "time-llm" / "seed-1" / "checkpoint"
    assert checkpoint.is_dir() and not (tmp_path / "killed" / SEEDS_CSV).exists()
    again = run("killed", 0)  # the same command again: continues from the checkpoint
    assert again.returncode == 0, again.stderr[-2000:]
    assert "continuing from the checkpoint" in again.stderr
    whole = pd.read_csv(tmp_path / "whole" / SEEDS_CSV).iloc[0]
    resumed = pd.read_csv(tmp_path / "killed" / SEEDS_CSV).iloc[0]
    assert (resumed.mse, resumed.mae, resumed.steps) == (whole.mse, whole.mae, whole.steps)
    from safetensors.torch import load_file

    whole_adapter, resumed_adapter = (
        load_file(tmp_path / f / "time-llm" / "seed-1" / "adapter" / "adapter.safetensors")
        for f in ("whole", "killed")
    )
    assert whole_adapter.keys() == resumed_adapter.keys()
    for key, value in whole_adapter.items():
        assert torch.equal(value, resumed_adapter[key]), key


def test_an_update_replaces_the_rows_run_again_and_sets_aside_those_of_another_recipe(tmp_path):
    from timellm.experiments.ablation_summary import SUPERSEDED_CSV, write_ablation_summary

    def ablation(folder, mses, batch, steps):
        _fake_ablation(folder, "ETTh1", mses)
        rows = pd.read_csv(folder / SEEDS_CSV).assign(batch_size=batch, steps=steps)
        rows.to_csv(folder / SEEDS_CSV, index=False)

    out = tmp_path / "results"
    ablation(
        tmp_path / "old" / "ETTh1-96",
        {"time-llm": {1: 0.40, 2: 0.42}, "random-llm": {1: 0.45}, "no-llm": {1: 0.37, 2: 0.38}},
        24,
        252,
    )
    write_ablation_summary(tmp_path / "old", out)
    # Time-LLM trained again by another recipe (batch 256); random weights not yet
    ablation(tmp_path / "new" / "ETTh1-96", {"time-llm": {1: 0.36, 2: 0.37}}, 256, 900)
    written = write_ablation_summary(tmp_path / "new", out, update=True)
    every = pd.read_csv(written["seeds"]).set_index(["variant", "seed"])
    assert every.loc[("time-llm", 1), "mse"] == 0.36 and every.loc[("no-llm", 2), "mse"] == 0.38  # kept
    assert every.loc[("time-llm", 1), "series_windows"] == 900 * 256  # steps x batch where not recorded
    assert "random-llm" not in every.index.get_level_values("variant")  # its recipe is not Time-LLM's
    aside = pd.read_csv(out / SUPERSEDED_CSV)
    assert list(aside["variant"]) == ["random-llm"] and aside["batch_size"].iloc[0] == 24
    paired = pd.read_csv(written["paired"]).set_index("variant")
    assert "random-llm" not in paired.index and paired.loc["no-llm", "worse"] == 2
    # a later update keeps what was set aside, and random weights at Time-LLM's recipe come back in
    ablation(tmp_path / "newer" / "ETTh1-96", {"random-llm": {1: 0.39}}, 256, 900)
    written = write_ablation_summary(tmp_path / "newer", out, update=True)
    every = pd.read_csv(written["seeds"]).set_index(["variant", "seed"])
    assert every.loc[("random-llm", 1), "mse"] == 0.39 and len(every) == 5
    assert not (out / SUPERSEDED_CSV).exists() or pd.read_csv(out / SUPERSEDED_CSV).empty


def test_time_llm_seeds_of_the_older_recipe_are_set_aside_once_one_seed_ran_the_converged_one(tmp_path):
    from timellm.experiments.ablation_summary import SUPERSEDED_CSV, write_ablation_summary

    out, old = tmp_path / "results", tmp_path / "old" / "ETTh1-96"
    _fake_ablation(old, "ETTh1", {"time-llm": {1: 0.40, 2: 0.42}, "no-llm": {1: 0.37, 2: 0.38}})
    rows = pd.read_csv(old / SEEDS_CSV).assign(batch_size=24, steps=252)
    rows.to_csv(old / SEEDS_CSV, index=False)
    write_ablation_summary(tmp_path / "old", out)
    new = tmp_path / "new" / "ETTh1-96"  # seed 1 trained again by the converged recipe; seed 2 not yet
    _fake_ablation(new, "ETTh1", {"time-llm": {1: 0.38}})
    pd.read_csv(new / SEEDS_CSV).assign(batch_size=256, steps=708).to_csv(new / SEEDS_CSV, index=False)
    written = write_ablation_summary(tmp_path / "new", out, update=True)
    every = pd.read_csv(written["seeds"]).set_index(["variant", "seed"])
    assert list(every.loc["time-llm"].index) == [1] and every.loc[("time-llm", 1), "mse"] == 0.38
    aside = pd.read_csv(out / SUPERSEDED_CSV)
    assert list(zip(aside["variant"], aside["seed"], aside["batch_size"], strict=True)) == [
        ("time-llm", 2, 24)
    ]
    no_llm = pd.read_csv(written["paired"]).set_index("variant").loc["no-llm"]
    assert no_llm.pairs == 1 and no_llm.reference_series_windows == f"{708 * 256:,} x1"
    from timellm.experiments.ablation_summary import budget_counts

    mixed = pd.Series([6048.0, 180000.0, 6048.0, np.nan])  # a paired test over two budgets says so
    assert budget_counts(mixed) == "180,000 x1; 6,048 x2; unknown x1"
    assert budget_counts(pd.Series([28672.0, 302080.0, 181248.0, 40960.0])) == "28,672-302,080 (4 pairs)"
    assert budget_counts(pd.Series([np.nan, np.nan])) is None  # naive forecasts train nothing


@pytest.mark.parametrize("dataset", ["ETTh1-96", "ETTm2-96", "illness-24", "weather-96"])
def test_a_converged_preset_is_its_cpu_preset_under_the_ablations_llm_recipe(dataset):
    converged, cpu = get_preset(f"{dataset}-converged"), get_preset(f"{dataset}-cpu")
    assert converged.model == cpu.model
    recipe = RECIPES["llm"]
    expected = cpu.train.replace(**recipe.train, learning_rate=converged.train.learning_rate)
    assert converged.train == expected
    grid = sorted(recipe.learning_rates)  # the grid, or one step beyond its ends (beyond_edge)
    beyond = {ablation._round_rate(grid[0] ** 2 / grid[1]), ablation._round_rate(grid[-1] ** 2 / grid[-2])}
    assert converged.train.learning_rate in {*grid, *beyond}
