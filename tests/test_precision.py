"""precision=auto follows the hardware; an emulated low precision runs but says how slow it is.

The CPU's capabilities are monkeypatched, so both branches are tested on any machine.
"""

import logging

import pytest
import torch

from timellm.experiments import speed
from timellm.model import precision
from timellm.training.config import TrainConfig
from timellm.training.loop import make_accelerator, run_precision

SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
EPYC_AVX2 = frozenset({"avx", "avx2", "fma"})


@pytest.fixture
def cpu(monkeypatch):
    """Set the CPU's flags (None: unreadable) and its measured bf16/fp16 slowdown."""
    precision._warn_once.cache_clear()

    def set_cpu(flags, slowdown=300.0):
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision, "cpu_matmul_slowdown", lambda name, *a, **k: slowdown)

    yield set_cpu
    precision._warn_once.cache_clear()


@pytest.fixture
def fresh_accelerator_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_auto_is_bf16_on_a_cpu_with_amx_or_avx512_bf16(cpu):
    cpu(SAPPHIRE_RAPIDS)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    cpu(frozenset({"avx2", "avx512_bf16"}))
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    cpu(frozenset({"fp", "asimd", "bf16"}))  # Arm with the BF16 extension (Graviton 3, ...)
    assert precision.resolve_precision("auto", "cpu") == "bf16"


def test_auto_is_fp32_where_bf16_is_emulated(cpu, caplog):
    cpu(EPYC_AVX2)
    with caplog.at_level(logging.WARNING, logger="timellm"):
        assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert not caplog.records  # auto chose for the user: nothing to warn about


def test_explicit_bf16_on_an_emulating_cpu_runs_after_one_warning_naming_the_slowdown(cpu, caplog):
    cpu(EPYC_AVX2, slowdown=312.0)
    with caplog.at_level(logging.WARNING, logger="timellm"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "312x slower than fp32" in warnings[0] and "precision auto" in warnings[0]
    assert "amx_bf16" in warnings[0]


def test_explicit_bf16_on_a_native_cpu_says_nothing(cpu, caplog):
    cpu(SAPPHIRE_RAPIDS)
    with caplog.at_level(logging.WARNING, logger="timellm"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
        assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert not caplog.records


def test_without_cpu_flags_a_timed_matmul_decides(cpu):
    cpu(None, slowdown=0.2)  # bf16 five times faster than fp32: native
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    cpu(None, slowdown=40.0)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert "40.0x slower" in precision.emulation_reason("bf16", "cpu")


def test_the_matmul_probe_times_both_dtypes():
    slowdown = precision.cpu_matmul_slowdown("bf16", size=32, reps=1)
    assert slowdown > 0 and slowdown == precision.cpu_matmul_slowdown("bf16", size=32, reps=1)  # cached


def test_gpus_follow_their_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert precision.resolve_precision("auto", "cuda") == "fp32"
    assert "Tesla T4" in precision.emulation_reason("bf16", "cuda")
    assert precision.emulation_reason("fp16", "cuda") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert precision.resolve_precision("auto", "cuda") == "bf16"


def test_other_devices_and_bad_names():
    assert precision.resolve_precision("auto", "meta") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16; found 'bf32'"):
        precision.resolve_precision("bf32", "cpu")


def test_auto_is_the_training_default_and_the_accelerator_resolves_it(cpu, fresh_accelerator_state):
    assert TrainConfig().precision == "auto"
    cpu(SAPPHIRE_RAPIDS)
    assert run_precision(make_accelerator(TrainConfig())) == "bf16"
    cpu(EPYC_AVX2)
    # a second run of the process may choose another precision than the first
    assert run_precision(make_accelerator(TrainConfig())) == "fp32"
    assert run_precision(make_accelerator(TrainConfig(precision="bf16"))) == "bf16"


def test_auto_takes_the_launchers_explicit_precision(cpu, fresh_accelerator_state, monkeypatch):
    cpu(EPYC_AVX2)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert run_precision(make_accelerator(TrainConfig())) == "bf16"
    with pytest.raises(
        ValueError, match="launched with mixed precision 'bf16' but the run's precision is 'fp32'"
    ):
        make_accelerator(TrainConfig(precision="fp32"))


def test_bench_speed_measures_the_native_dtypes_and_says_which_it_skipped(cpu):
    cpu(EPYC_AVX2, slowdown=300.0)
    measured, skipped = speed.native_dtypes()
    assert measured == ["fp32"] and set(skipped) == {"bf16"} and "300x slower" in skipped["bf16"]
    cpu(SAPPHIRE_RAPIDS)
    assert speed.native_dtypes() == (["fp32", "bf16"], {})


def test_the_speed_report_names_the_skipped_dtypes():
    import pandas as pd

    numbers = ["series_per_s", "speedup", "flop_ratio", "speedup_vs_plain_default_malloc"]
    numbers += ["series_per_cpu_s", "speedup_cpu", "peak_rss_mb", "cpu_util", "flop_per_s"]
    labels = dict(backbone="b", layers=1, dtype="fp32", path="fast", attention="auto", mode="train")
    frame = pd.DataFrame([{**labels, "malloc": "default", **dict.fromkeys(numbers, 1.0)}])
    frame.attrs["matmul_peak"] = {"threads": 2, "fp32": 1e11, "fp32_per_cpu_s": 5e10}
    frame.attrs["skipped_dtypes"] = {"bf16": "emulated here"}
    text = speed.report(frame)
    assert "fp32 100 GFLOP/s" in text and "bf16 not measured: emulated here" in text


def test_a_models_explicit_autocast_warns_once_where_it_is_emulated(cpu, caplog):
    from conftest import tiny_config
    from timellm import build_model
    from timellm.model.config import ExecutionSettings

    cpu(EPYC_AVX2, slowdown=250.0)
    model = build_model(tiny_config(llm="none"), execution=ExecutionSettings(autocast_dtype="bfloat16"))
    with caplog.at_level(logging.WARNING, logger="timellm"):
        for _ in range(2):
            assert model(torch.randn(2, 48, 1)).dtype == torch.float32
    assert len(caplog.records) == 1 and "250x slower than fp32" in caplog.records[0].getMessage()


def test_one_table_names_every_precision_for_torch_autocast_accelerate_and_the_backbones():
    from timellm.backbones.storage import LOAD_DTYPES

    assert precision.PRECISIONS == ("auto", "fp32", "bf16", "fp16")
    assert precision.WEIGHTS == ("auto", "fp32", "bf16", "fp16", "int8")
    assert precision.ACCELERATE_PRECISION == {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
    assert precision.PRECISION_OF_ACCELERATE["no"] == "fp32"
    assert precision.PRECISION_OF_AUTOCAST == {"bfloat16": "bf16", "float16": "fp16"}
    assert precision.STORAGE_BYTES == {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}
    # the backbones (below the model) read checkpoints into the table's dtypes; int8 from bf16
    assert set(LOAD_DTYPES) == set(precision.PRECISION_NAMES)
    for name, dtype in LOAD_DTYPES.items():
        assert dtype is (torch.bfloat16 if name == "int8" else precision.STORAGE_DTYPES[name])
