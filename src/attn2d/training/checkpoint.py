"""Checkpoints: what ``attn2d train`` writes, and reading them (and plain state dicts) safely.

Everything is loaded with ``weights_only=True``: a checkpoint holds tensors, numbers,
strings, lists and dicts only (RNG states included), never pickled code.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._base.errors import Attn2dError
from .._base.io import save_torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "read_checkpoint",
    "read_state_dict",
    "restore_rng",
    "rng_state",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "attn2d-checkpoint"
CHECKPOINT_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # version 1 (attn2d 0.1) loads for inference, not for resuming
PathLike = str | os.PathLike[str]


def _load(path: PathLike, what: str) -> Any:
    """``torch.load(weights_only=True)`` with one clear error for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise Attn2dError(f"expected {what} file, got no file at {path}")
    if path.stat().st_size == 0:
        raise Attn2dError(f"expected {what} at {path}, got an empty file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for truncated or foreign files
        detail = next((line for line in str(err).splitlines() if line.strip()), "")
        raise Attn2dError(f"expected {what} at {path}, got an unreadable file "
                          f"({type(err).__name__}{': ' + detail[:160] if detail else ''})"
                          ) from None


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {sorted(map(str, obj))[:8]}"
    return type(obj).__name__


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """An attn2d checkpoint (``last.pt``, ``best.pt``); a clear error for anything else."""
    return _checked(_load(path, "an attn2d checkpoint"), path)


def _checked(checkpoint: object, path: PathLike) -> dict[str, Any]:
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise Attn2dError(f"expected an attn2d checkpoint at {path} (written by "
                          f"attn2d train), got {_describe(checkpoint)}")
    if checkpoint.get("version") not in _READABLE_VERSIONS:
        raise Attn2dError(f"expected checkpoint version {CHECKPOINT_VERSION} at {path}, "
                          f"got {checkpoint.get('version')!r}")
    return checkpoint


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def read_state_dict(path: PathLike) -> dict[str, Tensor]:
    """Model weights from an attn2d checkpoint or a plain state dict.

    Accepts what ``torch.save(model.state_dict(), path)`` writes (torchvision, timm or any
    model), the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
    ``{"state_dict_ema": ...}``) and attn2d checkpoints. A ``module.`` prefix left by
    DataParallel/DistributedDataParallel is removed.
    """
    obj = _load(path, "an attn2d checkpoint or a state dict")
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _checked(obj, path)["model"]
    if not _is_state_dict(obj) and isinstance(obj, Mapping):
        obj = next((obj[k] for k in ("state_dict", "model", "state_dict_ema", "model_state")
                    if _is_state_dict(obj.get(k))), obj)
    if not _is_state_dict(obj):
        raise Attn2dError(f"expected a state dict (parameter name -> tensor) or an "
                          f"attn2d checkpoint at {path}, got {_describe(obj)}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def save_checkpoint(state: dict[str, Any], path: PathLike) -> Path:
    """Write a checkpoint atomically, stamped with the format and version."""
    return save_torch({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state},
                      path)


# -- random number generators -------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain lists, so ``weights_only=True`` can load it."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
