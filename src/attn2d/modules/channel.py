"""Channel attention: one weight per channel from globally pooled statistics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import AttentionMap, check_positive_int, expect_feature_map, hidden_width

__all__ = ["EfficientChannelAttention", "SqueezeExcite", "eca_kernel_size"]


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018, arXiv:1709.01507).

    Rescales each channel by a gate computed from its global average.

    Args:
        channels: input channels C.
        reduction: hidden width is max(1, C // reduction).
    """

    def __init__(self, channels: int, reduction: float = 16) -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction, owner="se")
        self.channels = channels
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.weights = AttentionMap("channel")

    def forward(self, x: Tensor) -> Tensor:
        expect_feature_map(x, self.channels, owner="se")
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * self.weights(gate)[:, :, None, None]


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive kernel: t = int(|(log2 C + b) / γ|), made odd by rounding up."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    """Efficient Channel Attention (Wang et al., CVPR 2020, arXiv:1910.03151).

    Global average pool, a 1-D convolution across neighbouring channels (no bias), sigmoid.

    Args:
        channels: input channels C.
        kernel_size: odd 1-D kernel; by default derived from C with ``gamma`` and ``beta``.
        gamma, beta: the paper's mapping constants (γ=2, b=1).
    """

    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1
    ) -> None:
        super().__init__()
        check_positive_int(channels, "channels", owner="eca")
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        check_positive_int(kernel_size, "kernel_size", owner="eca")
        if kernel_size % 2 == 0:
            raise ValueError(f"eca: expected an odd kernel_size, got {kernel_size}")
        self.channels = channels
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.weights = AttentionMap("channel")

    def forward(self, x: Tensor) -> Tensor:
        expect_feature_map(x, self.channels, owner="eca")
        pooled = x.mean((2, 3))[:, None, :]  # (B, 1, C): channels as a 1-D signal
        gate = torch.sigmoid(self.conv(pooled))[:, 0, :]
        return x * self.weights(gate)[:, :, None, None]
