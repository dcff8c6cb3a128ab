"""``attn2d compare``: a baseline and a list of mechanisms, several seeds each, one table.

    plan = plan_runs(...)        # every (mechanism, seed), seed-major; finished ones skipped
    run_all(plan, jobs)          # K runs at once, in K worker processes
    measure_costs(...)           # one process times every model, interleaved: fair columns
    write_report(...)            # table with CIs and paired tests, plots, HTML

Each run is an ordinary training run (:func:`attn2d.train.train`, its config in
``OUT/runs/<mechanism>-seed<k>/config.json``, its output in ``train.log`` there). A run with
a ``result.json`` is finished and skipped when the command is repeated; one with only a
``last.pt`` resumes where it stopped. Runs go to K long-lived worker processes, one run at a
time each, so a crash in one mechanism does not stop the others and runs side by side share
no threads or state: a run's result does not depend on what runs beside it (on the CPU each
of K workers gets cores/K threads unless ``threads`` says otherwise; results depend on the
thread count, not on the neighbours), while imports and dataset reading are paid once per
worker. Seed-major order means a comparison stopped early still has every mechanism at the
first seeds.

The cost columns come from one pass after the runs (:func:`measure_costs`): every model of
the comparison timed in the same process, interleaved, under the same conditions, and
stored in ``OUT/costs.json`` so that ``attn2d report`` never re-measures.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ._amp import autocast
from ._io import write_json
from .lock import FolderLock
from .registry import lookup
from .report import BASELINE, build_report, describe_differences, write_report
from .timing import peak_memory, time_interleaved
from .train import TrainConfig, build_model, resolve_device, train

__all__ = [
    "Executor",
    "LocalExecutor",
    "RunPlan",
    "compare",
    "default_threads",
    "measure_costs",
    "plan_runs",
    "run_all",
    "run_name",
    "split_specs",
    "train_logged",
]

def split_specs(text: str) -> list[str]:
    """Split ``"none,se,cbam(reduction=8, spatial_kernel=3)"`` on top-level commas only."""
    if not isinstance(text, str):
        raise TypeError(f"attn2d compare: expected a comma-separated string, got "
                        f"{type(text).__name__}")
    specs, depth, current = [], 0, []
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"attn2d compare: expected balanced parentheses, got {text!r}")
        if char == "," and depth == 0:
            specs.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f"attn2d compare: expected balanced parentheses, got {text!r}")
    specs.append("".join(current).strip())
    if any(not s for s in specs):
        raise ValueError(f"attn2d compare: expected non-empty names between commas, got {text!r}")
    return specs


def _slug(spec: str) -> str:
    """A spec made filesystem-safe."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", spec.strip().lower()).strip("_")


def run_name(spec: str, seed: int) -> str:
    """Folder name of one run: the spec made filesystem-safe, then the seed."""
    return f"{_slug(spec)}-seed{seed}"


@dataclass
class RunPlan:
    """One (mechanism, seed) run of a comparison."""

    spec: str
    seed: int
    config: TrainConfig
    number: int = 1  # position in the comparison, for the progress lines
    total: int = 1
    tries: int = 0  # starts given to a worker that then died

    @property
    def dir(self) -> Path:
        return Path(self.config.out)

    @property
    def finished(self) -> bool:
        return (self.dir / "result.json").is_file()

    @property
    def label(self) -> str:
        return f"[{self.number}/{self.total}] {self.spec} seed {self.seed}"


def _check_specs(mechanisms: Sequence[str]) -> list[str]:
    specs = list(dict.fromkeys(s.strip() for s in mechanisms))
    if not specs:
        raise ValueError("attn2d compare: expected at least one mechanism, got none")
    if BASELINE in specs:
        specs.remove(BASELINE)
    for spec in specs:
        lookup(spec)  # an unknown name fails now, not after an hour of training
    return [BASELINE, *specs]


def plan_runs(specs: Sequence[str], base: TrainConfig, seeds: Sequence[int], out: Path
              ) -> list[RunPlan]:
    """Every run, seed-major; refuse a folder that holds runs with other settings."""
    plans = []
    total = len(specs) * len(seeds)
    for seed in seeds:
        for spec in specs:
            run_dir = out / "runs" / run_name(spec, seed)
            config = dataclasses.replace(
                base, attention=None if spec == BASELINE else spec, seed=seed,
                out=str(run_dir), resume=(run_dir / "last.pt").exists())
            plan = RunPlan(spec, seed, config, len(plans) + 1, total)
            if plan.finished:
                saved = json.loads((run_dir / "result.json").read_text())["config"]
                wanted = {**dataclasses.asdict(config.resolved()), "dataset": saved["dataset"]}
                diff = describe_differences({k: saved.get(k) for k in wanted}, wanted)
                if diff:
                    raise ValueError(f"attn2d compare: expected {run_dir} to hold a run with "
                                     f"the same settings, got different ones ({diff}); use "
                                     "another --out")
            plans.append(plan)
    return plans


def _write_config(plan: RunPlan) -> None:
    plan.dir.mkdir(parents=True, exist_ok=True)
    write_json(plan.dir / "config.json", dataclasses.asdict(plan.config))


def train_logged(config: TrainConfig, **options: Any) -> str:
    """Train one run with everything it prints (C-level output included) appended to its
    ``train.log``; return its status. What a worker process of :func:`run_all` (and a SLURM
    task) executes; ``options`` go to :func:`~attn2d.train.train`."""
    log_path = Path(config.out) / "train.log"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            return train(config, **options)["status"]
        except Exception:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


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
        _write_config(plan)
        return self.pool.submit(train_logged, plan.config)

    def rebuild(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _run_in_process(plan: RunPlan, data: Any) -> None:
    _write_config(plan)
    if train(plan.config, data=data)["status"] != "finished":
        raise KeyboardInterrupt


def run_all(plans: Sequence[RunPlan], jobs: int = 1, data: Any = None,
            in_process: bool = False) -> list[dict[str, str]]:
    """Run the unfinished plans, ``jobs`` at a time, in order; return the failures.

    Runs go to :class:`_Workers` (separate processes), or with ``in_process`` one after
    another in this process (then ``data`` may hold ready-made batches). One broken
    mechanism must not cost the others' hours: a failed run is reported and the rest go
    on. An interrupt stops every run after its current step, saved; rerunning resumes.
    """
    todo = [p for p in plans if not p.finished]
    for plan in plans:
        if plan.finished:
            print(f"{plan.label}: finished before, skipped", flush=True)
    failed: list[dict[str, str]] = []
    if not todo:
        return failed
    if in_process:
        for plan in todo:
            _announce(plan)
            began = time.perf_counter()
            try:
                _run_in_process(plan, data)
            except KeyboardInterrupt:
                raise
            except Exception as err:
                failed.append(_failure(plan, err))
            else:
                _finished(plan, time.perf_counter() - began)
        return failed
    workers = _Workers(jobs, todo[0].config.threads)
    queue, pending = list(todo), {}
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
                        per_run = time.perf_counter() - started
                        left = per_run * (len(queue) + len(pending)) / jobs
                        print(f"attn2d compare: {len(queue) + len(pending)} runs to go, "
                              f"about {_duration(left)} more at this pace", flush=True)
            if broken:  # every run in flight failed with the pool: retry each once
                broken += [plan for plan, _ in pending.values()]
                pending.clear()
                workers.rebuild()
                for plan in reversed(broken):
                    if plan.tries >= 1:
                        failed.append(_failure(plan, RuntimeError(
                            "its worker process died twice (a crash or out of memory)")))
                        continue
                    resume = (plan.dir / "last.pt").exists()
                    queue.insert(0, dataclasses.replace(
                        plan, tries=plan.tries + 1,
                        config=dataclasses.replace(plan.config, resume=resume)))
    except KeyboardInterrupt:
        # The workers got the same Ctrl-C and stop after their current step, saved.
        print("attn2d compare: interrupted; rerun the same command to continue",
              file=sys.stderr)
        raise
    finally:
        workers.close()
    return failed


class Executor(Protocol):
    """Where a comparison's runs go (the ``local`` pool here, ``slurm`` in
    :mod:`attn2d.slurm`). ``run`` may be called again on the same folder with more plans
    (new seeds): it trains only what is unfinished and not already under way."""

    def describe(self) -> str:
        """How the runs go, for the opening line (``"2 at a time"``)."""
        ...

    def settings(self) -> dict[str, Any]:
        """What ``comparison.json`` records about the executor (not a run setting)."""
        ...

    def run(self, plans: Sequence[RunPlan]) -> list[dict[str, str]]:
        """Train the unfinished plans; return the failures (mechanism, seed, error). Plans
        left unfinished and not failed are still running elsewhere (a detached SLURM
        array)."""
        ...

    def measure_costs(self, out: Path, specs: Sequence[str]) -> None:
        """The cost pass (:func:`measure_costs`) on the device the runs trained on."""
        ...


@dataclass
class LocalExecutor:
    """Runs on this machine: ``jobs`` worker processes (:func:`run_all`), or in this
    process one after another (then ``data`` may hold ready-made batches)."""

    jobs: int = 1
    in_process: bool = False
    data: Any = None
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    def describe(self) -> str:
        return "in this process" if self.in_process else f"{self.jobs} at a time"

    def settings(self) -> dict[str, Any]:
        return {"executor": "local", "jobs": self.jobs, "in_process": self.in_process}

    def run(self, plans: Sequence[RunPlan]) -> list[dict[str, str]]:
        return run_all(plans, self.jobs, data=self.data, in_process=self.in_process)

    def measure_costs(self, out: Path, specs: Sequence[str]) -> None:
        measure_costs(out, specs, self.device)


def _announce(plan: RunPlan) -> None:
    print(f"{plan.label}: {'resuming' if plan.config.resume else 'training'}...", flush=True)


def _finished(plan: RunPlan, took: float) -> None:
    result = json.loads((plan.dir / "result.json").read_text())
    print(f"{plan.label}: test acc {result['test_acc']:.2%} in {took:.0f} s", flush=True)


def _failure(plan: RunPlan, error: BaseException) -> dict[str, str]:
    print(f"{plan.label}: FAILED ({error}); see {plan.dir / 'train.log'}",
          file=sys.stderr, flush=True)
    return {"mechanism": plan.spec, "seed": str(plan.seed), "error": str(error)}


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def default_threads(jobs: int) -> int:
    """Threads per run when ``jobs`` runs share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def compare(
    mechanisms: Sequence[str],
    base: TrainConfig,
    seeds: int | Sequence[int] = 3,
    out: str | Path = "runs/compare",
    *,
    jobs: int = 1,
    in_process: bool = False,
    datasets: tuple[Any, Any] | None = None,
    num_classes: int | None = None,
    command: str | None = None,
    costs: bool = True,
    html: bool = True,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Train every mechanism with every seed (skipping finished runs) and write the report.

    Args:
        mechanisms: spec strings; ``"none"`` (the baseline) is added first if absent.
        base: settings shared by every run; ``attention``, ``seed`` and ``out`` are set here.
        seeds: a count N (seeds 0..N-1) or the seeds themselves.
        out: output folder.
        jobs: runs at once (separate processes). On a CPU each gets cores/jobs threads
            unless ``base.threads`` is set; on a GPU they share the device.
        in_process: train in this process, one run after another (starts faster; a crash
            stops the comparison).
        datasets: a ``(train, test)`` pair of :class:`torch.utils.data.Dataset` objects
            instead of ``base.dataset``. Dataset objects cannot cross into the per-run
            subprocesses, so with them every run goes in-process, one at a time. Images
            are (C, H, W) tensors, uint8 (normalised with the training set's statistics)
            or float (used as given); attn2d adds no augmentation.
        num_classes: with ``datasets``: the number of classes (default:
            ``len(train.classes)``).
        command: the command line, recorded in the report.
        costs: measure the cost columns after the runs (:func:`measure_costs`), unless
            ``costs.json`` already holds every mechanism.
        html: also write the self-contained ``results.html``.
        executor: where the runs go (e.g. :class:`attn2d.slurm.SlurmExecutor`); default
            this machine, as ``jobs`` and ``in_process`` say. When runs are left under way
            (a detached SLURM array), no report is written and the result holds
            ``"pending"``: the labels of those runs.

    Only one ``compare`` or ``train`` writes a folder at a time (:mod:`attn2d.lock`).
    """
    specs = _check_specs(mechanisms)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError(f"attn2d compare: expected at least one seed, got {seeds!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"attn2d compare: expected --jobs >= 1, got {jobs!r}")
    names = [run_name(spec, s) for spec in specs for s in seed_list]
    if len(set(names)) != len(names):
        raise ValueError(f"attn2d compare: expected specs with distinct folder names, got {specs}")
    if executor is not None and (jobs > 1 or in_process or datasets is not None):
        raise ValueError("attn2d compare: expected --jobs, --in-process and dataset objects "
                         "only with the local executor, got them with another executor")
    in_process = in_process or datasets is not None
    if in_process and jobs > 1:
        raise ValueError("attn2d compare: expected --jobs 1 with in-process runs (dataset "
                         f"objects or --in-process), got --jobs {jobs}")
    # With another executor the runs resolve the device where they run.
    device = resolve_device(base.device) if executor is None else None
    data = None
    if datasets is not None:
        from .data import data_from_datasets

        train_set, test_set = datasets
        if num_classes is None and not hasattr(train_set, "classes"):
            raise ValueError("attn2d compare: expected num_classes with datasets that have no "
                             ".classes attribute, got none")
        classes = num_classes if num_classes is not None else len(train_set.classes)
        data = data_from_datasets(train_set, test_set, classes, device, seed=0,
                                  num_workers=base.num_workers)
        base = dataclasses.replace(base, dataset=data.info.name)
    base = base.resolved()
    if base.threads is None and device is not None and device.type == "cpu" and jobs > 1:
        base = dataclasses.replace(base, threads=default_threads(jobs))
    base = dataclasses.replace(base, progress=base.progress and in_process).check()
    out = Path(out)
    if executor is None:
        executor = LocalExecutor(jobs, in_process, data, device)
    with FolderLock(out, "attn2d compare"):
        plans = plan_runs(specs, base, seed_list, out)
        todo = sum(not p.finished for p in plans)
        print(f"attn2d compare: {len(specs)} models x {len(seed_list)} seeds = {len(plans)} "
              f"runs ({len(plans) - todo} finished), {executor.describe()}, in {out}",
              flush=True)
        write_json(out / "comparison.json", {"specs": specs, "seeds": seed_list,
                                              "command": command,
                                              "executor": executor.settings()})
        failed = executor.run(plans)
        if costs and not _measured(out, specs):
            executor.measure_costs(out, specs)
        given_up = {(f["mechanism"], f["seed"]) for f in failed}
        pending = [p.label for p in plans
                   if not p.finished and (p.spec, str(p.seed)) not in given_up]
        if pending:
            return {"failed": failed, "pending": pending}
        report = build_report([out])
        report["failed"] = failed
        write_report(report, out, html=html)
    return report


# ----------------------------------------------------------------------------- costs


def _measured(out: Path, specs: Sequence[str]) -> bool:
    """Whether ``costs.json`` already holds every mechanism (a rerun measures nothing
    again, so its table stays the same)."""
    path = out / "costs.json"
    return path.is_file() and set(specs) <= set(json.loads(path.read_text())["rows"])


def _finished_configs(out: Path, specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One finished run's saved config per mechanism (any seed: costs ignore the weights)."""
    found = {}
    for spec in specs:
        for result in sorted((out / "runs").glob(f"{_slug(spec)}-seed*/result.json")):
            found[spec] = json.loads(result.read_text())["config"]
            break
    return found


def measure_costs(out: str | Path, specs: Sequence[str], device: torch.device | str = "cpu",
                  budget_s: float = 2.0) -> dict[str, Any]:
    """Time every model of a comparison in this one process and store ``costs.json``.

    For each mechanism with a finished run: the forward latency of a batch in eval mode
    (no grad), the time of a training step (forward, loss, backward, optimiser step) and
    the allocator's peak memory of a training step above what was allocated before it
    (CUDA ``max_memory_allocated``; on the CPU the allocator's records). Steps of all models
    alternate round by round (:func:`attn2d.timing.time_interleaved`), so load on a shared
    machine hits them alike. Eager execution, the runs' batch size, autocast and layout.
    """
    out, device = Path(out), torch.device(device)
    configs = _finished_configs(out, specs)
    if not configs:
        return {}
    forward, train_steps, nets = {}, {}, {}
    for spec, config in configs.items():
        forward[spec], train_steps[spec], nets[spec] = _cost_steps(config, device)
    latency = time_interleaved(forward, budget_s, device=device)
    step = time_interleaved(train_steps, budget_s, device=device)
    rows = {}
    for spec, config in configs.items():
        steps_per_epoch = config["train_images"] // config["batch_size"] \
            if "train_images" in config else None
        rows[spec] = {
            "forward_ms": 1e3 * latency[spec], "train_step_ms": 1e3 * step[spec],
            "epoch_s": step[spec] * steps_per_epoch if steps_per_epoch else None,
            "train_peak_mib": _train_peak(nets[spec], train_steps[spec], device) / 2**20,
        }
    any_config = next(iter(configs.values()))
    costs = {"device": _describe_device(device), "torch": torch.__version__,
             "threads": torch.get_num_threads(), "batch_size": any_config["batch_size"],
             "amp": any_config["amp"], "channels_last": any_config["channels_last"],
             "execution": "eager", "rows": rows}
    write_json(out / "costs.json", costs)
    return costs


def _describe_device(device: torch.device) -> str:
    """The device and the machine, as the cost footnote names them: ``cuda:0 (NVIDIA
    H100 80GB HBM3) on node gpu017``, ``cpu on host vm`` (SLURM's node name in a job)."""
    name = ""
    if device.type == "cuda":
        name = f" ({torch.cuda.get_device_name(device)})"
    node = os.environ.get("SLURMD_NODENAME")
    where = f"node {node}" if node else f"host {socket.gethostname()}"
    return f"{device}{name} on {where}"


def _train_peak(net: torch.nn.Module, step: Callable[[], None], device: torch.device) -> int:
    # Gradients of the previous step would be freed inside the measured one; a training
    # step of the loop starts without them too (zero_grad(set_to_none=True)).
    net.zero_grad(set_to_none=True)
    return peak_memory(step, device)


def _cost_steps(config: dict[str, Any], device: torch.device
                ) -> tuple[Callable[[], None], Callable[[], None], torch.nn.Module]:
    torch.manual_seed(0)
    net = build_model(config).to(device)
    memory = torch.channels_last if config.get("channels_last") else torch.contiguous_format
    net = net.to(memory_format=memory)
    shape = (config["batch_size"], config["in_channels"], config["input_size"],
             config["input_size"])
    x = torch.randn(shape, device=device).contiguous(memory_format=memory)
    y = torch.randint(0, config["num_classes"], (shape[0],), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    amp = config.get("amp", "none")

    def forward() -> None:
        net.eval()
        with torch.no_grad(), autocast(device, amp):
            net(x)

    def train_step() -> None:
        net.train()
        with autocast(device, amp):
            loss = F.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return forward, train_step, net
