"""Spatial attention: weights over positions (and, for triplet and SimAM, over channels too)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.validate import check_choice, check_int
from ._common import (
    AttentionMap,
    AttentionModule,
    BatchNorm2d,
    check_odd_kernel,
)
from ._ops import gate_product, max_mean

__all__ = [
    "SPATIAL_CONVS",
    "SimAM",
    "SpatialGate",
    "TripletAttention",
    "z_pool",
]


def z_pool(x: Tensor, dim: int = 1, save_mask: bool = True) -> Tensor:
    """[max, mean] over ``dim``, stacked as two channels: (B, 2, *remaining two axes).

    Max first, as in the official CBAM and triplet code, so their weights load unchanged.
    ``save_mask``: the backward keeps where the maxima are (1 byte per element) rather than
    ``x``; pass False where ``x`` is kept for the backward anyway.
    """
    # amax, not max().values: about 30x faster forward on CPU (no indices to compute);
    # max_mean's backward is as lean as max-pooling's (see _ops).
    return max_mean(x, dim, save_mask)


SPATIAL_CONVS = ("full", "factorized", "separable")


def _spatial_conv(kernel_size: int, conv: str) -> nn.Module:
    """The 2→1 map convolution, bias-free: a k×k conv, or 1×k then k×1 ("factorized", 2→2→1),
    or depthwise 1×k, depthwise k×1, pointwise 2→1 ("separable")."""
    pad = (kernel_size - 1) // 2
    if conv == "full":
        return nn.Conv2d(2, 1, kernel_size, padding=pad, bias=False)
    separable = conv == "separable"
    groups = 2 if separable else 1
    out = 2 if separable else 1  # depthwise keeps both channels for the pointwise mix
    layers = [
        nn.Conv2d(2, 2, (1, kernel_size), padding=(0, pad), groups=groups, bias=False),
        nn.Conv2d(2, out, (kernel_size, 1), padding=(pad, 0), groups=groups, bias=False),
    ]
    if separable:
        layers.append(nn.Conv2d(2, 1, 1, bias=False))
    return nn.Sequential(*layers)


# The official CBAM/triplet code keeps BatchNorm statistics with momentum 0.01. Its running
# estimates then need ~500 steps to settle, and a shorter run evaluates with stale ones
# (small CNN + CBAM after 94 steps: 69% train, 32% test accuracy). PyTorch's 0.1 settles in
# ~50; for the official value set ``module.bn.momentum = OFFICIAL_BN_MOMENTUM``.
OFFICIAL_BN_MOMENTUM = 0.01
BN_MOMENTUM = 0.1


class _PooledMapHead(nn.Module):
    """conv → BatchNorm (eps 1e-5, momentum :data:`BN_MOMENTUM`) → sigmoid, from a
    (B, 2, P, Q) z-pooled tensor to a (B, 1, P, Q) map. Shared by every z-pool gate; called
    as a module, so hooks on a triplet head or a dynamic CBAM branch fire."""

    def __init__(self, kernel_size: int, conv: str, owner: str) -> None:
        super().__init__()
        check_odd_kernel(kernel_size, owner)
        self.conv = _spatial_conv(kernel_size, check_choice(conv, SPATIAL_CONVS, "conv", owner))
        self.bn = BatchNorm2d(1, eps=1e-5, momentum=BN_MOMENTUM)

    def forward(self, pooled: Tensor) -> Tensor:
        return torch.sigmoid(self.bn(self.conv(pooled)))


class SpatialGate(AttentionModule, _PooledMapHead):
    """CBAM spatial gate (Woo et al., ECCV 2018, arXiv:1807.06521).

    [max, mean] over channels → k×k conv (no bias) → BatchNorm → sigmoid; x times the map.

    Args:
        channels: input channels C, used only to check inputs (None accepts any).
        kernel_size: odd size k of the map convolution.
        conv: ``"full"`` k×k (CBAM), ``"factorized"`` 1×k then k×1, or ``"separable"``
            depthwise 1×k and k×1 then pointwise (fewer parameters and MACs).
    """

    owner = "spatial-gate"

    def __init__(
        self, channels: int | None = None, kernel_size: int = 7, conv: str = "full"
    ) -> None:
        super().__init__(kernel_size, conv, owner="spatial-gate")
        if channels is not None:
            check_int(channels, "channels", owner="spatial-gate")
        self.channels = channels
        self.weights = AttentionMap("spatial")

    def gate(self, x: Tensor) -> Tensor:
        """The (B, 1, H, W) map for ``x`` (seen by hooks on :attr:`weights`); x is not checked."""
        return self.weights(_PooledMapHead.forward(self, z_pool(x)))

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        # The z-pool keeps only a mask of x's maxima: once this product's backward has run,
        # nothing of this gate holds on to x (in CBAM, the channel-refined map).
        return gate_product(x, self.gate(x))


class TripletAttention(AttentionModule):
    """Triplet attention (Misra et al., WACV 2021, arXiv:2010.03045).

    Three z-pool gates, each over a different pair of axes: pooling over H gives a C×W map,
    over W a C×H map, over C an H×W map; x is weighted by each and the results averaged.
    Pooling along an axis of x stands in for the official rotations, so x is never copied.

    Args:
        channels: input channels C, used only to check inputs (None accepts any).
        kernel_size: odd size k of each branch's convolution.
        no_spatial: drop the H×W branch and average the two others.
    """

    owner = "triplet"

    def __init__(
        self, channels: int | None = None, kernel_size: int = 7, no_spatial: bool = False
    ) -> None:
        super().__init__()
        if channels is not None:
            check_int(channels, "channels", owner="triplet")
        self.channels = channels
        self.over_cw = _PooledMapHead(kernel_size, "full", owner="triplet")  # pools H
        self.over_hc = _PooledMapHead(kernel_size, "full", owner="triplet")  # pools W
        self.over_hw = None if no_spatial else _PooledMapHead(kernel_size, "full", "triplet")
        self.weights_cw = AttentionMap("width")  # (B, C, 1, W)
        self.weights_hc = AttentionMap("height")  # (B, C, H, 1)
        self.weights_hw = AttentionMap("spatial")  # (B, 1, H, W)

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        # Official branch 1 rotates x to (B, H, C, W): its map lies over (C, W).
        # x is kept for the products' backward: the z-pools save it rather than a mask.
        a_cw = self.weights_cw(self.over_cw(z_pool(x, 2, save_mask=False)).transpose(1, 2))
        # Official branch 2 rotates x to (B, W, H, C): its map lies over (H, C).
        a_hc = self.over_hc(z_pool(x, 3, save_mask=False).transpose(2, 3)).permute(0, 3, 2, 1)
        out = x * a_cw + x * self.weights_hc(a_hc)
        if self.over_hw is None:
            return out / 2
        a_hw = self.weights_hw(self.over_hw(z_pool(x, 1, save_mask=False)))
        return (out + x * a_hw) / 3


class SimAM(AttentionModule):
    """SimAM, parameter-free energy attention (Yang et al., ICML 2021).

    With n = H·W − 1 and d = (x − mean)², each value gets y = d / (4(Σd / n + λ)) + 0.5 and
    the output is x·σ(y). For a 1×1 map d is 0 and n would be 0; n is taken as at least 1,
    so y = 0.5 there (the limit of a position equal to its mean) instead of 0/0.

    Args:
        channels: input channels C, used only to check inputs (None accepts any).
        e_lambda: the regulariser λ > 0.
    """

    owner = "simam"

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4) -> None:
        super().__init__()
        if channels is not None:
            check_int(channels, "channels", owner="simam")
        if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)):
            raise Attn2dError(f"simam: expected e_lambda to be a number, got {e_lambda!r}")
        if not (e_lambda > 0 and math.isfinite(e_lambda)):
            raise Attn2dError(f"simam: expected e_lambda to be finite and > 0, got {e_lambda!r}")
        self.channels = channels
        self.e_lambda = float(e_lambda)
        self.weights = AttentionMap("elementwise")

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        if x.shape[0] == 0:  # var_mean warns on no elements; the weights of nothing are empty
            return x * self.weights(torch.empty_like(x))
        # Σd / n is the unbiased variance; a 1×1 map has d = 0, so any n >= 1 gives y = 0.5.
        correction = 1 if x.shape[2] * x.shape[3] > 1 else 0
        var, mean = torch.var_mean(x, (2, 3), correction=correction, keepdim=True)
        y = (x - mean).square() / (4 * (var + self.e_lambda)) + 0.5
        return x * self.weights(torch.sigmoid(y))

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
