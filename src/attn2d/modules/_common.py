"""Pieces every mechanism shares: the base class, the tap, width rules and input checks.

Every check raises ``ValueError``/``TypeError`` worded ``"<module>: expected …, got …"``
so a user sees which block rejected what, before any PyTorch op fails.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.validate import check_int

__all__ = [
    "AttentionMap",
    "AttentionModule",
    "BatchNorm1d",
    "BatchNorm2d",
    "as_child",
    "check_odd_kernel",
    "expect_feature_map",
    "hidden_width",
    "reset_layers",
    "softmax_dtype",
]


class AttentionMap(nn.Identity):
    """Identity that marks the attention weights a module applies: a *tap*.

    A forward hook on a tap sees exactly the tensor that scales the features, so maps can be
    read without changing the module. Gates (every kind but ``"position"`` and
    ``"criss-cross"``) pass their weights through their tap on every call: they are small and
    computed anyway. Position and criss-cross maps (N×N, or H·W·(H + W)) exist only on an
    explicit path that the fast path avoids, so their owner builds them and passes them
    through the tap only while :attr:`capture` is on. Registering a hook does not switch it
    on, and neither does any global hook or profiler; :func:`attn2d.capture.capturing` and
    :class:`attn2d.capture.AttentionRecorder` do.

    Args:
        kind: what the map is: ``"channel"`` (B, C), ``"spatial"`` (B, 1, H, W),
            ``"position"`` (B, N, N) over flattened positions, ``"channel-affinity"``
            (B, C, C), ``"criss-cross"`` (B, H, W, W + H): for each pixel the weights over
            its row then its column (the pixel itself counted in the row, zero in the
            column), ``"elementwise"`` (B, C, H, W) (BAM, SimAM), ``"height"`` (B, C, H, 1) and
            ``"width"`` (B, C, 1, W) (coordinate and triplet attention), or ``"mixture"`` (K,) for
            softmax weights over branches.

    Attributes:
        capture: build the explicit map and pass it through this tap (default False).
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.capture = False

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (", capture=True" if self.capture else "")


def reset_layers(module: nn.Module) -> None:
    """Re-initialise every layer below ``module`` with its own ``reset_parameters``.

    Children are visited in registration order, a child without ``reset_parameters`` (a
    Sequential) by its own children, so the random draws come in the order construction made
    them.
    """
    for child in module.children():
        reset = getattr(child, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            reset_layers(child)


class AttentionModule(nn.Module):
    """Base of every mechanism: one input check at the outer entry, and re-initialisation.

    Subclasses set :attr:`owner` (the name errors give) and ``self.channels``, call
    :meth:`expect_input` first in ``forward``, and put their own initialisation (zero γ, a
    zero last layer) in :meth:`_init_weights`, which their ``__init__`` calls last.

    Attributes:
        check_input: check the input in ``forward``. A composite turns it off on the
            children it builds (:func:`as_child`): it has checked the input already.
    """

    owner = "attn2d"
    check_input = True
    channels: int | None

    def expect_input(self, x: object) -> None:
        """Check that ``x`` is a float (B, C, H, W) map with this module's channels."""
        if self.check_input:
            expect_feature_map(x, self.channels, owner=self.owner)

    def reset_parameters(self) -> None:
        """Re-initialise every parameter and buffer as construction did: each layer with its
        own ``reset_parameters`` (BatchNorm statistics included), then the module's own
        initialisation. Under the same seed the values equal a freshly built module's."""
        reset_layers(self)
        self._init_weights()

    def _init_weights(self) -> None:
        """Initialisation beyond the layers' defaults; none unless a subclass says so."""


_M = TypeVar("_M", bound=AttentionModule)


def as_child(module: _M) -> _M:
    """``module`` as a part of a composite, which checks the input once for all its parts."""
    module.check_input = False
    return module


def softmax_dtype(t: Tensor) -> Tensor:
    """``t`` in at least fp32: softmax statistics stay fp32 under autocast, fp64 stays fp64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))




def hidden_width(
    channels: int, reduction: float, owner: str, minimum: int = 1, name: str = "reduction"
) -> int:
    """Width of a bottleneck: ``max(minimum, channels // reduction)``.

    One rule for every module, so widths round and fail the same way everywhere.
    """
    check_int(channels, "channels", owner)
    if isinstance(reduction, bool) or not isinstance(reduction, (int, float)):
        raise Attn2dError(f"{owner}: expected {name} to be a number, got "
                          f"{type(reduction).__name__}")
    if not reduction > 0 or not math.isfinite(reduction):
        raise Attn2dError(f"{owner}: expected {name} > 0, got {reduction}")
    return max(minimum, int(channels // reduction))


def check_odd_kernel(kernel_size: object, owner: str, name: str = "kernel_size") -> int:
    """Kernel sizes must be odd so that 'same' padding keeps the map size."""
    check_int(kernel_size, name, owner)
    if kernel_size % 2 == 0:  # type: ignore[operator]
        raise Attn2dError(f"{owner}: expected an odd {name}, got {kernel_size}")
    return kernel_size  # type: ignore[return-value]




def expect_feature_map(x: object, channels: int | None, owner: str) -> None:
    """Check that ``x`` is a floating (B, C, H, W) tensor with the expected channels."""
    want = f"a float tensor of shape (B, {channels if channels is not None else 'C'}, H, W)"
    if not isinstance(x, Tensor):
        raise Attn2dError(f"{owner}: expected {want}, got {type(x).__name__}")
    if x.dim() != 4:
        raise Attn2dError(f"{owner}: expected {want}, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise Attn2dError(f"{owner}: expected {want}, got dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise Attn2dError(
            f"{owner}: expected {channels} channels (input of shape (B, {channels}, H, W)), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise Attn2dError(f"{owner}: expected non-empty H and W, got shape {tuple(x.shape)}")




class _RunningStatsWhenAlone(nn.modules.batchnorm._BatchNorm):
    """BatchNorm that normalises with its running statistics when, in training, each channel
    holds a single value (batch 1 of a pooled vector, or batch 1 of a 1×1 map).

    Batch statistics of one value are undefined (PyTorch raises); the running estimates are
    what evaluation would use, so the module still works, and they are left unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.numel() == x.shape[1] and self.running_mean is not None:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class BatchNorm1d(_RunningStatsWhenAlone, nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` that also accepts a single sample in training."""


class BatchNorm2d(_RunningStatsWhenAlone, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` that also accepts a single value per channel in training."""
