"""The small three-block CNN of the attention tutorials.

Exactly: three blocks ``conv3×3 (padding 1, no bias) → BatchNorm → ReLU → [attention] →
max-pool 2×2`` with 32, 64 and 128 channels, then global average pooling and one linear
layer. A 32×32 input leaves 4×4 maps, a 28×28 one 3×3 (floor division by the pools).
The convolutions have no bias because the BatchNorm after them cancels it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import AttentionOptions, Backbone, init_backbone

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ConvBlock", "SmallCNN", "small_cnn"]


class ConvBlock(nn.Module):
    """conv3×3-BN-ReLU-``attn``-maxpool2.

    Args:
        in_channels: channels of the block input.
        channels: output channels.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.out_channels = channels
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.attn: nn.Module = nn.Identity()  # replaced when attention goes in the block

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(self.attn(F.relu(self.bn(self.conv(x)))), 2)


class SmallCNN(Backbone):
    """Three conv blocks (32/64/128 channels), global average pool, linear classifier.

    ``placement="block"`` puts the attention inside each block, after the ReLU and before
    the pool (``block{s}.attn``); ``"stage"`` puts it after the whole block, i.e. after the
    pool (``attn["block{s}"]``), on the same channel count at half the resolution.

    Args:
        num_classes: outputs of the linear layer.
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        **attention: where and which attention (:class:`AttentionOptions`: ``attention``,
            ``placement``, ``stages`` (default: all three blocks), ``attention_init``).
    """

    stage_names = ("block1", "block2", "block3")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        **attention: Unpack[AttentionOptions],
    ) -> None:
        super().__init__(num_classes, in_channels, owner="small_cnn")
        self.block1 = ConvBlock(in_channels, 32)
        self.block2 = ConvBlock(32, 64)
        self.block3 = ConvBlock(64, 128)
        self.fc = nn.Linear(128, num_classes)
        init_backbone(self)
        self._attach("small_cnn", **attention)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_stages(x).mean((2, 3)))


def small_cnn(num_classes: int = 10, in_channels: int = 3, **kwargs: object) -> SmallCNN:
    """The tutorials' 3-block CNN; keywords as :class:`SmallCNN`."""
    return SmallCNN(num_classes, in_channels, **kwargs)  # type: ignore[arg-type]
