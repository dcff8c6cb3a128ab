"""The benchmark harness: naive references agree with attn2d, measurements are sound."""

from __future__ import annotations

import json

import pytest
import torch

import attn2d
from attn2d.cli import main
from attn2d.tools import bench, naive, timing
from tests.helpers import activate

MIB = 1024**2

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


class FakeClock:
    """A clock that only the steps move: each call of a step advances it by that step's
    cost, so timing logic is tested without wall time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def step(self, name: str, *costs: float):
        """A step whose successive calls cost ``costs`` in turn, cycling."""

        def run() -> None:
            self.now += costs[sum(c == name for c in self.calls) % len(costs)]
            self.calls.append(name)

        return run


def test_interleaved_timer_returns_the_median_cost_per_call():
    fake = FakeClock()
    # "spiky" takes one call per sample (>= MIN_SAMPLE_S) plus one untimed call; one round
    # in four its timed call costs 50x: the median ignores it, a mean would not.
    spiky = (0.004,) * 7 + (0.2,)
    steps = {"short": fake.step("short", 0.001), "long": fake.step("long", 0.004),
             "spiky": fake.step("spiky", *spiky)}
    times = timing.time_interleaved(steps, budget_s=0.2, min_rounds=3, max_rounds=9, clock=fake)
    assert times == pytest.approx({"short": 0.001, "long": 0.004, "spiky": 0.004})


def test_interleaved_timer_rotates_the_order_and_fits_the_budget():
    fake = FakeClock()
    costs = {"a": 0.001, "b": 0.002}
    steps = {name: fake.step(name, cost) for name, cost in costs.items()}
    timing.time_interleaved(steps, budget_s=0.1, min_rounds=2, max_rounds=100, clock=fake)
    warmup, rounds = fake.calls[:4], fake.calls[4:]
    assert warmup == ["a", "a", "b", "b"]  # warm-up call, then the probe, per step
    # A sample = one untimed call + enough calls for MIN_SAMPLE_S: a 2+1, b 1+1.
    calls = {"a": 3, "b": 2}
    per_round = sum(calls.values())
    assert len(rounds) % per_round == 0
    n_rounds = len(rounds) // per_round
    per_round_s = sum(calls[n] * costs[n] for n in costs)
    assert n_rounds == int(0.1 / per_round_s)
    firsts = [rounds[r * per_round] for r in range(n_rounds)]
    assert firsts == ["a", "b"] * (n_rounds // 2) + ["a"] * (n_rounds % 2)


def test_interleaved_timer_keeps_min_and_max_rounds():
    for budget, low, high, expected in ((0.0, 4, 100, 4), (10.0, 1, 6, 6)):
        fake = FakeClock()
        timing.time_interleaved({"only": fake.step("only", 0.01)}, budget_s=budget,
                                min_rounds=low, max_rounds=high, clock=fake)
        assert len(fake.calls) == 2 + 2 * expected  # warm-up, probe; per round 1 + 1


def test_clock_names_and_errors():
    import time

    assert timing.get_clock("wall") is time.perf_counter
    assert timing.get_clock("cpu") is time.process_time  # time preempted is not counted
    fake = FakeClock()
    assert timing.get_clock(fake) is fake
    with pytest.raises(ValueError, match="expected clock in"):
        timing.get_clock("sundial")


def test_peak_memory_of_a_known_allocation_is_its_size():
    held = torch.ones(1024, 1024)  # 4 MiB live before the step: not counted

    def step() -> None:
        tmp = torch.empty(2 * 1024 * 1024)  # 8 MiB, freed at return
        del tmp
        torch.empty(512 * 1024)  # 2 MiB, after the 8 MiB were freed

    peak = timing.peak_memory(step)
    assert 8 * MIB <= peak < 8 * MIB + 64 * 1024
    assert timing.peak_memory(lambda: held.add_(1)) < 64 * 1024  # in place: nothing new


def test_criss_cross_training_peak_is_at_most_non_local_s():
    # Issue 13: criss-cross stores nothing (H + W)-wide, so a training step at
    # 96×96 (B = 1, C = 64) peaks no higher than non-local's fused attention. (RCCA, two
    # passes, is compared at 128×128 and 256×256 by the benchmark: benchmarks/run_all.py.)
    rows = bench.memory_scaling(["nonlocal", "criss-cross"], sides=[96], against=())
    peaks = {r.mechanism: r.train_peak for r in rows}
    assert peaks["criss-cross"] <= peaks["nonlocal"]


@pytest.mark.parametrize("name", ["nonlocal", "pam", "criss-cross"])
def test_fast_paths_never_hold_an_n_by_n_map(name):
    # At 32×32 one float32 N×N map is 4 MiB; a whole training step of attn2d's
    # module must stay well below it, while the naive reference holds several.
    rows = bench.memory_scaling([name], sides=[32], channels=16)
    peaks = {r.impl: r.train_peak for r in rows}
    n_by_n = (32 * 32) ** 2 * 4
    assert peaks["attn2d"] < n_by_n / 2
    assert peaks["naive"] > 2 * n_by_n


def test_run_case_measures_every_implementation():
    case = bench.run_case("se", (2, 32, 8, 8), budget_s=0.01)
    assert set(case.results) == {"attn2d", "naive", "timm"}
    for result in case.results.values():
        assert result.forward_ms > 0 and result.train_ms > 0
        assert result.train_peak > 0 and not result.note
    assert case.ratio("naive", "train_ms") > 0


def test_naive_sizes_over_the_memory_budget_are_skipped_not_run():
    case = bench.run_case("pam", (1, 16, 16, 16), against=("naive",), budget_s=0.01,
                          memory=False, memory_budget=100_000)
    assert "skipped" in case.results["naive"].note
    assert case.results["naive"].forward_ms is None
    assert case.results["attn2d"].forward_ms > 0


def test_bf16_channels_last_case_runs():
    case = bench.run_case("cbam", (2, 32, 8, 8), "bf16", "channels_last", budget_s=0.01,
                          memory=False)
    assert all(r.train_ms for r in case.results.values())


def test_targets_report_met_and_missed():
    def case(name: str, ours: float, timm: float, peak: float = 1.0) -> bench.Case:
        return bench.Case(name, (1, 8, 4, 4), "fp32", "contiguous",
                          {"attn2d": bench.Measurement(train_ms=ours, train_peak=int(peak * 100)),
                           "timm": bench.Measurement(train_ms=timm),
                           "naive": bench.Measurement(train_peak=100)})

    cases = [case("se", 1.0, 2.0), case("eca", 3.0, 2.0),
             case("gc", 0.8, 1.0), case("gc", 1.15, 1.0),  # geomean < 1, one size > 1.1
             case("cbam", 1.0, 1.0, peak=1.0), case("cbam", 1.0, 1.0, peak=1.01)]
    scaling = [bench.ScalingRow("pam", "attn2d", 64, 4096, train_peak=10),
               bench.ScalingRow("pam", "naive", 64, 4096, train_peak=100),
               bench.ScalingRow("nonlocal", "attn2d", 64, 4096, train_peak=50),
               bench.ScalingRow("nonlocal", "naive", 64, 4096, train_peak=100),
               bench.ScalingRow("nonlocal", "attn2d", 128, 16384, train_peak=300),
               bench.ScalingRow("criss-cross", "attn2d", 128, 16384, train_peak=200),
               bench.ScalingRow("rcca", "attn2d", 128, 16384, train_peak=400)]
    verdicts = {t["target"]: t["met"] for t in bench.check_targets(cases, scaling)}
    assert {k.split(":")[0]: v for k, v in verdicts.items() if "timm" in k} == {
        "se": True, "eca": False, "gc": False, "cbam": True}
    assert verdicts["cbam: fwd+bwd peak <= 1.0x naive at every size"] is False
    assert verdicts["pam 64x64: fwd+bwd peak <= 1/8 of naive"] is True
    assert verdicts["nonlocal 64x64: fwd+bwd peak <= 1/8 of naive"] is False
    assert verdicts["nonlocal 128x128: fwd+bwd peak < 2 GiB"] is True
    assert verdicts["criss-cross 128x128: fwd+bwd peak <= non-local's"] is True
    assert verdicts["rcca 128x128: fwd+bwd peak <= non-local's"] is False


def test_scaling_plot_is_a_png_and_leaves_matplotlib_s_backend_alone(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    rows = [bench.ScalingRow("pam", impl, s, s * s, train_peak=s * s * k)
            for impl, k in (("attn2d", 10), ("naive", 1000)) for s in (8, 16)]
    path = tmp_path / "scaling.png"
    bench.plot_scaling(rows, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend
    table = bench.scaling_table(rows).render("markdown")
    assert "| pam | 8×8 |" in table


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
    err = capsys.readouterr().err
    assert "BxCxHxW" in err and err.count("\n") == 1


def test_bench_imports_its_references_from_the_package(tmp_path, monkeypatch):
    # Run from an empty directory: nothing is read relative to the working directory.
    monkeypatch.chdir(tmp_path)
    case = bench.run_case("se", (1, 16, 4, 4), against=("naive",), budget_s=0.001,
                          memory=False)
    assert case.results["naive"].train_ms > 0
    assert not hasattr(bench, "load_naive")
