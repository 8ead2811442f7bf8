"""Keep a frozen LLM's weights in bf16, fp16 or int8 and run it in the run's compute precision.

A frozen weight never takes a gradient, so its storage and the precision its matmuls run in can
differ. Stored in the compute precision (bf16 weights under bf16 autocast), nothing is converted:
autocast finds them already in its dtype. Stored narrower than the compute precision (bf16 weights
in an fp32 run, as on a CPU without native bf16, or int8), each layer's weights are widened as the
layer runs, a few rows at a time into one buffer per thread that every layer reuses: the autograd
function below keeps only the stored weight for backward, so training holds no wide copy of the
model either, and no layer-sized temporary is made.

As in transformers' own bf16 models, every weight is stored narrow, norm scales included, and
norms and softmax still compute in fp32 inside (transformers' implementations upcast there).
int8 is torchao's weight-only int8 (per-row scales) on every ``nn.Linear``; embeddings, norms and
GPT-2's Conv1D stay bf16 there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import types
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from timellm.backbones.errors import BackboneError

logger = logging.getLogger(__name__)

_WIDENED = "_timellm_widened"  # marks a module whose forward widens its stored weights
# The storages by name and the floating dtype each holds a model's weights in before any
# quantisation: what a checkpoint is read into (int8 quantises the linears of a bf16 model). The
# backbones sit below timellm.model, whose table of precision names (model.precision) a test
# keeps this in step with.
LOAD_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.bfloat16}


def storage_of(model: nn.Module) -> str:
    """The storage of ``model``'s frozen matrices: fp32, bf16, fp16 or int8 (any int8 linear)."""
    names = {dtype: name for name, dtype in LOAD_DTYPES.items() if name != "int8"}
    kinds = set()
    for p in model.parameters():
        if _is_int8(p):
            return "int8"
        if p.ndim >= 2:
            kinds.add(names.get(p.dtype, str(p.dtype)))
    return kinds.pop() if len(kinds) == 1 else "mixed" if kinds else "fp32"


def _is_int8(tensor: torch.Tensor | None) -> bool:
    return tensor is not None and (type(tensor).__name__ == "Int8Tensor" or tensor.dtype == torch.int8)


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2): a linear layer whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def store_weights(model: nn.Module, storage: str) -> nn.Module:
    """Store ``model``'s weights in ``storage`` (fp32, bf16, fp16 or int8) and let its linears,
    embeddings and layer norms widen them to whatever dtype each call computes in.

    Converts one tensor at a time, in place (peak: the model plus one tensor); a model loaded
    straight into ``storage`` converts nothing. Under int8 the linears hold torchao's int8 weights
    and every other weight is bf16.
    """
    if storage not in LOAD_DTYPES:
        raise ValueError(f"storage must be fp32, bf16, fp16 or int8, found {storage!r}")
    target = LOAD_DTYPES[storage]
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if not _is_int8(param) and param.dtype != target:
                setattr(module, name, nn.Parameter(param.detach().to(target), requires_grad=False))
    if storage == "int8":
        quantize_int8(model)
    if storage != "fp32":
        for module in model.modules():
            _widen_on_the_fly(module)
    return model


# --------------------------------------------------------------------------------------------
# widening stored weights as each layer runs


def run_dtype(x: torch.Tensor) -> torch.dtype:
    """What a matmul on ``x`` computes in: the autocast dtype where autocast is on, else x's own
    floating dtype (fp32 for integer inputs such as token ids)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype if x.is_floating_point() else torch.float32


WIDENING_CHUNK = 1 << 22  # elements of a stored matrix widened at once (16 MiB in fp32)


class _WideningBuffers(threading.local):
    """Per thread: one buffer per device and dtype that stored weights are widened into."""

    def __init__(self):
        self.by_device_and_dtype: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


_buffers = _WideningBuffers()


def widened(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` converted to ``dtype``, written into this thread's buffer for its device and
    dtype (grown to the largest weight widened so far) rather than into a new tensor.

    The result is valid until the thread widens the next weight: use it at once. Under
    ``torch.compile`` the compiled graph plans its own memory, so a plain conversion is returned.
    """
    if torch.compiler.is_compiling():
        return weight.to(dtype)
    key = (weight.device, dtype)
    buffer = _buffers.by_device_and_dtype.get(key)
    if buffer is None or buffer.numel() < weight.numel():
        buffer = torch.empty(weight.numel(), dtype=dtype, device=weight.device)
        _buffers.by_device_and_dtype[key] = buffer
    return buffer[: weight.numel()].view(weight.shape).copy_(weight)


def _row_chunks(stored: torch.Tensor) -> Iterator[slice]:
    """Slices of ``stored``'s rows of about ``WIDENING_CHUNK`` elements each."""
    step = max(1, WIDENING_CHUNK // max(1, stored.shape[1]))
    for start in range(0, stored.shape[0], step):
        yield slice(start, start + step)


def matmul_stored(a: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """a @ stored, (M, K) @ (K, N) -> (M, N), with ``stored`` kept in its own (narrower) dtype:
    widened to a's dtype a chunk of rows at a time (:func:`widened`), the chunks' products summed.

    A wide copy of a whole matrix at every use (each layer, forward and backward) leaves the heap
    fragmented under the allocator the command line tunes (freed memory kept for reuse, activations
    landing in the holes): a bf16-stored 1B-shaped model computing in fp32 peaked above its
    fp32-stored twin that way (results/memory.md). Chunks of one reused buffer leave no holes.
    """
    out = None
    for rows in _row_chunks(stored):
        left, right = a[:, rows], widened(stored[rows], a.dtype)
        out = torch.mm(left, right) if out is None else out.addmm_(left, right)
    return out


def matmul_stored_t(a: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """a @ stored^T, (M, K) @ (N, K)^T -> (M, N), as :func:`matmul_stored`: each chunk of
    ``stored``'s rows gives a block of the output's columns."""
    out = torch.empty(a.shape[0], stored.shape[0], dtype=a.dtype, device=a.device)
    for rows in _row_chunks(stored):
        torch.mm(a, widened(stored[rows], a.dtype).T, out=out[:, rows])
    return out


class _WidenedLinear(torch.autograd.Function):
    """y = x W^T + b with W stored narrow: widened chunk by chunk for the product, and again in
    backward (:func:`matmul_stored`).

    Saving the stored W (not a widened copy) is what keeps training at the stored size; the
    weight and bias are frozen, so only x gets a gradient. GPT-2's Conv1D stores W^T (in, out).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, transposed: bool):
        ctx.transposed = transposed
        ctx.save_for_backward(weight)
        flat = x.reshape(-1, x.shape[-1])
        out = matmul_stored(flat, weight) if transposed else matmul_stored_t(flat, weight)
        if bias is not None:
            out.add_(bias.to(x.dtype))
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        grad_x = matmul_stored_t(flat, weight) if ctx.transposed else matmul_stored(flat, weight)
        return grad_x.view(*grad.shape[:-1], grad_x.shape[-1]), None, None, None


class _Int8Linear(torch.autograd.Function):
    """y = x W^T + b with torchao's int8 W; backward dequantises W again instead of keeping it.

    Autograd through torchao's own linear keeps a dequantised copy of every weight for backward,
    twice the int8 model; this keeps the int8 weight only.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return grad @ weight.dequantize().to(grad.dtype), None, None


def _int8_linear_forward(self, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled() or not x.requires_grad:
        return F.linear(x, self.weight, self.bias)
    return _Int8Linear.apply(x, self.weight, self.bias)


def _linear_forward(self, x: torch.Tensor) -> torch.Tensor:
    dtype = run_dtype(x)
    if self.weight.dtype == dtype:
        return F.linear(x, self.weight, self.bias)
    return _WidenedLinear.apply(x.to(dtype), self.weight, self.bias, False)


def _conv1d_forward(self, x: torch.Tensor) -> torch.Tensor:
    dtype = run_dtype(x)
    shape = x.shape[:-1] + (self.nf,)
    out = _WidenedLinear.apply(x.reshape(-1, x.shape[-1]).to(dtype), self.weight, self.bias, True)
    return out.reshape(shape)


def _embedding_forward(self, ids: torch.Tensor) -> torch.Tensor:
    rows = F.embedding(
        ids,
        self.weight,
        self.padding_idx,
        self.max_norm,
        self.norm_type,
        self.scale_grad_by_freq,
        self.sparse,
    )
    return rows.to(run_dtype(ids))


def _layer_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    dtype = x.dtype  # autocast runs layer norms in fp32 itself, casting weights and input alike
    weight = None if self.weight is None else self.weight.to(dtype)
    bias = None if self.bias is None else self.bias.to(dtype)
    return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


def _widen_on_the_fly(module: nn.Module) -> None:
    """Give ``module`` a forward that widens its stored weights (linears, GPT-2's Conv1D,
    embeddings, layer norms); RMS norms need none: their scale multiplies with type promotion."""
    if getattr(module, _WIDENED, False):
        return
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.Linear):
        forward = _int8_linear_forward if _is_int8(weight) else _linear_forward
    elif _is_conv1d(module):
        forward = _conv1d_forward
    elif isinstance(module, nn.Embedding):
        forward = _embedding_forward
    elif isinstance(module, nn.LayerNorm):
        forward = _layer_norm_forward
    else:
        return
    module.forward = types.MethodType(forward, module)
    setattr(module, _WIDENED, True)


# --------------------------------------------------------------------------------------------
# int8 weight-only (torchao)


@contextlib.contextmanager
def _quiet_torchao() -> Iterator[None]:
    """torchao logs a line for each optional CUDA kernel library it cannot load on a CPU machine,
    and torch's pytree warns about the types it registers, once, at its import."""
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(quiet, levels, strict=True):
            log.setLevel(level)


def torchao_available() -> bool:
    try:
        with _quiet_torchao():
            import torchao.quantization  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means int8 is unavailable
        return False
    return True


def quantize_int8(model: nn.Module) -> None:
    """Replace every ``nn.Linear`` weight of ``model`` by torchao's weight-only int8 (per row)."""
    try:
        with _quiet_torchao():
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except Exception as err:  # noqa: BLE001 - re-raised with how to get it
        raise BackboneError(
            f"weights=int8 needs torchao (`pip install --no-deps torchao==0.18.0`), which failed to "
            f"import: {err}; use weights=bf16 (2 bytes a weight) instead"
        ) from err
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        logger.warning("weights=int8 quantises nn.Linear layers; this model has none, so it stays bf16")
        return
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _: isinstance(m, nn.Linear))
    model.requires_grad_(False)
