"""A comparison's processes: stopped by a signal it saves and says how to continue, its
workers die with it, and it runs from a plain script without a ``__main__`` guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="needs Linux /proc to find the worker processes")


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:  # the process ended meanwhile
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended; only its parent has not reaped it


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _start_long_comparison(data_dir: str, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "attn2d", "compare", "--attention", "se", "--seeds", "1",
               "--epochs", "400", "--batch-size", "16", "--data-dir", data_dir, "--jobs", "2",
               "--no-costs", "--no-html", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    logs = [out / "runs" / name / "metrics.jsonl" for name in ("none-seed0", "se-seed0")]
    _wait_until(lambda: all(p.is_file() and p.read_text().strip() for p in logs), 180,
                "both runs to finish an epoch")
    return process


def test_sigterm_stops_the_workers_keeps_checkpoints_and_says_how_to_continue(
        fake_fashion_mnist, tmp_path):
    out = tmp_path / "cmp"
    process = _start_long_comparison(fake_fashion_mnist(64, 32), out)
    workers = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=180)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("attn2d compare: stopped by signal 15") and \
        "to continue, run the same command again: attn2d compare --attention se" in last, last
    assert "Traceback" not in err
    for name in ("none-seed0", "se-seed0"):
        assert (out / "runs" / name / "last.pt").is_file()
    _wait_until(lambda: not any(_alive(pid) for pid in workers), 10, "the workers to end")


def test_workers_die_with_a_killed_comparison(fake_fashion_mnist, tmp_path):
    process = _start_long_comparison(fake_fashion_mnist(64, 32), tmp_path / "cmp")
    workers = _children(process.pid)
    assert workers
    process.kill()
    process.communicate(timeout=60)
    _wait_until(lambda: not any(_alive(pid) for pid in workers), 10, "the workers to end")


def test_the_readme_snippet_runs_as_a_plain_script_with_workers(fake_fashion_mnist, tmp_path):
    """No `if __name__ == "__main__":` guard, two workers: the workers must not re-run the
    script (spawn imports the parent's main module)."""
    script = tmp_path / "mine.py"
    script.write_text(textwrap.dedent(f"""
        from attn2d.comparison import CompareConfig, compare, report

        print("the script body ran")
        table = compare(["se"], CompareConfig(epochs=1, batch_size=16,
                                              data_dir={fake_fashion_mnist(64, 32)!r}),
                        seeds=1, out={str(tmp_path / "cmp")!r}, jobs=2, costs=False,
                        html=False)
        report([{str(tmp_path / "cmp")!r}], html=False)
        print("rows", len(table.rows), "failed", len(table.failed))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**os.environ})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("the script body ran") == 1
    assert "rows 2 failed 0" in done.stdout
    assert (tmp_path / "cmp" / "results.md").is_file()
