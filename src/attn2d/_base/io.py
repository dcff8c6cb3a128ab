"""Atomic file writes: a reader never sees a half-written file, even if the writer is killed.

One writer per kind of file; everything attn2d writes goes through these.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import Attn2dError

__all__ = [
    "atomic_path",
    "copy_file",
    "read_json",
    "read_jsonl",
    "read_npz",
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
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        full = _disk_full(path, err)
        if full is None:
            raise
        raise full from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except Exception as err:
        full = _disk_full(path, err)
        if full is None:
            raise
        raise full from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Below this many free bytes a failed write is taken for a full disk: writers such as
# torch.save report ENOSPC as their own RuntimeError, without the errno.
_NEARLY_FULL = 1 << 20


def _disk_full(path: Path, err: BaseException) -> Attn2dError | None:
    """The one-line error for a write that failed because the disk is full, else None."""
    if isinstance(err, OSError) and err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    if not (isinstance(err, OSError) or free < _NEARLY_FULL):
        return None
    kept = f"; the previous {path.name} is kept" if path.exists() else ""
    return Attn2dError(f"expected room to write {path}, got a full disk ({free:,} bytes free "
                       f"on its file system){kept}")


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


def _unreadable(path: Path, what: str, detail: str) -> Attn2dError:
    return Attn2dError(f"expected {what} at {path}, got {detail}")


def read_json(path: PathLike, what: str = "a JSON file") -> Any:
    """The JSON value in ``path``; one error naming the file when it is missing or invalid
    (truncated, by a full disk or a killed writer that did not write atomically)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _unreadable(path, what, "no file") from None
    except UnicodeDecodeError:
        raise _unreadable(path, what, "binary data") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise _unreadable(path, what, f"invalid JSON at line {err.lineno}, column "
                                      f"{err.colno} ({err.msg})") from None


def read_jsonl(path: PathLike, what: str = "a JSON-lines file") -> list[Any]:
    """One JSON value per non-empty line of ``path``; errors name the file and line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise _unreadable(path, what, "no file") from None
    except UnicodeDecodeError:
        raise _unreadable(path, what, "binary data") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise _unreadable(path, what, f"invalid JSON on line {number} ({err.msg})"
                              ) from None
    return rows


def read_npz(path: PathLike, keys: Iterable[str], what: str = "a NumPy .npz file"
             ) -> dict[str, Any]:
    """The arrays ``keys`` of an ``.npz`` file, loaded; one error naming the file when it
    is missing, truncated or lacks a key."""
    import numpy as np

    path = Path(path)
    try:
        with np.load(path) as saved:
            missing = [k for k in keys if k not in saved.files]
            if missing:
                raise _unreadable(path, what, f"no {', '.join(missing)} in it")
            return {k: saved[k] for k in keys}
    except FileNotFoundError:
        raise _unreadable(path, what, "no file") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        if isinstance(err, Attn2dError):
            raise
        raise _unreadable(path, what, f"an unreadable file ({type(err).__name__}: "
                                      f"{str(err)[:120]})") from None
