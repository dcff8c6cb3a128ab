"""Saved tensors rebuilt in the backward pass instead of kept: outputs of 1×1 convolutions
whose input autograd keeps anyway.

Recurrent criss-cross attention (RCCA) runs its projections q, k, v (1.25× the input's
size with the default widths) once per pass, and the attention operator saves them for
its backward. Those of every pass but the last sit idle through the later passes'
backward, which is where the step's memory peaks. :func:`rebuilt_in_backward` saves them
as a recipe instead, ``conv(x)`` with x the pass's input (kept by the convolutions for
their weights' gradient), and reruns the convolution when the backward needs them: the
same idea as activation checkpointing (Chen et al., 2016, arXiv:1604.06174), restricted
to layers that cost a small fraction of the step to redo.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

from ._ops import exporting

__all__ = ["rebuilt_in_backward"]


class _Recipe:
    """``conv(source)`` as it was computed: the weight tensors of that call (the module may
    hold others by the backward pass, as under ``torch.func.functional_call``), the autocast
    settings, and the versions of source and weights, so that an in-place change between
    forward and backward raises (as autograd does for a saved tensor) instead of
    rebuilding something else."""

    def __init__(self, conv: nn.Conv2d, source: Tensor) -> None:
        self.conv, self.source = conv, source
        self.weight, self.bias = conv.weight, conv.bias
        self.device = source.device.type
        self.autocast = torch.is_autocast_enabled(self.device)
        self.dtype = torch.get_autocast_dtype(self.device)
        self.versions = self._versions()

    def _versions(self) -> list[int]:
        return [t._version for t in (self.source, self.weight, self.bias) if t is not None]

    def rebuild(self) -> Tensor:
        if self._versions() != self.versions:
            raise RuntimeError(
                "rcca: the input or a projection weight of a criss-cross pass was modified "
                "in place between the forward and the backward pass"
            )
        with torch.no_grad(), torch.autocast(self.device, self.dtype, enabled=self.autocast):
            return self.conv._conv_forward(self.source, self.weight, self.bias)


def _applies(source: Tensor, convs: Sequence[nn.Conv2d]) -> bool:
    """Whether recipes can stand in for the outputs: autograd records, in eager mode, no
    other saved-tensor hooks are active (checkpointing or offloading owns them then), and
    no hook could make a rerun differ from what the forward pass returned."""
    if not torch.is_grad_enabled() or exporting() or torch.compiler.is_compiling():
        return False
    top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    if top_hooks is None or top_hooks(False) is not None:
        return False
    global_hooks = (nn.modules.module._global_forward_hooks,
                    nn.modules.module._global_forward_pre_hooks)
    return not any(global_hooks) and all(
        type(c) is nn.Conv2d and not (c._forward_hooks or c._forward_pre_hooks) for c in convs)


def rebuilt_in_backward(
    source: Tensor, outputs: Sequence[tuple[Tensor, nn.Conv2d]]
) -> AbstractContextManager[object]:
    """A context in which autograd saves each ``output`` (just computed as ``conv(source)``)
    as a recipe that reruns the convolution in the backward pass; other saved tensors are
    kept as usual. Where that cannot be done safely (see :func:`_applies`) it does nothing."""
    if not _applies(source, [conv for _, conv in outputs]):
        return nullcontext()

    # By id, not by reference: autograd keeps the pack hook as long as what it saved, and a
    # reference would keep the very tensors this is meant to free. The outputs are alive
    # (their caller holds them) while the context is, so their ids are theirs.
    convs = {id(output): conv for output, conv in outputs}

    def pack(t: Tensor) -> Tensor | _Recipe:
        conv = convs.get(id(t))
        return t if conv is None else _Recipe(conv, source)

    def unpack(packed: Tensor | _Recipe) -> Tensor:
        return packed.rebuild() if isinstance(packed, _Recipe) else packed

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)
