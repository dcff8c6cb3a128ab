"""``attn2d compare`` and ``attn2d report`` on a tiny Fashion-MNIST: files, rows, statistics,
skipping and resuming, concurrent runs, the cost pass, rebuilding and merging."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attn2d.cli import main
from attn2d.comparison import compare, report, run_name, split_specs
from attn2d.training import TrainConfig, train
from attn2d.training.checkpoint import read_checkpoint

from ..browser import chromium

COST_COLUMNS = ("forward_ms", "train_step_ms", "epoch_s", "train_peak_mib")


@pytest.fixture(scope="module")
def data_dir(fake_fashion_mnist):
    return fake_fashion_mnist(64, 32)


def tiny(data_dir: str, **changes) -> TrainConfig:
    base = TrainConfig(data_dir=data_dir, epochs=1, batch_size=32, progress=False,
                       precise_bn=2)
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """One finished in-process comparison (none, se, eca(kernel_size=3)) × 2 seeds."""
    out = tmp_path_factory.mktemp("cmp")
    argv = ["compare", "--attention", "se,eca(kernel_size=3)", "--seeds", "2", "--epochs", "1",
            "--batch-size", "32", "--data-dir", data_dir, "--out", str(out), "--in-process",
            "--no-progress"]
    assert main(argv) == 0
    return out, argv


def test_split_specs_splits_on_top_level_commas_only():
    assert split_specs("none, se,cbam(reduction=8, spatial_kernel=3),nonlocal(mode='gaussian')"
                       ) == ["none", "se", "cbam(reduction=8, spatial_kernel=3)",
                             "nonlocal(mode='gaussian')"]
    assert split_specs("x(a=(1, 2)),y") == ["x(a=(1, 2))", "y"]
    for bad in ("se,,eca", "cbam(reduction=8", "se)", ""):
        with pytest.raises(ValueError, match="expected"):
            split_specs(bad)


def test_run_name_is_filesystem_safe():
    assert run_name("cbam(reduction=8, spatial_kernel=3)", 2) == \
        "cbam_reduction_8_spatial_kernel_3-seed2"
    assert run_name("criss-cross", 0) == "criss-cross-seed0"


def test_compare_writes_table_statistics_plots_html_and_costs(finished):
    out, _ = finished
    for name in ("results.md", "results.csv", "results.json", "results.html", "accuracy.png",
                 "curves.png", "tradeoff.png", "costs.json", "comparison.json"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    assert [r["mechanism"] for r in result["rows"]] == ["none", "se", "eca(kernel_size=3)"]
    assert result["failed"] == [] and all(r["seeds"] == 2 for r in result["rows"])
    none, se, eca = result["rows"]
    assert se["params"] > none["params"] and eca["macs"] >= none["macs"]
    assert none["verdict"] is None and none["delta_pp"] == 0
    for row in (se, eca):  # 2 seeds: no verdict, no p (issue 19)
        assert row["verdict"] == "untested: needs ≥ 3 seeds"
        assert row["delta_low_pp"] <= row["delta_pp"] <= row["delta_high_pp"]
        assert row["p"] is None and row["detectable_pp"] is None  # not NaN: valid JSON
        assert row["acc_low"] <= row["acc"] <= row["acc_high"]
    # The cost pass measured every column of every mechanism.
    for row in result["rows"]:
        assert all(row[key] is not None and row[key] > 0 for key in COST_COLUMNS), row
    with open(out / "results.csv") as f:
        assert [r["mechanism"] for r in csv.DictReader(f)] == ["none", "se", "eca(kernel_size=3)"]
    table = (out / "results.md").read_text()
    assert "| `eca(kernel_size=3)` |" in table and "p (Holm)" in table
    assert "no verdicts: untested: needs ≥ 3 seeds" in table  # the method line
    assert len(result["curves"]["se"]) == 2 and len(result["curves"]["se"][0]) == 1
    html = (out / "results.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_statistics_match_the_stored_predictions(finished):
    import numpy as np

    from attn2d import stats

    out, _ = finished
    result = json.loads((out / "results.json").read_text())
    correct = {}
    for spec in ("none", "se"):
        correct[spec] = {}
        for seed in (0, 1):
            saved = np.load(out / "runs" / run_name(spec, seed) / "predictions.npz")
            correct[spec][seed] = saved["predictions"] == saved["targets"]
    expected = stats.versus_baseline(correct["none"], correct["se"])
    se = result["rows"][1]
    assert se["delta_pp"] == pytest.approx(100 * expected.delta)
    assert math.isnan(expected.p) and se["p"] is None


def test_report_rebuilds_the_table_byte_for_byte(finished, tmp_path):
    out, _ = finished
    before = {name: (out / name).read_bytes() for name in ("results.md", "results.csv")}
    report([out], tmp_path / "again", html=False)
    for name, content in before.items():
        assert (tmp_path / "again" / name).read_bytes() == content, name
    assert main(["report", str(out), "--no-html"]) == 0
    assert (out / "results.md").read_bytes() == before["results.md"]


def test_a_rerun_skips_finished_runs_and_resumes_unfinished_ones(finished, capsys):
    out, argv = finished
    done = out / "runs" / "se-seed1" / "result.json"
    stamp = done.stat().st_mtime_ns
    costs = (out / "costs.json").read_bytes()
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().err.count("finished before, skipped") == 6
    assert done.stat().st_mtime_ns == stamp
    assert (out / "costs.json").read_bytes() == costs  # measured once, not again
    done.unlink()  # last.pt stays: the run resumes (here: already at its last epoch)
    assert main(argv) == 0
    assert "se seed 1: resuming" in capsys.readouterr().err and done.exists()


def test_other_settings_in_the_same_folder_are_refused_by_name(finished, data_dir):
    out, _ = finished
    with pytest.raises(ValueError, match=r"different ones \(epochs: 1 vs 2\)"):
        compare(["se"], tiny(data_dir, epochs=2, dataset="FMNIST", precise_bn=20), seeds=1, out=out,
                in_process=True)


def test_report_merges_folders_with_the_same_settings_and_refuses_others(data_dir, tmp_path):
    for seed in (0, 1):  # one comparison finished over two sessions, one seed each
        compare(["se"], tiny(data_dir), seeds=[seed], out=tmp_path / f"part{seed}",
                in_process=True, costs=False, html=False)
    merged = report([tmp_path / "part0", tmp_path / "part1"], tmp_path / "merged", html=False)
    assert [r["seeds"] for r in merged["rows"]] == [2, 2]
    compare(["se"], tiny(data_dir, lr=0.1), seeds=[2], out=tmp_path / "other", in_process=True,
            costs=False, html=False)
    with pytest.raises(ValueError, match=r"same settings to merge.*lr: 0\.05 vs 0\.1"):
        report([tmp_path / "part0", tmp_path / "other"], tmp_path / "x")


def test_a_run_under_jobs_2_equals_the_same_run_alone(data_dir, tmp_path):
    out = tmp_path / "jobs"
    compare(["se"], tiny(data_dir, epochs=2), seeds=1, out=out, jobs=2, costs=False,
            html=False)
    alone = tmp_path / "alone"
    train(tiny(data_dir, epochs=2, attention="se", threads=1, out=str(alone)))
    config = json.loads((out / "runs" / "se-seed0" / "result.json").read_text())["config"]
    assert config["threads"] == 1  # 2 cores / 2 jobs
    a = read_checkpoint(out / "runs" / "se-seed0" / "last.pt")["model"]
    b = read_checkpoint(alone / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compare_takes_dataset_objects_in_process(tmp_path):
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 4
    images = (torch.rand(48, 1, 12, 12, generator=generator) * 60).to(torch.uint8)
    images[torch.arange(48), 0, labels * 3, :] = 250  # a class-dependent stripe
    train_set = TensorDataset(images[:32], labels[:32])
    test_set = TensorDataset(images[32:], labels[32:])
    result = compare(["se"], TrainConfig(epochs=2, batch_size=16, progress=False), seeds=1,
                     out=tmp_path, datasets=(train_set, test_set), num_classes=4, html=False)
    assert [r["mechanism"] for r in result["rows"]] == ["none", "se"]
    assert result["settings"]["dataset"] == "custom"


def test_compare_rejects_unknown_mechanism_and_bad_jobs_before_training(tmp_path, capsys):
    assert main(["compare", "--attention", "se,sqeeze", "--out", str(tmp_path)]) == 2
    assert "unknown mechanism 'sqeeze'" in capsys.readouterr().err
    assert main(["compare", "--attention", "se", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert "expected --jobs >= 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_html_report_renders_offline_in_a_headless_browser(finished, tmp_path):
    """In Debian's Chromium (tests/browser.py; make test installs it as root, else skips)."""
    from PIL import Image

    out, _ = finished
    with chromium(tmp_path / "profile", width=1200, height=1600) as browser:
        browser.open(out / "results.html")
        shot = browser.screenshot(tmp_path / "shot.png")
        assert browser.console_errors() == [] and browser.resources() == []  # offline
        assert browser.run("return Array.from(document.images).every("
                           "i => i.complete && i.naturalWidth > 0)")  # every plot decoded
    image = Image.open(shot).convert("RGB")
    assert len(image.getcolors(maxcolors=1 << 20)) > 50  # text, a table and plots drawn


def _workers_of(pid: int) -> list[int]:
    """Pool worker processes (multiprocessing's spawn_main) whose parent is ``pid``."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
            command = (status.parent / "cmdline").read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        if fields.get("PPid", "").strip() == str(pid) and b"spawn_main" in command:
            found.append(int(status.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_killed_worker_costs_a_retry_not_the_comparison(data_dir, tmp_path):
    import os
    import signal
    import threading
    import time

    out = tmp_path / "crash"
    results: dict = {}
    config = tiny(data_dir, epochs=6)
    thread = threading.Thread(target=lambda: results.update(report=compare(
        ["se"], config, seeds=1, out=out, jobs=1, costs=False, html=False)))
    thread.start()
    first = out / "runs" / "none-seed0" / "last.pt"
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline:  # mid-run: epoch 1 saved
        time.sleep(0.05)
    workers = _workers_of(os.getpid())
    assert first.exists() and workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer would
    thread.join(timeout=300)
    report = results["report"]
    assert report["failed"] == [] and [r["seeds"] for r in report["rows"]] == [1, 1]
    log = (out / "runs" / "none-seed0" / "train.log").read_text()
    assert log.count("epoch 6/6") == 1  # the retried run resumed; it finished once


def test_compare_from_python_trains_exactly_as_the_command(finished, data_dir, tmp_path):
    """The comparison's defaults (precise BN, compile mode) live in the library
    (CompareConfig), not in the CLI: the same arguments give the same runs."""
    from attn2d.comparison import CompareConfig
    from attn2d.comparison.records import comparable, read_run

    cli_out, _ = finished
    compare(["se", "eca(kernel_size=3)"], CompareConfig(epochs=1, batch_size=32,
                                                        data_dir=data_dir, progress=False),
            seeds=[0], out=tmp_path, in_process=True, costs=False, html=False)
    for spec in ("none", "se", "eca(kernel_size=3)"):
        name = run_name(spec, 0)
        ours, theirs = read_run(tmp_path / "runs" / name), read_run(cli_out / "runs" / name)
        assert comparable(ours.config) == comparable(theirs.config), spec
        assert ours.config["precise_bn"] == 20 and ours.config["compile"] == "auto"
        assert (ours.predictions == theirs.predictions).all(), spec


def test_two_command_line_comparisons_with_seed_ranges_merge(data_dir, tmp_path, capsys):
    """The README's merge: a later comparison adds seeds (--seeds 1-1) to an earlier one;
    a folder given twice counts once; two different runs under one key are refused."""
    common = ["--attention", "se", "--epochs", "1", "--batch-size", "32", "--data-dir",
              data_dir, "--in-process", "--no-progress", "--no-costs", "--no-html"]
    assert main(["compare", *common, "--seeds", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(["compare", *common, "--seeds", "1-1", "--out", str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in (tmp_path / "b" / "runs").iterdir()) == \
        ["none-seed1", "se-seed1"]
    merged = report([tmp_path / "a", tmp_path / "b", tmp_path / "a"], tmp_path / "m",
                    html=False)
    assert merged.seeds == [0, 1] and [r.seeds for r in merged.rows] == [2, 2]
    # the same key, other predictions: refused, naming both folders
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    run = tmp_path / "c" / "runs" / "se-seed0"
    with np.load(run / "predictions.npz") as saved:
        arrays = dict(saved)
    arrays["predictions"] = (arrays["predictions"] + 1) % 10
    np.savez(run / "predictions.npz", **arrays)
    result = json.loads((run / "result.json").read_text())
    result["test_acc"] = float((arrays["predictions"] == arrays["targets"]).mean())
    (run / "result.json").write_text(json.dumps(result))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "c"), "--out",
                 str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err.strip()
    assert "two different runs of se seed 0" in err and str(run) in err and \
        str(tmp_path / "a" / "runs" / "se-seed0") in err and err.count("\n") == 0


@pytest.mark.parametrize(("seeds", "expected"), [(3, [0, 1, 2]), ("2", [0, 1]),
                                                 ("3-5", [3, 4, 5]), ([4, 2], [4, 2])])
def test_seeds_are_a_count_a_range_or_a_list(seeds, expected):
    from attn2d.comparison.plan import parse_seeds

    assert parse_seeds(seeds) == expected
    for bad in ("0", "5-3", "a-b", "x", [1, 1], []):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def test_the_cost_pass_measures_again_the_rows_whose_rounds_disagree(monkeypatch):
    """A burst of load during one row's rounds shows as spread; that row (only) is measured
    again, and the steadier pass is kept."""
    from attn2d.comparison import costs
    from attn2d.tools.timing import Timing

    passes = []

    def fake(steps, budget_s, device):
        passes.append(sorted(steps))
        if len(passes) == 1:
            return {"none": Timing(0.010, 0.0099, 0.0101, 5),
                    "criss-cross": Timing(0.140, 0.020, 0.150, 5)}  # a burst
        return {"criss-cross": Timing(0.0195, 0.019, 0.020, 5)}

    monkeypatch.setattr(costs, "measure_interleaved", fake)
    timings = costs._steady({"none": lambda: None, "criss-cross": lambda: None}, "forward",
                            1.0, torch.device("cpu"))
    assert passes == [["criss-cross", "none"], ["criss-cross"]]
    assert timings["criss-cross"].median == 0.0195 and timings["none"].median == 0.010


def test_cost_rows_record_their_spread_and_the_notes_say_how_they_were_measured(finished):
    out, _ = finished
    saved = json.loads((out / "costs.json").read_text())
    assert all(row["forward_spread"] >= 0 and row["train_step_spread"] >= 0
               for row in saved["rows"].values())
    text = (out / "results.md").read_text()
    assert "were measured again, up to 3 passes" in text
