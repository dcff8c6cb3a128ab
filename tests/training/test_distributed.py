"""``torchrun --nproc_per_node=2`` (gloo, CPU) against one process, same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from attn2d.training.checkpoint import read_checkpoint

ARGS = ["-m", "attn2d", "train", "--attention", "se", "--epochs", "2", "--batch-size", "32",
        "--threads", "1", "--no-progress"]


def _run(command: list[str], tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_torchrun_two_processes_match_one_process(tmp_path, fake_fashion_mnist):
    common = [*ARGS, "--data-dir", fake_fashion_mnist(128, 64)]
    _run([sys.executable, *common, "--out", str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          *common, "--out", str(tmp_path / "two")], tmp_path)

    one = [json.loads(s) for s in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(s) for s in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    result = json.loads((tmp_path / "two" / "result.json").read_text())
    assert result["world_size"] == 2 and len(two) == 2
    # Same images, same augmentation, same global batch of 32 and DDP's gradient average:
    # the one difference is that BatchNorm normalises each process's 16 images with their
    # own statistics instead of the 32 images' (SyncBatchNorm needs a GPU), plus the
    # summation order of the all-reduce. Measured: training losses agree to 4e-4 relative
    # after 4 steps and 2e-3 after 8, test losses to 1e-4. A wrong split (each process
    # seeing all the data, or other images) or a missing gradient average (a 2x step)
    # moves the weights by tens of percent.
    for a, b in zip(one, two, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=5e-3)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=2e-3)
        assert b["lr"] == a["lr"]
    w1 = read_checkpoint(tmp_path / "one" / "last.pt")["model"]
    w2 = read_checkpoint(tmp_path / "two" / "last.pt")["model"]
    moved = sum((w1[k].float() - w2[k].float()).norm() ** 2 for k in w1) ** 0.5
    size = sum(w1[k].float().norm() ** 2 for k in w1) ** 0.5
    assert moved / size < 0.025
