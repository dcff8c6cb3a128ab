"""Timing primitives: interleaved medians and the allocator's peak memory of one call.

Used by ``attn2d bench`` and by the cost pass of ``attn2d compare``.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["CLOCKS", "peak_memory", "time_interleaved"]

# One timed sample lasts at least this long (several calls of a fast step), so timer
# resolution and Python overhead stay small against the step itself.
_MIN_SAMPLE_S = 2e-3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    steps: dict[str, Callable[[], None]],
    budget_s: float = 0.5,
    min_rounds: int = 5,
    max_rounds: int = 100,
    device: torch.device | str = "cpu",
    clock: str = "wall",
) -> dict[str, float]:
    """Median seconds per call of each step, the steps alternating round by round.

    Each step is called twice first (warm-up, then a probe that sets how many calls make
    one sample); then ``rounds`` samples of every step, as many rounds as fit ``budget_s``
    within [min_rounds, max_rounds]. The order rotates every round, and each sample starts
    with one untimed call. ``clock="cpu"`` counts
    the process's CPU time instead of wall time: with one thread on a shared machine that
    is the latency the step would have on an idle core (time spent preempted is not counted).
    """
    device = torch.device(device)
    now = _clock(clock)
    names = list(steps)
    probe: dict[str, float] = {}
    for name in names:
        steps[name]()
        _sync(device)
        start = now()
        steps[name]()
        _sync(device)
        probe[name] = now() - start
    calls = {n: max(1, math.ceil(_MIN_SAMPLE_S / max(t, 1e-9))) for n, t in probe.items()}
    per_round = sum((calls[n] + 1) * probe[n] for n in names) or 1e-9
    rounds = max(min_rounds, min(max_rounds, int(budget_s / per_round)))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            step, n = steps[name], calls[name]
            # One untimed call first: the previous step left the allocator's free lists
            # shaped for its own tensors, and re-faulting fresh pages would be charged here.
            step()
            _sync(device)
            start = now()
            for _ in range(n):
                step()
            _sync(device)
            samples[name].append((now() - start) / n)
    return {n: statistics.median(s) for n, s in samples.items()}


CLOCKS = ("wall", "cpu")


def _clock(clock: str) -> Callable[[], float]:
    if clock == "wall":
        return time.perf_counter
    if clock == "cpu":
        return time.process_time
    raise ValueError(f"bench: expected clock in {CLOCKS}, got {clock!r}")


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
        raise ValueError(f"bench: expected a cpu or cuda device for peak memory, got {device}")
    return _cpu_peak(step)


def _cpu_peak(step: Callable[[], None]) -> int:
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
