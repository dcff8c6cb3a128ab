"""The benchmark harness: naive references agree with attn2d, measurements are sound."""

from __future__ import annotations

import json
import time

import pytest
import torch

import attn2d
from attn2d import bench
from attn2d.cli import main
from tests.helpers import activate

naive = bench.load_naive()
if naive is None:  # an installed package without the source tree's benchmarks/
    pytest.skip("benchmarks/naive.py not found", allow_module_level=True)

NAMES = [m.name for m in attn2d.available()]
VARIANTS = [
    "nonlocal(mode='gaussian')", "nonlocal(mode='dot_product')",
    "nonlocal(mode='concatenation')", "nonlocal(sub_sample=True, scale=True)",
    "cbam(pool_types=('avg', 'max', 'lp', 'lse'))", "cbam(no_spatial=True)",
    "cbam-lite(depthwise=True)", "cbam-parallel(spatial_kernel=3)", "bam(combine='mul')",
    "gc(fusion='mul')", "cam(invert=False)", "danet(invert=False)",
    "criss-cross(recurrence=3)", "triplet(no_spatial=True)", "eca(kernel_size=5)",
]  # fmt: skip


@pytest.mark.parametrize("spec", NAMES + VARIANTS)
def test_naive_reference_computes_the_same_function(spec):
    module = activate(attn2d.create(spec, 16)).double().eval()
    reference = naive.naive_version(module)
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64) * 2
    torch.testing.assert_close(reference(x), module(x))


@pytest.mark.parametrize("name", ["cbam", "pam", "criss-cross"])
def test_naive_reference_has_the_same_gradients_in_training(name):
    module = activate(attn2d.create(name, 16)).double().train()
    reference = naive.naive_version(module)
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn_like(x)
    ours = torch.autograd.grad(module(x), (x, *module.parameters()), grad)
    theirs = torch.autograd.grad(reference(x), (x, *reference.parameters()), grad)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", sorted(bench.TIMM_NOTES))
def test_timm_counterpart_has_our_widths(name):
    # Same parameter count: timm's module is configured to the same hidden widths.
    pytest.importorskip("timm")
    ours = attn2d.create(name, 64)
    theirs = bench.timm_counterpart(name, ours)
    assert theirs is not None
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(theirs) == count(ours)
    x = torch.randn(2, 64, 8, 8)
    assert theirs.eval()(x).shape == x.shape


def test_mechanisms_without_timm_counterpart_get_none():
    for name in ("pam", "cam", "criss-cross", "triplet", "simam", "bam"):
        assert bench.timm_counterpart(name, attn2d.create(name, 16)) is None


def test_interleaved_timer_ranks_steps_by_cost():
    times = bench.time_interleaved(
        {"short": lambda: time.sleep(0.001), "long": lambda: time.sleep(0.004)},
        budget_s=0.05, min_rounds=3, max_rounds=5)
    assert set(times) == {"short", "long"}
    assert 0.0009 < times["short"] < times["long"]
    assert times["long"] / times["short"] > 2


def test_cpu_clock_ignores_time_spent_waiting():
    times = bench.time_interleaved({"sleep": lambda: time.sleep(0.003)}, budget_s=0.02,
                                   min_rounds=3, max_rounds=3, clock="cpu")
    assert times["sleep"] < 0.0015


def test_peak_memory_counts_temporaries_and_excludes_what_was_live_before():
    held = torch.ones(1024, 1024)  # 4 MiB allocated before the step

    def step() -> None:
        tmp = torch.empty(2 * 1024 * 1024)  # 8 MiB, freed at return
        del tmp
        torch.empty(512 * 1024)  # 2 MiB

    peak = bench.peak_memory(step)
    assert 8 * bench.MIB <= peak < 8.5 * bench.MIB
    assert held.sum() > 0


@pytest.mark.parametrize("name", ["nonlocal", "pam", "criss-cross"])
def test_fast_paths_never_hold_an_n_by_n_map(name):
    # SPEC §4: at 32×32 one float32 N×N map is 4 MiB; a whole training step of attn2d's
    # module must stay well below it, while the naive reference holds several.
    rows = bench.memory_scaling([name], sides=[32], channels=16, naive=naive)
    peaks = {r.impl: r.train_peak for r in rows}
    n_by_n = (32 * 32) ** 2 * 4
    assert peaks["attn2d"] < n_by_n / 2
    assert peaks["naive"] > 2 * n_by_n


def test_run_case_measures_every_implementation():
    case = bench.run_case("se", (2, 32, 8, 8), budget_s=0.01, naive=naive)
    assert set(case.results) == {"attn2d", "naive", "timm"}
    for result in case.results.values():
        assert result.forward_ms > 0 and result.train_ms > 0
        assert result.train_peak > 0 and not result.note
    assert case.ratio("naive", "train_ms") > 0


def test_naive_sizes_over_the_memory_budget_are_skipped_not_run():
    case = bench.run_case("pam", (1, 16, 16, 16), against=("naive",), budget_s=0.01,
                          memory=False, memory_budget=100_000, naive=naive)
    assert "skipped" in case.results["naive"].note
    assert case.results["naive"].forward_ms is None
    assert case.results["attn2d"].forward_ms > 0


def test_bf16_channels_last_case_runs():
    case = bench.run_case("cbam", (2, 32, 8, 8), "bf16", "channels_last", budget_s=0.01,
                          memory=False, naive=naive)
    assert all(r.train_ms for r in case.results.values())


def test_targets_report_met_and_missed():
    fast = bench.Case("se", (1, 8, 4, 4), "fp32", "contiguous",
                      {"attn2d": bench.Measurement(train_ms=1.0),
                       "timm": bench.Measurement(train_ms=2.0)})
    slow = bench.Case("eca", (1, 8, 4, 4), "fp32", "contiguous",
                      {"attn2d": bench.Measurement(train_ms=3.0),
                       "timm": bench.Measurement(train_ms=2.0)})
    scaling = [bench.ScalingRow("pam", "attn2d", 64, 4096, train_peak=10),
               bench.ScalingRow("pam", "naive", 64, 4096, train_peak=100),
               bench.ScalingRow("nonlocal", "attn2d", 64, 4096, train_peak=50),
               bench.ScalingRow("nonlocal", "naive", 64, 4096, train_peak=100)]
    verdicts = {t["target"].split(":")[0].split(" ")[0]: t["met"]
                for t in bench.check_targets([fast, slow], scaling)}
    assert verdicts == {"se": True, "eca": False, "pam": True, "nonlocal": False}


def test_scaling_plot_is_a_png(tmp_path):
    rows = [bench.ScalingRow("pam", impl, s, s * s, train_peak=s * s * k)
            for impl, k in (("attn2d", 10), ("naive", 1000)) for s in (8, 16)]
    path = tmp_path / "scaling.png"
    bench.plot_scaling(rows, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pam" in bench.format_scaling(rows, "markdown")


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "eca", "--sizes", "1x16x8x8", "--time-budget", "0.01", "--threads", "1"]
    assert main([*argv, "--format", "json", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    (case,) = report["cases"]
    assert case["mechanism"] == "eca" and case["size"] == "1x16x8x8"
    assert case["results"]["timm"]["train_ms"] > 0
    assert case["train_ms_vs_naive"] > 0
    assert main([*argv, "--format", "markdown", "--no-memory"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| mechanism |") and "| eca | 1x16x8x8 |" in table


def test_cli_rejects_a_bad_size(capsys):
    assert main(["bench", "se", "--sizes", "8x64x32"]) == 2
    assert "BxCxHxW" in capsys.readouterr().err


def test_missing_naive_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="naive"):
        bench.load_naive(tmp_path / "absent.py")
