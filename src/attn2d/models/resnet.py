"""CIFAR-style ResNets (He et al., CVPR 2016, arXiv:1512.03385) with attention placement.

The CIFAR variant: a 3×3 stride-1 stem (64 channels) + BN + ReLU and no max-pool, then four
stages of 64/128/256/512 channels (strides 1, 2, 2, 2), global average pool, linear head.
ResNet-18 with 10 classes has 11,173,962 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.validate import check_int
from ._common import AttentionOptions, Backbone, init_backbone

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1×1 conv + BN where the block changes shape; None (identity) elsewhere."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers and a residual add; ``attn`` acts after the second BN.

    Args:
        in_channels: channels of the block input.
        channels: width of both convolutions (and of the output).
        stride: stride of the first convolution.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.attn: nn.Module = nn.Identity()  # replaced when attention goes in the block
        self.downsample = _shortcut(in_channels, self.out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (stride here, as torchvision's v1.5), 1×1 expand ×4, residual add;
    ``attn`` acts after the third BN.

    Args:
        in_channels: channels of the block input.
        channels: bottleneck width; the output has ``4 * channels``.
        stride: stride of the 3×3 convolution.
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, self.out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.out_channels)
        self.attn: nn.Module = nn.Identity()
        self.downsample = _shortcut(in_channels, self.out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(Backbone):
    """CIFAR-style ResNet with optional attention.

    Attention inside blocks is ``layer{s}[i].attn``; attention after a stage is
    ``attn["layer{s}"]``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: outputs of the linear head.
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        **attention: where and which attention (:class:`AttentionOptions`: ``attention``,
            ``placement``, ``stages`` (default: stages 1-3 for ``"stage"``),
            ``attention_init``).
    """

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        **attention: Unpack[AttentionOptions],
    ) -> None:
        super().__init__(num_classes, in_channels, owner="resnet")
        if len(layers) != len(self.stage_names):
            raise Attn2dError(f"resnet: expected 4 stage depths, got {tuple(layers)!r}")
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        width = 64
        for i, (name, depth) in enumerate(zip(self.stage_names, layers, strict=True)):
            channels = 64 * 2**i
            blocks = []
            for j in range(check_int(depth, f"depth of {name}", owner="resnet")):
                blocks.append(block(width, channels, stride=2 if i > 0 and j == 0 else 1))
                width = blocks[-1].out_channels
            setattr(self, name, nn.Sequential(*blocks))
        self.fc = nn.Linear(width, num_classes)
        init_backbone(self)
        self._attach("resnet", **attention)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(self.forward_stages(x).mean((2, 3)))


def resnet18(num_classes: int = 10, in_channels: int = 3, **kwargs: object) -> ResNet:
    """CIFAR ResNet-18 (BasicBlock, 2-2-2-2); keywords as :class:`ResNet`."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, **kwargs)  # type: ignore[arg-type]


def resnet34(num_classes: int = 10, in_channels: int = 3, **kwargs: object) -> ResNet:
    """CIFAR ResNet-34 (BasicBlock, 3-4-6-3); keywords as :class:`ResNet`."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, **kwargs)  # type: ignore[arg-type]


def resnet50(num_classes: int = 10, in_channels: int = 3, **kwargs: object) -> ResNet:
    """CIFAR ResNet-50 (Bottleneck ×4 expansion, 3-4-6-3); keywords as :class:`ResNet`."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, **kwargs)  # type: ignore[arg-type]
