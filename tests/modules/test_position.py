"""Global mechanisms (non-local, GC, DANet, criss-cross) against independent references.

References live in ``references_position.py``: plain algebra and Python loops, float64,
sharing no code with the modules. ``activate`` makes gammas, zero-initialised convs and BN
weights non-zero so the attention path really acts.
"""

from __future__ import annotations

import math

import pytest
import torch

import attn2d
from attn2d import Attn2dError
from attn2d.modules import (
    ChannelSelfAttention,
    CrissCrossAttention,
    DANetHead,
    DualAttention,
    GlobalContext,
    NonLocal2d,
    PositionAttention,
)
from attn2d.modules.capture import capturing
from tests.helpers import MapCatcher, SdpaCalls, activate, n_params
from tests.modules.references_position import (
    as_rows,
    batch_norm_eval,
    cam_reference,
    conv1x1,
    criss_cross_by_loops,
    gc_reference,
    nonlocal_reference,
    pam_reference,
)

MODES = ["embedded_gaussian", "gaussian", "dot_product", "concatenation"]


def double(module: torch.nn.Module) -> torch.nn.Module:
    return activate(module).double().eval()


def x64(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("scale", [False, True])
def test_nonlocal_matches_explicit_pairwise_matrix(mode, sub_sample, scale):
    m = double(NonLocal2d(12, mode=mode, sub_sample=sub_sample, scale=scale))
    x = x64(2, 12, 6, 7)
    expected, weights = nonlocal_reference(m, x)
    torch.testing.assert_close(m(x), expected)
    with MapCatcher(m) as catcher:
        torch.testing.assert_close(m(x), expected)
    (seen,) = catcher.maps["weights"]
    keys = 3 * 3 if sub_sample else 6 * 7
    assert seen.shape == (2, 6 * 7, keys)
    torch.testing.assert_close(seen, weights)


@pytest.mark.parametrize("fusion", ["add", "mul"])
def test_global_context_matches_reference(fusion):
    m = double(GlobalContext(32, fusion=fusion))
    x = x64(2, 32, 5, 6)
    expected, pool = gc_reference(m, x)
    with MapCatcher(m) as catcher:
        torch.testing.assert_close(m(x), expected)
    torch.testing.assert_close(catcher.maps["weights"][0], pool)
    torch.testing.assert_close(pool.sum((2, 3)), torch.ones(2, 1, dtype=torch.float64))


def test_position_attention_matches_reference():
    m = double(PositionAttention(16))
    x = x64(2, 16, 6, 7)
    expected, weights = pam_reference(m, x)
    torch.testing.assert_close(m(x), expected)
    with MapCatcher(m) as catcher:
        torch.testing.assert_close(m(x), expected)
    torch.testing.assert_close(catcher.maps["weights"][0], weights)


@pytest.mark.parametrize("invert", [True, False])
def test_channel_self_attention_matches_reference(invert):
    m = double(ChannelSelfAttention(8, invert=invert))
    x = x64(2, 8, 5, 4) * 0.3
    expected, weights = cam_reference(m, x)
    with MapCatcher(m) as catcher:
        torch.testing.assert_close(m(x), expected)
    torch.testing.assert_close(catcher.maps["weights"][0], weights)


def test_channel_self_attention_invert_flag_changes_the_weights():
    x = x64(1, 6, 4, 4)
    inverted, _ = cam_reference(double(ChannelSelfAttention(6, invert=True)), x)
    paper, _ = cam_reference(double(ChannelSelfAttention(6, invert=False)), x)
    assert not torch.allclose(inverted, paper)


def test_dual_attention_sums_both_branches_on_one_identity():
    m = double(DualAttention(16))
    x = x64(2, 16, 5, 6)
    pam, _ = pam_reference(m.position, x)
    cam, _ = cam_reference(m.channel, x)
    torch.testing.assert_close(m(x), pam + cam - x)


@pytest.mark.parametrize("recurrence", [1, 2])
def test_criss_cross_matches_row_column_loop(recurrence):
    m = double(CrissCrossAttention(16, recurrence=recurrence))
    x = x64(2, 16, 5, 7)
    expected, maps = criss_cross_by_loops(m, x)
    with MapCatcher(m) as catcher:
        torch.testing.assert_close(m(x), expected)
    seen = catcher.maps["attention.weights"]
    assert len(seen) == recurrence
    for got, want in zip(seen, maps):
        assert got.shape == (2, 5, 7, 7 + 5)
        torch.testing.assert_close(got, want)


def test_rcca_is_two_passes_with_shared_weights():
    m = attn2d.create("rcca", 16)
    assert m.recurrence == 2
    single = CrissCrossAttention(16)
    single.load_state_dict(m.state_dict())
    double(m), double(single)
    x = x64(1, 16, 4, 5)
    torch.testing.assert_close(m(x), single(single(x)))


def test_criss_cross_map_rows_sum_to_one_and_count_the_centre_once():
    m = activate(CrissCrossAttention(16)).eval()
    h, w = 6, 9
    with MapCatcher(m) as catcher:
        m(torch.randn(3, 16, h, w))
    (amap,) = catcher.maps["attention.weights"]
    torch.testing.assert_close(amap.sum(-1), torch.ones(3, h, w))
    column = amap[..., w:]
    centre = column[:, torch.arange(h), :, torch.arange(h)]  # (H, B, W): pixel (i, j), row i
    assert torch.equal(centre, torch.zeros_like(centre))
    assert (amap[..., :w] > 0).all()  # the centre keeps its weight in the row part


def test_criss_cross_one_pass_does_not_reach_off_cross_pixels():
    m = activate(CrissCrossAttention(8)).eval()
    x = torch.randn(1, 8, 5, 5)
    y = m(x)
    x2 = x.clone()
    x2[0, :, 4, 4] += 10.0  # not on the cross of pixel (0, 0)
    assert torch.equal(m(x2)[0, :, 0, 0], y[0, :, 0, 0])
    # Two passes (rcca) connect every pixel to every other.
    m.recurrence = 2
    assert not torch.allclose(m(x2)[0, :, 0, 0], m(x)[0, :, 0, 0])


def test_danet_head_shapes_and_branch_logits():
    head = DANetHead(48, num_classes=5).eval()
    x = torch.randn(2, 48, 9, 11)
    fused, position, channel = head.forward_branches(x)
    for logits in (head(x), fused, position, channel):
        assert logits.shape == (2, 5, 9, 11)
    torch.testing.assert_close(head(x), fused)
    assert head.position.channels == head.channel.channels == 12  # in/4, nothing hard-coded


# --- identity at initialisation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        *(NonLocal2d(16, mode=mode, sub_sample=True) for mode in MODES),
        GlobalContext(16),
        PositionAttention(16),
        ChannelSelfAttention(16),
        ChannelSelfAttention(16, invert=False),
        DualAttention(16),
        CrissCrossAttention(16),
        CrissCrossAttention(16, recurrence=2),
    ],
    ids=lambda m: type(m).__name__ + getattr(m, "mode", ""),
)
@pytest.mark.parametrize("training", [True, False])
def test_blocks_start_as_exact_identity(module, training):
    x = torch.randn(2, 16, 6, 7)
    assert torch.equal(module.train(training)(x), x)


def test_global_context_mul_fusion_starts_at_half_as_in_official_code():
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(GlobalContext(16, fusion="mul")(x), x * 0.5)


# --- fast path, maps and memory ---------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [NonLocal2d, lambda c: NonLocal2d(c, mode="gaussian", scale=True), PositionAttention],
    ids=["embedded_gaussian", "gaussian", "pam"],
)
def test_fused_attention_equals_explicit_map(build, monkeypatch):
    m = double(build(16))
    x = x64(2, 16, 9, 9)  # 81 keys > 4 × padded width 16: the fused route
    calls = SdpaCalls(monkeypatch)
    fast = m(x)
    assert calls.count == 1
    with MapCatcher(m):
        explicit = m(x)
    assert calls.count == 1  # a listener gets the explicit route
    torch.testing.assert_close(fast, explicit)


def test_position_attention_small_map_takes_explicit_route(monkeypatch):
    # 16 keys <= 4 × value width 32: the N×M weights are no larger than 4× the value tensor.
    m = double(PositionAttention(32))
    calls = SdpaCalls(monkeypatch)
    x = x64(2, 32, 4, 4)
    torch.testing.assert_close(m(x), pam_reference(m, x)[0])
    assert calls.count == 0


def test_dot_product_fast_path_equals_explicit_map():
    m = double(NonLocal2d(16, mode="dot_product", sub_sample=True))
    x = x64(2, 16, 8, 6)
    fast = m(x)
    with MapCatcher(m):
        torch.testing.assert_close(m(x), fast)


def test_position_map_reconstructs_the_output():
    m = double(PositionAttention(16))
    x = x64(2, 16, 5, 6)
    with MapCatcher(m) as catcher:
        y = m(x)
    (weights,) = catcher.maps["weights"]
    value = as_rows(conv1x1(x, m.value))
    rebuilt = (weights @ value).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(y - x, m.gamma * rebuilt)


def test_nonlocal_map_reconstructs_the_output():
    m = double(NonLocal2d(16, sub_sample=True))
    x = x64(2, 16, 6, 8)
    with MapCatcher(m) as catcher:
        y = m(x)
    (weights,) = catcher.maps["weights"]
    g = conv1x1(x, m.g)
    g = g.reshape(2, 8, 3, 2, 4, 2).amax((3, 5))
    inner = (weights @ as_rows(g)).transpose(1, 2).reshape(2, 8, 6, 8)
    torch.testing.assert_close(y - x, batch_norm_eval(conv1x1(inner, m.out), m.norm))


def test_criss_cross_map_reconstructs_the_output():
    m = double(CrissCrossAttention(8))
    x = x64(2, 8, 4, 6)
    with MapCatcher(m) as catcher:
        y = m(x)
    (amap,) = catcher.maps["attention.weights"]
    v = conv1x1(x, m.value)
    row = torch.einsum("bijk,bcik->bcij", amap[..., :6], v)
    col = torch.einsum("bijk,bckj->bcij", amap[..., 6:], v)
    torch.testing.assert_close(y - x, m.gamma * (row + col))


def test_a_hook_that_replaces_the_map_changes_the_output_accordingly():
    # While capturing, the weights returned through the AttentionMap are the ones applied.
    m = double(PositionAttention(8))
    x = x64(1, 8, 3, 4)
    uniform = torch.full((1, 12, 12), 1 / 12, dtype=torch.float64)
    handle = m.weights.register_forward_hook(lambda *_: uniform)
    with capturing(m):
        y = m(x)
    handle.remove()
    mean_value = conv1x1(x, m.value).mean((2, 3), keepdim=True)
    torch.testing.assert_close(y - x, m.gamma * mean_value.expand_as(x))


def _largest_allocation(fn) -> int:
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    return max(max(e.cpu_memory_usage for e in prof.events()), 0)


@pytest.mark.parametrize(
    "build",
    [NonLocal2d, lambda c: NonLocal2d(c, mode="dot_product"), PositionAttention],
    ids=["embedded_gaussian", "dot_product", "pam"],
)
def test_fast_path_never_allocates_the_position_matrix(build):
    m = activate(build(16)).eval()
    x = torch.randn(1, 16, 48, 48)
    n = 48 * 48
    position_matrix = n * n * 4
    with torch.no_grad():
        assert _largest_allocation(lambda: m(x)) < position_matrix / 16
        with MapCatcher(m):  # sanity: the explicit route does allocate it
            assert _largest_allocation(lambda: m(x)) >= position_matrix


def test_criss_cross_allocates_at_most_b_h_w_h_plus_w():
    m = activate(CrissCrossAttention(16)).eval()
    b, h, w = 2, 24, 20
    with torch.no_grad():
        largest = _largest_allocation(lambda: m(torch.randn(b, 16, h, w)))
    assert largest <= max(b * h * w * (h + w), b * 16 * h * w) * 4


def test_channels_last_input_gives_the_same_output():
    x = torch.randn(2, 16, 9, 10)
    for module in (
        NonLocal2d(16),
        PositionAttention(16),
        CrissCrossAttention(16),
        DualAttention(16),
        GlobalContext(16),
    ):
        m = activate(module).eval()
        torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), m(x))


def test_bf16_autocast_keeps_fused_attention_close():
    m = activate(NonLocal2d(32), scale=0.2).eval()
    x = torch.randn(2, 32, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    torch.testing.assert_close(y.float(), m(x), rtol=0.05, atol=0.05)


# --- parameter counts -------------------------------------------------------------------------


def conv_params(cin: int, cout: int, bias: bool = True, k: int = 1) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def test_parameter_counts_at_64_channels():
    c, inner, qk, gc_hidden = 64, 32, 8, 4
    embedded = 3 * conv_params(c, inner) + conv_params(inner, c) + 2 * c  # θ φ g, W, BN
    assert n_params(NonLocal2d(c)) == embedded == 8480
    assert n_params(NonLocal2d(c, mode="dot_product")) == embedded
    assert n_params(NonLocal2d(c, mode="gaussian")) == embedded - 2 * conv_params(c, inner) == 4320
    assert n_params(NonLocal2d(c, mode="concatenation")) == embedded + 2 * inner == 8544
    gc = conv_params(c, 1) + conv_params(c, gc_hidden) + 2 * gc_hidden + conv_params(gc_hidden, c)
    assert n_params(GlobalContext(c)) == gc == 653
    pam = 2 * conv_params(c, qk) + conv_params(c, c) + 1
    assert n_params(PositionAttention(c)) == pam == 5201
    assert n_params(ChannelSelfAttention(c)) == 1
    assert n_params(DualAttention(c)) == pam + 1
    assert n_params(CrissCrossAttention(c)) == n_params(attn2d.create("rcca", c)) == pam
    head_inner, classes = 16, 10
    branch_in = conv_params(c, head_inner, bias=False, k=3) + 2 * head_inner  # conv + BN
    branch_out = conv_params(head_inner, head_inner, bias=False, k=3) + 2 * head_inner
    small_pam = 2 * conv_params(head_inner, 2) + conv_params(head_inner, head_inner) + 1
    head = 2 * (branch_in + branch_out) + small_pam + 1 + 3 * conv_params(head_inner, classes)
    assert n_params(DANetHead(c, classes)) == head == 24020


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, error, fragments",
    [
        (lambda: NonLocal2d(16, mode="cosine"), ValueError, ["nonlocal: expected mode", "cosine"]),
        (lambda: NonLocal2d(16, reduction=0), ValueError, ["nonlocal: expected reduction > 0"]),
        (lambda: NonLocal2d(16, sub_sample="yes"), Attn2dError, ["nonlocal: expected sub_sample"]),
        (lambda: GlobalContext(16, fusion="sum"), ValueError, ["gc: expected fusion", "'sum'"]),
        (lambda: GlobalContext(16, reduction=-1), ValueError, ["gc: expected reduction > 0"]),
        (lambda: PositionAttention(16, reduction=0), ValueError, ["pam: expected reduction"]),
        (lambda: ChannelSelfAttention(16, invert=1), Attn2dError, ["cam: expected invert"]),
        (lambda: DualAttention(16, reduction=0), ValueError, ["danet: expected reduction"]),
        (lambda: CrissCrossAttention(16, recurrence=0), ValueError, ["rcca: expected recurrence"]),
        (lambda: CrissCrossAttention(16, recurrence=1.5), Attn2dError, ["expected recurrence"]),
        (lambda: CrissCrossAttention(16, reduction=0), ValueError, ["criss-cross: expected"]),
        (lambda: DANetHead(16, 0), ValueError, ["danet-head: expected num_classes >= 1"]),
        (lambda: DANetHead(16, 3, dropout=1.5), ValueError, ["danet-head: expected 0 <= dropout"]),
    ],
)
def test_bad_arguments_are_named(build, error, fragments):
    with pytest.raises(error) as info:
        build()
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    "module, owner",
    [
        (NonLocal2d(16), "nonlocal"),
        (GlobalContext(16), "gc"),
        (PositionAttention(16), "pam"),
        (ChannelSelfAttention(16), "cam"),
        (DualAttention(16), "danet"),
        (DANetHead(16, 3), "danet-head"),
        (CrissCrossAttention(16), "criss-cross"),
        (CrissCrossAttention(16, recurrence=2), "rcca"),
    ],
)
@pytest.mark.parametrize(
    "x, error, fragment",
    [
        (torch.randn(2, 8, 5, 5), ValueError, "got shape (2, 8, 5, 5)"),
        (torch.randn(16, 5, 5), ValueError, "got shape (16, 5, 5)"),
        (torch.ones(2, 16, 5, 5, dtype=torch.int32), Attn2dError, "got dtype torch.int32"),
    ],
    ids=["wrong-channels", "3d", "integer"],
)
def test_bad_input_is_named(module, owner, x, error, fragment):
    with pytest.raises(error) as info:
        module(x)
    assert str(info.value).startswith(f"{owner}: expected")
    assert fragment in str(info.value)


def test_sub_sample_needs_two_rows_and_columns():
    with pytest.raises(ValueError, match=r"nonlocal: expected H, W >= 2 with sub_sample"):
        NonLocal2d(8, sub_sample=True)(torch.randn(1, 8, 1, 6))


def test_gradcheck_through_fused_route():
    m = double(PositionAttention(8))
    x = x64(1, 8, 3, 5).requires_grad_(True)  # 15 keys > width 8: the fused route
    assert torch.autograd.gradcheck(m, (x,), fast_mode=True)
    assert math.isfinite(m(x).sum().item())
