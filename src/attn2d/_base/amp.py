"""Autocast by name, the one switch for mixed precision in training, timing and benchmarks."""

from __future__ import annotations

import contextlib

import torch

from .errors import Attn2dError

__all__ = ["AMP_DTYPES", "autocast"]

AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16,
                                             "fp16": torch.float16}


def autocast(device: torch.device | str, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in ``"none"``, ``"bf16"``, ``"fp16"`` (``"fp32"`` too)."""
    device = torch.device(device)
    if amp == "fp32":
        amp = "none"
    if amp not in AMP_DTYPES:
        raise Attn2dError(f"expected amp in {tuple(AMP_DTYPES)}, got {amp!r}")
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
