"""The local executor: a comparison's runs on this machine, K at a time.

Runs go to K long-lived worker processes, one run at a time each, so a crash in one
mechanism does not stop the others and runs side by side share no threads or state: a run's
result does not depend on what runs beside it (on the CPU each of K workers gets cores/K
threads unless ``threads`` says otherwise; results depend on the thread count, not on the
neighbours), while imports and dataset reading are paid once per worker. With
``in_process`` the runs go one after another in this process instead.

An executor is anything with ``run(plans) -> failures``: :mod:`.slurm` is the other one.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from .._base import log as logs
from .._base.log import plural
from ..training import RunResult, TrainConfig, train
from .costs import measure_costs
from .plan import ComparisonInterrupted, Failure, RunPlan, run_started

__all__ = ["LocalExecutor", "default_threads", "record_failure", "train_logged"]

log = logging.getLogger(__name__)


def train_logged(config: TrainConfig, log_level: int = logging.INFO, **options: Any) -> str:
    """Train one run with everything it prints (C-level output included) appended to its
    ``train.log``; return its status. What a worker process (and a SLURM task) executes;
    ``options`` go to :func:`~attn2d.training.train`."""
    log_path = Path(config.out) / "train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        logs.configure(log_level, prefix="attn2d train")
        try:
            return train(config, **options).status
        except Exception:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            _end_if_orphaned()  # stopped because the comparison died: nobody waits for us


def default_threads(jobs: int) -> int:
    """Threads per run when ``jobs`` runs share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


# How long stopped runs get to finish their step and save before their worker is killed.
STOP_GRACE_S = 120.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


_parent: int | None = None  # in a worker: the comparison's process


def _worker_started(parent: int) -> None:
    """In each worker: die with the comparison. Linux sends SIGTERM to this process when its
    parent dies: an idle worker ends; a run in progress saves its checkpoint, as for any
    SIGTERM, and :func:`train_logged` then ends the worker."""
    global _parent
    _parent = parent
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _end_if_orphaned()


def _end_if_orphaned() -> None:
    if _parent is not None and os.getppid() != _parent:
        os._exit(1)


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Workers start by importing the parent's ``__main__`` (spawn's contract), which re-runs
    a user's script that has no ``if __name__ == "__main__":`` guard. They need nothing
    from it, so while they are being started ``__main__`` is an empty module."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class _Workers:
    """``jobs`` long-lived worker processes that train one run after another.

    Each run still has a process of its own for its duration (a crash costs that run, the
    others go on, and runs beside each other share nothing), while imports, CUDA context
    and dataset reading are paid once per worker instead of once per run. A worker that
    dies (a segfault, the out-of-memory killer) breaks the pool; it is rebuilt and the runs
    that were in flight are tried once more. Workers die with the comparison.
    """

    def __init__(self, jobs: int, threads: int | None) -> None:
        self.jobs, self.threads = jobs, threads
        self.pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_started, initargs=(os.getpid(),))

    def submit(self, plan: RunPlan) -> Future:
        # A spawn pool starts a worker inside submit() while none is idle.
        with _main_hidden(), _omp_threads(self.threads):
            return self.pool.submit(train_logged, plan.config, log.getEffectiveLevel())

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every worker (a run stops after its step and saves)."""
        for process in list(getattr(self.pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)

    def rebuild(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new()

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


@contextlib.contextmanager
def _omp_threads(threads: int | None) -> Iterator[None]:
    """``OMP_NUM_THREADS`` for processes started here: the OpenMP pool under torch's intra-op
    threads reads it at import, before a run could set it."""
    previous = os.environ.get("OMP_NUM_THREADS")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous


class _StopSignals:
    """SIGINT/SIGTERM to the comparison set a flag that its loop reads (the main thread
    only; elsewhere the signals keep their handlers)."""

    def __init__(self) -> None:
        self.signal = 0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle)
                             for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = self.signal or signum

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class LocalExecutor:
    """Runs a comparison's plans on this machine.

    Args:
        jobs: runs at once, each in its own worker process.
        in_process: train in this process instead, one run after another (then ``data``
            may hold ready-made batches, e.g. from the user's own Dataset objects).
        data: ready-made data for in-process runs.
    """

    name = "local"

    def __init__(self, jobs: int = 1, *, in_process: bool = False, data: Any = None,
                 device: torch.device | str = "cpu") -> None:
        self.jobs, self.in_process, self.data = jobs, in_process, data
        self.device = torch.device(device)

    def describe(self) -> str:
        return "in this process" if self.in_process else f"{self.jobs} at a time"

    def settings(self) -> dict[str, Any]:
        return {"executor": self.name, "jobs": self.jobs, "in_process": self.in_process}

    def measure_costs(self, out: Path, specs: Sequence[str]) -> None:
        measure_costs(out, specs, self.device)

    def run(self, plans: Sequence[RunPlan]) -> list[Failure]:
        """Run the unfinished plans, ``jobs`` at a time, in order; return the failures.

        One broken mechanism must not cost the others' hours: a failed run is reported and
        the rest go on. An interrupt stops every run after its current step, saved;
        rerunning resumes.
        """
        for plan in plans:
            if plan.finished:
                log.info("%s: finished before, skipped", plan.label)
        todo = [p for p in plans if not p.finished]
        if not todo:
            return []
        if self.in_process:
            return self._run_here(todo)
        return self._run_in_workers(todo)

    def _run_here(self, todo: list[RunPlan]) -> list[Failure]:
        failed = []
        for plan in todo:
            _announce(plan)
            began = time.perf_counter()
            try:
                result = train(plan.config, data=self.data)
            except Exception as err:
                failed.append(record_failure(plan, err))
                continue
            if not result.finished:  # SIGINT/SIGTERM: the run saved where it stopped
                raise ComparisonInterrupted(result.signal or signal.SIGINT)
            _finished(plan, time.perf_counter() - began)
        return failed

    def _run_in_workers(self, todo: list[RunPlan]) -> list[Failure]:
        jobs = self.jobs
        workers = _Workers(jobs, todo[0].config.threads)
        queue: list[RunPlan] = list(todo)
        pending: dict[Future, tuple[RunPlan, float]] = {}
        failed: list[Failure] = []
        started, done = time.perf_counter(), 0
        with _StopSignals() as stop:
            try:
                while queue or pending:
                    while queue and len(pending) < jobs and not stop.signal:
                        plan = queue.pop(0)
                        _announce(plan)
                        pending[workers.submit(plan)] = (plan, time.perf_counter())
                    if stop.signal:
                        raise ComparisonInterrupted(stop.signal)
                    finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    broken = []
                    for future in finished:
                        plan, began = pending.pop(future)
                        error = future.exception()
                        if isinstance(error, BrokenProcessPool):
                            broken.append(plan)
                        elif error is not None:
                            failed.append(record_failure(plan, error))
                        elif future.result() != "finished":  # the worker was told to stop
                            raise ComparisonInterrupted(stop.signal or signal.SIGTERM)
                        else:
                            _finished(plan, time.perf_counter() - began)
                            done += 1
                            if done == 1 and queue:  # `jobs` runs took this long together
                                left = (time.perf_counter() - started) * (
                                    len(queue) + len(pending)) / jobs
                                log.info("%s to go, about %s more at this pace",
                                         plural(len(queue) + len(pending), "run"),
                                         _duration(left))
                    if broken and not stop.signal:  # the runs in flight died with the pool
                        broken += [plan for plan, _ in pending.values()]
                        pending.clear()
                        workers.rebuild()
                        for plan in reversed(broken):
                            if plan.tries >= 1:
                                failed.append(record_failure(plan, RuntimeError(
                                    "its worker process died twice (a crash or out of "
                                    "memory)")))
                                continue
                            queue.insert(0, dataclasses.replace(
                                plan, tries=plan.tries + 1,
                                config=dataclasses.replace(plan.config,
                                                           resume=run_started(plan.dir))))
            except (ComparisonInterrupted, KeyboardInterrupt) as stopped:
                _stop_workers(workers, pending, stop.signal or signal.SIGINT)
                if isinstance(stopped, ComparisonInterrupted):
                    raise
                raise ComparisonInterrupted(signal.SIGINT) from None
            finally:
                workers.close()
        return failed


def _stop_workers(workers: _Workers, pending: dict[Future, tuple[RunPlan, float]],
                  signum: int) -> None:
    """Let the runs in flight finish their step and save (they got the signal too, or get
    it now); kill only a worker whose run does not stop in time."""
    workers.signal(signal.SIGTERM)
    _, late = wait(pending, timeout=STOP_GRACE_S)
    for future in late:
        log.warning("%s: did not stop within %.0f s; its last epoch's checkpoint is kept",
                    pending[future][0].label, STOP_GRACE_S)
    if late:
        workers.signal(signal.SIGKILL)


def _announce(plan: RunPlan) -> None:
    log.info("%s: %s...", plan.label, "resuming" if plan.config.resume else "training")


def _finished(plan: RunPlan, took: float) -> None:
    result = RunResult.read(plan.dir / "result.json")
    log.info("%s: test acc %.2f%% in %.0f s", plan.label, 100 * result.test_acc, took)


def record_failure(plan: RunPlan, error: BaseException) -> Failure:
    """Log that ``plan`` failed and why, pointing at its log when there is one."""
    log_file = plan.dir / "train.log"
    where = f"; see {log_file}" if log_file.is_file() else ""
    log.warning("%s: FAILED (%s)%s", plan.label, error, where)
    return Failure(plan.spec, plan.seed, str(error))


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
