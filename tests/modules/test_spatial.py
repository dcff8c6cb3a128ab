"""Spatial attention (CBAM spatial gate, triplet, SimAM) against references written by hand."""

from __future__ import annotations

import math

import pytest
import torch

from attn2d import Attn2dError
from attn2d.modules import SimAM, SpatialGate, TripletAttention
from tests.helpers import MapCatcher, activate, n_params
from tests.modules.references_gates import spatial_map_by_hand

DOUBLE = torch.float64


# --- CBAM spatial gate ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["full", "factorized", "separable"])
@pytest.mark.parametrize("k, training", [(7, True), (3, False), (5, True)])
def test_spatial_gate_matches_shifted_sum_reference(kind, k, training):
    module = activate(SpatialGate(12, kernel_size=k, conv=kind)).double().train(training)
    x = torch.randn(3, 12, 6, 9, dtype=DOUBLE)
    expected = x * spatial_map_by_hand(module, x, kind, k)
    torch.testing.assert_close(module(x), expected)


def test_spatial_gate_batch_norm_settings():
    # eps as the official code; momentum PyTorch's, so short runs evaluate with settled stats
    bn = SpatialGate(8).bn
    assert (bn.eps, bn.momentum, bn.num_features) == (1e-5, 0.1, 1)


@pytest.mark.parametrize("k", [3, 7])
def test_spatial_gate_parameter_count_is_closed_form(k):
    assert n_params(SpatialGate(64, kernel_size=k)) == 2 * k * k + 2  # conv + BN affine


def test_spatial_gate_hook_sees_the_map_applied():
    module = activate(SpatialGate(8)).double()
    x = torch.randn(2, 8, 5, 6, dtype=DOUBLE)
    with MapCatcher(module) as catcher:
        y = module(x)
    (weights,) = catcher.maps["weights"]
    assert weights.shape == (2, 1, 5, 6)
    torch.testing.assert_close(y, x * weights)


def test_spatial_gate_trains_on_one_pixel_of_one_sample():
    module = activate(SpatialGate(4)).double().train()
    x = torch.randn(1, 4, 1, 1, dtype=DOUBLE)
    before = module.bn.running_mean.clone()
    torch.testing.assert_close(module(x), x * spatial_map_by_hand(module, x))
    assert torch.equal(module.bn.running_mean, before)  # one value: nothing to learn from


# --- Triplet attention ---------------------------------------------------------------


def triplet_by_rotation(module: TripletAttention, x):
    """The paper's recipe: rotate, z-pool over the leading axis, gate, rotate back, average."""

    def gate(branch, t):
        return t * spatial_map_by_hand(branch, t)

    outs = [
        gate(module.over_cw, x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3),
        gate(module.over_hc, x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1),
    ]
    if module.over_hw is not None:
        outs.append(gate(module.over_hw, x))
    return sum(outs) / len(outs)


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_triplet_matches_rotation_reference(no_spatial, training):
    module = activate(TripletAttention(10, no_spatial=no_spatial)).double().train(training)
    x = torch.randn(2, 10, 6, 8, dtype=DOUBLE)
    expected = triplet_by_rotation(module, x)
    torch.testing.assert_close(module(x), expected)


def test_triplet_hooks_see_the_three_maps_applied():
    module = activate(TripletAttention(10)).double()
    x = torch.randn(2, 10, 6, 8, dtype=DOUBLE)
    with MapCatcher(module) as catcher:
        y = module(x)
    (cw,), (hc,), (hw,) = (catcher.maps[n] for n in ("weights_cw", "weights_hc", "weights_hw"))
    assert (cw.shape, hc.shape, hw.shape) == ((2, 10, 1, 8), (2, 10, 6, 1), (2, 1, 6, 8))
    torch.testing.assert_close(y, x * (cw + hc + hw) / 3)


@pytest.mark.parametrize("no_spatial, branches", [(False, 3), (True, 2)])
def test_triplet_parameter_count_is_closed_form(no_spatial, branches):
    k = 7
    assert n_params(TripletAttention(64, no_spatial=no_spatial)) == branches * (2 * k * k + 2)


# --- SimAM ---------------------------------------------------------------------------


def simam_by_plane_loop(x, e_lambda=1e-4):
    """Energy of each value against its own (sample, channel) plane, plane by plane."""
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = x[b, c]
            d = (plane - plane.mean()) ** 2
            n = plane.numel() - 1
            y = d / (4 * (d.sum() / n + e_lambda)) + 0.5
            out[b, c] = plane * torch.sigmoid(y)
    return out


@pytest.mark.parametrize("shape", [(2, 5, 4, 6), (1, 3, 1, 7), (2, 2, 9, 1)])
def test_simam_matches_plane_loop(shape):
    x = torch.randn(*shape, dtype=DOUBLE)
    torch.testing.assert_close(SimAM(e_lambda=1e-3)(x), simam_by_plane_loop(x, 1e-3))


def test_simam_on_one_pixel_uses_half_energy_and_stays_finite():
    # A lone value equals its mean, so d = 0 and y = 0.5 (n is taken as 1, not 0).
    x = torch.randn(3, 4, 1, 1, dtype=DOUBLE, requires_grad=True)
    y = SimAM(4)(x)
    torch.testing.assert_close(y, x * torch.sigmoid(torch.tensor(0.5, dtype=DOUBLE)))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_simam_hook_sees_the_elementwise_weights_and_it_has_no_parameters():
    module = SimAM()
    x = torch.randn(2, 3, 4, 5, dtype=DOUBLE)
    with MapCatcher(module) as catcher:
        y = module(x)
    (weights,) = catcher.maps["weights"]
    assert weights.shape == x.shape
    torch.testing.assert_close(y, x * weights)
    assert n_params(module) == 0


# --- Errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: SpatialGate(8, kernel_size=4), ValueError,
         "spatial-gate: expected an odd kernel_size, got 4"),
        (lambda: SpatialGate(0), ValueError, "spatial-gate: expected channels >= 1, got 0"),
        (lambda: SpatialGate(8, conv="dilated"), ValueError,
         "spatial-gate: expected conv to be one of full, factorized, separable, got 'dilated'"),
        (lambda: SpatialGate(8)(torch.randn(2, 4, 3, 3)), ValueError,
         "spatial-gate: expected 8 channels"),
        (lambda: SpatialGate(8)(torch.randn(2, 8, 3)), ValueError,
         "spatial-gate: expected a float tensor of shape (B, 8, H, W), got shape (2, 8, 3)"),
        (lambda: SpatialGate()(torch.ones(2, 8, 3, 3, dtype=torch.long)), Attn2dError,
         "spatial-gate: expected a float tensor of shape (B, C, H, W), got dtype torch.int64"),
        (lambda: TripletAttention(8, kernel_size=6), ValueError,
         "triplet: expected an odd kernel_size, got 6"),
        (lambda: TripletAttention(0), ValueError, "triplet: expected channels >= 1, got 0"),
        (lambda: SimAM(0), ValueError, "simam: expected channels >= 1, got 0"),
        (lambda: SimAM(e_lambda=0), ValueError,
         "simam: expected e_lambda to be finite and > 0, got 0"),
        (lambda: SimAM(e_lambda=math.inf), ValueError,
         "simam: expected e_lambda to be finite and > 0, got inf"),
        (lambda: SimAM(e_lambda="1e-4"), Attn2dError,
         "simam: expected e_lambda to be a number, got '1e-4'"),
        (lambda: SimAM(4)(torch.randn(1, 5, 2, 2)), ValueError, "simam: expected 4 channels"),
    ],
)  # fmt: skip
def test_bad_input_names_the_module(build, error, message):
    with pytest.raises(error) as info:
        build()
    assert message in str(info.value)
