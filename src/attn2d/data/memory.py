"""Memory for decoded images: how much there is, and one line when it runs out.

Large ``--image-size`` values are checked against the memory available before anything is
decoded, because on Linux an allocation rarely fails: the kernel's out-of-memory killer
ends the process (or a neighbour) instead. Allocations that do fail (``MemoryError``,
torch's ``can't allocate memory``) are named as such, never as a bad image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._base.errors import Attn2dError

__all__ = ["available_memory", "format_bytes", "is_out_of_memory", "out_of_memory"]

# What torch (CPU allocator, CUDA caching allocator), C++ and libc say when an allocation
# fails; torch raises a plain RuntimeError for the CPU allocator.
_OUT_OF_MEMORY_TEXT = ("can't allocate memory", "cannot allocate memory", "out of memory",
                       "bad_alloc")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (host or device memory)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(
        text in str(error).lower() for text in _OUT_OF_MEMORY_TEXT)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _host_available() -> int | None:
    """Bytes the kernel could give this process without swapping: ``MemAvailable``, capped
    by the cgroup (v2) limit of a container."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    cgroup = Path("/sys/fs/cgroup")
    limit, used = _read_int(cgroup / "memory.max"), _read_int(cgroup / "memory.current")
    if limit is not None and used is not None:
        room = max(0, limit - used)
        available = room if available is None else min(available, room)
    return available


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Free bytes on ``device`` (host memory for the CPU); None where it cannot be known."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        return _host_available()
    return None


def format_bytes(n: float) -> str:
    """``1.2 GiB``, ``340 MiB``, ``12 KiB``, ``512 B``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def out_of_memory(what: str, image_size: int, per_image: int,
                  available: int | None = None) -> Attn2dError:
    """The one line for images that do not fit in memory at ``--image-size``."""
    room = f", {format_bytes(available)} available" if available is not None else ""
    return Attn2dError(f"attn2d.data: out of memory while decoding/resizing {what} at "
                       f"--image-size {image_size} ({format_bytes(per_image)} per decoded "
                       f"image{room}); expected a smaller --image-size")
