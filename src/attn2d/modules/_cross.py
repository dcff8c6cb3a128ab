"""Criss-cross attention (Huang et al., ICCV 2019, arXiv:1811.11721) in linear memory.

For pixel (i, j) the energies against its row, e_row[k] = qᵢⱼ·kᵢₖ, and its column,
e_col[l] = qᵢⱼ·kₗⱼ (l ≠ i: the centre is counted once, in the row), share ONE softmax;
the output is Σ weights·v over the same H + W − 1 pixels.

:func:`criss_cross` applies the flash-attention recipe to the cross. The row pass and the
column pass are the same computation on "lines" (each pixel attends to the pixels of its
own line), so one helper serves both: the column pass runs it on the transposed map with
the pixel itself left out. Each pass returns its own maximum, sum of exponentials and
unnormalised output per pixel, which combine exactly like two blocks of an online softmax.
Lines are processed in chunks (see :func:`_chunks`), so nothing B·H·W·(H + W) wide exists
at once. The forward saves only q, k, v and one log-sum-exp per pixel; γ is folded into
the operator, so the output need not be stored either (γ·out would keep it for γ's
gradient): backward recomputes the energies chunk by chunk, and Σ_c grad·out per pixel
from them. Softmax statistics are fp32 even for bf16/fp16 inputs; the matrix products run
in the inputs' dtype. Lines are copied chunk by chunk in the orientation that is cheap for
the tensor's memory format ((C, L) matrices for NCHW, (L, C) for channels-last), since
batched matrix products copy badly strided operands matrix by matrix.

Both directions are :func:`torch.library.custom_op` operators (``attn2d::criss_cross``
and ``attn2d::criss_cross_backward``), so ``torch.compile`` keeps them as opaque calls
instead of tracing the chunk loop. :func:`criss_cross_explicit` is the plain form that
materialises the (B, H, W, W + H) weights: it serves map capture and export (ONNX and
``torch.export`` know nothing of the custom operators).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ._common import (
    softmax_dtype,
)

__all__ = ["criss_cross", "criss_cross_explicit"]

# A chunk's (lines, L, L) energies hold at most max(this, 1/16 of the value tensor)
# elements: every transient stays a fraction of the tensors the module keeps anyway
# (linear in H·W), and small maps run in one chunk. A GPU wants fewer, larger launches.
_MIN_CHUNK_ELEMENTS = 1 << 17
_MIN_CHUNK_ELEMENTS_CUDA = 1 << 20


def criss_cross_explicit(
    q: Tensor, k: Tensor, v: Tensor, amap: Callable[[Tensor], Tensor]
) -> Tensor:
    """Criss-cross attention with the weights materialised: q, k (B, d, H, W), v (B, C, H, W).

    ``amap`` receives the (B, H, W, W + H) weights (row part, then column part with a zero
    at the centre) and returns the weights applied. Autograd stores the energies and their
    softmax, so this path costs O(B·H·W·(H + W)) memory in training.
    """
    h, w = q.shape[2:]
    row = torch.einsum("bdij,bdik->bijk", q, k)  # (B, H, W, W): pixel (i,j) vs (i,k)
    col = torch.einsum("bdij,bdkj->bijk", q, k)  # (B, H, W, H): pixel (i,j) vs (k,j)
    # The centre already sits in its row; -inf drops it from the column.
    rows = torch.arange(h, device=q.device)
    centre = (rows[:, None] == rows[None, :])[:, None, :]  # not eye(): ONNX has no bool eye
    col = col.masked_fill(centre, float("-inf"))
    weights = softmax_dtype(torch.cat([row, col], -1)).softmax(-1)
    weights = amap(weights).to(v.dtype)
    out = torch.einsum("bijk,bcik->bcij", weights[..., :w], v)
    return out + torch.einsum("bijk,bckj->bcij", weights[..., w:], v)


def criss_cross(q: Tensor, k: Tensor, v: Tensor, scale: Tensor | None = None) -> Tensor:
    """Criss-cross attention times ``scale``: q, k (B, d, H, W), v (B, C, H, W) → (B, C, H, W).

    Equal to ``scale * criss_cross_explicit(q, k, v, ...)`` (one joint softmax over the
    H + W − 1 pixels of the row and column, centre once), in memory linear in H·W for the
    forward and the backward pass. ``scale`` (a one-element tensor, e.g. γ; default 1) is
    folded in so that the output need not be kept for backward: γ·out would store it.
    Differentiable in q, k, v and scale (first order).
    """
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    if scale is None:
        scale = v.new_ones(1, dtype=torch.promote_types(dtype, torch.float32))
    out, _ = _criss_cross_op(q.to(dtype), k.to(dtype), v.to(dtype), scale.reshape(1))
    return out


# --- lines and chunks ------------------------------------------------------------------


def _channels_first(t: Tensor) -> bool:
    """Whether the lines of ``t`` are cheapest to copy as (C, L) matrices: NCHW layouts."""
    return t.stride(1) != 1 or t.shape[1] == 1


def _lines(t: Tensor, columns: bool, channels_first: bool = False) -> Tensor:
    """A view of a (B, C, H, W) tensor as (B, lines, ...): rows (B, H, W, C) or columns
    (B, W, H, C), or with ``channels_first`` (B, H, C, W) / (B, W, C, H); a per-pixel
    (B, H, W) tensor as (B, H, W) or (B, W, H)."""
    if t.dim() == 3:
        return t.transpose(1, 2) if columns else t
    if channels_first:
        return t.permute(0, 3, 1, 2) if columns else t.permute(0, 2, 1, 3)
    return t.permute(0, 3, 2, 1) if columns else t.permute(0, 2, 3, 1)


def _chunks(v: Tensor, columns: bool) -> Iterator[tuple[slice, slice]]:
    """(images, lines) index ranges whose (lines, L, L) energies hold at most
    max(:data:`_MIN_CHUNK_ELEMENTS` (``_CUDA`` on a GPU), v.numel() / 16) elements, and at
    least one line."""
    b, _, h, w = v.shape
    n_lines, length = (w, h) if columns else (h, w)
    least = _MIN_CHUNK_ELEMENTS_CUDA if v.is_cuda else _MIN_CHUNK_ELEMENTS
    per_chunk = max(1, max(least, v.numel() // 16) // (length * length))
    if per_chunk >= n_lines:  # whole images at a time
        images = per_chunk // n_lines
        for i in range(0, b, images):
            yield slice(i, i + images), slice(None)
    else:
        for i in range(b):
            for s in range(0, n_lines, per_chunk):
                yield slice(i, i + 1), slice(s, s + per_chunk)


class _Scratch:
    """Chunk buffers reused from chunk to chunk, one per role, each sized once for the
    largest chunk of either pass. A fresh tensor per chunk and role made the C allocator
    spread successive chunks over new pages, between which PyTorch's small allocations
    settle: RCCA's resident set grew by about twice what it allocated in a step
    (benchmarks/memory_rss.py). ``pixels`` and ``energies`` are the largest chunk's pixel
    and energy counts."""

    def __init__(self, v: Tensor) -> None:
        b, _, h, w = v.shape
        self.like, self.pixels, self.energies, self.buffers = v, 0, 0, {}
        for columns in _passes(h):
            length, n_lines = (h, w) if columns else (w, h)
            first = next(_chunks(v, columns), None)  # the largest; none for an empty batch
            if first is None:
                continue
            n = len(range(b)[first[0]]) * len(range(n_lines)[first[1]])
            self.pixels = max(self.pixels, n * length)
            self.energies = max(self.energies, n * length * length)

    def __call__(self, role: str, shape: Sequence[int], dtype: torch.dtype,
                 capacity: int) -> Tensor:
        """A (shape, dtype) view of the ``role`` buffer (``capacity`` elements or more)."""
        n = math.prod(shape)
        buf = self.buffers.get(role)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = self.buffers[role] = self.like.new_empty(max(n, capacity), dtype=dtype)
        return buf[:n].view(shape)

    def square(self, role: str, shape: Sequence[int], dtype: torch.dtype) -> Tensor:
        """A buffer for (n, L, L) energies."""
        return self(role, shape, dtype, self.energies)


def _take(t: Tensor, columns: bool, part: tuple[slice, slice],
          scratch: _Scratch | None = None, role: str = "") -> Tensor:
    """The lines of ``part`` as one batch (n, L, ...): a contiguous copy (into the scratch
    buffer ``role``), or for NCHW the transpose of a contiguous (n, C, L) copy (which bmm
    reads as it is)."""
    if t.dim() == 3:
        return _lines(t, columns)[part].flatten(0, 1).contiguous()
    first = _channels_first(t)
    lines = _lines(t, columns, first)[part]
    if scratch is None:
        copy = lines.flatten(0, 1).contiguous()
    else:
        copy = scratch(role, lines.shape, t.dtype, scratch.pixels * t.shape[1])
        copy = copy.copy_(lines).flatten(0, 1)
    return copy.transpose(1, 2) if first else copy


def _product(a: Tensor, b: Tensor, channels: int, scratch: _Scratch) -> Tensor:
    """``torch.bmm(a, b)`` for lines of ``channels`` channels, in a scratch buffer."""
    shape = (a.shape[0], a.shape[1], b.shape[2])
    return torch.bmm(a, b, out=scratch("product", shape, a.dtype, scratch.pixels * channels))


def _store(target: Tensor, columns: bool, part: tuple[slice, slice], a: Tensor, b: Tensor,
           scratch: _Scratch, add: bool = False, scale: Tensor | None = None) -> None:
    """Write (or add) the product a·b (times ``scale``), (n, L, C) for the lines of
    ``part``, into ``target`` (B, C, H, W); computed as bᵀ·aᵀ where the target is NCHW,
    so the write is not strided."""
    first = _channels_first(target)
    region = _lines(target, columns, first)[part]
    channels = target.shape[1]
    if first:
        value = _product(b.transpose(1, 2), a.transpose(1, 2), channels, scratch)
    else:
        value = _product(a, b, channels, scratch)
    value = value.view(region.shape)
    if scale is not None:
        value = value.mul_(scale)
    region.add_(value) if add else region.copy_(value)


def _energies(q: Tensor, k: Tensor, skip_self: bool, scratch: _Scratch,
              role: str = "energies") -> Tensor:
    """(n, L, L) energies of each line's pixels against the same line, in fp32 or wider
    (in the scratch buffer ``role``); with ``skip_self`` a pixel's energy with itself is
    -inf (the centre, in the column)."""
    shape = (q.shape[0], q.shape[1], k.shape[1])
    stat = softmax_dtype(q).dtype
    e = scratch.square(role, shape, stat)
    if q.dtype == stat:
        torch.bmm(q, k.transpose(1, 2), out=e)
    else:  # the product in the inputs' dtype, then widened
        e.copy_(torch.bmm(q, k.transpose(1, 2), out=scratch.square("narrow", shape, q.dtype)))
    if skip_self:
        e.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    return e


def _narrow(t: Tensor, dtype: torch.dtype, scratch: _Scratch, role: str) -> Tensor:
    """``t.to(dtype)``, into the scratch buffer ``role`` when that is a conversion."""
    if t.dtype == dtype:
        return t
    return scratch.square(role, t.shape, dtype).copy_(t)


def _passes(h: int) -> tuple[bool, ...]:
    """The row pass, and the column pass unless a column holds the centre alone."""
    return (False, True) if h > 1 else (False,)


# --- forward ---------------------------------------------------------------------------


@torch.library.custom_op("attn2d::criss_cross", mutates_args=())
def _criss_cross_op(q: Tensor, k: Tensor, v: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """(scale·out (B, C, H, W) laid out like v, lse (B, H, W) in fp32 or wider).

    Row pass: per pixel the row maximum, Σ exp(e − max) and Σ exp(e − max)·v. Column pass,
    chunk by chunk: the same over the column without the centre, merged into the row's
    figures as the second block of an online softmax (both rescaled to the larger maximum).
    """
    b, _, h, w = v.shape
    stat = softmax_dtype(v).dtype
    # The widest buffers first, here and in the backward: a block of their size that was
    # just freed is then refilled by one of its size, not split by narrower ones first
    # (which puts the next wide one on fresh pages; see benchmarks/memory_rss.py).
    out = torch.empty_like(v, dtype=torch.promote_types(v.dtype, scale.dtype))
    top = v.new_empty(b, h, w, dtype=stat)
    total = torch.empty_like(top)
    # Unnormalised sums in fp32 at least; where the dtypes agree, the output buffer itself.
    acc = out if out.dtype == stat else torch.empty_like(v, dtype=stat)
    first = _channels_first(acc)
    scratch = _Scratch(v)
    for columns in _passes(h):
        for part in _chunks(v, columns):
            q_, k_ = (_take(t, columns, part, scratch, r) for t, r in ((q, "q"), (k, "k")))
            e = _energies(q_, k_, columns, scratch)
            top_, total_ = _lines(top, columns)[part], _lines(total, columns)[part]
            m = e.amax(-1)
            p = _narrow(e.sub_(m[..., None]).exp_(), v.dtype, scratch, "p")
            s, m = p.sum(-1, dtype=stat).view(top_.shape), m.view(top_.shape)
            v_ = _take(v, columns, part, scratch, "v")
            if not columns:
                top_.copy_(m)
                total_.copy_(s)
                _store(acc, columns, part, p, v_, scratch)
                continue
            merged = torch.maximum(top_, m)
            old, new = (top_ - merged).exp_(), (m - merged).exp_()
            acc_ = _lines(acc, columns, first)[part]
            pixel = (..., None, slice(None)) if first else (..., None)  # per pixel, all C
            acc_.mul_(old[pixel])
            a = _product(p, v_, v.shape[1], scratch)
            a = (a.transpose(1, 2) if first else a).view(acc_.shape)
            acc_.addcmul_(a, new[pixel])
            total_.mul_(old).add_(s * new)
            top_.copy_(merged)
    factor = (scale.to(stat) / total)[:, None]  # (B, 1, H, W)
    if acc is out:
        out.mul_(factor)
    else:
        torch.mul(acc, factor, out=out)
    return out, top.add_(total.log_())


@_criss_cross_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    b, _, h, w = v.shape
    out = torch.empty_like(v, dtype=torch.promote_types(v.dtype, scale.dtype))
    return out, v.new_empty(b, h, w, dtype=softmax_dtype(v).dtype)


# --- backward --------------------------------------------------------------------------


@torch.library.custom_op("attn2d::criss_cross_backward", mutates_args=())
def _criss_cross_backward_op(
    q: Tensor, k: Tensor, v: Tensor, scale: Tensor, lse: Tensor, grad: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv, dscale) of :func:`criss_cross`, laid out like the inputs.

    With p = exp(e − lse) and dp = grad·vᵀ recomputed chunk by chunk, t = Σ p·dp per pixel
    (= Σ_c grad·out, the output not being stored) over row and column; then
    dscale = Σ t, dv = scale·pᵀ·grad, ds = scale·p·(dp − t), dq = ds·k, dk = dsᵀ·q.
    A first sweep over the columns gives their share of t; the row sweep completes t and
    writes the row gradients; a second column sweep adds the column gradients.
    """
    h = v.shape[2]
    dv = torch.empty_like(v)  # the widest first (see the forward)
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    grad = grad.to(v.dtype)
    dot = torch.zeros_like(lse)  # t per pixel
    factor = scale.to(dot.dtype)
    # (columns, adds its share of t, writes gradients)
    sweeps = ((True, True, False), (False, True, True), (True, False, True))
    scratch = _Scratch(v)
    for columns, share, gradients in sweeps if h > 1 else sweeps[1:2]:
        for part in _chunks(v, columns):
            q_, k_, v_, g_ = (_take(t, columns, part, scratch, role) for t, role in
                              ((q, "q"), (k, "k"), (v, "v"), (grad, "grad")))
            p = _energies(q_, k_, columns, scratch).sub_(_take(lse, columns, part)[..., None])
            p = p.exp_()
            pdp = _energies(g_, v_, False, scratch, "dp").mul_(p)  # p·dp, in place
            dot_ = _lines(dot, columns)[part]
            if share:
                dot_.add_(pdp.sum(-1).view(dot_.shape))
            if not gradients:
                continue
            t = dot_.reshape(pdp.shape[:2])[..., None]
            ds = pdp.addcmul_(p, t, value=-1).mul_(factor)  # scale·p·(dp − t)
            ds = _narrow(ds, q.dtype, scratch, "ds")
            p = _narrow(p, v.dtype, scratch, "p").transpose(1, 2)
            _store(dv, columns, part, p, g_, scratch, add=columns, scale=factor)
            _store(dq, columns, part, ds, k_, scratch, add=columns)
            _store(dk, columns, part, ds.transpose(1, 2), q_, scratch, add=columns)
    return dq, dk, dv, dot.sum().reshape(1).to(scale.dtype)


@_criss_cross_backward_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, scale: Tensor, lse: Tensor, grad: Tensor
      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(scale)


def _setup_context(ctx, inputs: tuple[Tensor, ...], output: tuple[Tensor, Tensor]) -> None:
    q, k, v, scale = inputs
    _, lse = output
    ctx.save_for_backward(v, q, k, scale, lse)  # v first: rebuilt first, if rebuilt
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None) -> tuple[Tensor, ...]:
    v, q, k, scale, lse = ctx.saved_tensors
    return _criss_cross_backward_op(q, k, v, scale, lse, grad_out)


_criss_cross_op.register_autograd(_backward, setup_context=_setup_context)
