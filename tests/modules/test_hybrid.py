"""Hybrid attention (CBAM family, BAM, coordinate attention) against references by hand."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import attn2d
from attn2d import Attn2dError
from attn2d.modules import BAM, CBAM, CoordAttention, DynamicCBAM, LiteCBAM, ParallelCBAM, _ops
from tests.helpers import MapCatcher, activate, n_params
from tests.modules.references_gates import (
    batch_norm_by_hand,
    channel_gate_weights_by_hand,
    conv_by_shifts,
    mlp_by_matmuls,
    spatial_map_by_hand,
)

DOUBLE = torch.float64
POOLS = ("avg", "max")


def cbam_parts(c: int = 64, r: int = 16, k: int = 7) -> tuple[int, int]:
    """Closed-form parameter counts: (shared MLP, k×k spatial conv + BN affine)."""
    h = max(1, c // r)
    return (c * h + h) + (h * c + c), 2 * k * k + 2


# --- CBAM and its arrangements ---------------------------------------------------------


@pytest.mark.parametrize("pools", [POOLS, ("avg", "lp", "lse")])
@pytest.mark.parametrize("training", [True, False])
def test_cbam_matches_sequential_reference(pools, training):
    module = activate(CBAM(16, reduction=4, spatial_kernel=5, pool_types=pools)).double()
    module.train(training)
    x = torch.randn(2, 16, 6, 7, dtype=DOUBLE)
    refined = x * channel_gate_weights_by_hand(module.channel_gate, x, pools)[:, :, None, None]
    expected = refined * spatial_map_by_hand(module.spatial_gate, refined, k=5)
    torch.testing.assert_close(module(x), expected)


@pytest.mark.parametrize("tile", [1 << 18, 5], ids=["whole", "tiled"])
def test_cbam_gradients_match_the_sequential_reference(tile, monkeypatch):
    # The gate products and pools have backward passes of their own (attn2d.modules._ops):
    # every gradient must be autograd's through the reference, tiles or not.
    monkeypatch.setattr(_ops, "_MIN_TILE_ELEMENTS", tile)
    module = activate(CBAM(16, reduction=4, spatial_kernel=5)).double().train()
    x = torch.randn(3, 16, 6, 7, dtype=DOUBLE, requires_grad=True)
    grad = torch.randn(3, 16, 6, 7, dtype=DOUBLE)
    params = list(module.parameters())
    got = torch.autograd.grad(module(x), (x, *params), grad)
    refined = x * channel_gate_weights_by_hand(module.channel_gate, x, POOLS)[:, :, None, None]
    expected = refined * spatial_map_by_hand(module.spatial_gate, refined, k=5)
    want = torch.autograd.grad(expected, (x, *params), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_cbam_without_spatial_gate_is_the_channel_gate():
    module = activate(CBAM(16, reduction=4, no_spatial=True)).double()
    x = torch.randn(2, 16, 5, 5, dtype=DOUBLE)
    expected = x * channel_gate_weights_by_hand(module.channel_gate, x, POOLS)[:, :, None, None]
    torch.testing.assert_close(module(x), expected)
    assert n_params(module) == cbam_parts(16, 4)[0]


def test_parallel_cbam_averages_gates_from_the_same_input():
    module = activate(ParallelCBAM(16, reduction=4)).double()
    x = torch.randn(2, 16, 6, 5, dtype=DOUBLE)
    mc = channel_gate_weights_by_hand(module.channel_gate, x, POOLS)[:, :, None, None]
    ms = spatial_map_by_hand(module.spatial_gate, x)
    expected = (mc * x + ms * x) / 2
    torch.testing.assert_close(module(x), expected)
    assert n_params(module) == n_params(CBAM(16, reduction=4))


@pytest.mark.parametrize("depthwise, kind", [(False, "factorized"), (True, "separable")])
def test_lite_cbam_matches_factorised_reference(depthwise, kind):
    module = activate(LiteCBAM(16, reduction=4, spatial_kernel=5, depthwise=depthwise)).double()
    x = torch.randn(2, 16, 7, 6, dtype=DOUBLE)
    refined = x * channel_gate_weights_by_hand(module.channel_gate, x, POOLS)[:, :, None, None]
    expected = refined * spatial_map_by_hand(module.spatial_gate, refined, kind, k=5)
    torch.testing.assert_close(module(x), expected)


def test_cbam_parameter_counts_are_closed_form():
    mlp, spatial = cbam_parts(64, 16, 7)
    k = 7
    assert n_params(CBAM(64)) == mlp + spatial == 680
    assert n_params(ParallelCBAM(64)) == 680
    assert n_params(LiteCBAM(64)) == mlp + 6 * k + 2 == 624  # 1×k 2→2, k×1 2→1, BN
    assert n_params(LiteCBAM(64, depthwise=True)) == mlp + (2 * k + 2 * k + 2) + 2 == 612


def macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


def test_lite_cbam_costs_fewer_macs_than_cbam():
    x = torch.randn(2, 64, 16, 16)
    full, lite, separable = (
        macs(m.eval(), x) for m in (CBAM(64), LiteCBAM(64), LiteCBAM(64, depthwise=True))
    )
    positions = 2 * 16 * 16  # the conv MACs per position: 2k², 6k, 4k + 2
    assert full - lite == positions * (2 * 49 - 6 * 7)
    assert lite - separable == positions * (6 * 7 - (4 * 7 + 2))


def test_cbam_hooks_see_both_maps_applied():
    for module, sequential in ((CBAM(16, reduction=4), True),
                               (ParallelCBAM(16, reduction=4), False)):  # fmt: skip
        module = activate(module).double()
        x = torch.randn(2, 16, 5, 6, dtype=DOUBLE)
        with MapCatcher(module) as catcher:
            y = module(x)
        (mc,), (ms,) = catcher.maps["channel_gate.weights"], catcher.maps["spatial_gate.weights"]
        assert mc.shape == (2, 16) and ms.shape == (2, 1, 5, 6)
        mc = mc[:, :, None, None]
        expected = x * mc * ms if sequential else (x * mc + x * ms) / 2
        torch.testing.assert_close(y, expected)


# --- Dynamic CBAM ----------------------------------------------------------------------


def softmax_by_hand(logits):
    e = logits.exp()
    return e / e.sum()


def dynamic_cbam_by_hand(module: DynamicCBAM, x, kernels=(3, 5, 7)):
    """Mixture of full gates: Σ_r softmax_r · σ(MLP_r sums), then Σ_k softmax_k · map_k."""
    pools = [x.flatten(2).mean(-1), x.flatten(2).max(-1).values]
    mix_r = softmax_by_hand(module.reduction_logits)
    mc = sum(
        w * torch.sigmoid(sum(mlp_by_matmuls(p, mlp[0], mlp[2]) for p in pools))
        for w, mlp in zip(mix_r, module.mlps, strict=True)
    )
    refined = x * mc[:, :, None, None]
    mix_k = softmax_by_hand(module.kernel_logits)
    ms = sum(
        w * spatial_map_by_hand(branch, refined, k=k)
        for w, branch, k in zip(mix_k, module.spatial, kernels, strict=True)
    )
    return refined * ms


def test_dynamic_cbam_matches_mixture_reference():
    module = activate(DynamicCBAM(32)).double()
    x = torch.randn(2, 32, 6, 7, dtype=DOUBLE)
    expected = dynamic_cbam_by_hand(module, x)
    torch.testing.assert_close(module(x), expected)


def test_dynamic_cbam_registers_every_branch():
    c = 64
    module = DynamicCBAM(c)
    state = module.state_dict()
    for k in (3, 5, 7):
        assert any(v.shape == (1, 2, k, k) for v in state.values()), k
    for r in (8, 16, 32):
        assert any(v.shape == (c // r, c) for v in state.values()), r
    assert {"reduction_logits", "kernel_logits"} <= set(state)
    mlps = sum((c * h + h) + (h * c + c) for h in (8, 4, 2))
    spatial = sum(2 * k * k + 2 for k in (3, 5, 7))
    assert n_params(module) == mlps + spatial + 3 + 3 == 2176


def test_dynamic_cbam_gradients_reach_the_mixture_logits():
    module = activate(DynamicCBAM(16)).double()
    count = len(list(module.modules()))
    params = [id(p) for p in module.parameters()]
    x = torch.randn(2, 16, 5, 5, dtype=DOUBLE)
    module(x).square().sum().backward()
    for logits in (module.reduction_logits, module.kernel_logits):
        assert logits.grad is not None and logits.grad.abs().min() > 0
    # nothing is built during forward: same modules, same parameters
    assert len(list(module.modules())) == count
    assert [id(p) for p in module.parameters()] == params


def test_dynamic_cbam_mixtures_sum_to_one_and_maps_are_the_ones_applied():
    module = activate(DynamicCBAM(16)).double()
    x = torch.randn(2, 16, 5, 4, dtype=DOUBLE)
    with MapCatcher(module) as catcher:
        y = module(x)
    for name in ("reduction_mixture", "kernel_mixture"):
        (mix,) = catcher.maps[name]
        assert mix.shape == (3,) and (mix > 0).all()
        torch.testing.assert_close(mix.sum(), torch.tensor(1.0, dtype=DOUBLE))
    (mc,), (ms,) = catcher.maps["channel_weights"], catcher.maps["spatial_weights"]
    torch.testing.assert_close(y, x * mc[:, :, None, None] * ms)


# --- BAM -----------------------------------------------------------------------------


def bam_by_hand(module: BAM, x, combine: str):
    """(1 + σ(Mc ⊕ Ms))·x with both branches written as matmuls and shifted sums."""
    fc1, bn, fc2 = module.channel.fc1, module.channel.bn, module.channel.fc2
    mc = x.mean((2, 3)) @ fc1.weight.T + fc1.bias
    mc = batch_norm_by_hand(mc, bn).clamp(min=0)
    mc = mc @ fc2.weight.T + fc2.bias
    reduce, bn0, _, dil1, bn1, _, dil2, bn2, _, final = module.spatial
    s = batch_norm_by_hand(conv_by_shifts(x, reduce.weight, bias=reduce.bias), bn0).clamp(min=0)
    for conv, bn in ((dil1, bn1), (dil2, bn2)):
        assert conv.weight.shape[2:] == (3, 3)
        s = conv_by_shifts(s, conv.weight, (4, 4), dilation=4, bias=conv.bias)
        s = batch_norm_by_hand(s, bn).clamp(min=0)
    ms = conv_by_shifts(s, final.weight, bias=final.bias)
    mc = mc[:, :, None, None]
    joint = mc + ms if combine == "add" else mc * ms
    return x * (1 + torch.sigmoid(joint))


@pytest.mark.parametrize("combine", ["add", "mul"])
@pytest.mark.parametrize(
    "shape, training",
    [((2, 16, 5, 9), True), ((3, 16, 7, 4), False), ((2, 16, 1, 1), True), ((1, 16, 6, 3), True),
     ((1, 16, 1, 1), True), ((1, 16, 2, 11), False)],
)  # fmt: skip
def test_bam_matches_reference_on_any_map(combine, shape, training):
    module = activate(BAM(16, reduction=4, combine=combine)).double().train(training)
    x = torch.randn(*shape, dtype=DOUBLE)
    expected = bam_by_hand(module, x, combine)
    torch.testing.assert_close(module(x), expected)


def test_bam_batch_of_one_in_training_uses_and_keeps_running_statistics():
    module = activate(BAM(16, reduction=4)).double().train()
    before = module.channel.bn.running_mean.clone()
    y = module(torch.randn(1, 16, 5, 5, dtype=DOUBLE))
    assert torch.isfinite(y).all()
    assert torch.equal(module.channel.bn.running_mean, before)
    module(torch.randn(2, 16, 5, 5, dtype=DOUBLE))  # a real batch updates them as usual
    assert not torch.equal(module.channel.bn.running_mean, before)


def test_bam_parameter_count_is_closed_form():
    c, h = 64, 64 // 16
    channel = (c * h + h) + 2 * h + (h * c + c)
    spatial = (c * h + h) + 2 * h + 2 * (9 * h * h + h + 2 * h) + (h + 1)
    assert n_params(BAM(64)) == channel + spatial == 1173


def test_bam_hook_sees_the_elementwise_weights_applied():
    module = activate(BAM(16, reduction=4)).double()
    x = torch.randn(2, 16, 5, 7, dtype=DOUBLE)
    with MapCatcher(module) as catcher:
        y = module(x)
    (weights,) = catcher.maps["weights"]
    assert weights.shape == x.shape
    torch.testing.assert_close(y, x * weights)


def test_bam_loads_weights_saved_with_the_flat_channel_layers():
    source = activate(BAM(16, reduction=4))
    flat = {k.replace("channel.fc1.", "channel_fc1.").replace("channel.bn.", "channel_bn.")
            .replace("channel.fc2.", "channel_fc2."): v for k, v in source.state_dict().items()}
    assert "channel_fc1.weight" in flat and "channel_bn.running_mean" in flat
    target = BAM(16, reduction=4)
    target.load_state_dict(flat)  # strict: every old key finds its new place
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key

# --- Coordinate attention ------------------------------------------------------------


def coord_by_hand(module: CoordAttention, x):
    """Strip means → shared 1×1 conv, BN, h-swish → per-direction 1×1 conv and sigmoid."""
    h = x.shape[2]
    strips = torch.cat([x.mean(3), x.mean(2)], dim=2)  # (B, C, H + W)
    y = torch.einsum("oc,bcn->bon", module.conv1.weight[:, :, 0, 0], strips)
    y = batch_norm_by_hand(y + module.conv1.bias[:, None], module.bn1)
    y = y * (y + 3).clamp(0, 6) / 6
    a_h = torch.sigmoid(
        torch.einsum("oc,bcn->bon", module.conv_h.weight[:, :, 0, 0], y[:, :, :h])
        + module.conv_h.bias[:, None]
    )
    a_w = torch.sigmoid(
        torch.einsum("oc,bcn->bon", module.conv_w.weight[:, :, 0, 0], y[:, :, h:])
        + module.conv_w.bias[:, None]
    )
    return x * a_h[:, :, :, None] * a_w[:, :, None, :]


@pytest.mark.parametrize("shape, training", [((2, 16, 5, 7), True), ((1, 16, 4, 4), False),
                                             ((1, 16, 1, 1), True)])  # fmt: skip
def test_coord_matches_strip_reference(shape, training):
    module = activate(CoordAttention(16, reduction=4, min_hidden=2)).double().train(training)
    x = torch.randn(*shape, dtype=DOUBLE)
    expected = coord_by_hand(module, x)
    torch.testing.assert_close(module(x), expected)


def test_coord_hidden_width_and_parameter_count_are_closed_form():
    c = 64
    h = max(8, c // 32)
    assert CoordAttention(c).conv1.out_channels == h == 8
    assert CoordAttention(512).conv1.out_channels == 512 // 32
    assert n_params(CoordAttention(c)) == (c * h + h) + 2 * h + 2 * (h * c + c) == 1688


def test_coord_hooks_see_height_and_width_weights_applied():
    module = activate(CoordAttention(16)).double()
    x = torch.randn(2, 16, 5, 7, dtype=DOUBLE)
    with MapCatcher(module) as catcher:
        y = module(x)
    (a_h,), (a_w,) = catcher.maps["weights_h"], catcher.maps["weights_w"]
    assert a_h.shape == (2, 16, 5, 1) and a_w.shape == (2, 16, 1, 7)
    torch.testing.assert_close(y, x * a_h * a_w)


# --- Across the family ---------------------------------------------------------------

MINE = ["cbam", "cbam-parallel", "cbam-lite", "cbam-lite(depthwise=True)", "cbam-dynamic",
        "bam", "bam(combine='mul')", "coord", "triplet", "simam", "se", "eca"]  # fmt: skip


@pytest.mark.parametrize("spec", MINE)
def test_channels_last_input_gives_the_same_channels_last_output(spec):
    module = activate(attn2d.create(spec, 16)).eval()
    x = torch.randn(2, 16, 6, 5)
    y = module(x.to(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, module(x))


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("cbam(pool_types=())", ValueError, "cbam: expected pool_types to be a non-empty"),
        ("cbam-lite(reduction=0)", ValueError, "cbam-lite: expected reduction > 0, got 0"),
        ("cbam-parallel(pool_types=('avg', 'mean'))", ValueError,
         "cbam-parallel: expected each pool type to be one of"),
        ("cbam-dynamic(kernel_sizes=(3, 4))", ValueError,
         "cbam-dynamic: expected an odd kernel_size, got 4"),
        ("cbam-dynamic(reductions=(8, 0))", ValueError,
         "cbam-dynamic: expected reduction > 0, got 0"),
        ("cbam-dynamic(kernel_sizes=())", ValueError,
         "cbam-dynamic: expected kernel_sizes to be a non-empty tuple, got ()"),
        ("bam(dilation=0)", ValueError, "bam: expected dilation >= 1, got 0"),
        ("bam(combine='sum')", ValueError,
         "bam: expected combine to be one of add, mul, got 'sum'"),
        ("coord(min_hidden=0)", ValueError, "coord: expected min_hidden >= 1, got 0"),
        ("coord(reduction=0)", ValueError, "coord: expected reduction > 0, got 0"),
    ],
)  # fmt: skip
def test_bad_arguments_name_the_module(spec, error, message):
    with pytest.raises(error) as info:
        attn2d.create(spec, 16)
    assert message in str(info.value)


@pytest.mark.parametrize("spec", ["cbam-lite", "cbam-dynamic", "bam", "coord"])
def test_bad_input_at_forward_names_the_module(spec):
    module = attn2d.create(spec, 16)
    with pytest.raises(ValueError, match=f"{spec}: expected 16 channels"):
        module(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match=rf"{spec}: expected .* got shape \(16, 4, 4\)"):
        module(torch.randn(16, 4, 4))
    with pytest.raises(Attn2dError, match=f"{spec}: expected .* got dtype torch.int64"):
        module(torch.ones(2, 16, 4, 4, dtype=torch.int64))
