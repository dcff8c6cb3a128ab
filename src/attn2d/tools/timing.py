"""Timing primitives: interleaved medians of repeated calls, and the peak memory of one call.

* :func:`measure_interleaved` / :func:`time_interleaved`: seconds per call of several steps
  measured in alternating rounds, each round in a rotated order, so a burst of load on a
  shared machine hits all of them alike and ratios between them come from the same rounds;
  the median over rounds, with the quartiles that say how far the rounds disagree.
* :func:`peak_memory`: bytes allocated at the highest point of one call above what was
  live before it. On CUDA from :func:`torch.cuda.max_memory_allocated`; on CPU, where
  PyTorch keeps no peak statistic, :func:`cpu_peak_memory` sums the allocation and free
  records of :mod:`torch.profiler` (``profile_memory=True``) in time order to a running
  maximum. The records come from the CPU allocator itself, so buffers a kernel allocates
  internally are counted.
* :func:`get_clock`: ``"wall"`` (:func:`time.perf_counter`) or ``"cpu"``
  (:func:`time.process_time`; with one thread on a shared machine, the latency a step
  would have on an idle core, time spent preempted not counted), or any zero-argument
  callable returning seconds (tests inject a fake one).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._base.errors import Attn2dError

__all__ = ["CLOCKS", "MIN_SAMPLE_S", "Timing", "cpu_peak_memory", "get_clock",
           "measure_interleaved", "peak_memory", "sync", "time_interleaved"]

CLOCKS = ("wall", "cpu")

# One timed sample lasts at least this long (several calls of a fast step), so timer
# resolution and Python overhead stay small against the step itself.
MIN_SAMPLE_S = 2e-3

Clock = str | Callable[[], float]


def get_clock(name: Clock) -> Callable[[], float]:
    """The time source called ``name`` in :data:`CLOCKS`, or ``name`` itself if callable."""
    if callable(name):
        return name
    if name == "wall":
        return time.perf_counter
    if name == "cpu":
        return time.process_time
    raise Attn2dError(f"attn2d timing: expected clock in {CLOCKS}, got {name!r}")


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU does not)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one step over the rounds of :func:`measure_interleaved`.

    Attributes:
        median: the median over rounds (what is reported).
        low, high: the first and third quartiles over rounds.
        rounds: how many rounds (samples) there were.
    """

    median: float
    low: float
    high: float
    rounds: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: how far the rounds disagree."""
        return (self.high - self.low) / self.median if self.median > 0 else 0.0


def measure_interleaved(
    steps: dict[str, Callable[[], None]],
    budget_s: float = 0.5,
    min_rounds: int = 5,
    max_rounds: int = 100,
    device: torch.device | str = "cpu",
    clock: Clock = "wall",
) -> dict[str, Timing]:
    """Seconds per call of each step, the steps alternating round by round.

    Each step is called twice first (warm-up, then a probe that sets how many calls make
    one sample of at least :data:`MIN_SAMPLE_S`); then one sample of every step per round,
    as many rounds as the probes say fit ``budget_s``, within [min_rounds, max_rounds].
    Round r starts at step r mod n of the given order, and each sample starts with one
    untimed call: the previous step left the allocator's free lists shaped for its own
    tensors, and re-faulting fresh pages would be charged here.
    """
    now = get_clock(clock)
    names = list(steps)
    probe: dict[str, float] = {}
    for name in names:
        steps[name]()
        sync(device)
        start = now()
        steps[name]()
        sync(device)
        probe[name] = now() - start
    calls = {n: max(1, math.ceil(MIN_SAMPLE_S / max(t, 1e-9))) for n, t in probe.items()}
    per_round = sum((calls[n] + 1) * probe[n] for n in names) or 1e-9
    rounds = max(min_rounds, min(max_rounds, int(budget_s / per_round)))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            step, n = steps[name], calls[name]
            step()
            sync(device)
            start = now()
            for _ in range(n):
                step()
            sync(device)
            samples[name].append((now() - start) / n)
    timings = {}
    for name, values in samples.items():
        low, _, high = statistics.quantiles(values, n=4, method="inclusive")
        timings[name] = Timing(statistics.median(values), low, high, len(values))
    return timings


def time_interleaved(steps: dict[str, Callable[[], None]], budget_s: float = 0.5,
                     min_rounds: int = 5, max_rounds: int = 100,
                     device: torch.device | str = "cpu", clock: Clock = "wall"
                     ) -> dict[str, float]:
    """The medians of :func:`measure_interleaved` (same arguments)."""
    return {name: t.median for name, t in measure_interleaved(
        steps, budget_s, min_rounds, max_rounds, device, clock).items()}


def peak_memory(step: Callable[[], None], device: torch.device | str = "cpu") -> int:
    """Bytes allocated at the peak of one call of ``step``, above what was live before it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    if device.type != "cpu":
        raise Attn2dError(f"attn2d timing: expected a cpu or cuda device for peak memory, "
                          f"got {device}")
    return cpu_peak_memory(step)


def cpu_peak_memory(step: Callable[[], None]) -> int:
    """The CPU allocator's peak during one call of ``step`` (see the module docstring)."""
    # Kineto reads its log level when it first starts; above 5 it stops printing
    # "profiler_start"/"profiler_stop" lines on every profile.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak
