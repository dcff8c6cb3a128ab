"""Channel attention: one weight per channel from globally pooled statistics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.validate import check_choice, check_int
from ._common import (
    AttentionMap,
    AttentionModule,
    check_odd_kernel,
    hidden_width,
)
from ._ops import ChannelConv1d, amax, gate_product, max_mean

__all__ = [
    "POOL_TYPES",
    "ChannelGate",
    "EfficientChannelAttention",
    "SqueezeExcite",
    "channel_pools",
    "check_pool_types",
    "eca_kernel_size",
    "shared_mlp",
]


class SqueezeExcite(AttentionModule):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018, arXiv:1709.01507).

    Rescales each channel by a gate computed from its global average.

    Args:
        channels: input channels C.
        reduction: hidden width is max(1, C // reduction).
    """

    owner = "se"

    def __init__(self, channels: int, reduction: float = 16) -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction, owner="se")
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.weights = AttentionMap("channel")

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * self.weights(gate)[:, :, None, None]


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive kernel: t = int(|(log2 C + b) / γ|), made odd by rounding up."""
    check_int(channels, "channels", owner="eca")
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(AttentionModule):
    """Efficient Channel Attention (Wang et al., CVPR 2020, arXiv:1910.03151).

    Global average pool, a 1-D convolution across neighbouring channels (no bias), sigmoid.

    Args:
        channels: input channels C.
        kernel_size: odd 1-D kernel; by default derived from C with ``gamma`` and ``beta``.
        gamma, beta: the paper's mapping constants (γ=2, b=1).
    """

    owner = "eca"

    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1
    ) -> None:
        super().__init__()
        check_int(channels, "channels", owner="eca")
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        check_odd_kernel(kernel_size, owner="eca")
        self.channels = channels
        self.conv = ChannelConv1d(kernel_size)  # an nn.Conv1d(1, 1, k), faster on a vector
        self.weights = AttentionMap("channel")

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        b = x.shape[0]
        c = self.channels  # not -1: a view of an empty batch needs every size
        pooled = x.mean((2, 3)).view(b, 1, c)  # (B, 1, C): channels as a 1-D signal
        gate = torch.sigmoid(self.conv(pooled)).view(b, c)
        return x * self.weights(gate).view(b, c, 1, 1)


# CBAM's descriptors of a channel over all positions; "lp" is the official F.lp_pool2d with
# p=2 (the L2 norm), "lse" a numerically stable log-sum-exp (a soft maximum).
_POOLS: dict[str, Callable[[Tensor], Tensor]] = {
    "avg": lambda x: x.mean((2, 3)),
    # amax, not max-pooling: 8x faster forward; attn2d's amax keeps its backward lean.
    "max": lambda x: amax(x, (2, 3)),
    "lp": lambda x: torch.linalg.vector_norm(x, 2, dim=(2, 3)),
    "lse": lambda x: torch.logsumexp(x, dim=(2, 3)),
}
POOL_TYPES: tuple[str, ...] = tuple(_POOLS)


def check_pool_types(pool_types: str | Sequence[str], owner: str) -> tuple[str, ...]:
    """A non-empty tuple of distinct names from :data:`POOL_TYPES` (a lone string is one)."""
    names = (pool_types,) if isinstance(pool_types, str) else pool_types
    if not isinstance(names, Sequence) or len(names) == 0:
        raise Attn2dError(
            f"{owner}: expected pool_types to be a non-empty tuple drawn from "
            f"{POOL_TYPES}, got {pool_types!r}"
        )
    for name in names:
        check_choice(name, POOL_TYPES, "each pool type", owner)
    if len(set(names)) != len(names):
        raise Attn2dError(f"{owner}: expected distinct pool_types, got {tuple(names)!r}")
    return tuple(names)


def channel_pools(x: Tensor, pool_types: Sequence[str]) -> Tensor:
    """The requested global pools of a (B, C, H, W) map, stacked as (P, B, C).

    Stacking lets one call of the shared MLP serve every pool. "avg" and "max" together are
    one node (:func:`~attn2d.modules._ops.max_mean`), whose backward writes both gradients
    in one input-sized buffer instead of two.
    """
    pools = {}
    if "avg" in pool_types and "max" in pool_types:
        # x is kept for the gate product's backward: saving it costs nothing.
        both = max_mean(x, (2, 3), save_mask=False)  # (B, 2, C): max, mean
        pools = {"max": both[:, 0], "avg": both[:, 1]}
    return torch.stack([pools[name] if name in pools else _POOLS[name](x)
                        for name in pool_types])


def shared_mlp(channels: int, hidden: int) -> nn.Sequential:
    """CBAM's bottleneck MLP: Linear(C→hidden) → ReLU → Linear(hidden→C), biases on."""
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))


class ChannelGate(AttentionModule):
    """CBAM channel gate (Woo et al., ECCV 2018, arXiv:1807.06521).

    Each global pool goes through one shared MLP; the raw outputs are summed, then a sigmoid
    gives one weight per channel.

    Args:
        channels: input channels C.
        reduction: hidden width is max(1, C // reduction).
        pool_types: names from ``("avg", "max", "lp", "lse")``.
    """

    owner = "channel-gate"

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        pool_types: str | Sequence[str] = ("avg", "max"),
    ) -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction, owner="channel-gate")
        self.channels = channels
        self.pool_types = check_pool_types(pool_types, owner="channel-gate")
        self.mlp = shared_mlp(channels, hidden)
        self.weights = AttentionMap("channel")

    def gate(self, x: Tensor) -> Tensor:
        """The (B, C) weights for ``x`` (seen by hooks on :attr:`weights`); x is not checked."""
        logits = self.mlp(channel_pools(x, self.pool_types)).sum(0)
        return self.weights(torch.sigmoid(logits))

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        return gate_product(x, self.gate(x)[:, :, None, None])
