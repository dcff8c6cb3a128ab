"""Leaner versions of standard ops the gates use: same values, less time or memory.

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
* :func:`gate_product`: ``x * w`` for weights ``w`` broadcast over some axes of ``x`` (a
  gate). Autograd's backward forms the whole ``grad·x`` product, input-sized, before
  summing it to ``w``'s shape; here the sum runs over tiles of at most 1/16 of the input
  (:func:`product_sum`), so the backward allocates only ``x``'s gradient. In CBAM that
  temporary, twice per step, sat at the step's peak.
* :func:`max_mean`: the z-pool, [max, mean] along some axes stacked as two channels, in one
  autograd node whose backward writes both gradients into one input-sized buffer (two
  before, added into a third). It can save the positions of the maxima (1 byte per
  element) instead of its input, so that a gate product's input (CBAM's channel-refined
  map) is freed as soon as that product's backward has run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ChannelConv1d", "amax", "exporting", "gate_product", "max_mean", "product_sum",
           "weighted_sum"]

# product_sum's tiles hold at most max(this, 1/16 of the input) elements: small inputs go
# in one piece, and a tile of a large one stays in cache between the product and the sum.
_MIN_TILE_ELEMENTS = 1 << 18


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


def _tiles(shape: Sequence[int], kept: Sequence[int], budget: int) -> Iterator[tuple[slice, ...]]:
    """Index tuples that tile ``shape`` by ranges along the ``kept`` axes, outermost first,
    each tile holding at most ``budget`` elements (or a single index along every kept axis)."""

    def walk(index: list[slice], i: int, size: int) -> Iterator[tuple[slice, ...]]:
        if size <= budget or i == len(kept):
            yield tuple(index)
            return
        axis = kept[i]
        per_index = size // shape[axis]
        step = max(1, budget // max(1, per_index))
        for start in range(0, shape[axis], step):
            index[axis] = slice(start, start + step)
            if step == 1 and per_index > budget:
                yield from walk(index, i + 1, per_index)
            else:
                yield tuple(index)
        index[axis] = slice(None)

    yield from walk([slice(None)] * len(shape), 0, math.prod(shape))


def _sum_by_tiles(shape: Sequence[int], dims: Sequence[int], like: Tensor, dtype: torch.dtype,
                  fill: Callable[[tuple[slice, ...], Tensor], Tensor]) -> Tensor:
    """Σ over ``dims`` (kept as size 1) of a tensor of ``shape`` whose terms ``fill(tile, buf)``
    writes a tile at a time into ``buf`` (tiles of at most max(2¹⁸, numel / 16) elements),
    in ``dtype``, on ``like``'s device. One buffer serves every tile: a fresh tensor per
    tile would make the C allocator spread them over new pages (see benchmarks/memory_rss.py).
    """
    numel = math.prod(shape)
    budget = max(_MIN_TILE_ELEMENTS, numel // 16)
    reduced = set(dims)
    kept = [d for d in range(len(shape)) if d not in reduced]
    tiles = [(slice(None),) * len(shape)] if numel <= budget else _tiles(shape, kept, budget)
    out = like.new_empty([1 if d in reduced else n for d, n in enumerate(shape)], dtype=dtype)
    # A tile exceeds the budget only where one index of every kept axis already does.
    largest = max(budget, math.prod(shape[d] for d in reduced))
    buf = like.new_empty(min(numel, largest), dtype=dtype)
    for tile in tiles:
        tile_shape = [len(range(n)[i]) for n, i in zip(shape, tile, strict=True)]
        terms = fill(tile, buf[:math.prod(tile_shape)].view(tile_shape))
        torch.sum(terms, dims, keepdim=True, out=out[tile])
    return out


def product_sum(a: Tensor, b: Tensor, dims: Sequence[int]) -> Tensor:
    """``(a * b).sum(dims, keepdim=True)`` for tensors of one shape, tile by tile: the
    product never exists whole."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dims:  # torch.sum over an empty list of dims would sum over every dim
        return torch.mul(a, b).to(dtype)
    return _sum_by_tiles(a.shape, dims, a, dtype,
                         lambda tile, buf: torch.mul(a[tile], b[tile], out=buf))


class _GateProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None,
                              w if ctx.needs_input_grad[0] else None)
        ctx.x_dtype, ctx.w_dtype = x.dtype, w.dtype
        # w's gradient sums over the axes it is broadcast along.
        ctx.dims = [d for d, (n, m) in enumerate(zip(w.shape, x.shape, strict=True))
                    if n == 1 and m != 1]
        return x * w

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, w = ctx.saved_tensors
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = (grad * w).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            dw = product_sum(grad, x, ctx.dims).to(ctx.w_dtype)
        return dx, dw


def gate_product(x: Tensor, w: Tensor) -> Tensor:
    """``x * w`` for gate weights ``w`` of x's rank broadcast over some of its axes (B, C, 1, 1)
    or (B, 1, H, W)); the backward allocates nothing input-sized but x's gradient."""
    if not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)) or exporting():
        return x * w
    return _GateProduct.apply(x, w)


def _equal(x: Tensor, top: Tensor) -> Tensor:
    """``x == top`` (top broadcast) as a bool tensor laid out like x. On a CPU the comparison
    goes tile by tile through a float buffer: writing float results and converting them
    takes a quarter of the time of writing bool results directly."""
    if x.device.type != "cpu":
        return torch.eq(x, top)
    out = torch.empty_like(x, dtype=torch.bool)
    budget = max(_MIN_TILE_ELEMENTS, x.numel() // 16)
    buf = x.new_empty(min(x.numel(), budget))
    for tile in _tiles(x.shape, range(x.dim()), budget):
        part = out[tile]
        top_part = top[tuple(t if n > 1 else slice(None)
                             for t, n in zip(tile, top.shape, strict=True))]
        part.copy_(torch.eq(x[tile], top_part, out=buf[:part.numel()].view(part.shape)))
    return out


class _MaxMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dims: tuple[int, ...], save_mask: bool) -> Tensor:
        top = x.amax(dims, keepdim=True)
        # The maxima's positions (ties share the gradient, as in torch.amax), or x itself.
        ctx.save_for_backward(_equal(x, top) if save_mask else x, None if save_mask else top)
        ctx.dims, ctx.size = dims, math.prod(x.shape[d] for d in dims)
        return torch.stack((top.squeeze(dims), x.mean(dims)), dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        saved, top = ctx.saved_tensors
        # The maxima as 0/1 written straight into the gradient's buffer (from a bool mask
        # read as bytes: converting bytes is several times faster than converting bools).
        dx = torch.empty_like(saved, dtype=grad.dtype)
        if top is None:
            dx.copy_(saved.view(torch.uint8))
        else:
            torch.eq(saved, top, out=dx)
        g_max, g_mean = (_unsqueeze(g, ctx.dims) for g in grad.unbind(1))
        share = g_max / dx.sum(ctx.dims, keepdim=True)
        # Both gradients in one buffer: where the maximum is, its share of g_max too.
        return dx.mul_(share).add_(g_mean / ctx.size), None, None


def max_mean(x: Tensor, dim: int | tuple[int, ...], save_mask: bool = True) -> Tensor:
    """``torch.stack((x.amax(dim), x.mean(dim)), 1)``, differentiated as those ops are (tied
    maxima share their gradient) in one node. With ``save_mask`` the backward keeps a
    boolean map of the maxima instead of ``x``: less memory where nothing else keeps ``x``
    for the backward."""
    if not (torch.is_grad_enabled() and x.requires_grad) or exporting():
        return torch.stack((x.amax(dim), x.mean(dim)), dim=1)
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return _MaxMean.apply(x, tuple(d % x.dim() for d in dims), save_mask)


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
