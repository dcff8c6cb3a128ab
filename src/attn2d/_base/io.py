"""Atomic file writes: a reader never sees a half-written file, even if the writer is killed.

One writer per kind of file; everything attn2d writes goes through these.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "copy_file",
    "save_figure",
    "save_npz",
    "save_torch",
    "write_atomic",
    "write_json",
    "write_jsonl",
]

PathLike = str | os.PathLike[str]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def copy_file(source: PathLike, path: PathLike) -> Path:
    """A copy of ``source`` at ``path``, atomically."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)


def write_json(path: PathLike, value: Any, indent: int | None = 2) -> Path:
    """``value`` as JSON (one trailing newline)."""
    return write_atomic(path, json.dumps(value, indent=indent) + "\n")


def write_jsonl(path: PathLike, rows: Iterable[Any]) -> Path:
    """One JSON object per line."""
    return write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def save_torch(obj: Any, path: PathLike) -> Path:
    """:func:`torch.save` atomically (checkpoints)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_npz(path: PathLike, **arrays: Any) -> Path:
    """NumPy arrays in one compressed ``.npz``."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


def save_figure(fig: Any, path: PathLike, dpi: int = 100, fmt: str = "png") -> Path:
    """A matplotlib figure as PNG (or ``fmt``); duck-typed, so this module never imports
    matplotlib."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return Path(path)
