"""The real SLURM the SLURM tests run on: ``scripts/local-slurm.sh`` starts a one-node
cluster with accounting (``make test`` runs it as root where apt-get is). Elsewhere those
tests skip with one line."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["cancel_jobs_of", "requires_slurm", "requires_submitit", "sacct_jobs",
           "wait_for", "wait_until"]

SCRIPT = "scripts/local-slurm.sh"


def _why_no_cluster() -> str | None:
    if importlib.util.find_spec("submitit") is None:
        return "submitit is not installed (pip install 'attn2d[slurm]')"
    if shutil.which("sbatch") is None:
        return f"no SLURM here (no sbatch); as root run {SCRIPT} (make test does)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                timeout=20).stdout.split()
        subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, check=True,
                       timeout=20)
    except (subprocess.SubprocessError, OSError):
        return f"SLURM is not up or has no accounting (sinfo/sacct fail); run {SCRIPT}"
    if not {"idle", "mixed", "allocated", "completing"} & set(states):
        return f"no SLURM node is up (sinfo: {' '.join(states) or 'nothing'}); run {SCRIPT}"
    return None


_REASON = _why_no_cluster()
requires_slurm = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
requires_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                       reason="submitit is not installed "
                                              "(pip install 'attn2d[slurm]')")


def sacct_jobs(name: str) -> list[tuple[str, str]]:
    """(job id, state) of every job (array tasks one by one) named ``name``."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-S", "now-1hour", "--name", name,
                          "-o", "JobID,State"], capture_output=True, text=True,
                         check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def cancel_jobs_of(name: str) -> None:
    """Cancel what a test left behind (a failed test must not keep the node busy)."""
    subprocess.run(["scancel", "--name", name], capture_output=True)


def wait_until(condition: Callable[[], bool], timeout_s: float = 240.0,
               unless: Callable[[], bool] = lambda: False, what: str = "the condition") -> None:
    """Wait until ``condition()``; fail after ``timeout_s`` or once ``unless()`` holds
    (what should bring it about has ended)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert not unless(), f"{what} will not come: what should bring it has ended"
        assert time.monotonic() < deadline, f"{what} did not come in {timeout_s} s"
        time.sleep(0.05)


def wait_for(path: Path, timeout_s: float = 120.0,
             unless: Callable[[], bool] = lambda: False) -> None:
    """Wait until ``path`` exists."""
    wait_until(path.exists, timeout_s, unless, what=str(path))
