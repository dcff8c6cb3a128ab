"""The leaner standard ops of ``attn2d.modules._ops`` compute what PyTorch's do."""

from __future__ import annotations

import pytest
import torch

from attn2d.modules._ops import ChannelConv1d, amax, weighted_sum
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
