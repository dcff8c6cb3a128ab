"""Leaner versions of three standard ops the gates use: same values, less time or memory.

* :func:`amax`: ``torch.amax`` whose backward builds the gradient in one output-sized
  buffer. PyTorch's own backward compares into a bool mask, counts the maxima by summing
  that mask as int64 (a temporary twice the size of a float32 input) and multiplies: 1.3×
  the peak memory of a max-pool with indices, in CBAM. Max-pooling with indices (or
  ``torch.max(dim)``) keeps the memory low but computes indices in the forward pass, about
  2× slower there.
* :func:`weighted_sum`: GC's attention pooling Σ_p x[:, :, p]·w[:, p], a batched
  matrix-vector product. Through ``matmul`` (as timm and attn2d wrote it) MKL takes about
  4× longer for the forward product than for the same product as a row vector times the
  transposed matrix, and its backward computes an outer product as a K = 1 matrix product
  and the weights' gradient through a transposed operand (13× slower than ``dᵀ·x``): half
  of a GC training step at 32×256×32×32. Here the forward is the row-vector product, the
  backward a broadcast multiply and ``dᵀ·x``.
* :class:`ChannelConv1d`: ECA's 1-D convolution across the channels of a (B, 1, C) vector
  as a product of k shifted copies with the kernel. A convolution call on a vector costs
  130–260 µs per forward+backward on a CPU, nearly all set-up (45–120 µs this way): a
  quarter of ECA's whole training step at 8×256×16×16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ChannelConv1d", "amax", "exporting", "weighted_sum"]


def exporting() -> bool:
    """True while tracing for TorchScript / ONNX or under ``torch.export``: there attn2d's
    own autograd functions and custom operators give way to plain ATen operators."""
    return bool(
        torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
    )


class _Amax(torch.autograd.Function):
    """The maximum over ``dim``; the gradient is split equally between tied maxima, as
    ``torch.amax``'s is."""

    @staticmethod
    def forward(ctx, x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
        top = x.amax(dim, keepdim=True)
        # x is kept by the gate's product anyway: saving it here costs nothing.
        ctx.save_for_backward(x, top)
        ctx.dim = dim
        return top.squeeze(dim)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x, top = ctx.saved_tensors
        # The comparison is written straight into the gradient's buffer as 0/1, so nothing
        # else input-sized is allocated; ties share the gradient.
        out = torch.eq(x, top, out=torch.empty_like(x, dtype=grad.dtype))
        share = _unsqueeze(grad, ctx.dim) / out.sum(ctx.dim, keepdim=True)
        return out.mul_(share), None


def _unsqueeze(t: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    for d in sorted((dim,) if isinstance(dim, int) else dim):
        t = t.unsqueeze(d)
    return t


def amax(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """``torch.amax(x, dim)`` with a backward that allocates only the input's gradient."""
    if not (torch.is_grad_enabled() and x.requires_grad) or exporting():
        return x.amax(dim)
    return _Amax.apply(x, dim)


class _WeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        # x is the block's input, kept by its first conv anyway: saving it costs nothing.
        ctx.save_for_backward(x, w)
        return torch.bmm(w[:, None, :], x.transpose(1, 2))[:, 0]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, w = ctx.saved_tensors
        dx = torch.mul(grad[:, :, None], w[:, None, :], out=torch.empty_like(x))  # x's layout
        return dx, torch.bmm(grad[:, None, :].to(x.dtype), x)[:, 0].to(w.dtype)


def weighted_sum(x: Tensor, w: Tensor) -> Tensor:
    """Σ_p x[b, c, p]·w[b, p] for x (B, C, N) and w (B, N), in x's dtype: (B, C)."""
    w = w.to(x.dtype)
    if exporting():
        return torch.matmul(x, w[:, :, None])[:, :, 0]
    return _WeightedSum.apply(x, w)


class ChannelConv1d(nn.Conv1d):
    """:class:`torch.nn.Conv1d` with one input and one output channel, stride 1, zero
    padding, computed for (B, 1, C) input as a product of the k shifted copies of the
    signal with the kernel. Same parameters, same state dict, same output."""

    def __init__(self, kernel_size: int, bias: bool = False) -> None:
        super().__init__(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=bias)

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() != 3 or exporting():  # unbatched input; ONNX has no dynamic unfold
            return super().forward(input)
        k, pad = self.kernel_size[0], self.padding[0]
        signal = input.flatten(1)  # (B, C)
        taps = F.pad(signal, (pad, pad)).unfold(1, k, 1)  # (B, C, k): taps[b, c, i] = x[c+i-p]
        out = taps @ self.weight.view(k)
        if self.bias is not None:
            out = out + self.bias
        return out.view_as(input)
