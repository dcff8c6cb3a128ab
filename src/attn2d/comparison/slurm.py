"""``attn2d compare --executor slurm``: every (mechanism, seed) run one task of a SLURM job
array, through submitit (https://github.com/facebookincubator/submitit, the launcher of
DeiT, ConvNeXt and DINOv2).

    executor = SlurmExecutor(SlurmOptions(partition="gpu", gpus_per_run=1, time_min=240))
    compare(["se", "cbam"], base, seeds=10, out="/shared/runs/cmp", executor=executor)

**What runs where.** The command (on a login node) plans the runs, submits the unfinished
ones as one job array (each task trains one run into ``OUT/runs/<run>/``, its output in
``train.log`` there; submitit's log is ``OUT/slurm/<job>_0_log.out``/``.err``), records the
job ids in ``OUT/slurm/jobs.json`` and watches them, one ``sacct`` call per poll. The cost
pass is one more job on the same partition, so the cost columns are measured on the
device the runs trained on; the table is built here from what finished.

**Requeue.** SLURM sends USR2 shortly before the time limit (``sbatch --signal``, set by
submitit) and SIGTERM on preemption or ``scontrol requeue``. A task hands both to attn2d's
own stop: the loop ends after its current step and saves ``last.pt`` (mid-epoch included).
After USR2 the task requeues itself (``scontrol requeue``, through submitit's job
environment); after SIGTERM SLURM requeues it or the job was cancelled. Started again, the
task resumes from ``last.pt``, or, killed before its first checkpoint, starts over
(resume-or-start), and ends with the same weights, bit for bit, as a run never stopped.
(submitit's own USR2 handler would call ``checkpoint()`` in the middle of a step and exit
at once, losing the steps since the last checkpoint; it still serves a signal that comes
before the task starts training, through :meth:`RunTask.checkpoint`.)

**Failures.** A task that ends without finishing (an error, out of memory, a node
failure, a time limit with no step made) is submitted once more, resuming where it
stopped; a second failure is reported and the table is built from what finished. A task
cancelled by ``scancel`` is reported, not retried.

**Idempotent, attachable.** Run the same command again: it attaches to the jobs in flight
(nothing is submitted twice), shows progress and waits; ``detach`` submits and returns.
``run`` may be called again on the same folder with more plans (new seeds): only what is
unfinished and not under way goes out, as a new array.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._base.errors import Attn2dError
from .._base.io import read_json, read_jsonl, write_json
from .._base.lock import release_ended_job
from .._base.log import plural
from ..training import RunResult, StopRequest, TrainConfig, resolve_device
from .costs import measure_costs
from .local import record_failure, train_logged
from .plan import ComparisonInterrupted, Failure, RunPlan
from .records import describe_differences

__all__ = ["RunTask", "SlurmExecutor", "SlurmOptions", "jobs_in_flight",
           "parse_sbatch_options", "refuse_jobs_in_flight"]

log = logging.getLogger(__name__)

INSTALL = "pip install 'attn2d[slurm]'"
_UNDER_WAY = ("RUNNING", "COMPLETING")  # the other unfinished states wait for a node
# SLURM's states of a job that has not ended: it may still write its run's folder.
_NOT_ENDED = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                        "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING", "SIGNALING",
                        "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"})


@dataclass(frozen=True)
class SlurmOptions:
    """What each task asks SLURM for (recorded in ``comparison.json``, not run settings).

    Args:
        partition: ``sbatch --partition`` (default: the cluster's default partition).
        time_min: time limit of one task in minutes; a longer run requeues itself and
            resumes.
        gpus_per_run: GPUs per task (``--gpus-per-node``).
        cpus_per_run: CPUs per task; also the run's torch threads unless set.
        mem: memory per task as sbatch writes it (``16G``, ``4000M``).
        array_parallelism: tasks of one array running at once (``--array=…%N``).
        sbatch: any other sbatch option, as (key, value) pairs (``("qos", "high")``).
        setup: shell lines run before each task (``module load cuda``).
    """

    partition: str | None = None
    time_min: int = 120
    gpus_per_run: int = 0
    cpus_per_run: int | None = None
    mem: str | None = None
    array_parallelism: int | None = None
    sbatch: tuple[tuple[str, str], ...] = ()
    setup: tuple[str, ...] = ()

    def check(self) -> SlurmOptions:
        for name, low in (("time_min", 1), ("gpus_per_run", 0), ("cpus_per_run", 1),
                          ("array_parallelism", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < low):
                flag = "--slurm-time" if name == "time_min" else f"--slurm-{_flag(name)}"
                raise Attn2dError(f"expected {flag} to be an integer >= {low}, got "
                                 f"{value!r}")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?", str(self.mem)):
            raise Attn2dError(f"expected --slurm-mem as sbatch takes it (16G, 4000M), "
                             f"got {self.mem!r}")
        for key, _ in self.sbatch:
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
                raise Attn2dError(f"expected --slurm-opt KEY=VALUE with an sbatch "
                                 f"option name as KEY (qos=high), got {key!r}")
        return self

    def parameters(self, name: str) -> dict[str, Any]:
        """submitit's parameters for one task."""
        delay = min(90, self.time_min * 60 // 4)  # USR2 this long before the time limit
        chosen = {
            "name": name, "timeout_min": self.time_min, "cpus_per_task": self.cpus_per_run,
            "gpus_per_node": self.gpus_per_run or None, "slurm_partition": self.partition,
            "slurm_mem": self.mem, "slurm_signal_delay_s": delay,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_additional_parameters": dict(self.sbatch) or None,
            "slurm_setup": list(self.setup) or None,
        }
        return {k: v for k, v in chosen.items() if v is not None}


def _flag(name: str) -> str:
    return name.replace("_", "-")


def parse_sbatch_options(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["qos=high", "constraint=a100"]`` as (key, value) pairs (``--slurm-opt``)."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise Attn2dError(f"expected --slurm-opt KEY=VALUE, got {item!r}")
        pairs.append((key.strip().lstrip("-"), value.strip()))
    return tuple(pairs)


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise Attn2dError(f"expected submitit for --executor slurm, got it not "
                          f"installed; {INSTALL}") from None
    return submitit


class RunTask:
    """One run as a SLURM task: train (resume-or-start), and on the time-limit signal save
    after the current step and requeue (see the module docstring)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def __call__(self) -> str:
        submitit = _submitit()
        limit = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        stop = StopRequest((signal.SIGINT, signal.SIGTERM, limit))
        steps = 0

        def count(epoch: int, step: int) -> None:
            nonlocal steps
            steps += 1

        # resume=True: last.pt if there is one, else a start over from config.json
        config = dataclasses.replace(self.config, resume=True)
        # SLURM sends SIGCONT with every signal; submitit's handler would log each one.
        signal.signal(signal.SIGCONT, signal.SIG_DFL)
        # Installed until the task exits: a second signal (SLURM may deliver USR2 through
        # both its step daemon and srun, and a requeue sends SIGTERM) must not reach
        # submitit's handler, which would requeue the task a second time.
        with stop.installed():
            status = train_logged(config, on_step=count, stop=stop)
            if status == "finished":
                return status
            signum = stop.signal
            if signum == limit:
                if not steps:
                    raise RuntimeError("expected the time limit to leave time for "
                                       "a step, got none made before the signal; raise "
                                       "--slurm-time")
                submitit.JobEnvironment()._requeue(0)  # scontrol requeue (the local one exits)
        # Ended without a result: SLURM has requeued the task, or it was cancelled.
        raise SystemExit(128 + signum)

    def checkpoint(self) -> Any:
        """submitit's hook for a signal before training starts: the same task again."""
        return _submitit().helpers.DelayedSubmission(self)


@dataclass(frozen=True)
class _CostTask:
    """The cost job: :func:`~attn2d.compare.measure_costs` on its node's device."""

    out: Path
    specs: tuple[str, ...]
    device: str
    threads: int | None

    def __call__(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        measure_costs(self.out, self.specs, resolve_device(self.device))


class _Book:
    """``OUT/slurm/jobs.json``: every try's job id per run, oldest first, and the cost
    passes'. Written only by the command that holds the folder's lock."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "jobs.json"
        self.data: dict[str, Any] = {"runs": {}, "costs": []}
        if self.path.is_file():
            self.data = read_json(self.path, "the SLURM job book")

    def last(self, key: str) -> str | None:
        jobs = self.data["costs"] if key == "costs" else self.data["runs"].get(key, [])
        return jobs[-1] if jobs else None

    def add(self, key: str, job_id: str) -> None:
        jobs = self.data["costs"] if key == "costs" else self.data["runs"].setdefault(key, [])
        jobs.append(job_id)
        write_json(self.path, self.data)


def jobs_in_flight(out: Path, keys: Sequence[str]) -> list[str]:
    """The SLURM jobs recorded in ``OUT/slurm/jobs.json`` for ``keys`` (run folder names,
    ``"costs"``) that have not ended, as ``squeue`` says; for a command that would write
    those runs without SLURM. Needs no submitit. Raises :class:`Attn2dError` when jobs are
    recorded but no ``squeue`` is here to say whether they ended."""
    book_path = out / "slurm" / "jobs.json"
    if not book_path.is_file():
        return []
    book = _Book(book_path.parent)
    ids = [job for job in (book.last(key) for key in keys) if job]
    if not ids:
        return []
    shown = _listed(ids)
    if shutil.which("squeue") is None:
        raise Attn2dError(f"{out}: expected to learn whether its SLURM jobs ({shown}) have "
                          "ended, got no squeue here; run the command where SLURM is (with "
                          f"--executor slurm to attach), or delete {book_path} if they are over")
    # -r: one line per array task (pending tasks are otherwise one line, "123_[0-3]").
    done = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "--jobs", ",".join(ids)],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # none of them is known any more: all ended
            return []
        raise Attn2dError(f"{out}: expected squeue to report its SLURM jobs ({shown}), got: "
                          f"{done.stderr.strip() or f'exit {done.returncode}'}")
    states = dict(line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
    return [job for job in ids if states.get(job, "").strip() in _NOT_ENDED]


def refuse_jobs_in_flight(out: Path, keys: Sequence[str]) -> None:
    """Raise :class:`Attn2dError`, naming them and their ``scancel``, if any of the jobs
    :func:`jobs_in_flight` finds has not ended."""
    in_flight = jobs_in_flight(out, keys)
    if in_flight:
        raise Attn2dError(
            f"{out}: expected no SLURM job still at work on its runs, got "
            f"{plural(len(in_flight), 'job')} not ended ({_listed(in_flight)}); run the same "
            f"command with --executor slurm to attach to them, or scancel "
            f"{_arrays(in_flight)} first")


def _listed(ids: Sequence[str]) -> str:
    return ", ".join(ids[:4]) + (" …" if len(ids) > 4 else "")


def _arrays(job_ids: Sequence[str]) -> str:
    """The job arrays of array tasks (``123_4`` → ``123``), for ``scancel``."""
    return " ".join(sorted({job.split("_")[0] for job in job_ids}))


class SlurmExecutor:
    """Runs a comparison's plans as SLURM job arrays (see the module docstring).

    Args:
        options: what each task asks for.
        detach: submit (or attach) and return at once; the table waits for a later
            ``compare`` or ``attn2d report``.
        poll_s: the most seconds between two looks at the jobs (one ``sacct`` call
            each); the first looks after a submission come sooner (1, 1.5, 2.25 … s).
        cluster: ``"slurm"``, or ``"local"`` for submitit's local executor (processes on
            this machine; for trying it out: jobs cannot be attached from another command).
    """

    def __init__(self, options: SlurmOptions | None = None, *, detach: bool = False,
                 poll_s: float = 30.0, cluster: str = "slurm") -> None:
        self.submitit = _submitit()
        self.options = (options or SlurmOptions()).check()
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise Attn2dError("expected SLURM's sbatch on PATH for --executor slurm "
                             "(run it on a login node of the cluster), got none")
        self.detach, self.poll_s, self.cluster = detach, poll_s, cluster
        self.jobs: dict[str, Any] = {}  # job id -> submitit Job, this command's own
        self.looks = 0  # looks since the last submission
        self.device, self.threads = "auto", self.options.cpus_per_run

    def describe(self) -> str:
        if self.cluster != "slurm":
            return f"as submitit {self.cluster} jobs"
        where = f" on partition {self.options.partition}" if self.options.partition else ""
        return f"as a SLURM job array{where}"

    def settings(self) -> dict[str, Any]:
        return {"executor": "slurm" if self.cluster == "slurm" else f"submitit-{self.cluster}",
                **dataclasses.asdict(self.options), "detach": self.detach}

    # -- jobs ---------------------------------------------------------------------------

    def _job(self, folder: Path, job_id: str) -> Any:
        if job_id not in self.jobs:  # recorded by an earlier command: reattach
            job_class = self.submitit.SlurmJob if self.cluster == "slurm" else \
                self.submitit.LocalJob
            self.jobs[job_id] = job_class(folder=folder, job_id=job_id)
        return self.jobs[job_id]

    def _wait(self) -> None:
        """Sleep until the next look: soon after a submission, then less often."""
        time.sleep(min(self.poll_s, 1.5 ** self.looks))
        self.looks += 1
        self._look()

    def _ended(self, job: Any) -> bool:
        """Whether a job has ended: its result file is there (submitit's test) and, on
        SLURM, ``sacct`` agrees (a task that wrote a result and was then requeued is not
        over; its next start writes the result again)."""
        if not job.done():
            return False
        return self.cluster != "slurm" or job.watcher.is_done(job.job_id, mode="cache")

    def _look(self) -> None:
        """One ``sacct`` call for every job this command watches."""
        if self.cluster == "slurm":
            self.submitit.SlurmJob.watcher.update()

    def _submit(self, out: Path, tasks: list[tuple[str, Any]], **extra: Any) -> list[Any]:
        executor = self.submitit.AutoExecutor(folder=out / "slurm", cluster=self.cluster)
        executor.update_parameters(**self.options.parameters(f"attn2d-{out.name}"), **extra)
        with executor.batch():
            jobs = [executor.submit(task) for _, task in tasks]
        self.looks = 0
        book = _Book(out / "slurm")
        for (key, _), job in zip(tasks, jobs, strict=True):
            self.jobs[job.job_id] = job
            book.add(key, job.job_id)
        return jobs

    def _submit_runs(self, out: Path, plans: Sequence[RunPlan], live: dict[str, Any]) -> None:
        if not plans:
            return
        book = _Book(out / "slurm")
        for plan in plans:
            plan.write_settings()  # before its task exists: a requeue can start it over
            ended = book.last(plan.dir.name)
            if ended:  # its job ended where nothing released its lock (a killed task)
                release_ended_job(plan.dir, ended)
        jobs = self._submit(out, [(plan.dir.name, RunTask(plan.config)) for plan in plans])
        array = jobs[0].job_id.split("_")[0]
        log.info("submitted %d run(s) as SLURM job %s (logs: %s)", len(plans), array,
                 out / "slurm")
        for plan, job in zip(plans, jobs, strict=True):
            live[plan.dir.name] = job

    # -- the runs -----------------------------------------------------------------------

    def run(self, plans: Sequence[RunPlan]) -> list[Failure]:
        if not plans:
            return []
        out = plans[0].dir.parent.parent
        if any(p.dir.parent != out / "runs" for p in plans):
            raise Attn2dError(f"expected every run under {out / 'runs'}, got others")
        self.device = plans[0].config.device
        plans = [self._with_threads(p) for p in plans]
        by_name = {p.dir.name: p for p in plans}
        for plan in plans:
            if plan.finished:
                log.info("%s: finished before, skipped", plan.label)
        book = _Book(out / "slurm")
        todo = [p for p in plans if not p.finished]
        recorded = {p.dir.name: book.last(p.dir.name) for p in todo}
        self._look()
        live: dict[str, Any] = {}
        for plan in todo:
            job_id = recorded[plan.dir.name]
            job = self._job(out / "slurm", job_id) if job_id else None
            if job is not None and not self._ended(job):
                _check_same_run(plan, job_id)
                live[plan.dir.name] = job
                log.info("%s: attached to SLURM job %s (%s)", plan.label, job_id, job.state)
        self._submit_runs(out, [p for p in todo if p.dir.name not in live], live)
        tries = dict.fromkeys(live, 1)
        failed: list[Failure] = []
        if self.detach:
            log.info(self._progress(plans, live, failed))
            return failed
        try:
            self._watch(out, by_name, plans, live, tries, failed)
        except KeyboardInterrupt as stopped:
            ids = _arrays([job.job_id for job in live.values()])
            raise ComparisonInterrupted(
                getattr(stopped, "signal", signal.SIGINT),
                f"stopped watching; {len(live)} run(s) go on in SLURM; rerun the same command "
                f"to attach, or scancel {ids} to stop them") from None
        return failed

    def _watch(self, out: Path, by_name: dict[str, RunPlan], plans: Sequence[RunPlan],
               live: dict[str, Any], tries: dict[str, int], failed: list[Failure]) -> None:
        shown, shown_at = "", 0.0
        while live:
            self._wait()
            again = []
            for name, job in list(live.items()):
                if not self._ended(job):
                    continue
                del live[name]
                plan = by_name[name]
                reason, retry = _outcome(plan, job)
                if reason is None:
                    result = RunResult.read(plan.dir / "result.json")
                    log.info("%s: test acc %.2f%% (SLURM job %s)", plan.label,
                             100 * result.test_acc, job.job_id)
                elif retry and tries[name] < 2:
                    log.warning("%s: %s; submitting it once more", plan.label, reason)
                    again.append(plan)
                else:
                    failed.append(record_failure(plan, RuntimeError(
                        f"{reason}; SLURM log {job.paths.stderr}")))
            self._submit_runs(out, again, live)
            for plan in again:
                tries[plan.dir.name] += 1
            line = self._progress(plans, live, failed)
            if line != shown or time.monotonic() - shown_at > 300:
                log.info(line)
                shown, shown_at = line, time.monotonic()

    def _with_threads(self, plan: RunPlan) -> RunPlan:
        if self.threads is None or plan.config.threads is not None:
            return plan
        return dataclasses.replace(
            plan, config=dataclasses.replace(plan.config, threads=self.threads))

    def _progress(self, plans: Sequence[RunPlan], live: dict[str, Any],
                  failed: list[Failure]) -> str:
        states = {name: str(job.state).split()[0].upper() for name, job in live.items()}
        running = sum(s in _UNDER_WAY for s in states.values())
        counts = {"finished": sum(p.finished for p in plans), "running": running,
                  "pending": len(live) - running, "failed": len(failed)}
        text = ", ".join(f"{n} {k}" for k, n in counts.items())
        left = _time_left([p for p in plans if p.dir.name in live], running)
        return f"{text}{left}"

    # -- the cost pass ------------------------------------------------------------------

    def measure_costs(self, out: Path, specs: Sequence[str]) -> None:
        book = _Book(out / "slurm")
        self._look()
        job_id = book.last("costs")
        job = self._job(out / "slurm", job_id) if job_id else None
        if job is None or self._ended(job):
            # Detached: the pass waits for the runs in flight (they hold the configs).
            after = sorted({j.job_id.split("_")[0] for j in self.jobs.values()
                            if not self._ended(j)})
            extra = {"slurm_dependency": "afterany:" + ":".join(after)} if after else {}
            task = _CostTask(out, tuple(specs), self.device, self.threads)
            (job,) = self._submit(out, [("costs", task)], **extra)
            log.info("cost pass submitted as SLURM job %s", job.job_id)
        else:
            log.info("attached to the cost pass, SLURM job %s", job_id)
        if self.detach:
            return
        while not self._ended(job):
            self._wait()
        reason, _ = _why_ended(job)
        if reason:
            log.warning("the cost pass failed (%s); the table has no cost columns; see %s",
                        reason, job.paths.stderr)


def _check_same_run(plan: RunPlan, job_id: str) -> None:
    """A job in flight must train what this command plans (its config.json says)."""
    path = plan.dir / "config.json"
    saved = read_json(path, "a run's config.json") if path.is_file() else {}
    wanted = dataclasses.asdict(plan.config.resolved())
    diff = describe_differences({k: saved.get(k) for k in wanted}, wanted) if saved else ""
    if diff:
        raise Attn2dError(f"expected SLURM job {job_id} in flight for {plan.dir} to "
                         f"train the same settings, got different ones ({diff}); wait for it "
                         "or scancel it, or use another --out")


def _why_ended(job: Any, grace_s: float = 30.0) -> tuple[str | None, bool]:
    """(why a job that ended failed, None if it succeeded; whether to try it again), from
    submitit's result file or else SLURM's final state. A task exits 0 only with its
    result written; on a shared filesystem the file may show up here a little later."""
    from submitit.core.utils import pickle_load

    result = job.paths.result_pickle
    completed = str(job.state).upper().startswith("COMPLETED")
    deadline = time.monotonic() + grace_s
    while completed and not result.exists() and time.monotonic() < deadline:
        time.sleep(1)
    if not result.exists():
        state = str(job.state)
        return f"SLURM job {job.job_id} ended {state}", not state.upper().startswith("CANCELLED")
    outcome, value = pickle_load(result)
    if outcome == "success":
        return None, False
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return (lines[-1] if lines else "an error"), True


def _outcome(plan: RunPlan, job: Any, grace_s: float = 30.0) -> tuple[str | None, bool]:
    """(why the run did not finish, whether to try again); (None, False) if it finished."""
    reason, retry = _why_ended(job, grace_s)
    if reason is None:  # result.json was written before the task returned
        deadline = time.monotonic() + grace_s
        while not plan.finished and time.monotonic() < deadline:
            time.sleep(1)
        if not plan.finished:
            return f"no {plan.dir / 'result.json'} after SLURM job {job.job_id} ended", True
    return reason, retry


def _time_left(plans: Sequence[RunPlan], running: int) -> str:
    """``"; about 12 min left"`` from the epochs the runs under way logged so far."""
    times, epochs_left = [], 0
    for plan in plans:
        path = plan.dir / "metrics.jsonl"
        rows = read_jsonl(path, "a run's metrics.jsonl") if path.is_file() else []
        times += [row["epoch_time_s"] for row in rows]
        epochs_left += plan.config.epochs - len(rows)
    if not times or not running:
        return ""
    seconds = sum(times) / len(times) * epochs_left / running
    return f"; about {seconds / 60:.0f} min left" if seconds >= 90 else \
        f"; about {seconds:.0f} s left"

