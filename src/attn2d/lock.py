"""One writer per output folder, across hosts: a lock file that names its holder.

``attn2d train`` and ``attn2d compare`` hold ``OUT/attn2d.lock`` while they write ``OUT``.
The file is created atomically (written beside it, then hard-linked into place, so it
exists only complete and only once) and says who holds it: host, pid, the process's start
time, the SLURM job, the command and since when. A second writer is refused with one line
naming the holder. A lock is stale, and is taken over, when

- its holder ran on this host and that process is gone (or the pid now belongs to a
  process started later), or
- its holder was this very SLURM job before SLURM started it again (a requeue after a time
  limit or preemption may land on another node; the job id stays the same).

A lock held on another host is respected: from here nothing says whether that process
still runs. The message says how to clear it (delete the file once that process is gone).
On a shared filesystem this relies on ``link`` being atomic, which NFS guarantees (the
classic NFS-safe lock); where hard links are not supported, exclusive creation is used.

Locks are per folder, not per tree: ``compare`` holds ``OUT`` while each of its runs holds
its own ``OUT/runs/<run>``, so the comparison's workers never refuse themselves, and a
stray ``attn2d train --out OUT/runs/<run>`` meets the run's own lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "FolderLock", "Holder", "current_job", "release_ended_job"]

LOCK_NAME = "attn2d.lock"


def current_job() -> str | None:
    """This process's SLURM job as submitit and ``squeue`` name it (``123`` or ``123_4``
    for a task of an array), or None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks after boot, Linux ``/proc``), to tell a pid
    reused by a later process from the original; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) is in parentheses and may hold spaces.
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _start_ticks(pid)
    return started is None or now is None or now == started


@dataclass(frozen=True)
class Holder:
    """Who holds a lock."""

    host: str
    pid: int
    started: int | None  # start time of the process (see _start_ticks)
    job: str | None  # SLURM job, when held inside one
    command: str
    since: str

    @classmethod
    def me(cls, command: str) -> Holder:
        return cls(socket.gethostname(), os.getpid(), _start_ticks(os.getpid()), current_job(),
                   command, time.strftime("%Y-%m-%d %H:%M:%S"))

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            value = json.loads(text)
            return cls(str(value["host"]), int(value["pid"]), value.get("started"),
                       value.get("job"), str(value.get("command", "?")), str(value["since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def text(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    def stale(self) -> bool:
        """True when the holder is certainly gone (see the module docstring)."""
        if self.job is not None and self.job == current_job():
            return True
        return self.host == socket.gethostname() and not _alive(self.pid, self.started)

    def describe(self) -> str:
        job = f", SLURM job {self.job}" if self.job else ""
        return f"pid {self.pid} on host {self.host} ({self.command}{job}, since {self.since})"


class FolderLock:
    """``with FolderLock(out, "attn2d train"):`` hold ``out/attn2d.lock`` while writing.

    Args:
        folder: the output folder (created if missing).
        owner: who asks, as errors name it (``"attn2d compare"``).
        option: the option that named the folder, for the message.
    """

    def __init__(self, folder: str | os.PathLike[str], owner: str, option: str = "--out") -> None:
        self.folder, self.owner, self.option = Path(folder), owner, option
        self.path = self.folder / LOCK_NAME
        self.mine: str | None = None

    def acquire(self) -> FolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"{self.owner}: expected {self.option} {self.folder} to be a "
                             f"folder it can create, got {err.strerror or err}") from None
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] or self.owner
        text = Holder.me(command).text()
        for _ in range(5):
            if self._create(text):
                self.mine = text
                return self
            seen = self._read()
            if seen is None:  # released meanwhile, or being written: look again
                time.sleep(0.05)
                continue
            holder = Holder.parse(seen)
            if holder is None:
                raise ValueError(f"{self.owner}: expected a lock file naming its holder at "
                                 f"{self.path}, got unreadable content; delete it if no other "
                                 f"attn2d process writes {self.folder}")
            if not holder.stale():
                raise ValueError(self._refusal(holder))
            self._take_over(seen)
        raise ValueError(f"{self.owner}: expected to take the lock {self.path}, got it changing "
                         "hands repeatedly; is another attn2d process starting on "
                         f"{self.folder}?")

    def _refusal(self, holder: Holder) -> str:
        here = holder.host == socket.gethostname()
        hint = ("it is still running: wait for it or stop it" if here else
                f"if that process has ended (check on {holder.host}), delete {self.path}")
        return (f"{self.owner}: expected no other writer of {self.option} {self.folder}, got "
                f"{holder.describe()} holding {self.path}; {hint}, or choose another "
                f"{self.option}")

    def _create(self, text: str) -> bool:
        """Put a complete lock file in place unless one exists; True if it is ours."""
        scratch = self.folder / f".{LOCK_NAME}.{uuid.uuid4().hex}"
        scratch.write_text(text)
        try:
            os.link(scratch, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this filesystem: exclusive creation instead
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as file:
                file.write(text)
            return True
        finally:
            scratch.unlink(missing_ok=True)

    def _read(self) -> str | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        return text or None

    def _take_over(self, seen: str) -> None:
        """Remove a stale lock, unless it changed since it was judged: it is moved aside
        atomically first, and put back if what was moved is not the stale one."""
        grave = self.folder / f".{LOCK_NAME}.stale.{uuid.uuid4().hex}"
        try:
            os.replace(self.path, grave)
        except FileNotFoundError:
            return
        try:
            if grave.read_text() != seen:  # someone else took it over meanwhile: theirs
                with contextlib.suppress(FileExistsError):
                    os.link(grave, self.path)
        finally:
            grave.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.mine is not None and self._read() == self.mine:
            self.path.unlink(missing_ok=True)
        self.mine = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def release_ended_job(folder: str | os.PathLike[str], job: str) -> bool:
    """Remove the lock of ``folder`` if SLURM job ``job`` holds it. For the one who knows
    from the scheduler that the job has ended (killed on its node, say, where nothing
    released its lock), before the run goes out again; True if a lock was removed."""
    path = Path(folder) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return False
    holder = Holder.parse(text)
    if holder is None or holder.job != job:
        return False
    lock = FolderLock(folder, "attn2d")
    lock.mine = text
    lock.release()
    return True
