"""``attn2d compare`` on a tiny Fashion-MNIST: files, rows, skipping and resuming."""

from __future__ import annotations

import csv
import json

import pytest

from attn2d.cli import main
from attn2d.compare import compare, run_name, split_specs
from attn2d.train import TrainConfig

from .test_data import write_fashion_mnist


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


def test_compare_writes_table_plots_and_skips_finished_runs(tmp_path, capsys):
    data = tmp_path / "data"
    write_fashion_mnist(data / "FashionMNIST" / "raw", n_train=64, n_test=32, compressed=False)
    out = tmp_path / "cmp"
    argv = ["compare", "--attention", "se,eca(kernel_size=3)", "--seeds", "2", "--epochs", "1",
            "--batch-size", "32", "--data-dir", str(data), "--out", str(out), "--in-process",
            "--no-progress"]
    assert main(argv) == 0
    for name in ("results.md", "results.csv", "results.json", "accuracy.png", "curves.png",
                 "tradeoff.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "results.json").read_text())
    assert [r["mechanism"] for r in report["rows"]] == ["none", "se", "eca(kernel_size=3)"]
    assert report["failed"] == [] and all(r["seeds"] == 2 for r in report["rows"])
    none, se, eca = report["rows"]
    assert eca["macs_m"] >= none["macs_m"]
    assert none["delta_pp"] == 0 and se["params_m"] > none["params_m"]
    assert se["delta_pp"] == pytest.approx(100 * (se["acc_mean"] - none["acc_mean"]))
    assert se["family"] == "channel" and se["placement"] == "block"
    with open(out / "results.csv") as f:
        assert [r["mechanism"] for r in csv.DictReader(f)] == [r["mechanism"] for r in
                                                               report["rows"]]
    table = (out / "results.md").read_text()
    assert "| `eca(kernel_size=3)` |" in table and "Δ vs baseline" in table
    assert len(report["curves"]["se"]) == 1

    # A rerun trains nothing: every run has its result.json.
    finished = out / "runs" / "se-seed1" / "result.json"
    stamp = finished.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped") == 6
    assert finished.stat().st_mtime_ns == stamp

    # A run without result.json resumes from its last.pt (here: already at the last epoch).
    finished.unlink()
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().out and finished.exists()

    # Same folder, other settings: refused rather than mixed into one table.
    with pytest.raises(ValueError, match="same settings"):
        compare(["se"], TrainConfig(data_dir=str(data), epochs=2, batch_size=32,
                                    progress=False), seeds=1, out=out, in_process=True)


def test_compare_rejects_unknown_mechanism_before_training(tmp_path):
    assert main(["compare", "--attention", "se,sqeeze", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "runs").exists()
