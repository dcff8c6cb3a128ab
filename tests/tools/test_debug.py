"""attn2d.tools.map_stats: shape traces, float64 gradient checks, attention statistics and their
flags; ``attn2d trace`` and ``attn2d stats``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import attn2d
from attn2d.cli import main
from attn2d.models import create_model
from attn2d.modules.capture import AttentionRecorder
from attn2d.tools.gradcheck import check_gradients
from attn2d.tools.map_stats import attention_stats, collect_attention_stats, format_stats
from attn2d.tools.trace import trace_shapes

from ..helpers import activate


# -- statistics ------------------------------------------------------------------------------
def test_stats_flag_uniform_and_saturated_gates_and_pass_a_healthy_one():
    gen = torch.Generator().manual_seed(0)
    uniform = 0.5 + 0.001 * torch.randn(8, 1, 6, 6, generator=gen)
    saturated = torch.where(torch.rand(8, 32, generator=gen) < 0.5, 0.01, 0.99)
    healthy = 0.2 + 0.6 * torch.rand(8, 32, generator=gen)
    stats = {s.label: s for s in attention_stats({
        "uniform": ("spatial", uniform), "saturated": ("channel", saturated),
        "healthy": ("channel", healthy)})}
    assert stats["uniform"].status == "near-uniform"
    assert "std" in stats["uniform"].flags[0] and stats["uniform"].entropy > 0.99
    assert stats["saturated"].status == "saturated"
    assert stats["saturated"].low == pytest.approx(0.5, abs=0.1)
    assert stats["saturated"].low + stats["saturated"].high == 1.0
    assert stats["healthy"].flags == [] and stats["healthy"].status == "ok"
    # Bernoulli entropy in bits, computed here independently.
    w = healthy.double().flatten()
    bern = (-(w * torch.log2(w) + (1 - w) * torch.log2(1 - w))).mean()
    assert stats["healthy"].entropy == pytest.approx(float(bern), rel=1e-9)
    assert stats["healthy"].mean == pytest.approx(float(w.mean()), rel=1e-9)
    assert stats["healthy"].std == pytest.approx(float(w.std(unbiased=False)), rel=1e-6)


def test_stats_flag_uniform_and_one_hot_distributions():
    gen = torch.Generator().manual_seed(1)
    uniform = torch.full((2, 16, 16), 1 / 16)
    one_hot = torch.eye(16).expand(2, 16, 16) * 0.97 + 0.03 / 16
    peaked = (3 * torch.randn(2, 16, 16, generator=gen)).softmax(-1)
    stats = {s.label: s for s in attention_stats({
        "u": ("position", uniform), "o": ("position", one_hot), "p": ("position", peaked)})}
    assert stats["u"].entropy == pytest.approx(1.0) and stats["u"].status == "near-uniform"
    assert stats["o"].peaked == 1.0 and stats["o"].status == "saturated"
    assert stats["p"].status == "ok"
    rows = peaked.double().reshape(-1, 16)
    expected = float((-(rows * rows.log()).sum(-1) / math.log(16)).mean())
    assert stats["p"].entropy == pytest.approx(expected, rel=1e-9)


def test_criss_cross_stats_skip_the_structural_zero_and_use_h_plus_w_minus_1():
    cc = activate(attn2d.create("criss-cross", 8)).eval()
    with AttentionRecorder(cc) as rec:
        cc(torch.randn(2, 8, 3, 5))
    (s,) = attention_stats(rec.records)
    assert s.count == 2 * 3 * 5 * (3 + 5 - 1) and s.minimum > 0
    rows = rec.records[0].tensor.double().reshape(-1, 8)
    ent = -(rows * rows.clamp_min(1e-300).log()).sum(-1) / math.log(7)
    assert s.entropy == pytest.approx(float(ent.mean()), rel=1e-9)


def test_collect_stats_streams_batches_like_one_big_batch():
    model = create_model("small_cnn", attention="cbam", in_channels=1).eval()
    x = torch.randn(6, 1, 16, 16)
    streamed = collect_attention_stats(model, [x[:2], x[2:]])
    with AttentionRecorder(model) as rec, torch.no_grad():
        model(x)
    whole = attention_stats(rec.records)
    assert [s.label for s in streamed] == [s.label for s in whole]
    for a, b in zip(streamed, whole, strict=True):
        assert a.images == b.images == 6
        assert a.mean == pytest.approx(b.mean, rel=1e-9)
        assert a.std == pytest.approx(b.std, rel=1e-6)
        assert a.entropy == pytest.approx(b.entropy, rel=1e-9)
    assert "block1.attn.channel_gate:channel" in format_stats(streamed)


def test_unnormalised_position_maps_get_no_row_entropy():
    nl = activate(attn2d.create("nonlocal(mode='dot_product')", 8)).eval()
    with AttentionRecorder(nl) as rec:
        nl(torch.randn(1, 8, 4, 4))
    (s,) = attention_stats(rec.records)
    assert s.entropy is None and s.peaked is None


# -- shape trace -----------------------------------------------------------------------------
def test_trace_shapes_lists_every_call_with_shapes_and_removes_hooks():
    model = create_model("small_cnn", attention="cbam", in_channels=1).eval()
    trace = trace_shapes(model, torch.randn(2, 1, 16, 16))
    by_path = {r.path: r for r in trace.rows}
    assert by_path[""].inputs == "2×1×16×16" and by_path[""].output == "2×10"
    assert by_path["block2.conv"].output == "2×64×8×8"
    assert by_path["block2.attn.spatial_gate.weights"].output == "2×1×8×8"
    gate = by_path["block2.attn.channel_gate"]  # CBAM calls its gates as modules
    assert (gate.name, gate.inputs, gate.output) == ("channel_gate", "2×64×8×8", "2×64×8×8")
    assert gate.depth == by_path["block2.attn"].depth + 1
    mlp = by_path["block2.attn.channel_gate.mlp"]
    assert mlp.name == "mlp" and mlp.depth == gate.depth + 1
    assert sum(r.params for r in trace.rows) == sum(p.numel() for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    text = trace.render()
    assert text.splitlines()[0].split() == ["module", "type", "input", "output", "params"]
    without = trace_shapes(model, torch.randn(2, 1, 16, 16), include_maps=False)
    assert len(without.rows) == len(trace.rows) - 6


def test_trace_shows_both_recurrent_passes():
    rcca = attn2d.create("rcca", 16)
    rows = trace_shapes(rcca, torch.randn(1, 16, 4, 4)).rows
    assert [r.path for r in rows].count("query") == 2
    assert [r.path for r in rows].count("attention") == 2


def test_trace_switches_capture_on_only_when_asked():
    pam = attn2d.create("pam", 16)
    x = torch.randn(1, 16, 9, 9)
    plain = [r.path for r in trace_shapes(pam, x).rows]
    captured = {r.path: r for r in trace_shapes(pam, x, capture=True).rows}
    assert "weights" not in plain and not pam.weights.capture
    assert captured["weights"].output == "1×81×81"


def test_importing_debug_loads_no_plotting():
    code = ("import sys, attn2d.tools.map_stats; "
            "assert 'matplotlib' not in sys.modules and 'attn2d.viz' not in sys.modules")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# -- gradient check --------------------------------------------------------------------------
class RoundedStraightThrough(nn.Module):
    """Quantises with torch.round but claims an identity gradient: a wrong backward."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.scale[:, None, None]
        return y + (torch.round(y) - y).detach()


def test_check_gradients_passes_a_correct_module():
    se = activate(attn2d.create("se", 4, reduction=2))
    report = check_gradients(se, (2, 4, 3, 3))
    assert report.passed
    assert [c[0] for c in report.checks] == ["input", "fc1.weight", "fc1.bias", "fc2.weight",
                                             "fc2.bias"]
    assert "PASS" in report.render()
    assert se.fc1.weight.dtype == torch.float32  # the original is untouched


def test_check_gradients_reports_a_wrong_backward_as_failing():
    report = check_gradients(RoundedStraightThrough(3), (1, 3, 2, 2))
    assert not report.passed
    failing = [what for what, _, ok, _ in report.checks if not ok]
    assert failing == ["input", "scale"]
    text = report.render()
    assert "FAIL" in text and "Jacobian mismatch" in text


def test_check_gradients_from_a_spec_in_eval_mode():
    report = check_gradients("cbam(reduction=2)", (2, 4, 4, 4))
    assert report.passed and report.module == "cbam(reduction=2)"
    with pytest.raises(ValueError, match="check_gradients: expected a positive input shape"):
        check_gradients("se", (1, 0, 3, 3))


# -- commands --------------------------------------------------------------------------------
def test_trace_command_prints_the_table(capsys):
    assert main(["trace", "small_cnn", "--attention", "se", "--input", "1x16x16"]) == 0
    out = capsys.readouterr().out
    assert "block3.attn" not in out  # nested rows show the name relative to their caller
    assert any(line.split()[:2] == ["attn", "SqueezeExcite"] for line in out.splitlines())
    assert main(["trace", "se", "--input", "1x4x3x3", "--gradcheck"]) == 0
    assert "gradcheck se on input (1, 4, 3, 3)" in capsys.readouterr().out
    assert main(["trace", "small_cnn", "--input", "28x28"]) == 2
    assert "expected --input as CxHxW" in capsys.readouterr().err


@pytest.fixture(scope="module")
def data_dir(fake_fashion_mnist):
    return fake_fashion_mnist(32, 24)


def test_stats_command_prints_and_writes_json(data_dir, tmp_path, capsys):
    out = tmp_path / "stats.json"
    code = main(["stats", "--model", "small_cnn", "--attention", "danet", "--data-dir",
                 data_dir, "--images", "20", "--batch-size", "8", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "small_cnn + danet (untrained) on 20 fashion-mnist test images" in text
    rows = json.loads(out.read_text())
    assert {r["kind"] for r in rows} == {"position", "channel-affinity"}
    assert all(r["images"] == 20 for r in rows)
    # More images than the split holds: all of them, with a note naming the option.
    assert main(["stats", "--model", "small_cnn", "--data-dir", data_dir, "--images", "99"]) == 0
    out, err = capsys.readouterr()
    assert "on 24 fashion-mnist test images" in out
    assert "--images 99 is more than the 24 images in the test split of fashion-mnist: using " \
           "all 24" in err
