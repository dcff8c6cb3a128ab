"""Channel attention (SE, ECA, CBAM's channel gate) against references written by hand."""

from __future__ import annotations

import pytest
import torch

from attn2d import Attn2dError
from attn2d.modules import ChannelGate, EfficientChannelAttention, SqueezeExcite, eca_kernel_size
from tests.helpers import MapCatcher, activate, n_params
from tests.modules.references_gates import (
    channel_gate_weights_by_hand,
    mlp_by_matmuls,
    pool_by_hand,
)

DOUBLE = torch.float64


# --- Squeeze-and-Excitation ------------------------------------------------------------


def test_se_matches_matmul_reference():
    module = activate(SqueezeExcite(16, reduction=4)).double()
    x = torch.randn(3, 16, 5, 7, dtype=DOUBLE)
    gate = torch.sigmoid(mlp_by_matmuls(x.mean((2, 3)), module.fc1, module.fc2))
    torch.testing.assert_close(module(x), x * gate[:, :, None, None])


def test_se_parameter_count_is_closed_form():
    c, r = 64, 16
    h = c // r
    assert n_params(SqueezeExcite(c, reduction=r)) == (c * h + h) + (h * c + c) == 580


def test_se_hidden_width_never_below_one():
    assert SqueezeExcite(8, reduction=16).fc1.out_features == 1


# --- Efficient Channel Attention ------------------------------------------------------


def eca_by_channel_loop(module: EfficientChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """Zero-padded 1-D correlation across channels, one output channel at a time."""
    pooled = x.mean((2, 3))
    w = module.conv.weight[0, 0]
    k, channels = w.numel(), x.shape[1]
    gate = torch.zeros_like(pooled)
    for c in range(channels):
        for j in range(k):
            source = c - (k - 1) // 2 + j
            if 0 <= source < channels:
                gate[:, c] += w[j] * pooled[:, source]
    return x * torch.sigmoid(gate)[:, :, None, None]


@pytest.mark.parametrize("channels, kernel_size", [(16, None), (16, 5), (6, 7), (64, None)])
def test_eca_matches_channel_loop(channels, kernel_size):
    module = activate(EfficientChannelAttention(channels, kernel_size=kernel_size)).double()
    x = torch.randn(2, channels, 4, 3, dtype=DOUBLE)
    torch.testing.assert_close(module(x), eca_by_channel_loop(module, x))


@pytest.mark.parametrize("channels, k", [(8, 3), (64, 3), (128, 5), (256, 5), (512, 5), (2048, 7)])
def test_eca_kernel_follows_the_paper_table(channels, k):
    assert eca_kernel_size(channels) == k
    module = EfficientChannelAttention(channels)
    assert module.conv.kernel_size == (k,)
    assert n_params(module) == k


def test_eca_kernel_is_odd_for_every_channel_count():
    assert all(eca_kernel_size(c) % 2 == 1 for c in range(1, 4097))
    for c in [*range(1, 4097, 61), 4095, 4096]:  # the modules agree with the formula
        assert EfficientChannelAttention(c).conv.kernel_size == (eca_kernel_size(c),)


@pytest.mark.parametrize("kernel_size", [2, 4, 8])
def test_eca_rejects_an_explicit_even_kernel(kernel_size):
    with pytest.raises(ValueError, match=f"eca: expected an odd kernel_size, got {kernel_size}"):
        EfficientChannelAttention(64, kernel_size=kernel_size)


# --- CBAM channel gate ---------------------------------------------------------------


@pytest.mark.parametrize(
    "pools", [("avg", "max"), ("avg",), ("max",), ("lp",), ("lse",), ("avg", "max", "lp", "lse")]
)
def test_channel_gate_matches_shared_mlp_reference(pools):
    module = activate(ChannelGate(32, reduction=8, pool_types=pools)).double()
    x = torch.randn(3, 32, 6, 5, dtype=DOUBLE)
    gate = channel_gate_weights_by_hand(module, x, pools)
    torch.testing.assert_close(module(x), x * gate[:, :, None, None])


def test_channel_gate_log_sum_exp_is_stable_for_large_values():
    module = activate(ChannelGate(8, reduction=2, pool_types="lse")).double()
    small = torch.randn(2, 8, 4, 4, dtype=DOUBLE)
    x = small + 1000.0  # exp(1000) overflows; lse(x) = 1000 + lse(x − 1000)
    fc1, fc2 = module.mlp[0], module.mlp[2]
    gate = torch.sigmoid(mlp_by_matmuls(pool_by_hand(small, "lse") + 1000.0, fc1, fc2))
    y = module(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, x * gate[:, :, None, None])


def test_channel_gate_parameter_count_is_closed_form():
    c, h = 64, 64 // 16
    assert n_params(ChannelGate(c)) == (c * h + h) + (h * c + c) == 580


@pytest.mark.parametrize(
    "factory",
    [lambda: SqueezeExcite(16), lambda: EfficientChannelAttention(16), lambda: ChannelGate(16)],
)
def test_hook_sees_the_channel_weights_applied(factory):
    module = activate(factory()).double()
    x = torch.randn(2, 16, 5, 4, dtype=DOUBLE)
    with MapCatcher(module) as catcher:
        y = module(x)
    (weights,) = catcher.maps["weights"]
    assert weights.shape == (2, 16)
    torch.testing.assert_close(y, x * weights[:, :, None, None])


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: ChannelGate(0), ValueError, "channel-gate: expected channels >= 1, got 0"),
        (lambda: ChannelGate(16, reduction=0), ValueError,
         "channel-gate: expected reduction > 0, got 0"),
        (lambda: ChannelGate(16, pool_types=("avg", "median")), ValueError,
         "channel-gate: expected each pool type to be one of avg, max, lp, lse, got 'median'"),
        (lambda: ChannelGate(16, pool_types=()), ValueError,
         "channel-gate: expected pool_types to be a non-empty tuple"),
        (lambda: ChannelGate(16, pool_types=("avg", "avg")), ValueError,
         "channel-gate: expected distinct pool_types, got ('avg', 'avg')"),
        (lambda: ChannelGate(16)(torch.randn(2, 8, 4, 4)), ValueError,
         "channel-gate: expected 16 channels"),
        (lambda: ChannelGate(16)(torch.randn(16, 4, 4)), ValueError,
         "channel-gate: expected a float tensor of shape (B, 16, H, W), got shape (16, 4, 4)"),
        (lambda: ChannelGate(16)(torch.ones(1, 16, 4, 4, dtype=torch.int32)), Attn2dError,
         "channel-gate: expected a float tensor of shape (B, 16, H, W), got dtype torch.int32"),
        (lambda: EfficientChannelAttention(0), ValueError,
         "eca: expected channels >= 1, got 0"),
    ],
)  # fmt: skip
def test_bad_input_names_the_module(build, error, message):
    with pytest.raises(error) as info:
        build()
    assert message in str(info.value)
