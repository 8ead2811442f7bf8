"""The text prototypes E' = W E over a vocabulary stored narrower than the run computes
(weights=bf16 or fp16 in an fp32 run): the same prototypes and gradients as the fp32 product,
without a wide copy of the vocabulary, kept for backward or made at once."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from timellm.backbones import storage
from timellm.model.layers import TextPrototypes

VOCAB, WIDTH, PROTOTYPES = 50, 12, 9


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """7 rows a chunk: several chunks over the vocabulary, the last one short."""
    monkeypatch.setattr(storage, "WIDENING_CHUNK", 7 * WIDTH)


def _prototypes_and_vocabulary(dtype: torch.dtype) -> tuple[TextPrototypes, torch.Tensor]:
    torch.manual_seed(0)
    return TextPrototypes(VOCAB, PROTOTYPES), torch.randn(VOCAB, WIDTH).to(dtype)


def _saved_for_backward(prototypes: TextPrototypes, vocabulary: torch.Tensor) -> list[torch.Tensor]:
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        prototypes(vocabulary)
    return saved


class _LargestFloat32(TorchDispatchMode):
    """Records the most elements of any fp32 tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.most = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                self.most = max(self.most, tensor.numel())
        return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_narrow_vocabulary_is_kept_narrow_for_backward(dtype):
    prototypes, vocabulary = _prototypes_and_vocabulary(dtype)
    saved = _saved_for_backward(prototypes, vocabulary)
    wide_copies = [t for t in saved if t.dtype == torch.float32 and t.numel() == VOCAB * WIDTH]
    assert not wide_copies, [(tuple(t.shape), t.dtype) for t in saved]
    stored = vocabulary.nbytes + prototypes.mapping.weight.nbytes
    assert sum(t.nbytes for t in saved) <= stored, [(tuple(t.shape), t.dtype) for t in saved]


def test_the_plain_fp32_product_would_keep_a_wide_copy():
    """What the test above guards against: a vocabulary widened whole before the Linear."""
    prototypes, vocabulary = _prototypes_and_vocabulary(torch.bfloat16)
    saved = _saved_for_backward(prototypes.mapping, vocabulary.float().T)
    assert any(t.dtype == torch.float32 and t.numel() == VOCAB * WIDTH for t in saved)


def test_a_narrow_vocabulary_is_widened_a_chunk_at_a_time():
    prototypes, vocabulary = _prototypes_and_vocabulary(torch.bfloat16)
    with _LargestFloat32() as forward:
        out = prototypes(vocabulary)
    with _LargestFloat32() as backward:
        out.sum().backward()
    # the largest fp32 tensors are E' (V', D) and dW (V', V), never the vocabulary (V, D)
    assert forward.most == PROTOTYPES * WIDTH
    assert backward.most == PROTOTYPES * VOCAB


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prototypes_and_gradients_equal_the_fp32_product(dtype):
    prototypes, vocabulary = _prototypes_and_vocabulary(dtype)
    upstream = torch.randn(PROTOTYPES, WIDTH)
    chunked = prototypes(vocabulary)
    chunked.backward(upstream)
    grads = [p.grad.clone() for p in prototypes.parameters()]
    prototypes.zero_grad()
    plain = prototypes.mapping(vocabulary.float().T).T
    plain.backward(upstream)
    torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=1e-6)
    for chunked_grad, p in zip(grads, prototypes.parameters(), strict=True):
        torch.testing.assert_close(chunked_grad, p.grad, rtol=1e-6, atol=1e-6)


def test_a_vocabulary_that_asks_for_a_gradient_gets_it_in_its_storage():
    prototypes, vocabulary = _prototypes_and_vocabulary(torch.bfloat16)
    narrow = vocabulary.clone().requires_grad_()
    wide = vocabulary.float().requires_grad_()
    upstream = torch.randn(PROTOTYPES, WIDTH)
    prototypes(narrow).backward(upstream)
    prototypes.mapping(wide.T).T.backward(upstream)
    assert narrow.grad.dtype == torch.bfloat16
    torch.testing.assert_close(narrow.grad, wide.grad.bfloat16())


def test_under_autocast_the_mapping_runs_as_autocast_runs_it():
    prototypes, vocabulary = _prototypes_and_vocabulary(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = prototypes(vocabulary)
        expected = prototypes.mapping(vocabulary.T).T
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
