"""``compare --seeds auto``: seeds go where a verdict is open, the plan and its looks are
stored, a comparison killed between looks resumes to the same decisions, and ``attn2d
report`` rebuilds the same table."""

from __future__ import annotations

import json

import pytest

from attn2d import Attn2dError, stats
from attn2d.cli import main
from attn2d.comparison import CompareConfig, LocalExecutor, compare, report
from attn2d.comparison.plan import ComparisonInterrupted
from attn2d.comparison.sequential import STATE_FILE, run_sequential


@pytest.fixture(scope="module")
def data_dir(fake_fashion_mnist):
    return fake_fashion_mnist(64, 32)


def config(data_dir: str) -> CompareConfig:
    return CompareConfig(data_dir=data_dir, epochs=1, batch_size=32, progress=False,
                         precise_bn=2)


def _statistics(row) -> dict:
    """A row without the runs' own timings (which differ from run to run)."""
    return {k: v for k, v in row.to_dict().items()
            if k not in ("run_time_per_epoch_s", "run_images_per_s")}


class _KilledAfter(LocalExecutor):
    """The local executor, killed after its first ``batches`` batches."""

    def __init__(self, batches: int) -> None:
        super().__init__(in_process=True)
        self.left = batches

    def run(self, plans):
        if self.left == 0:
            raise ComparisonInterrupted(15)
        self.left -= 1
        return super().run(plans)


def test_a_sequential_comparison_killed_between_looks_resumes_to_the_same_decisions(
        data_dir, tmp_path):
    straight = compare(["se"], config(data_dir), seeds="auto", max_seeds=6, in_process=True,
                       out=tmp_path / "straight", costs=False, html=False)
    state = json.loads((tmp_path / "straight" / STATE_FILE).read_text())
    assert state["design"]["looks"] == [4, 6] and state["design"]["mechanisms"] == ["se"]
    se = straight.rows[1]
    assert se.verdict in {"better", "worse", "within ±0.5 pp", "no detectable difference"}
    assert se.delta_seeds == state["looks"]["se"][-1]["seeds"] and se.p is None
    # The same comparison killed after the first look's batch, then resumed.
    base = config(data_dir).resolved()
    with pytest.raises(ComparisonInterrupted):
        run_sequential(tmp_path / "killed", ["none", "se"], base, _KilledAfter(1), 6, 0.5)
    first_look = json.loads((tmp_path / "killed" / STATE_FILE).read_text())
    assert first_look["looks"]["se"] == state["looks"]["se"][:1]  # open after 4 seeds
    assert len(list((tmp_path / "killed" / "runs").iterdir())) == 8
    resumed = compare(["se"], config(data_dir), seeds="auto", max_seeds=6, in_process=True,
                      out=tmp_path / "killed", costs=False, html=False)
    assert json.loads((tmp_path / "killed" / STATE_FILE).read_text())["looks"] == \
        state["looks"]
    assert [_statistics(r) for r in resumed.rows] == [_statistics(r) for r in straight.rows]
    # The report rebuilds the same table from the stored plan and the runs.
    before = (tmp_path / "straight" / "results.md").read_bytes()
    report([tmp_path / "straight"], html=False)
    assert (tmp_path / "straight" / "results.md").read_bytes() == before


def test_seeds_go_only_to_open_mechanisms(data_dir, tmp_path):
    """After a decisive look a mechanism gets no more runs; an open one gets the next
    look's seeds. Checked on the stored looks and the run folders."""
    compare(["se", "eca(kernel_size=3)"], config(data_dir), seeds="auto", max_seeds=6,
            in_process=True, out=tmp_path, costs=False, html=False)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    runs = {p.name for p in (tmp_path / "runs").iterdir()}
    for name, folder in (("se", "se"), ("eca(kernel_size=3)", "eca_kernel_size_3")):
        looks = state["looks"][name]
        assert [look["seeds"] for look in looks] == [4, 6][:len(looks)]
        last = looks[-1]["seeds"]
        assert {f"{folder}-seed{s}" for s in range(last)} <= runs
        assert f"{folder}-seed{last}" not in runs
        assert (looks[-1]["verdict"] != stats.OPEN) or last == 6


def test_a_sequential_folder_refuses_other_plan_settings_by_name(data_dir, tmp_path):
    compare(["se"], config(data_dir), seeds="auto", max_seeds=4, in_process=True,
            out=tmp_path, costs=False, html=False)
    with pytest.raises(Attn2dError, match=r"other settings \(max seeds: 4 vs 6\)"):
        compare(["se"], config(data_dir), seeds="auto", max_seeds=6, in_process=True,
                out=tmp_path, costs=False, html=False)


def test_two_seeds_never_give_a_verdict_and_say_how_many_are_needed(data_dir, tmp_path,
                                                                    capsys):
    argv = ["compare", "--attention", "se", "--seeds", "2", "--epochs", "1", "--batch-size",
            "32", "--data-dir", data_dir, "--in-process", "--no-progress", "--no-costs",
            "--no-html", "--out", str(tmp_path)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "untested: needs ≥ 3 seeds" in table
    assert "better" not in table.split("|")[-20:] and " worse " not in table
