"""One mechanism per level of a feature pyramid (the "cross-layer" use)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .._base.errors import Attn2dError
from .registry import create

__all__ = ["MultiLevel"]


class MultiLevel(nn.Module):
    """Apply one mechanism, built per level, to a list of feature maps (e.g. FPN outputs).

    Args:
        spec: a registry spec string such as ``"cbam(reduction=8)"``.
        channels: the channel count of each level, in order.
    """

    def __init__(self, spec: str, channels: Sequence[int]) -> None:
        super().__init__()
        if isinstance(channels, int) or len(channels) == 0:
            raise Attn2dError(f"multilevel: expected a non-empty list of channel counts, "
                              f"got {channels!r}")
        self.levels = nn.ModuleList(create(spec, c) for c in channels)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.levels):
            raise Attn2dError(f"multilevel: expected {len(self.levels)} feature maps, "
                              f"got {len(features)}")
        return [level(x) for level, x in zip(self.levels, features)]
