"""The leaner standard ops of ``attn2d.modules._ops`` compute what PyTorch's do, in the
memory they claim."""

from __future__ import annotations

import pytest
import torch

from attn2d.modules import _ops
from attn2d.modules._ops import ChannelConv1d, amax, gate_product, max_mean, weighted_sum
from attn2d.tools.timing import peak_memory


def f64(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("dim", [1, (2, 3), 3])
def test_amax_matches_torch_in_value_and_gradient(dim):
    x = f64(2, 5, 4, 3)
    grad = torch.randn_like(x.amax(dim))
    ours, theirs = amax(x, dim), x.amax(dim)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0],
                               torch.autograd.grad(theirs, x, grad)[0])
    assert torch.autograd.gradcheck(lambda t: amax(t, dim), (x,))


def test_amax_splits_the_gradient_between_ties_like_torch():
    x = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], requires_grad=True)
    ours = torch.autograd.grad(amax(x, 1).sum(), x)[0]
    torch.testing.assert_close(ours, torch.autograd.grad(x.amax(1).sum(), x)[0])
    torch.testing.assert_close(ours, torch.tensor([[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]))


def test_amax_backward_allocates_only_the_input_gradient():
    x = torch.randn(4, 64, 32, 32, requires_grad=True)
    nbytes = x.numel() * 4

    def backward_peak(reduce) -> int:
        y = reduce(x)
        grad = torch.ones_like(y)
        return peak_memory(lambda: torch.autograd.grad(y, x, grad))

    assert backward_peak(lambda t: amax(t, 1)) < 1.05 * nbytes
    assert backward_peak(lambda t: t.amax(1)) > 2 * nbytes  # bool mask + int64 count


def test_amax_without_grad_is_plain_amax():
    x = torch.randn(2, 3, 4, 4)
    assert amax(x, 1).grad_fn is None
    torch.testing.assert_close(amax(x, (2, 3)), x.amax((2, 3)))


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 9])
def test_channel_conv1d_equals_conv1d(kernel_size):
    ours = ChannelConv1d(kernel_size).double()
    conv = torch.nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
    conv = conv.double()
    conv.load_state_dict(ours.state_dict())
    x = f64(3, 1, 17)
    grad = torch.randn(3, 1, 17, dtype=torch.float64)
    a, b = ours(x), conv(x)
    torch.testing.assert_close(a, b)
    for p, q in zip(torch.autograd.grad(a, (x, ours.weight), grad),
                    torch.autograd.grad(b, (x, conv.weight), grad), strict=True):
        torch.testing.assert_close(p, q)
    assert isinstance(ours, torch.nn.Conv1d) and ours.kernel_size == (kernel_size,)


def test_weighted_sum_matches_matmul_and_keeps_the_layout():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.rand(2, 12, dtype=torch.float64, requires_grad=True)
    got = weighted_sum(x.flatten(2), w)
    torch.testing.assert_close(got, (x.flatten(2) @ w[:, :, None])[:, :, 0])
    assert torch.autograd.gradcheck(weighted_sum, (x.flatten(2), w))
    got.sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


# -- gate_product, product_sum ---------------------------------------------------------


def plain_product_grads(x, w, grad):
    """The gradients of x * w the way autograd takes them: the reference."""
    x, w = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    return torch.autograd.grad(x * w, (x, w), grad)


@pytest.mark.parametrize("w_shape", [(3, 5, 1, 1), (3, 1, 6, 4), (1, 5, 1, 4), (3, 5, 6, 4)],
                         ids=["channel", "spatial", "mixed", "no-broadcast"])
@pytest.mark.parametrize("tile", [1 << 18, 7], ids=["whole", "tiled"])
def test_gate_product_equals_the_plain_product(w_shape, tile, monkeypatch):
    monkeypatch.setattr(_ops, "_MIN_TILE_ELEMENTS", tile)  # 7: many tiles, ragged last ones
    x, w = f64(3, 5, 6, 4), f64(*w_shape)
    grad = torch.randn(3, 5, 6, 4, dtype=torch.float64)
    got = gate_product(x, w)
    torch.testing.assert_close(got, x * w)
    for ours, theirs in zip(torch.autograd.grad(got, (x, w), grad),
                            plain_product_grads(x, w, grad), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(gate_product, (x, w))


def test_gates_that_broadcast_along_no_axis_get_their_gradient():
    # A spatial gate on one channel, a channel gate on a 1×1 map: w has x's shape, and the
    # sum over the broadcast axes is over none (a sum over dims=[] would reduce them all).
    for x_shape, w_shape in (((3, 1, 6, 4), (3, 1, 6, 4)), ((3, 5, 1, 1), (3, 5, 1, 1))):
        x, w = f64(*x_shape), f64(*w_shape)
        grad = torch.randn(x_shape, dtype=torch.float64)
        got = torch.autograd.grad(gate_product(x, w), (x, w), grad)
        for ours, theirs in zip(got, plain_product_grads(x, w, grad), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert torch.equal(_ops.product_sum(x, w, []), x * w)


def test_gate_product_when_only_one_side_needs_a_gradient():
    x, w = f64(2, 3, 4, 4), f64(2, 3, 1, 1)
    grad = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    want_x, want_w = plain_product_grads(x, w, grad)
    (dx,) = torch.autograd.grad(gate_product(x, w.detach()), x, grad)
    (dw,) = torch.autograd.grad(gate_product(x.detach(), w), w, grad)
    torch.testing.assert_close(dx, want_x)
    torch.testing.assert_close(dw, want_w)
    assert gate_product(x.detach(), w.detach()).grad_fn is None


def test_gate_product_backward_allocates_only_the_input_gradient():
    x = torch.randn(8, 64, 64, 64, requires_grad=True)  # tiles of 1/8 of x
    w = torch.rand(8, 1, 64, 64, requires_grad=True)
    nbytes = x.numel() * 4

    def backward_peak(product) -> int:
        y = product(x, w)
        grad = torch.ones_like(y)
        return peak_memory(lambda: torch.autograd.grad(y, (x, w), grad))

    assert backward_peak(gate_product) < 1.2 * nbytes  # x's gradient and a tile
    assert backward_peak(torch.mul) > 1.9 * nbytes  # and autograd's grad·x


def test_product_sum_tiles_cover_every_element_once(monkeypatch):
    monkeypatch.setattr(_ops, "_MIN_TILE_ELEMENTS", 5)
    a = torch.randn(3, 4, 5, 2, dtype=torch.float64)
    for dims in ([1], [2, 3], [0, 2]):
        ones = torch.ones_like(a)
        # Σ 1·1 counts the elements each output gathers: every one exactly once.
        count = _ops.product_sum(ones, ones, dims)
        assert torch.equal(count, ones.sum(dims, keepdim=True))
        torch.testing.assert_close(_ops.product_sum(a, a.flip(0), dims),
                                   (a * a.flip(0)).sum(dims, keepdim=True))


# -- max_mean (the z-pool) ----------------------------------------------------------------


def max_mean_by_hand(x, dim):
    """Stacked [amax, mean] from PyTorch's own ops: the reference, ties included."""
    return torch.stack((x.amax(dim), x.mean(dim)), dim=1)


@pytest.mark.parametrize("dim", [1, 2, (2, 3), -1])
@pytest.mark.parametrize("save_mask", [True, False])
def test_max_mean_equals_amax_and_mean(dim, save_mask, monkeypatch):
    monkeypatch.setattr(_ops, "_MIN_TILE_ELEMENTS", 6)  # the mask compared tile by tile
    x = f64(2, 5, 4, 3)
    with torch.no_grad():
        x[0, :, 1, 1] = 0.7  # a pixel whose channels all tie
        x[1, 2:4, 0, :] = 9.0  # ties of two along channels, of three along width
    grad = torch.randn_like(max_mean_by_hand(x, dim))
    got, want = max_mean(x, dim, save_mask), max_mean_by_hand(x, dim)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, x, grad)[0],
                               torch.autograd.grad(want, x, grad)[0], rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: max_mean(t, dim, save_mask), (f64(2, 5, 4, 3),))


def test_max_mean_keeps_a_mask_or_its_input():
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    for save_mask, kept in ((True, {torch.bool}), (False, {torch.float32})):
        dtypes = set()

        def pack(t, dtypes=dtypes):
            if t.numel() == x.numel():
                dtypes.add(t.dtype)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            max_mean(x, 1, save_mask)
        assert dtypes == kept


def test_max_mean_channels_last_gradient_keeps_the_layout():
    x = torch.randn(2, 6, 5, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    max_mean(x, 1).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.grad, torch.autograd.grad(max_mean_by_hand(x, 1).sum(), x)[0])
