from __future__ import annotations

import csv
import io
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import attn2d
from attn2d.cli import main
from attn2d.models import create_model
from attn2d.modules.capture import capturing
from attn2d.tools.profiler import FLOP_FORMULAS, count_macs, profile


def test_conv_and_linear_macs_equal_the_hand_formulas():
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2)
    # output 9x9 from 17x17; each output sums (6 / 2 groups) * 3 * 3 products
    assert count_macs(conv, (6, 17, 17)) == 9 * 9 * 8 * 3 * 3 * 3
    linear = nn.Linear(20, 30)
    assert count_macs(linear, torch.randn(4, 20)) == 4 * 20 * 30


def test_se_macs_and_elementwise_ops_equal_its_formula():
    c, r, h, w = 64, 16, 8, 8
    hidden = c // r
    report = profile("se", (c, h, w), timing_runs=0)
    assert report.total.macs == 2 * c * hidden  # the two Linear layers; biases are not MACs
    pool, biases, relu, sigmoid, scale = c * h * w, hidden + c, hidden, c, c * h * w
    assert report.total.elementwise == pool + biases + relu + sigmoid + scale
    assert report.total.params == 2 * c * hidden + hidden + c


def nonlocal_macs(c: int, n: int) -> int:
    inner = c // 2
    # theta, phi, g: C -> C/2 at every position; out: C/2 -> C; two N x N x C/2 products
    return 3 * n * c * inner + n * inner * c + 2 * n * n * inner


def test_nonlocal_costs_the_same_on_the_fast_and_the_explicit_path():
    c, h, w = 32, 12, 12
    n = h * w
    module = attn2d.create("nonlocal", c)
    fast = profile(module, (c, h, w), timing_runs=0)
    with capturing(module):  # the explicit N×N map
        explicit = profile(module, (c, h, w), timing_runs=0)
    assert fast.total.macs == explicit.total.macs == nonlocal_macs(c, n)
    assert fast.total.elementwise == explicit.total.elementwise
    # the fast path really ran (profiling did not switch capture on): no N×N written
    assert explicit.total.bytes_written - fast.total.bytes_written >= n * n * 4


def test_flop_formulas_let_flop_counter_mode_count_cpu_attention():
    q = torch.randn(2, 3, 16, 8)
    expected = 2 * (2 * 2 * 3 * 16 * 16 * 8)  # two batched products, 2 FLOPs per MAC
    with FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(q, q, q)
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counted:
        F.scaled_dot_product_attention(q, q, q)
    assert plain.get_total_flops() == 0  # PyTorch alone misses the CPU kernel
    assert counted.get_total_flops() == expected


def test_count_macs_agrees_with_flop_counter_mode_on_a_cnn():
    model = create_model("small_cnn", attention="cbam").eval()
    x = torch.randn(1, 3, 16, 16)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert count_macs(model, x) == counter.get_total_flops() // 2


@pytest.mark.parametrize("depth", [None, 0, 1, 2])
def test_total_row_is_the_sum_of_rows_at_every_depth(depth):
    model = create_model("small_cnn", attention="cbam", in_channels=1)
    report = profile(model, (1, 16, 16), depth=depth, timing_runs=1)
    for key in ("params", "macs", "elementwise", "activation_bytes", "bytes_read",
                "bytes_written"):
        assert getattr(report.total, key) == sum(getattr(r, key) for r in report.rows), key
    assert report.total.params == sum(p.numel() for p in model.parameters())
    assert report.total.macs == count_macs(model, (1, 16, 16))
    assert sum(r.time_share for r in report.rows) == pytest.approx(1.0)
    assert all(depth is None or r.depth <= depth for r in report.rows)


def test_rows_attribute_work_to_the_module_that_does_it():
    report = profile("small_cnn", (3, 16, 16), attention="se", timing_runs=0)
    rows = {r.path: r for r in report.rows}
    conv = rows["block2.conv"]
    assert (conv.input_shape, conv.output_shape) == ("1x32x8x8", "1x64x8x8")
    assert conv.macs == 8 * 8 * 64 * 32 * 9 and conv.params == 64 * 32 * 9
    assert rows["block2.attn.fc1"].macs == 64 * 4
    assert conv.activation_bytes == 64 * 8 * 8 * 4


def test_profiling_leaves_the_model_as_it_was():
    model = create_model("small_cnn", attention="nonlocal").train()
    profile(model, (3, 8, 8), timing_runs=1)
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_bad_inputs_fail_with_a_clear_message():
    with pytest.raises(ValueError, match=r"profile: expected input_shape as .*got '3xa'"):
        profile("se", "3xa")
    with pytest.raises(ValueError, match="mechanism spec"):
        profile("se", (8, 4, 4), attention="cbam")
    with pytest.raises(ValueError, match="channels=16"):
        profile("se", (8, 4, 4), channels=16)


@pytest.mark.parametrize("fmt", ["text", "markdown", "csv", "json"])
def test_cli_profile_prints_each_format(fmt, capsys):
    assert main(["profile", "cbam", "--input", "16x8x8", "--format", fmt, "--runs", "1"]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        data = json.loads(out)
        assert data["total"]["macs"] == sum(r["macs"] for r in data["rows"]) > 0
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        mlp, spatial = (16 + 1) + (16 + 16), 2 * 7 * 7 + 2  # C=16, hidden 1; conv + BN
        assert rows[-1]["path"] == "total" and int(rows[-1]["params"]) == mlp + spatial
    elif fmt == "markdown":
        assert out.startswith("| module path |") and "| total |" in out
    else:
        lines = out.splitlines()
        assert "spatial_gate.conv" in out and any(line.startswith("total ") for line in lines)


def test_cli_profile_takes_a_mechanism_at_the_readmes_c_64_and_a_model_at_3(capsys):
    assert main(["profile", "se", "--runs", "0", "--format", "json"]) == 0
    se = json.loads(capsys.readouterr().out)
    assert se["input_shape"] == [1, 64, 32, 32]
    assert se["total"]["params"] == 2 * 64 * 4 + 4 + 64  # SE at C = 64, as attn2d list shows
    assert main(["profile", "small_cnn", "--runs", "0", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [1, 3, 32, 32]


def test_cli_profile_model_with_attention_and_depth_and_output_file(tmp_path, capsys):
    path = tmp_path / "profile.json"
    argv = ["profile", "small_cnn", "--attention", "se", "--input", "1x28x28", "--depth", "1",
            "--runs", "0", "--output", str(path)]
    assert main(argv) == 0
    data = json.loads(path.read_text())
    assert [r["path"] for r in data["rows"]] == ["(root)", "block1", "block2", "block3", "fc"]
    assert main(["profile", "small_cnn", "--input", "1xbad"]) == 2
    assert capsys.readouterr().err == ("attn2d profile: error: expected --input as CxHxW or "
                                       "BxCxHxW (e.g. 3x32x32), got '1xbad'\n")


def test_cli_params_table(capsys):
    argv = ["params", "se", "nonlocal", "--model", "small_cnn", "--input", "1x16x16",
            "--format", "csv"]
    assert main(argv) == 0
    rows = {r["mechanism"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    plain = sum(p.numel() for p in create_model("small_cnn", in_channels=1).parameters())
    assert int(rows["none"]["params"]) == plain
    assert rows["se"]["placement"] == "block" and rows["nonlocal"]["placement"] == "stage"
    assert int(rows["se"]["delta_params"]) == sum(
        2 * c * (c // 16) + c // 16 + c for c in (32, 64, 128))


def test_cbam_gates_are_rows_in_call_order_with_their_shapes(capsys):
    argv = ["profile", "small_cnn", "--attention", "cbam", "--input", "1x28x28", "--depth", "3",
            "--runs", "0", "--format", "json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    paths = [r["path"] for r in rows]
    block = paths[paths.index("block2"):paths.index("block3")]
    assert block == ["block2", "block2.conv", "block2.bn", "block2.attn.channel_gate",
                     "block2.attn.spatial_gate"]
    gates = {r["path"]: r for r in rows if r["path"].startswith("block2.attn.")}
    for gate in gates.values():
        assert gate["input_shape"] == gate["output_shape"] == "1x64x14x14"
        assert gate["macs"] > 0


def test_module_macs_are_their_own_and_sum_to_the_flop_counter_total():
    rcca = attn2d.create("rcca", 16)
    report = profile(rcca, (16, 6, 5), timing_runs=0)
    rows = {r.path: r for r in report.rows}
    n, hidden = 6 * 5, 2
    assert rows["query"].macs == 2 * n * 16 * hidden  # two passes
    assert rows["attention"].calls == 2
    # per pass: row and column energies and the weighted sums, each n·(W + H)·width
    assert rows["attention"].macs == 2 * (n * (5 + 6) * hidden + n * (5 + 6) * 16)
    # criss-cross runs as one fused operator: its FLOP formula counts the same products
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter, \
            torch.no_grad():
        rcca.eval()(torch.randn(1, 16, 6, 5))
    assert report.total.macs == counter.get_total_flops() // 2
