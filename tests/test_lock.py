"""One writer per folder (attn2d.lock): created atomically and once, a live holder or one
on another host respected with one line naming it, stale locks taken over, and ``train``
and ``compare`` refusing a folder another process writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from attn2d.cli import main
from attn2d.lock import LOCK_NAME, FolderLock, release_ended_job

from .datasets import tiny_fashion_mnist  # noqa: F401 (the data_dir fixture)


def write_lock(folder, **fields) -> None:
    """A lock file as another process would have left it."""
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": None, "job": None,
              "command": "attn2d compare --out x", "since": "2026-01-01 12:00:00", **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(holder))


def holder_of(folder) -> dict:
    return json.loads((folder / LOCK_NAME).read_text())


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_lock_names_its_holder_and_goes_away_on_release(tmp_path):
    folder = tmp_path / "new" / "out"
    with FolderLock(folder, "attn2d train"):
        holder = holder_of(folder)
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        assert holder["job"] is None and holder["since"]
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # no scratch left
    assert not (folder / LOCK_NAME).exists()


def test_a_live_holder_is_refused_with_one_line_that_names_it(tmp_path):
    with FolderLock(tmp_path, "attn2d compare"), \
            pytest.raises(ValueError) as refused:
        FolderLock(tmp_path, "attn2d train").acquire()
    message = str(refused.value)
    assert message.startswith("attn2d train: expected no other writer of --out")
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "still running" in message and "\n" not in message


def test_a_lock_of_another_host_is_respected_and_says_how_to_clear_it(tmp_path):
    write_lock(tmp_path, host="login2.cluster", pid=dead_pid())  # that pid means nothing here
    with pytest.raises(ValueError) as refused:
        FolderLock(tmp_path, "attn2d compare").acquire()
    message = str(refused.value)
    assert "on host login2.cluster" in message and "check on login2.cluster" in message
    assert f"delete {tmp_path / LOCK_NAME}" in message
    assert holder_of(tmp_path)["host"] == "login2.cluster"  # untouched


def test_a_stale_lock_of_this_host_is_taken_over(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    with FolderLock(tmp_path, "attn2d train"):
        assert holder_of(tmp_path)["pid"] == os.getpid()


def test_a_pid_reused_by_a_later_process_does_not_hold_the_lock(tmp_path):
    write_lock(tmp_path, pid=os.getpid(), started=1)  # this pid, but started at boot + 1 tick
    with FolderLock(tmp_path, "attn2d train"):
        assert holder_of(tmp_path)["started"] != 1


def test_the_same_slurm_job_started_again_on_another_node_takes_its_lock_over(
        tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    write_lock(tmp_path, host="node7", job="41_3")  # before the requeue, on another node
    with FolderLock(tmp_path, "attn2d train"):
        assert holder_of(tmp_path)["job"] == "41_3"
        assert holder_of(tmp_path)["host"] == socket.gethostname()
    write_lock(tmp_path, host="node7", job="41_2")  # another task of the array: respected
    with pytest.raises(ValueError, match="SLURM job 41_2"):
        FolderLock(tmp_path, "attn2d train").acquire()


def test_the_lock_of_a_slurm_job_known_to_have_ended_can_be_released(tmp_path):
    """compare knows from sacct that a task was killed on its node; before the retry it
    removes the lock that task left, and only that one."""
    write_lock(tmp_path, host="node7", job="41_2")
    assert not release_ended_job(tmp_path, "41_3") and holder_of(tmp_path)["job"] == "41_2"
    assert release_ended_job(tmp_path, "41_2") and not (tmp_path / LOCK_NAME).exists()
    assert not release_ended_job(tmp_path, "41_2")


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    lock = FolderLock(tmp_path, "attn2d train").acquire()
    write_lock(tmp_path, host="elsewhere")  # someone judged us gone and took it over
    lock.release()
    assert holder_of(tmp_path)["host"] == "elsewhere"


def test_an_unreadable_lock_is_refused_with_the_way_out(tmp_path):
    (tmp_path / LOCK_NAME).write_text("not json")
    with pytest.raises(ValueError, match="delete it if no other attn2d process writes"):
        FolderLock(tmp_path, "attn2d train").acquire()


RACER = textwrap.dedent("""
    import sys, time
    from attn2d.lock import FolderLock
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    try:
        lock = FolderLock(sys.argv[1], "attn2d train").acquire()
    except ValueError:
        print("refused")
    else:
        print("held")
        time.sleep(1.0)
        lock.release()
""")


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_processes_racing_for_a_folder_get_exactly_one_lock(tmp_path, stale):
    if stale:
        write_lock(tmp_path, pid=dead_pid())
    start = time.time() + 1.5  # all of them past their imports, then at once
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(start)],
                               stdout=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
    assert outcomes == ["held", "refused", "refused", "refused"]
    assert not (tmp_path / LOCK_NAME).exists()


# ----------------------------------------------------------------------------- the commands


def test_train_and_compare_refuse_a_folder_another_host_writes(data_dir, tmp_path, capsys):
    write_lock(tmp_path, host="login2", pid=4242, command="attn2d compare --out x")
    for argv in (["train", "--epochs", "1"], ["compare", "--attention", "se", "--seeds", "1",
                                              "--epochs", "1", "--in-process"]):
        assert main([*argv, "--data-dir", data_dir, "--no-progress", "--out",
                     str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "expected no other writer of --out" in err
        assert "pid 4242 on host login2 (attn2d compare --out x" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # nothing written


def test_a_second_train_on_a_folder_in_use_is_refused_and_a_stale_lock_is_not(
        data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data-dir", data_dir, "--batch-size", "32", "--threads", "1",
            "--no-progress", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "attn2d", *argv, "--epochs", "100"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # the first one is training
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        assert main([*argv, "--epochs", "1"]) == 2
        assert f"pid {first.pid} on host" in capsys.readouterr().err
    finally:
        first.kill()  # as the out-of-memory killer would: the lock stays behind
        first.wait()
    assert holder_of(out)["pid"] == first.pid
    with FolderLock(out, "attn2d train"):  # stale now: taken over
        assert holder_of(out)["pid"] == os.getpid()


def test_compares_own_workers_do_not_refuse_themselves(data_dir, tmp_path):
    """compare holds OUT while each worker's run holds its own OUT/runs/<run>."""
    out = tmp_path / "cmp"
    assert main(["compare", "--attention", "se", "--seeds", "1", "--epochs", "1",
                 "--batch-size", "32", "--data-dir", data_dir, "--no-progress", "--no-costs",
                 "--no-html", "--out", str(out), "--jobs", "2"]) == 0
    assert not list(out.rglob(LOCK_NAME))  # every lock released
