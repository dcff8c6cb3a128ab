"""Stored results checked when read (issue 17): each damaged or inconsistent file of a
finished run is named in one line by ``attn2d report`` (exit 2, no traceback), never a
traceback and never a wrong table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from attn2d.cli import main


@pytest.fixture(scope="module")
def finished(fake_fashion_mnist, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("records") / "se-seed0"
    assert main(["train", "--data-dir", fake_fashion_mnist(64, 32), "--attention", "se",
                 "--epochs", "1", "--batch-size", "32", "--no-progress", "--out",
                 str(run)]) == 0
    return run


def truncate(name: str, keep: float = 0.5):
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def predictions(change):
    def damage(run: Path) -> None:
        with np.load(run / "predictions.npz") as saved:
            arrays = {k: saved[k] for k in saved.files}
        np.savez_compressed(run / "predictions.npz", **change(arrays))

    return damage


def one_wrong(arrays: dict) -> dict:
    """One right answer made wrong: the accuracy now disagrees with result.json by 1/32."""
    p, t = arrays["predictions"].copy(), arrays["targets"]
    i = int(np.flatnonzero(p == t)[0]) if (p == t).any() else 0
    p[i] = (t[i] + 1) % 10 if p[i] == t[i] else t[i]
    return {**arrays, "predictions": p}


def edit_result(change):
    def damage(run: Path) -> None:
        values = json.loads((run / "result.json").read_text())
        (run / "result.json").write_text(json.dumps(change(values)))

    return damage


CASES = {
    "truncated predictions.npz": (truncate("predictions.npz"),
                                  "predictions.npz, got an unreadable file (BadZipFile"),
    "truncated metrics.jsonl": (truncate("metrics.jsonl", 0.7),
                                "metrics.jsonl, got invalid JSON on line"),
    "truncated result.json": (truncate("result.json"), "result.json, got invalid JSON at line"),
    "empty result.json": (truncate("result.json", 0), "result.json, got invalid JSON at line 1"),
    "short predictions": (predictions(lambda a: {**a, "predictions": a["predictions"][:-3]}),
                          "expected one prediction per test image in {npz}, got (29,) "
                          "predictions for (32,) targets"),
    "predictions out of range": (
        predictions(lambda a: {**a, "predictions": np.full_like(a["predictions"], 99)}),
        "expected predictions in [0, 10) in {npz}, got values in [99, 99]"),
    "float predictions": (
        predictions(lambda a: {**a, "predictions": a["predictions"] + 0.25}),
        "expected integer predictions (class indices) in {npz}, got float64"),
    "accuracy disagrees": (predictions(one_wrong),
                           "expected the predictions in {npz} to give the test accuracy of its "
                           "result.json"),
    "config not an object": (edit_result(lambda r: {**r, "config": "se"}),
                             "result.json to hold a config object, got a JSON str"),
    "no seed": (edit_result(lambda r: {**r, "config": {**r["config"], "seed": None}}),
                "expected an integer seed in the config of"),
    "metrics rows without accuracy": (
        lambda run: (run / "metrics.jsonl").write_text('{"epoch": 1}\n'),
        "expected an epoch's metrics with a numeric test_acc on line 1 of"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_run_is_named_in_one_line_by_report(case, finished, tmp_path, capsys):
    damage, expected = CASES[case]
    run = tmp_path / finished.name
    shutil.copytree(finished, run)
    assert main(["report", str(run), "--out", str(tmp_path / "report"), "--no-html"]) == 0
    capsys.readouterr()  # the intact copy reports (the damage is what fails below)
    damage(run)
    code = main(["report", str(run), "--out", str(tmp_path / "report"), "--no-html"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("attn2d report: error: ") and str(run) in last, last
    assert expected.format(npz=run / "predictions.npz") in last, last
