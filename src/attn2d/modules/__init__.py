"""The mechanisms, by family; see :mod:`attn2d.registry` for the names."""

from ._common import (
    AttentionMap,
)
from .channel import ChannelGate, EfficientChannelAttention, SqueezeExcite, eca_kernel_size
from .global_ import (
    ChannelSelfAttention,
    CrissCrossAttention,
    DANetHead,
    DualAttention,
    GlobalContext,
    NonLocal2d,
    PositionAttention,
)
from .hybrid import BAM, CBAM, CoordAttention, DynamicCBAM, LiteCBAM, ParallelCBAM
from .spatial import SimAM, SpatialGate, TripletAttention

__all__ = [
    "BAM",
    "CBAM",
    "AttentionMap",
    "ChannelGate",
    "ChannelSelfAttention",
    "CoordAttention",
    "CrissCrossAttention",
    "DANetHead",
    "DualAttention",
    "DynamicCBAM",
    "EfficientChannelAttention",
    "GlobalContext",
    "LiteCBAM",
    "NonLocal2d",
    "ParallelCBAM",
    "PositionAttention",
    "SimAM",
    "SpatialGate",
    "SqueezeExcite",
    "TripletAttention",
    "eca_kernel_size",
]
