"""Hybrid attention: channel and spatial weights together (CBAM and variants, BAM, coord)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.validate import check_choice, check_int
from ._common import (
    AttentionMap,
    AttentionModule,
    BatchNorm1d,
    BatchNorm2d,
    as_child,
    check_odd_kernel,
    hidden_width,
)
from ._ops import gate_product
from .channel import ChannelGate, channel_pools, check_pool_types, shared_mlp
from .spatial import SpatialGate, _PooledMapHead, z_pool

__all__ = ["BAM", "CBAM", "CoordAttention", "DynamicCBAM", "LiteCBAM", "ParallelCBAM"]

_POOLS_DEFAULT = ("avg", "max")


class CBAM(AttentionModule):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018, arXiv:1807.06521).

    A channel gate (pools through a shared MLP), then a spatial gate on the refined map: the
    children ``channel_gate`` (:class:`~attn2d.modules.ChannelGate`) and ``spatial_gate``
    (:class:`~attn2d.modules.SpatialGate`), each called as a module.

    Args:
        channels: input channels C.
        reduction: the channel MLP's hidden width is max(1, C // reduction).
        spatial_kernel: odd size of the spatial gate's convolution.
        pool_types: channel descriptors, from ``("avg", "max", "lp", "lse")``.
        no_spatial: keep only the channel gate.
    """

    owner = "cbam"  # subclasses keep the registry's name

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        spatial_kernel: int = 7,
        pool_types: str | Sequence[str] = _POOLS_DEFAULT,
        no_spatial: bool = False,
    ) -> None:
        super().__init__()
        self._build(channels, reduction, spatial_kernel, pool_types, no_spatial, "full")

    def _build(
        self,
        channels: int,
        reduction: float,
        spatial_kernel: int,
        pool_types: str | Sequence[str],
        no_spatial: bool,
        conv: str,
    ) -> None:
        # Checked here first so that errors name this module, not one of its gates.
        hidden_width(channels, reduction, self.owner)
        check_pool_types(pool_types, self.owner)
        check_odd_kernel(spatial_kernel, self.owner, "spatial_kernel")
        self.channels = channels
        self.channel_gate = as_child(ChannelGate(channels, reduction, pool_types))
        self.spatial_gate = (None if no_spatial
                             else as_child(SpatialGate(channels, spatial_kernel, conv)))

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        x = self.channel_gate(x)
        return x if self.spatial_gate is None else self.spatial_gate(x)


class ParallelCBAM(CBAM):
    """CBAM with both gates computed from the same input, averaged: (Mc(x)·x + Ms(x)·x) / 2.

    The parallel arrangement compared in Woo et al. (ECCV 2018, §4.1). Arguments as
    :class:`CBAM`; with ``no_spatial`` the output is Mc(x)·x.
    """

    owner = "cbam-parallel"

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        refined = self.channel_gate(x)
        if self.spatial_gate is None:
            return refined
        return (refined + self.spatial_gate(x)) / 2


class LiteCBAM(CBAM):
    """CBAM with a factorised spatial convolution (1×k then k×1), optionally depthwise.

    Same gates and interface as :class:`CBAM`; the spatial conv costs 6k weights and MACs
    per position (2→2 then 2→1 channels), or 4k + 2 when depthwise-separable, instead of 2k².

    Args:
        channels: input channels C.
        reduction: the channel MLP's hidden width is max(1, C // reduction).
        spatial_kernel: odd size k of the factorised convolution.
        depthwise: depthwise 1×k and k×1 convs then a pointwise 2→1 conv.
        pool_types: channel descriptors, from ``("avg", "max", "lp", "lse")``.
        no_spatial: keep only the channel gate.
    """

    owner = "cbam-lite"

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        spatial_kernel: int = 7,
        depthwise: bool = False,
        pool_types: str | Sequence[str] = _POOLS_DEFAULT,
        no_spatial: bool = False,
    ) -> None:
        AttentionModule.__init__(self)  # CBAM.__init__ would build a full k×k gate first
        conv = "separable" if depthwise else "factorized"
        self._build(channels, reduction, spatial_kernel, pool_types, no_spatial, conv)


def _mix(weights: Tensor, branches: list[Tensor]) -> Tensor:
    """Σ_k weights[k] · branches[k]; 0-d weights keep the branches' dtype under autocast."""
    mixed = weights[0] * branches[0]
    for weight, branch in zip(weights[1:].unbind(), branches[1:], strict=True):
        mixed = mixed + weight * branch
    return mixed


class DynamicCBAM(AttentionModule):
    """CBAM that learns its spatial kernel size and its reduction (after Woo et al., 2018).

    Every candidate is a registered branch: one channel MLP per reduction (on shared pools)
    and one spatial gate per kernel size (on a shared z-pool), each called as a module. Their
    sigmoid gates are mixed with softmax weights of learned logits (zero at initialisation:
    a uniform mixture), so the choice is differentiable end to end.

    Args:
        channels: input channels C.
        kernel_sizes: odd candidate spatial kernels.
        reductions: candidate reductions (hidden widths max(1, C // r)).
        pool_types: channel descriptors, from ``("avg", "max", "lp", "lse")``.
    """

    owner = "cbam-dynamic"

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        reductions: Sequence[float] = (8, 16, 32),
        pool_types: str | Sequence[str] = _POOLS_DEFAULT,
    ) -> None:
        super().__init__()
        owner = self.owner
        for name, values in (("kernel_sizes", kernel_sizes), ("reductions", reductions)):
            if isinstance(values, (str, int, float)) or len(values) == 0:
                raise Attn2dError(
                    f"{owner}: expected {name} to be a non-empty tuple, got {values!r}"
                )
        hidden = [hidden_width(channels, r, owner) for r in reductions]
        self.channels = channels
        self.pool_types = check_pool_types(pool_types, owner)
        self.mlps = nn.ModuleList(shared_mlp(channels, h) for h in hidden)
        self.spatial = nn.ModuleList(_PooledMapHead(k, "full", owner) for k in kernel_sizes)
        self.reduction_logits = nn.Parameter(torch.empty(len(self.mlps)))
        self.kernel_logits = nn.Parameter(torch.empty(len(self.spatial)))
        self.reduction_mixture = AttentionMap("mixture")
        self.kernel_mixture = AttentionMap("mixture")
        self.channel_weights = AttentionMap("channel")
        self.spatial_weights = AttentionMap("spatial")
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.zeros_(self.reduction_logits)
        nn.init.zeros_(self.kernel_logits)

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        pooled = channel_pools(x, self.pool_types)
        mix = self.reduction_mixture(torch.softmax(self.reduction_logits, 0))
        gates = [torch.sigmoid(mlp(pooled).sum(0)) for mlp in self.mlps]
        x = gate_product(x, self.channel_weights(_mix(mix, gates))[:, :, None, None])
        pooled = z_pool(x)
        mix = self.kernel_mixture(torch.softmax(self.kernel_logits, 0))
        maps = [branch(pooled) for branch in self.spatial]
        return gate_product(x, self.spatial_weights(_mix(mix, maps)))  # as in CBAM


class BAM(AttentionModule):
    """Bottleneck Attention Module (Park et al., BMVC 2018, arXiv:1807.06514).

    Channel branch ``channel``: global average → Linear → BatchNorm → ReLU → Linear, giving
    Mc (B, C, 1, 1). Spatial branch ``spatial``: 1×1 reduce → BN → ReLU → two dilated 3×3
    convs (padding = dilation, so any H×W keeps its size) each with BN → ReLU → 1×1 to one
    map Ms (B, 1, H, W). Both are child modules called as modules.
    Output (1 + σ(Mc + Ms))·x as in the paper, or (1 + σ(Mc·Ms))·x as in the official code.
    Batch 1 in training works: where a BatchNorm would see one value per channel it uses its
    running statistics (see :class:`attn2d.modules._common.BatchNorm1d`).

    Args:
        channels: input channels C.
        reduction: both branches' hidden width is max(1, C // reduction).
        dilation: dilation of the two 3×3 convolutions.
        combine: ``"add"`` (paper) or ``"mul"`` (official code) to join Mc and Ms.
    """

    owner = "bam"

    def __init__(
        self, channels: int, reduction: float = 16, dilation: int = 4, combine: str = "add"
    ) -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction, owner="bam")
        check_int(dilation, "dilation", owner="bam")
        self.combine = check_choice(combine, ("add", "mul"), "combine", owner="bam")
        self.channels = channels
        self.channel = _BAMChannelBranch(channels, hidden)
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), BatchNorm2d(hidden), nn.ReLU(),
            *(layer for _ in range(2) for layer in (
                nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                BatchNorm2d(hidden), nn.ReLU(),
            )),
            nn.Conv2d(hidden, 1, 1),
        )  # fmt: skip
        self.weights = AttentionMap("elementwise")
        self.register_load_state_dict_pre_hook(_rename_flat_bam_keys)

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        mc, ms = self.channel(x), self.spatial(x)
        joint = mc + ms if self.combine == "add" else mc * ms
        return x * self.weights(1 + torch.sigmoid(joint))

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}"


class _BAMChannelBranch(nn.Module):
    """BAM's channel branch: global average → Linear → BatchNorm → ReLU → Linear, (B, C, 1, 1)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(x.mean((2, 3))))))[:, :, None, None]


def _rename_flat_bam_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Load weights saved before the channel branch became a module (``channel_fc1.weight``
    is now ``channel.fc1.weight``)."""
    for old in [k for k in state_dict if k.startswith(f"{prefix}channel_")]:
        layer, _, rest = old[len(prefix) + len("channel_"):].partition(".")
        if layer in ("fc1", "bn", "fc2"):
            state_dict[f"{prefix}channel.{layer}.{rest}"] = state_dict.pop(old)


class CoordAttention(AttentionModule):
    """Coordinate attention (Hou et al., CVPR 2021, arXiv:2103.02907).

    Average along W and along H, a shared 1×1 conv → BN → h-swish over both strips, then
    one 1×1 conv and sigmoid per direction: x·a_h·a_w with a_h (B, C, H, 1), a_w (B, C, 1, W).

    Args:
        channels: input channels C.
        reduction: hidden width is max(min_hidden, C // reduction).
        min_hidden: the smallest hidden width (8 in the official code).
    """

    owner = "coord"

    def __init__(self, channels: int, reduction: float = 32, min_hidden: int = 8) -> None:
        super().__init__()
        check_int(min_hidden, "min_hidden", owner="coord")
        hidden = hidden_width(channels, reduction, owner="coord", minimum=min_hidden)
        self.channels = channels
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)
        self.weights_h = AttentionMap("height")
        self.weights_w = AttentionMap("width")

    def forward(self, x: Tensor) -> Tensor:
        self.expect_input(x)
        h, w = x.shape[2], x.shape[3]
        strips = torch.cat((x.mean(3), x.mean(2)), dim=2)[..., None]  # (B, C, H + W, 1)
        y = F.hardswish(self.bn1(self.conv1(strips)))
        y_h, y_w = y.split((h, w), dim=2)
        a_h = self.weights_h(torch.sigmoid(self.conv_h(y_h)))
        a_w = self.weights_w(torch.sigmoid(self.conv_w(y_w)).transpose(2, 3))
        return x * a_h * a_w
