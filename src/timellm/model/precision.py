"""The names of the precisions, which precision a device runs natively, and what
``precision="auto"`` resolves to there.

:data:`PRECISION_NAMES` is the one table of precision names (fp32, bf16, fp16, int8): their torch
dtypes, sizes, autocast and accelerate names. The settings, training, the model and the harness
read it instead of keeping maps of their own; the backbones, below the model, keep the one map
they need (what a checkpoint is read into), which a test holds in step with it.

bf16 autocast pays off only where the hardware multiplies bf16 matrices itself: GPUs with bf16
(Ampere and later), CPUs with AMX or AVX-512 BF16 (x86) or the BF16 extension (Arm). Elsewhere
oneDNN emulates it: on a 2-core AVX2 EPYC a bf16 matmul runs at 0.3 GFLOP/s against 93-173 in
fp32, about 300x slower. So ``auto`` is bf16 where it is native and fp32 everywhere else, and an
explicit bf16 or fp16 where it is emulated still runs, after one warning naming the slowdown.

CPU support is read from the CPU's flags (``/proc/cpuinfo``); where there are none to read, a
small timed matmul decides (once per process).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrecisionName:
    """One precision by name: what torch, torch.autocast and accelerate call it, and its size."""

    dtype: torch.dtype  # tensors stored (or computed) in it; int8: the quantised linears' values
    # bytes per frozen parameter stored in it (int8: torchao's int8 values; its per-row scales are
    # counted apart, see timellm.model.memory)
    bytes: int
    # accelerate's mixed_precision when a run computes in it; None: a storage of weights only
    accelerate: str | None
    # torch.autocast's dtype by name (ExecutionSettings.autocast_dtype); None: no autocast
    autocast: str | None


# The one table of precision names: what the user writes (train.precision, the execution setting
# weights, `bench speed --dtypes`) and what each library calls it. "auto" is not here: it resolves
# per device to one of these (resolve_precision, resolve_weights). The backbones, below the model,
# read their checkpoints into timellm.backbones.storage.LOAD_DTYPES, which a test keeps in step.
PRECISION_NAMES = {
    "fp32": PrecisionName(torch.float32, 4, accelerate="no", autocast=None),
    "bf16": PrecisionName(torch.bfloat16, 2, accelerate="bf16", autocast="bfloat16"),
    "fp16": PrecisionName(torch.float16, 2, accelerate="fp16", autocast="float16"),
    "int8": PrecisionName(torch.int8, 1, accelerate=None, autocast=None),  # frozen weights only
}
# what a run may compute in (train.precision)
PRECISIONS = ("auto", *(name for name, p in PRECISION_NAMES.items() if p.accelerate is not None))
# the precisions that autocast, and their torch dtypes
LOW_PRECISIONS = {name: p.dtype for name, p in PRECISION_NAMES.items() if p.autocast is not None}
# the torch dtype autocast runs in for each compute precision (None: no autocast)
AUTOCAST_DTYPES = {name: LOW_PRECISIONS.get(name) for name in PRECISIONS[1:]}
# accelerate's mixed_precision of each compute precision, and back
ACCELERATE_PRECISION = {name: PRECISION_NAMES[name].accelerate for name in PRECISIONS[1:]}
PRECISION_OF_ACCELERATE = {accelerate: name for name, accelerate in ACCELERATE_PRECISION.items()}
# ExecutionSettings.autocast_dtype -> the precision it computes in ("bfloat16" -> "bf16")
PRECISION_OF_AUTOCAST = {p.autocast: name for name, p in PRECISION_NAMES.items() if p.autocast is not None}


def spelled(names: Sequence[str | None], quoted: bool = False) -> str:
    """Names for a message: "fp32, bf16 or fp16" (quoted: "'fp32', 'bf16' or 'fp16'")."""
    words = [repr(n) if quoted else str(n) for n in names]
    return f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else "".join(words)


# CPU flags of native bf16 matrix multiplies: AMX tiles, AVX-512 BF16 (x86), the Armv8.6 BF16 extension
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})
# CPU flags of native fp16 matrix multiplies (AMX-FP16, AVX-512 FP16)
FP16_CPU_FLAGS = frozenset({"amx_fp16", "avx512_fp16"})


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


@functools.cache
def cpu_matmul_slowdown(precision: str, size: int = 128, reps: int = 3) -> float:
    """How many times longer a (size x size) matmul takes in ``precision`` than in fp32 on this
    CPU (best of ``reps``; measured once per process: a few milliseconds where it is native)."""
    dtype = LOW_PRECISIONS[precision]
    a = torch.randn(size, size)
    timings = {}
    for name, x in (("fp32", a), (precision, a.to(dtype))):
        torch.matmul(x, x)  # warm-up: kernel selection
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            torch.matmul(x, x)
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    return timings[precision] / max(timings["fp32"], 1e-9)


def emulation_reason(precision: str, device: torch.device | str) -> str | None:
    """Why ``precision`` (bf16 or fp16) is emulated, not native, on ``device``; None if native."""
    device = torch.device(device)
    if device.type == "cuda":
        if precision == "fp16":
            return None  # every CUDA GPU torch supports multiplies fp16 itself
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.3 has no including_emulation: Ampere (8.0) and later
            native = torch.cuda.get_device_capability(device) >= (8, 0)
        if native:
            return None
        return f"GPU {torch.cuda.get_device_name(device)} has no native bf16 (it needs Ampere or later)"
    if device.type != "cpu":
        return f"timellm does not know whether {device.type} runs {precision} natively"
    flags = cpu_flags()
    wanted = BF16_CPU_FLAGS if precision == "bf16" else FP16_CPU_FLAGS
    if flags is not None:
        if flags & wanted:
            return None
        slowdown = cpu_matmul_slowdown(precision)
        return (
            f"this CPU has none of {', '.join(sorted(wanted))}: a {precision} matrix multiply is emulated, "
            f"measured {slowdown:.0f}x slower than fp32 here"
        )
    slowdown = cpu_matmul_slowdown(precision)
    if slowdown <= 1.0:
        return None
    return f"a {precision} matrix multiply measured {slowdown:.1f}x slower than fp32 on this CPU"


def native_precisions(device: torch.device | str) -> dict[str, str | None]:
    """fp32, bf16 and fp16 on ``device``: None for a native one, else why it is not."""
    return {"fp32": None, **{name: emulation_reason(name, device) for name in LOW_PRECISIONS}}


@functools.cache
def _warn_once(precision: str, device: str, reason: str) -> None:
    logger.warning(
        "precision %s on %s runs, but slowly: %s; precision auto (or fp32) picks what this machine "
        "runs natively",
        precision,
        device,
        reason,
    )


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision to run: ``auto`` -> bf16 where ``device`` multiplies bf16 natively, else fp32.

    An explicit bf16 or fp16 is kept; where it is emulated, one warning per process says so.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; found {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        return "bf16" if emulation_reason("bf16", device) is None else "fp32"
    if precision in LOW_PRECISIONS:
        reason = emulation_reason(precision, device)
        if reason is not None:
            _warn_once(precision, device.type, reason)
    return precision


# --------------------------------------------------------------------------------------------
# the frozen LLM's storage dtype (ExecutionSettings.weights)

WEIGHTS = ("auto", *PRECISION_NAMES)
STORAGE_BYTES = {name: p.bytes for name, p in PRECISION_NAMES.items()}
STORAGE_DTYPES = {name: p.dtype for name, p in PRECISION_NAMES.items()}


def resolve_weights(
    weights: str,
    precision: str,
    device: torch.device | str,
    fp32_bytes: int | None = None,
    available_bytes: int | None = None,
) -> str:
    """The storage of the frozen LLM's weights: ``weights`` unless it is ``auto``.

    ``auto`` stores them in the precision the run computes in (``precision`` resolved on
    ``device``): bf16 (fp16) where it autocasts to bf16 (fp16), fp32 elsewhere. Where fp32 compute
    is chosen but fp32 weights (``fp32_bytes``) would not fit in ``available_bytes``, it stores
    bf16 and computes fp32 (each layer's weights upcast as it runs), and says so in one log line.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; found {weights!r}")
    if weights != "auto":
        return weights
    compute = resolve_precision(precision, device)
    if compute != "fp32":
        return compute
    if fp32_bytes is not None and available_bytes is not None and fp32_bytes > available_bytes:
        logger.info(
            "weights auto: the frozen LLM's fp32 weights (%.1f GiB) would not fit in the %.1f GiB "
            "available, so they are stored in bf16 and computed in fp32 (upcast layer by layer)",
            fp32_bytes / 2**30,
            available_bytes / 2**30,
        )
        return "bf16"
    return "fp32"


def compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype the LLM's matmuls run in for a run of ``precision`` on ``device``."""
    return STORAGE_DTYPES[resolve_precision(precision, device)]
