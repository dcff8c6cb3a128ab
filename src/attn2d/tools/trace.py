"""Shape tracing: one forward pass with hooks on every module, listing the input and output
shapes in call order (``attn2d trace``)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.tables import Table
from ..modules.capture import capturing

__all__ = ["ShapeRow", "ShapeTrace", "trace_shapes"]


@dataclass
class ShapeRow:
    """One module call: its path (``""`` is the model), class, and the shapes it saw.

    ``depth`` is the call nesting and ``name`` the path relative to the calling module's;
    a submodule called by a module other than its parent shows its path from that caller.
    """

    path: str
    name: str
    type: str
    depth: int
    inputs: str
    output: str
    params: int


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return "×".join(str(d) for d in value.shape) if value.dim() else "scalar"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in value.items()) + "}"
    return type(value).__name__


@dataclass
class ShapeTrace:
    """The rows of :func:`trace_shapes`; ``str(trace)`` renders them as an indented table."""

    rows: list[ShapeRow]

    def render(self, fmt: str = "text") -> str:
        columns = [("name", "module"), ("type", "type"), ("inputs", "input"),
                   ("output", "output"), ("params", "params")]
        rows = [{**asdict(r), "name": "  " * r.depth + r.name} for r in self.rows]
        table = Table(columns, rows, {"params": "{:,}".format},
                      align_left=("name", "type", "inputs", "output"))
        return table.render(fmt).rstrip("\n")

    __str__ = render


def trace_shapes(
    model: nn.Module, *inputs: Any, include_maps: bool = True, capture: bool = False
) -> ShapeTrace:
    """Run ``model(*inputs)`` once (no grad) and list every module call in call order.

    Tracing runs the model's own path: hooks never switch capture on, so position and
    criss-cross taps stay silent (their fast paths never form the map) unless ``capture``.

    Args:
        model: the model (its train/eval mode is kept).
        inputs: the forward arguments, e.g. one (B, C, H, W) tensor.
        include_maps: also list the :class:`~attn2d.AttentionMap` taps that fire.
        capture: switch capture on for the pass (:func:`attn2d.capture.capturing`), so the
            explicit position and criss-cross maps are built and their taps listed.

    Params are each module's own (not recursive), so the column sums to the model total.
    """
    from ..modules import AttentionMap

    if not isinstance(model, nn.Module):
        raise Attn2dError(f"trace_shapes: expected an nn.Module, got {type(model).__name__}")
    rows: list[ShapeRow] = []
    running: list[ShapeRow] = []  # the calls in progress, outermost first
    handles = []

    def enter(path: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            caller = running[-1].path if running else None
            inside = caller is not None and (caller == "" or path.startswith(caller + "."))
            name = path[len(caller) + bool(caller):] if inside else (path or "(model)")
            row = ShapeRow(path, name, type(module).__name__, len(running),
                           _describe(args[0] if len(args) == 1 else args), "?",
                           sum(p.numel() for p in module.parameters(recurse=False)))
            rows.append(row)
            running.append(row)

        return hook

    def leave(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        running.pop().output = _describe(output)

    try:
        for path, module in model.named_modules():
            if not include_maps and isinstance(module, AttentionMap):
                continue
            handles.append(module.register_forward_pre_hook(enter(path)))
            handles.append(module.register_forward_hook(leave))
        with torch.no_grad(), capturing(model) if capture else contextlib.nullcontext():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return ShapeTrace(rows)
