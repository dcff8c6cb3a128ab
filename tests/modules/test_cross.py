"""Criss-cross attention in linear memory (``attn2d.modules._cross``).

The fast operator must equal the explicit path (what a capture sees) and the loop
reference of ``references_position.py`` in float64, for the output and every gradient, on
odd, non-square, single-row and single-column maps; and it must keep nothing
(H + W)-wide for backward.
"""

from __future__ import annotations

import pytest
import torch

from attn2d.modules import CrissCrossAttention, _cross
from attn2d.modules._cross import criss_cross, criss_cross_explicit
from tests.helpers import MapCatcher, activate
from tests.modules.references_position import criss_cross_by_loops

SHAPES = [(2, 16, 5, 7), (1, 16, 6, 3), (2, 16, 1, 6), (2, 16, 6, 1), (1, 16, 1, 1)]
IDS = ["odd", "tall", "one-row", "one-column", "one-pixel"]


def module(recurrence: int = 1, channels: int = 16) -> CrissCrossAttention:
    return activate(CrissCrossAttention(channels, recurrence=recurrence)).double().train()


def output_and_grads(m: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, run=None):
    """The output and the gradients of x and of every parameter (convs, γ)."""
    x = x.detach().requires_grad_(True)
    y = (m if run is None else run)(x)
    return (y, *torch.autograd.grad(y, (x, *m.parameters()), grad))


def assert_all_close(got, want, tol: float = 1e-10) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("recurrence", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_fast_path_equals_explicit_path_and_loop_reference(shape, recurrence):
    m = module(recurrence)
    x = torch.randn(shape, dtype=torch.float64)
    grad = torch.randn(shape, dtype=torch.float64)
    fast = output_and_grads(m, x, grad)
    with MapCatcher(m) as catcher:  # a listener: the explicit path
        explicit = output_and_grads(m, x, grad)
    assert len(catcher.maps["attention.weights"]) == recurrence
    loops = output_and_grads(m, x, grad, run=lambda t: criss_cross_by_loops(m, t)[0])
    assert_all_close(fast, explicit)
    assert_all_close(fast, loops)


@pytest.mark.parametrize("budget", [1, 200], ids=["one-line-chunks", "whole-image-chunks"])
def test_chunked_passes_equal_one_chunk(budget, monkeypatch):
    # Small budgets: chunks of single lines, or of one whole image of several in a batch.
    m = module(2)
    x, grad = torch.randn(3, 16, 9, 8, dtype=torch.float64), torch.randn(3, 16, 9, 8).double()
    whole = output_and_grads(m, x, grad)
    monkeypatch.setattr(_cross, "_MIN_CHUNK_ELEMENTS", budget)
    assert len(list(_cross._chunks(x, columns=True))) > 1
    assert_all_close(output_and_grads(m, x, grad), whole)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(channels_last, monkeypatch):
    monkeypatch.setattr(_cross, "_MIN_CHUNK_ELEMENTS", 8)  # several chunks per pass
    gen = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 2, 3, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 3, 3, 4, generator=gen, dtype=torch.float64)
    if channels_last:
        q, k, v = (t.contiguous(memory_format=torch.channels_last) for t in (q, k, v))
    scale = torch.tensor([0.7], dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v, scale))
    assert torch.autograd.gradcheck(criss_cross, inputs)


def test_captured_map_is_the_one_applied():
    m = module()
    x = torch.randn(2, 16, 4, 6, dtype=torch.float64)
    with MapCatcher(m) as catcher:
        y = m(x)
    (weights,) = catcher.maps["attention.weights"]
    q, k, v = m.query(x), m.key(x), m.value(x)
    applied = criss_cross_explicit(q, k, v, lambda _: weights)  # the captured map, applied
    torch.testing.assert_close(y, x + m.gamma * applied, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, m(x), rtol=1e-10, atol=1e-10)  # no capture: fast path


def test_training_step_saves_nothing_h_plus_w_wide():
    # What autograd keeps for backward is linear in H·W. The explicit path keeps
    # (B, H, W, H + W) tensors; the fast path nothing larger than the input.
    x = torch.randn(1, 8, 12, 10, requires_grad=True)
    m = activate(CrissCrossAttention(8, recurrence=2)).train()

    def largest_saved() -> int:
        sizes = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x)
        return max(sizes)

    assert largest_saved() <= x.numel()
    with MapCatcher(m):
        assert largest_saved() >= 12 * 10 * (12 + 10)


def test_bf16_autocast_stays_close_with_fp32_statistics():
    m = activate(CrissCrossAttention(32)).train()
    x = torch.randn(2, 32, 12, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = m(x)
        q, k, v = m.query(x), m.key(x), m.value(x)
        assert v.dtype == torch.bfloat16
        _, lse = _cross._criss_cross_op(q, k, v, m.gamma.detach())
        with MapCatcher(m):
            explicit = m(x)
    assert lse.dtype == torch.float32
    assert fast.dtype == explicit.dtype  # γ (fp32) promotes, as on the explicit path
    torch.testing.assert_close(fast, explicit, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(fast.float(), m(x), rtol=5e-2, atol=5e-2)
    fast.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_channels_last_gives_the_same_output_gradients_and_layout():
    m = module(2)
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    grad = torch.randn_like(x)
    expected = output_and_grads(m, x, grad)
    m_cl = m.to(memory_format=torch.channels_last)
    got = output_and_grads(m_cl, x.contiguous(memory_format=torch.channels_last), grad)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert_all_close(got, expected)


@pytest.mark.slow
def test_torch_compile_matches_eager_in_training():
    torch._dynamo.reset()
    m = activate(CrissCrossAttention(16, recurrence=2)).train()
    x = torch.randn(2, 16, 7, 5)
    grad = torch.randn_like(x)
    expected = output_and_grads(m, x, grad)
    got = output_and_grads(m, x, grad, run=torch.compile(m, fullgraph=True))
    assert_all_close(got, expected, tol=1e-5)
