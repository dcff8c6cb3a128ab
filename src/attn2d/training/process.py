"""Where a run executes: its device, its rank among torchrun processes, and stop requests
(SIGINT/SIGTERM) that every process agrees on."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from .._base.errors import Attn2dError

__all__ = ["Process", "StopRequest", "resolve_device", "start_process"]


@dataclass
class Process:
    """This process's place in a (possibly distributed) run."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, *values: Tensor) -> list[Tensor]:
        if self.world == 1:
            return list(values)
        packed = torch.stack([v.double() for v in values])
        dist.all_reduce(packed)
        return list(packed.unbind())


def resolve_device(device: str) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; a clear error for the rest."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps", "xpu"):
        raise Attn2dError(f"expected --device auto, cpu, cuda or cuda:N, got "
                          f"{device!r}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise Attn2dError(f"expected --device cpu (no CUDA GPU is available to "
                          f"this process), got {device!r}")
    if parsed.type == "cuda" and parsed.index is not None and \
            parsed.index >= torch.cuda.device_count():
        raise Attn2dError(f"expected a CUDA device index below "
                          f"{torch.cuda.device_count()}, got {device!r}")
    return parsed


def start_process(device: str) -> Process:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = resolve_device(device)
    if world == 1:
        return Process(0, 1, chosen)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        torch.cuda.set_device(local)
        chosen = torch.device(f"cuda:{local}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Process(dist.get_rank(), world, chosen)


class StopRequest:
    """SIGINT/SIGTERM (or the given ``signals``) set a flag that the loop reads after each
    step (never mid-step)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signal = 0
        self.signals = signals

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in self.signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def agreed(self, process: Process) -> bool:
        # Every rank must stop after the same step, else DDP waits forever for the others.
        if process.world == 1:
            return bool(self.signal)
        flag = torch.tensor([float(self.signal)], device=process.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signal = self.signal or int(flag.item())
        return bool(self.signal)
