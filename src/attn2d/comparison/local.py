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

import dataclasses
import logging
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from .._base import log as logs
from ..training import RunResult, TrainConfig, train
from .plan import Failure, RunPlan, run_started

__all__ = ["LocalExecutor", "default_threads", "train_logged"]

log = logging.getLogger(__name__)


def train_logged(config: TrainConfig, log_level: int = logging.INFO) -> str:
    """Train one run with everything it prints (C-level output included) appended to its
    ``train.log``; return its status. What a worker process executes."""
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
            return train(config).status
        except Exception:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def default_threads(jobs: int) -> int:
    """Threads per run when ``jobs`` runs share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


class _Workers:
    """``jobs`` long-lived worker processes that train one run after another.

    Each run still has a process of its own for its duration (a crash costs that run, the
    others go on, and runs beside each other share nothing), while imports, CUDA context
    and dataset reading are paid once per worker instead of once per run. A worker that
    dies (a segfault, the out-of-memory killer) breaks the pool; it is rebuilt and the runs
    that were in flight are tried once more.
    """

    def __init__(self, jobs: int, threads: int | None) -> None:
        self.jobs, self.threads = jobs, threads
        self.pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        previous = os.environ.get("OMP_NUM_THREADS")
        if self.threads:  # the OpenMP pool under torch's intra-op threads: set before import
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
        try:
            return ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous

    def submit(self, plan: RunPlan) -> Future:
        return self.pool.submit(train_logged, plan.config, log.getEffectiveLevel())

    def rebuild(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class LocalExecutor:
    """Runs a comparison's plans on this machine.

    Args:
        jobs: runs at once, each in its own worker process.
        in_process: train in this process instead, one run after another (then ``data``
            may hold ready-made batches, e.g. from the user's own Dataset objects).
        data: ready-made data for in-process runs.
    """

    name = "local"

    def __init__(self, jobs: int = 1, *, in_process: bool = False, data: Any = None) -> None:
        self.jobs, self.in_process, self.data = jobs, in_process, data

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
                status = train(plan.config, data=self.data).status
            except Exception as err:
                failed.append(_failure(plan, err))
                continue
            if status != "finished":
                raise KeyboardInterrupt
            _finished(plan, time.perf_counter() - began)
        return failed

    def _run_in_workers(self, todo: list[RunPlan]) -> list[Failure]:
        jobs = self.jobs
        workers = _Workers(jobs, todo[0].config.threads)
        queue: list[RunPlan] = list(todo)
        pending: dict[Future, tuple[RunPlan, float]] = {}
        failed: list[Failure] = []
        started, done = time.perf_counter(), 0
        try:
            while queue or pending:
                while queue and len(pending) < jobs:
                    plan = queue.pop(0)
                    _announce(plan)
                    pending[workers.submit(plan)] = (plan, time.perf_counter())
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                broken = []
                for future in finished:
                    plan, began = pending.pop(future)
                    error = future.exception()
                    if isinstance(error, BrokenProcessPool):
                        broken.append(plan)
                    elif error is not None:
                        failed.append(_failure(plan, error))
                    elif future.result() != "finished":  # the worker was told to stop
                        raise KeyboardInterrupt
                    else:
                        _finished(plan, time.perf_counter() - began)
                        done += 1
                        if done == 1 and queue:  # `jobs` runs took this long side by side
                            left = (time.perf_counter() - started) * (
                                len(queue) + len(pending)) / jobs
                            log.info("%d runs to go, about %s more at this pace",
                                     len(queue) + len(pending), _duration(left))
                if broken:  # every run in flight failed with the pool: retry each once
                    broken += [plan for plan, _ in pending.values()]
                    pending.clear()
                    workers.rebuild()
                    for plan in reversed(broken):
                        if plan.tries >= 1:
                            failed.append(_failure(plan, RuntimeError(
                                "its worker process died twice (a crash or out of memory)")))
                            continue
                        queue.insert(0, dataclasses.replace(
                            plan, tries=plan.tries + 1,
                            config=dataclasses.replace(plan.config,
                                                   resume=run_started(plan.dir))))
        except KeyboardInterrupt:
            # The workers got the same Ctrl-C and stop after their current step, saved.
            log.warning("interrupted; rerun the same command to continue")
            raise
        finally:
            workers.close()
        return failed


def _announce(plan: RunPlan) -> None:
    log.info("%s: %s...", plan.label, "resuming" if plan.config.resume else "training")


def _finished(plan: RunPlan, took: float) -> None:
    result = RunResult.read(plan.dir / "result.json")
    log.info("%s: test acc %.2f%% in %.0f s", plan.label, 100 * result.test_acc, took)


def _failure(plan: RunPlan, error: BaseException) -> Failure:
    log.warning("%s: FAILED (%s); see %s", plan.label, error, plan.dir / "train.log")
    return Failure(plan.spec, plan.seed, str(error))


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
