"""``compare --executor slurm`` on a real one-node SLURM (scripts/local-slurm.sh) and on
submitit's local executor: the same predictions and table as the local pool, requeue after
``scontrol requeue`` and after a time limit to the same weights, a failing task retried
once and reported, attach and detach without a second submission; resume-or-start."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from attn2d.cli import main
from attn2d.comparison import compare, run_name
from attn2d.training import TrainConfig, train
from attn2d.training.checkpoint import read_checkpoint

from ..datasets import write_fashion_mnist
from ..slurm import (
    cancel_jobs_of,
    requires_slurm,
    requires_submitit,
    sacct_jobs,
    wait_for,
    wait_until,
)

# Timings and costs are measured, so they differ between any two comparisons.
MEASURED = {"forward_ms", "train_step_ms", "epoch_s", "train_peak_mib", "run_time_per_epoch_s",
            "run_images_per_s", "forward_spread", "train_step_spread"}


@pytest.fixture(scope="module")
def data_dir(fake_fashion_mnist):
    return fake_fashion_mnist(64, 32)


def tiny(data_dir: str, **changes) -> TrainConfig:
    # threads=1 everywhere: results depend on the thread count, not on where a run goes.
    base = TrainConfig(data_dir=data_dir, epochs=1, batch_size=32, progress=False,
                       precise_bn=2, threads=1)
    return dataclasses.replace(base, **changes)


def slurm_executor(**options):
    from attn2d.comparison.slurm import SlurmExecutor, SlurmOptions

    cluster = options.pop("cluster", "slurm")
    detach = options.pop("detach", False)
    return SlurmExecutor(SlurmOptions(**{"cpus_per_run": 1, "time_min": 5, **options}),
                         poll_s=2, detach=detach, cluster=cluster)


@pytest.fixture
def cmp(tmp_path):
    """A comparison folder and the name all its jobs get (unique, as sacct sees every
    session's jobs); what a failed test leaves in SLURM is cancelled."""
    out = tmp_path / f"cmp-{uuid.uuid4().hex[:8]}"
    yield out, f"attn2d-{out.name}"
    cancel_jobs_of(f"attn2d-{out.name}")


@pytest.fixture(scope="module")
def local_reference(data_dir, tmp_path_factory):
    """The 2-mechanism × 2-seed comparison on the local pool."""
    out = tmp_path_factory.mktemp("local")
    report = compare(["se"], tiny(data_dir), seeds=2, out=out, in_process=True, html=False)
    return out, report


def _same_comparison(out: Path, report, reference: tuple) -> None:
    ref_out, ref = reference
    for spec in ("none", "se"):
        for seed in (0, 1):
            a = np.load(out / "runs" / run_name(spec, seed) / "predictions.npz")
            b = np.load(ref_out / "runs" / run_name(spec, seed) / "predictions.npz")
            assert np.array_equal(a["predictions"], b["predictions"]), (spec, seed)
    strip = [{k: v for k, v in row.to_dict().items() if k not in MEASURED}
             for row in report.rows]
    assert strip == [{k: v for k, v in row.to_dict().items() if k not in MEASURED}
                     for row in ref.rows]
    assert report.failed == [] and report.seeds == ref.seeds == [0, 1]
    assert all(getattr(report.rows[i], k) is not None for i in (0, 1) for k in MEASURED)


@requires_slurm
@pytest.mark.slow
def test_slurm_runs_the_comparison_to_the_local_pools_predictions_and_table(
        data_dir, local_reference, cmp):
    out, job_name = cmp
    report = compare(["se"], tiny(data_dir), seeds=2, out=out, html=False,
                     executor=slurm_executor())
    _same_comparison(out, report, local_reference)
    # One array of four tasks, each its own folder, log and exit state, then the cost job.
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    arrays = {job.split("_")[0] for [job] in jobs["runs"].values()}
    assert len(jobs["runs"]) == 4 and len(arrays) == 1 and len(jobs["costs"]) == 1
    states = dict(sacct_jobs(job_name))
    assert all(states[job] == "COMPLETED" for [job] in jobs["runs"].values())
    for name, [job] in jobs["runs"].items():
        assert (out / "slurm" / f"{job}_0_log.out").is_file()
        assert "epoch 1/1" in (out / "runs" / name / "train.log").read_text()
    # The cost pass ran as a job on the node: the footnote names it.
    assert json.loads((out / "costs.json").read_text())["device"] == "cpu on node localhost"
    settings = json.loads((out / "comparison.json").read_text())["executor"]
    assert settings["executor"] == "slurm" and settings["cpus_per_run"] == 1


@requires_submitit
@pytest.mark.slow
def test_submitits_local_executor_gives_the_same_predictions_and_table(
        data_dir, local_reference, tmp_path):
    out = tmp_path / "cmp"
    report = compare(["se"], tiny(data_dir), seeds=2, out=out, html=False,
                     executor=slurm_executor(cluster="local"))
    _same_comparison(out, report, local_reference)


@requires_slurm
@pytest.mark.slow
def test_a_task_that_always_fails_is_retried_once_and_the_table_says_so(
        data_dir, cmp, capsys):
    out, job_name = cmp
    report = compare(["se(reduction=0)"], tiny(data_dir), seeds=1, out=out, html=False,
                     costs=False, executor=slurm_executor())
    assert [r.mechanism for r in report.rows] == ["none"]
    [failure] = report.failed
    assert failure["mechanism"] == "se(reduction=0)" and "expected reduction > 0" in \
        failure["error"]
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())["runs"]
    assert len(jobs["none-seed0"]) == 1 and len(jobs["se_reduction_0-seed0"]) == 2
    states = dict(sacct_jobs(job_name))  # each task's own exit state
    assert [states[j] for j in jobs["se_reduction_0-seed0"]] == ["FAILED", "FAILED"]
    assert states[jobs["none-seed0"][0]] == "COMPLETED"
    printed = "".join(capsys.readouterr())
    assert "submitting it once more" in printed and "FAILED" in printed
    table = (out / "results.md").read_text()
    assert "Runs that failed and are not in the table: se(reduction=0) seed 0" in table


@requires_slurm
@pytest.mark.slow
def test_the_same_command_attaches_instead_of_submitting_twice(
        data_dir, cmp, capsys):
    out, job_name = cmp
    argv = ["compare", "--attention", "se", "--epochs", "1", "--batch-size", "32",
            "--data-dir", data_dir, "--out", str(out), "--no-progress", "--threads", "1",
            "--precise-bn", "2", "--executor", "slurm", "--slurm-cpus-per-run", "1",
            "--slurm-time", "5"]
    first = [*argv, "--seeds", "1", "--detach"]
    assert main(first) == 0
    printed = "".join(capsys.readouterr())
    assert "submitted 2 run(s)" in printed and "under way in SLURM" in printed
    assert "cost pass submitted" in printed
    book = (out / "slurm" / "jobs.json").read_text()
    assert main(first) == 0  # at once again: both runs and the cost pass are in flight
    printed = "".join(capsys.readouterr())
    assert printed.count("attached to SLURM job") == 2 and "submitted" not in printed
    assert (out / "slurm" / "jobs.json").read_text() == book
    # The local pool must not train runs that SLURM tasks may still be writing.
    local = [*argv[:argv.index("--executor")], "--seeds", "1"]
    assert main(local) == 2
    err = capsys.readouterr().err
    assert "expected no SLURM job still at work on its runs" in err and "scancel" in err
    assert err.count("\n") == 1, err
    # More seeds (as --seeds auto will ask) and other cluster options: the runs of seed 0
    # are attached or done, seed 1 goes out as a new array; then the table.
    more = [*argv, "--seeds", "2", "--slurm-time", "7"]
    assert main(more) == 0
    printed = "".join(capsys.readouterr())
    assert "submitted 2 run(s)" in printed and "results.md" in printed
    assert json.loads((out / "comparison.json").read_text())["executor"]["time_min"] == 7
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert all(len(ids) == 1 for ids in jobs["runs"].values()) and len(jobs["runs"]) == 4
    assert main(more) == 0  # everything finished: nothing goes out, the table is rebuilt
    printed = "".join(capsys.readouterr())
    assert printed.count("finished before, skipped") == 4 and "submitted" not in printed
    assert json.loads((out / "slurm" / "jobs.json").read_text()) == jobs
    assert len(sacct_jobs(job_name)) == 4 + 1  # four runs and one cost pass, ever


@requires_slurm
@pytest.mark.slow
def test_requeue_and_a_time_limit_mid_run_resume_to_the_same_weights(tmp_path, cmp):
    """``scontrol requeue`` (SIGTERM) once the first checkpoint exists; then, started again,
    a time limit cut short mid-run (USR2 before it expires). Each time the task saves after
    its step, requeues itself or is requeued, resumes, and it ends with the weights of the
    run never interrupted."""
    data = tmp_path / "data"
    write_fashion_mnist(data / "FashionMNIST" / "raw", n_train=2048, n_test=64,
                        compressed=False)
    config = tiny(str(data), epochs=50, batch_size=64, precise_bn=0)  # about 50 s
    out, _ = cmp
    results: dict = {}
    thread = threading.Thread(target=lambda: results.update(report=compare(
        ["none"], config, seeds=1, out=out, costs=False, html=False,
        executor=slurm_executor())))
    thread.start()
    reference = threading.Thread(target=lambda: results.update(straight=train(
        dataclasses.replace(config, out=str(tmp_path / "straight")))))
    reference.start()
    run = out / "runs" / "none-seed0"

    def ended() -> bool:
        return not thread.is_alive()

    wait_for(run / "last.pt", timeout_s=180, unless=ended)
    [job] = json.loads((out / "slurm" / "jobs.json").read_text())["runs"]["none-seed0"]
    subprocess.run(["scontrol", "requeue", job], check=True)
    wait_until(lambda: f"stopped by signal {int(signal.SIGTERM)}" in _text(run / "train.log"),
               unless=ended)
    epochs = _lines(run / "metrics.jsonl")
    wait_until(lambda: _lines(run / "metrics.jsonl") > epochs, unless=ended)  # resumed
    # SLURM signals a task when its time left falls below the delay (75 s for a five-minute
    # limit) at one of its 30-s looks: a limit 45-105 s from now brings USR2 at the next.
    limit = math.ceil((_elapsed_s(job) + 45) / 60)
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={limit}"], check=True)
    wait_until(lambda: f"stopped by signal {int(signal.SIGUSR2)}" in _text(run / "train.log"),
               unless=ended)
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=5"], check=True)
    thread.join(timeout=600)
    reference.join(timeout=600)
    assert results["report"]["failed"] == [] and results["straight"]["status"] == "finished"
    log = _text(run / "train.log")
    assert log.count("epoch 50/50") == 1 and log.count("stopped by signal") == 2
    [again] = json.loads((out / "slurm" / "jobs.json").read_text())["runs"]["none-seed0"]
    assert again == job  # requeued twice, never resubmitted
    a = read_checkpoint(run / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _lines(path: Path) -> int:
    return _text(path).count("\n")


def _elapsed_s(job: str) -> int:
    """Seconds a running job has run (``RunTime=[D-]HH:MM:SS``)."""
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                           check=True).stdout
    days, hours, minutes, seconds = re.search(r"RunTime=(?:(\d+)-)?(\d+):(\d+):(\d+)",
                                              shown).groups()
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)


# ----------------------------------------------------------------------------- resume-or-start


def test_resume_starts_over_a_run_killed_before_its_first_checkpoint(data_dir, tmp_path,
                                                                     capsys):
    out = tmp_path / "killed"
    argv = ["train", "--data-dir", data_dir, "--epochs", "2", "--batch-size", "32",
            "--threads", "1", "--no-progress", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "attn2d", *argv],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(out / "config.json")  # written before the data is read
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / "last.pt").exists()
    assert main([*argv, "--resume"]) == 0
    assert "has no checkpoint yet: starting it over" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    train(TrainConfig(data_dir=data_dir, epochs=2, batch_size=32, threads=1, progress=False,
                      out=str(fresh)))
    a, b = read_checkpoint(out / "last.pt")["model"], read_checkpoint(fresh / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A folder without a run still refuses; so do settings other than the run's.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*argv[:-1], str(empty), "--resume"]) == 2
    assert "expected a run to resume in --out" in capsys.readouterr().err
    (out / "last.pt").unlink()
    (out / "result.json").unlink()
    assert main([*argv, "--resume", "--lr", "0.1"]) == 2
    assert "lr: 0.05 -> 0.1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- options


def test_slurm_options_are_checked_in_one_line(tmp_path, capsys):
    base = ["compare", "--attention", "se", "--out", str(tmp_path / "x")]
    cases = [
        (["--slurm-time", "5"], "expected --slurm-time with --executor slurm, got --executor "
                                "local"),
        (["--detach"], "expected --detach with --executor slurm"),
    ]
    if sys.modules.get("submitit") is not None or _have("submitit"):
        cases += [
            (["--executor", "slurm", "--slurm-time", "0"], "expected --slurm-time to be an "
                                                           "integer >= 1, got 0"),
            (["--executor", "slurm", "--slurm-mem", "lots"], "expected --slurm-mem as sbatch"),
            (["--executor", "slurm", "--slurm-opt", "qos"], "expected --slurm-opt KEY=VALUE"),
            (["--executor", "slurm", "--jobs", "2"], "only with the local executor"),
        ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x" / "runs").exists()


def _book(out: Path, runs: dict[str, list[str]]) -> None:
    (out / "slurm").mkdir(parents=True)
    (out / "slurm" / "jobs.json").write_text(json.dumps({"runs": runs, "costs": []}))


def test_a_local_comparison_where_slurm_jobs_are_recorded_and_no_squeue_is_refused(
        data_dir, tmp_path, capsys, monkeypatch):
    from attn2d.comparison import slurm

    out = tmp_path / "cmp"
    _book(out, {"se-seed0": ["41_1"]})
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    argv = ["compare", "--attention", "se", "--seeds", "1", "--data-dir", data_dir,
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no squeue here" in err and "41_1" in err and "jobs.json" in err
    assert err.count("\n") == 1 and not (out / "runs").exists()


def _fake_squeue(tmp_path: Path, monkeypatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\n{script}\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_jobs_in_flight_reads_squeue_states(tmp_path, monkeypatch):
    """What squeue lists (one line per array task, -r) decides; a job it does not list has
    ended, and so have all when it knows none of them."""
    from attn2d.comparison.slurm import jobs_in_flight

    out = tmp_path / "cmp"
    _book(out, {"a-seed0": ["7_0"], "a-seed1": ["7_1"], "a-seed2": ["6_2", "7_2"],
                "a-seed3": ["7_3"], "a-seed4": ["7_4"]})
    keys = [f"a-seed{i}" for i in range(5)]
    _fake_squeue(tmp_path, monkeypatch,
                 "printf '7_0|RUNNING\\n7_1|CANCELLED\\n7_2|PENDING\\n7_3|COMPLETING\\n'")
    assert jobs_in_flight(out, keys) == ["7_0", "7_2", "7_3"]  # 7_4: not listed, ended
    assert jobs_in_flight(out, ["a-seed1", "costs"]) == []
    assert jobs_in_flight(tmp_path / "elsewhere", keys) == []
    _fake_squeue(tmp_path, monkeypatch,
                 "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1")
    assert jobs_in_flight(out, keys) == []


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_without_submitit_slurm_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    argv = ["compare", "--attention", "se", "--executor", "slurm", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "pip install 'attn2d[slurm]'" in capsys.readouterr().err
