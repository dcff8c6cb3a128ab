"""RCCA rebuilds the projections of every pass but the last in the backward pass
(``attn2d.modules._recompute``): the same gradients as keeping them, less memory, and no
rebuild where it could differ from the forward pass."""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from attn2d.modules import CrissCrossAttention, _recompute
from attn2d.tools.timing import peak_memory
from tests.helpers import activate


def rcca(channels: int = 16, dtype: torch.dtype = torch.float64) -> CrissCrossAttention:
    return activate(CrissCrossAttention(channels, recurrence=2)).to(dtype).train()


def grads(m: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, run=None):
    x = x.detach().requires_grad_(True)
    y = (m if run is None else run)(x)
    return (y, *torch.autograd.grad(y, (x, *m.parameters()), grad))


def never_rebuilt(monkeypatch) -> None:
    monkeypatch.setattr(_recompute, "_applies", lambda *_: False)


def count_rebuilds(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = _recompute._Recipe.rebuild
    monkeypatch.setattr(_recompute._Recipe, "rebuild",
                        lambda self: (calls.append(1), original(self))[1])
    return calls


def test_rebuilding_gives_the_gradients_of_keeping(monkeypatch):
    m, x = rcca(), torch.randn(2, 16, 7, 6, dtype=torch.float64)
    grad = torch.randn_like(x)
    rebuilds = count_rebuilds(monkeypatch)
    rebuilt = grads(m, x, grad)
    assert len(rebuilds) == 3  # q, k and v of the first pass
    never_rebuilt(monkeypatch)
    for a, b in zip(rebuilt, grads(m, x, grad), strict=True):
        assert torch.equal(a, b)  # the same convolution on the same input: bit for bit


def test_rebuilding_under_autocast_reruns_the_convolutions_in_bf16(monkeypatch):
    m, x = rcca(32, torch.float32), torch.randn(2, 32, 9, 8)
    grad = torch.randn_like(x)

    def run(t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(t)

    rebuilds = count_rebuilds(monkeypatch)
    rebuilt = grads(m, x, grad, run)
    assert len(rebuilds) == 3
    never_rebuilt(monkeypatch)
    for a, b in zip(rebuilt, grads(m, x, grad, run), strict=True):
        assert torch.equal(a, b)


def test_rebuilding_lowers_the_peak_by_at_least_the_first_pass_values(monkeypatch):
    m, x = rcca(64, torch.float32), torch.randn(1, 64, 48, 48, requires_grad=True)
    grad = torch.randn_like(x)

    def step() -> None:
        m(x).backward(grad)

    step()
    lean = peak_memory(step)
    never_rebuilt(monkeypatch)
    kept = peak_memory(step)
    assert lean + x.numel() * 4 <= kept


def test_functional_call_weights_are_the_ones_rebuilt_with():
    # functional_call puts the module's own parameters back before the backward pass.
    m, x = rcca(), torch.randn(1, 16, 5, 6, dtype=torch.float64)
    grad = torch.randn_like(x)
    other = {n: (p.detach() * 1.5).requires_grad_(True) for n, p in m.named_parameters()}
    with_other = rcca()
    with_other.load_state_dict({**m.state_dict(), **other})
    want = grads(with_other, x, grad)
    x = x.detach().requires_grad_(True)
    y = torch.func.functional_call(m, other, (x,))
    got = (y, *torch.autograd.grad(y, (x, *other.values()), grad))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_an_input_changed_in_place_before_the_backward_is_an_error():
    m = rcca()
    x = torch.randn(1, 16, 5, 6, dtype=torch.float64, requires_grad=True)
    source = x * 1.0
    y = m(source)
    with torch.no_grad():
        source.add_(1.0)
    with pytest.raises(RuntimeError, match="modified"):
        y.sum().backward()


def test_no_rebuild_where_hooks_could_change_a_projection(monkeypatch):
    m, x = rcca(), torch.randn(1, 16, 5, 6, dtype=torch.float64)
    seen = []
    handle = m.value.register_forward_hook(lambda *_: seen.append(1))
    rebuilds = count_rebuilds(monkeypatch)
    m(x.requires_grad_()).sum().backward()
    handle.remove()
    assert rebuilds == [] and len(seen) == 2  # once per pass, none in the backward pass


def test_no_rebuild_inside_someone_elses_saved_tensor_hooks(monkeypatch):
    # Non-reentrant checkpointing owns the saved tensors: it must see them all.
    m, x = rcca(), torch.randn(1, 16, 5, 6, dtype=torch.float64)
    grad = torch.randn_like(x)
    rebuilds = count_rebuilds(monkeypatch)
    checkpointed = grads(m, x, grad, run=lambda t: checkpoint(m, t, use_reentrant=False))
    assert rebuilds == []
    for a, b in zip(checkpointed, grads(m, x, grad), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
