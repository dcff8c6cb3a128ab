"""Capture is explicit: only the capture flag (or the recorder) builds N×N maps; hooks,
global hooks and profilers never change the path a mechanism runs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import attn2d
from attn2d import Attn2dError
from attn2d.modules import AttentionMap, NonLocal2d, PositionAttention
from attn2d.modules.capture import AttentionRecorder, capturing
from attn2d.tools.bench import peak_memory
from tests.helpers import SdpaCalls, activate
from tests.modules.references_position import as_rows, conv1x1

SIZE = 48  # N = 2304 positions: one float32 N×N map is 20 MiB


def pam_and_input() -> tuple[PositionAttention, torch.Tensor]:
    return activate(PositionAttention(16)).eval(), torch.randn(1, 16, SIZE, SIZE)


def forward_peak(module: torch.nn.Module, x: torch.Tensor) -> int:
    def step() -> None:
        with torch.no_grad():
            module(x)

    return peak_memory(step)


def test_a_global_forward_hook_changes_neither_the_path_nor_the_peak_memory(monkeypatch):
    pam, x = pam_and_input()
    position_map = (SIZE * SIZE) ** 2 * 4
    calls = SdpaCalls(monkeypatch)
    plain_peak, plain = forward_peak(pam, x), pam(x)
    assert calls.count == 2 and plain_peak < position_map / 4  # the fused path, no N×N
    seen = []
    handles = [torch.nn.modules.module.register_module_forward_hook(lambda *a: seen.append(1)),
               torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: None)]
    try:
        hooked_peak, hooked = forward_peak(pam, x), pam(x)
    finally:
        for handle in handles:
            handle.remove()
    assert seen  # the global hook did run
    assert calls.count == 4  # still the fused path
    assert hooked_peak == plain_peak
    assert torch.equal(hooked, plain)
    with capturing(pam):  # sanity: the explicit path does hold the N×N map
        assert forward_peak(pam, x) >= position_map
    assert calls.count == 4


def test_flop_counter_mode_does_not_switch_to_the_explicit_path(monkeypatch):
    pam, x = pam_and_input()
    calls = SdpaCalls(monkeypatch)
    with FlopCounterMode(display=False), torch.no_grad():
        pam(x)
    assert calls.count == 1


@pytest.mark.parametrize("build", [
    PositionAttention,
    NonLocal2d,
    lambda c: NonLocal2d(c, mode="gaussian"),
    lambda c: NonLocal2d(c, mode="dot_product"),
    lambda c: NonLocal2d(c, mode="concatenation"),
    lambda c: attn2d.create("criss-cross", c),
    lambda c: attn2d.create("rcca", c),
], ids=["pam", "embedded_gaussian", "gaussian", "dot_product", "concatenation",
        "criss-cross", "rcca"])  # fmt: skip
def test_a_hook_on_a_tap_without_capture_never_fires_and_changes_nothing(build):
    module = activate(build(16)).double().eval()
    (tap,) = [m for m in module.modules() if isinstance(m, AttentionMap)]
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    plain = module(x)
    seen = []
    handle = tap.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        assert not tap.capture
        assert torch.equal(module(x), plain)  # same path, bit for bit
        assert seen == []
        with capturing(module):
            captured = module(x)
    finally:
        handle.remove()
    passes = getattr(module, "recurrence", 1)
    assert len(seen) == passes and not tap.capture  # capture is back off
    torch.testing.assert_close(captured, plain)


def test_the_captured_position_map_is_the_one_applied():
    pam = activate(PositionAttention(16)).double().eval()
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)  # 81 keys: the fused path by default
    with AttentionRecorder(pam) as rec:
        y = pam(x)
    (weights,) = rec.maps[("", "position")]
    rebuilt = (weights @ as_rows(conv1x1(x, pam.value))).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(y, x + pam.gamma * rebuilt)
    torch.testing.assert_close(y, pam(x))  # and the fused path gives the same output


def test_gate_taps_fire_on_every_call_without_capture():
    cbam = attn2d.create("cbam", 16)
    seen = []
    handle = cbam.channel_gate.weights.register_forward_hook(lambda *a: seen.append(1))
    cbam(torch.randn(1, 16, 4, 4))
    handle.remove()
    assert seen == [1]


def test_capturing_restores_each_flag_and_filters_kinds():
    model = attn2d.models.create_model("small_cnn", attention="danet", in_channels=1)
    taps = {path: m for path, m in model.named_modules() if isinstance(m, AttentionMap)}
    first = next(p for p, m in taps.items() if m.kind == "position")
    taps[first].capture = True  # set by hand before: kept after
    with capturing(model, kinds={"channel-affinity"}):
        assert {p for p, m in taps.items() if m.capture} == {
            first, *(p for p, m in taps.items() if m.kind == "channel-affinity")}
        with capturing(model):
            assert all(m.capture for m in taps.values())
        assert not all(m.capture for m in taps.values())
    assert [p for p, m in taps.items() if m.capture] == [first]
    with pytest.raises(Attn2dError, match=r"capturing: expected an nn\.Module"), capturing("pam"):
        pass
