"""Criss-cross attention (Huang et al., ICCV 2019, arXiv:1811.11721) in linear memory.

For pixel (i, j) the energies against its row, e_row[k] = qᵢⱼ·kᵢₖ, and its column,
e_col[l] = qᵢⱼ·kₗⱼ (l ≠ i: the centre is counted once, in the row), share ONE softmax;
the output is Σ weights·v over the same H + W − 1 pixels.

:func:`criss_cross` applies the flash-attention recipe to the cross. The row pass and the
column pass are the same computation on "lines" (each pixel attends to the pixels of its
own line), so one helper serves both: the column pass runs it on the transposed map with
the pixel itself left out. Each pass returns its own maximum, sum of exponentials and
unnormalised output per pixel, which combine exactly like two blocks of an online softmax.
Lines are processed in chunks whose energies hold at most :func:`_chunk_lines` worth of
elements, so nothing B·H·W·(H + W) wide exists at once. The forward saves only q, k, v,
the output (which γ·out saves anyway) and one fp32 log-sum-exp per pixel; backward
recomputes the energies chunk by chunk. Softmax statistics are fp32 even for bf16/fp16
inputs; the matrix products run in the inputs' dtype.

Both directions are :func:`torch.library.custom_op` operators (``attn2d::criss_cross``
and ``attn2d::criss_cross_backward``), so ``torch.compile`` keeps them as opaque calls
instead of tracing the chunk loop. :func:`criss_cross_explicit` is the plain form that
materialises the (B, H, W, W + H) weights: it serves map capture and export (ONNX and
``torch.export`` know nothing of the custom operators).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["criss_cross", "criss_cross_explicit", "exporting"]

# A chunk's (lines, L, L) energies hold at most max(this, a quarter of the value tensor)
# elements: every transient stays a fraction of the tensors the module keeps anyway
# (linear in H·W), and small maps run in one chunk.
_MIN_CHUNK_ELEMENTS = 1 << 18


def exporting() -> bool:
    """True while tracing for TorchScript / ONNX or under ``torch.export``: those paths
    need plain ATen operators, not attn2d's custom ones."""
    return bool(
        torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
    )


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
    weights = _stat(torch.cat([row, col], -1)).softmax(-1)
    weights = amap(weights).to(v.dtype)
    out = torch.einsum("bijk,bcik->bcij", weights[..., :w], v)
    return out + torch.einsum("bijk,bckj->bcij", weights[..., w:], v)


def criss_cross(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Criss-cross attention, q, k (B, d, H, W) and v (B, C, H, W) → (B, C, H, W).

    Equal to :func:`criss_cross_explicit` (one joint softmax over the H + W − 1 pixels of
    the row and column, centre once), in memory linear in H·W for the forward and the
    backward pass. Differentiable in q, k and v (first order).
    """
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    out, _ = _criss_cross_op(q.to(dtype), k.to(dtype), v.to(dtype))
    return out


# --- the two passes --------------------------------------------------------------------


def _stat(t: Tensor) -> Tensor:
    """``t`` in at least fp32 (fp64 stays fp64): the dtype of softmax statistics."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _lines(t: Tensor, columns: bool) -> Tensor:
    """A view of a per-pixel tensor as (B, lines, L, ...): (B, C, H, W) → (B, H, W, C) rows
    or (B, W, H, C) columns; (B, H, W) → (B, H, W) or (B, W, H)."""
    if t.dim() == 4:
        return t.permute(0, 3, 2, 1) if columns else t.permute(0, 2, 3, 1)
    return t.transpose(1, 2) if columns else t


def _chunks(v: Tensor, columns: bool) -> Iterator[tuple[slice, slice]]:
    """(images, lines) index ranges whose (lines, L, L) energies hold at most
    max(:data:`_MIN_CHUNK_ELEMENTS`, v.numel() / 4) elements (at least one line)."""
    b, _, h, w = v.shape
    n_lines, length = (w, h) if columns else (h, w)
    per_chunk = max(1, max(_MIN_CHUNK_ELEMENTS, v.numel() // 4) // (length * length))
    if per_chunk >= n_lines:  # whole images at a time
        images = per_chunk // n_lines
        for i in range(0, b, images):
            yield slice(i, i + images), slice(None)
    else:
        for i in range(b):
            for s in range(0, n_lines, per_chunk):
                yield slice(i, i + 1), slice(s, s + per_chunk)


def _take(t: Tensor, columns: bool, part: tuple[slice, slice]) -> Tensor:
    """The lines of ``part`` as one batch: (n, L, ...), contiguous if it must be."""
    return _lines(t, columns)[part].flatten(0, 1)


def _energies(q: Tensor, k: Tensor, skip_self: bool) -> Tensor:
    """(n, L, L) energies of each line's pixels against the same line, in fp32 or wider;
    with ``skip_self`` a pixel's energy with itself is -inf (the centre, in the column)."""
    e = _stat(torch.bmm(q, k.transpose(1, 2)))
    if skip_self:
        e.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    return e


@torch.library.custom_op("attn2d::criss_cross", mutates_args=())
def _criss_cross_op(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(out (B, C, H, W) laid out like v, lse (B, H, W) in fp32 or wider).

    Row pass: per pixel the row maximum, Σ exp(e − max) and Σ exp(e − max)·v. Column pass,
    chunk by chunk: the same over the column without the centre, merged into the row's
    figures as two blocks of an online softmax (rescaled to the larger maximum).
    """
    b, _, h, w = v.shape
    stat = _stat(v).dtype
    top = v.new_empty(b, h, w, dtype=stat)
    total = torch.empty_like(top)
    out = torch.empty_like(v)
    # Unnormalised sums in fp32 at least; for fp32/fp64 that is the output buffer itself.
    acc = out if stat == v.dtype else torch.empty_like(v, dtype=stat)
    for columns in (False, True):
        if columns and h == 1:  # no column partner: the row holds the whole cross
            break
        for part in _chunks(v, columns):
            e = _energies(_take(q, columns, part), _take(k, columns, part), skip_self=columns)
            m = e.amax(-1)
            p = e.sub_(m[..., None]).exp_()
            s = p.sum(-1)
            a = torch.bmm(p.to(v.dtype), _take(v, columns, part))
            top_, total_, acc_ = (_lines(t, columns)[part] for t in (top, total, acc))
            m, s, a = m.view(top_.shape), s.view(top_.shape), a.view(acc_.shape)
            if not columns:
                top_.copy_(m)
                total_.copy_(s)
                acc_.copy_(a)
                continue
            merged = torch.maximum(top_, m)
            old, new = (top_ - merged).exp_(), (m - merged).exp_()
            acc_.mul_(old[..., None]).addcmul_(a, new[..., None])
            total_.mul_(old).add_(s * new)
            top_.copy_(merged)
    _lines(out, False).copy_(_lines(acc, False) / total[..., None])
    return out, top.add_(total.log_())


@_criss_cross_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    b, _, h, w = v.shape
    return torch.empty_like(v), v.new_empty(b, h, w, dtype=_stat(v).dtype)


@torch.library.custom_op("attn2d::criss_cross_backward", mutates_args=())
def _criss_cross_backward_op(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, grad: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv) of :func:`criss_cross`, laid out like q, k, v.

    Per chunk of lines, with p = exp(e − lse) recomputed: dv = pᵀ·grad,
    ds = p·(grad·vᵀ − delta) with delta = Σ_c grad·out per pixel, dq = ds·k, dk = dsᵀ·q.
    The row pass writes the gradients, the column pass adds to them.
    """
    b, _, h, w = v.shape
    delta = lse.new_empty(b, h, w)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    for columns in (False, True):
        if columns and h == 1:
            break
        for part in _chunks(v, columns):
            q_, k_, v_, g_ = (_take(t, columns, part) for t in (q, k, v, grad))
            if not columns:  # delta of these whole rows, kept for the column pass
                region = delta[part]
                dot = torch.linalg.vecdot(_stat(g_), _stat(_take(out, columns, part)))
                region.copy_(dot.view(region.shape))
            lse_, delta_ = (_take(t, columns, part) for t in (lse, delta))
            p = _energies(q_, k_, skip_self=columns).sub_(lse_[..., None]).exp_()
            grads = [torch.bmm(p.to(v.dtype).transpose(1, 2), g_)]
            ds = _stat(torch.bmm(g_, v_.transpose(1, 2))).sub_(delta_[..., None]).mul_(p)
            ds = ds.to(q.dtype)
            grads += [torch.bmm(ds, k_), torch.bmm(ds.transpose(1, 2), q_)]
            for target, value in zip((dv, dq, dk), grads, strict=True):
                region = _lines(target, columns)[part]
                if columns:
                    region.add_(value.view(region.shape))
                else:
                    region.copy_(value.view(region.shape))
    return dq, dk, dv


@_criss_cross_backward_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, grad: Tensor
      ) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs: tuple[Tensor, ...], output: tuple[Tensor, Tensor]) -> None:
    q, k, v = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None) -> tuple[Tensor, ...]:
    q, k, v, out, lse = ctx.saved_tensors
    return _criss_cross_backward_op(q, k, v, out, lse, grad_out.to(v.dtype))


_criss_cross_op.register_autograd(_backward, setup_context=_setup_context)
