"""Capturing attention maps: the explicit switch, and recorders built on forward hooks.

Every mechanism passes the weights it applies through an :class:`~attn2d.AttentionMap`
tap (an identity), so a hook on it sees exactly the tensor that scales the features.
Gates pass through their tap on every call. Position and criss-cross maps are built, and
passed through their tap, only while the tap's ``capture`` flag is on: the fast paths never
form them. Nothing else switches capture on: not a hook on a tap, not a global hook, not a
profiler such as :class:`~torch.utils.flop_counter.FlopCounterMode`.

- :func:`capturing`: capture on for a whole model inside a ``with`` block;
- :class:`AttentionRecorder`: capture on and a hook on every tap, recording what they see;
- :class:`FeatureRecorder`: the outputs (or inputs) of chosen layers.

Both recorders attach on ``__enter__`` and detach on ``__exit__``: outside the ``with``
block the model runs exactly as before. No plotting here (see :mod:`attn2d.viz`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._base.errors import Attn2dError
from ._common import (
    AttentionMap,
)

__all__ = [
    "DISTRIBUTION_KINDS",
    "AttentionRecorder",
    "FeatureRecorder",
    "MapRecord",
    "attention_maps",
    "capturing",
    "merge_records",
]

# Kinds whose rows are probability distributions (softmax), as opposed to sigmoid gates.
DISTRIBUTION_KINDS = frozenset({"position", "criss-cross", "channel-affinity", "mixture"})


@dataclass
class MapRecord:
    """One attention map seen during a forward pass.

    Attributes:
        path: module path of the module that owns the :class:`AttentionMap` (its parent),
            ``""`` for the root.
        name: the attribute name of the map in its parent (e.g. ``"weights"``).
        kind: the map's kind (``"channel"``, ``"spatial"``, ``"position"``, …).
        call: 0 for the first time this map fired in the forward pass, 1 for the second
            (RCCA's second pass), and so on.
        tensor: the weights, detached (on the CPU unless the recorder was told otherwise).
        feature_size: (H, W) of the feature map entering the innermost running module that
            contains the map, when known; needed to unflatten ``"position"`` maps.
    """

    path: str
    name: str
    kind: str
    call: int
    tensor: Tensor
    feature_size: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        """``where:kind`` plus ``#n`` for repeated calls: unique within one forward pass.

        ``where`` is the parent path when the map has the usual attribute name
        ``weights``, else the map's own path (DynamicCBAM has two ``"mixture"`` maps).
        """
        where = ".".join(p for p in (self.path, "" if self.name == "weights" else self.name) if p)
        return f"{where or '<root>'}:{self.kind}" + (f"#{self.call + 1}" if self.call else "")

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.path, self.name, self.call)


def attention_maps(model: nn.Module) -> list[tuple[str, str, AttentionMap]]:
    """Every ``(parent_path, attribute_name, map)`` in ``model``, in registration order."""
    found = []
    for path, module in model.named_modules():
        if isinstance(module, AttentionMap):
            parent, _, name = path.rpartition(".")
            found.append((parent, name, module))
    return found


def _taps(model: nn.Module, kinds: Iterable[str] | None) -> list[tuple[str, str, AttentionMap]]:
    wanted = None if kinds is None else frozenset(kinds)
    return [t for t in attention_maps(model) if wanted is None or t[2].kind in wanted]


@contextlib.contextmanager
def capturing(model: nn.Module, kinds: Iterable[str] | None = None) -> Iterator[nn.Module]:
    """Switch capture on for every tap of ``model`` (or those of ``kinds``) inside the block.

    Position and criss-cross maps are then built explicitly and pass through their taps, so
    hooks on them fire; the output is the same up to rounding. On exit every flag is set
    back to what it was.

    >>> with capturing(model), torch.no_grad():    # doctest: +SKIP
    ...     model(x)                                 # hooks on any tap see the map
    """
    if not isinstance(model, nn.Module):
        raise Attn2dError(f"capturing: expected an nn.Module, got {type(model).__name__}")
    taps = [amap for _, _, amap in _taps(model, kinds)]
    before = [amap.capture for amap in taps]
    for amap in taps:
        amap.capture = True
    try:
        yield model
    finally:
        for amap, flag in zip(taps, before, strict=True):
            amap.capture = flag


def _spatial_size(args: tuple[Any, ...]) -> tuple[int, int] | None:
    first = args[0] if args else None
    if isinstance(first, Tensor) and first.dim() == 4:
        return int(first.shape[2]), int(first.shape[3])
    return None


class AttentionRecorder:
    """Record every attention map of a model while inside a ``with`` block: capture on for
    its taps (as :func:`capturing`) and a forward hook on each.

    >>> with AttentionRecorder(model) as rec:          # doctest: +SKIP
    ...     model(x)
    >>> rec.maps[("layer1.0.attn", "spatial")][0].shape  # doctest: +SKIP

    Each forward pass of ``model`` starts a new list in :attr:`forwards`; :attr:`records`
    and :attr:`maps` describe the latest one. A map that fires several times in one pass
    (RCCA's shared-weight recurrence) gives one record per call, in order.

    Args:
        model: any module containing :class:`AttentionMap` hook points.
        kinds: record only these kinds (the others keep their capture flag, so e.g.
            position maps are not built); ``None`` records every kind.
        to_cpu: move recorded maps to the CPU (default), so GPU memory is not held.
    """

    def __init__(
        self, model: nn.Module, kinds: Iterable[str] | None = None, to_cpu: bool = True
    ) -> None:
        if not isinstance(model, nn.Module):
            raise Attn2dError(f"AttentionRecorder: expected an nn.Module, got "
                              f"{type(model).__name__}")
        self.model = model
        self.kinds = None if kinds is None else frozenset(kinds)
        self.to_cpu = to_cpu
        self.forwards: list[list[MapRecord]] = []
        self._handles: list[RemovableHandle] = []
        self._running: list[tuple[int, int] | None] = []  # input sizes of running ancestors
        self._calls: dict[tuple[str, str], int] = defaultdict(int)
        self._new_forward = True
        self._capture: contextlib.AbstractContextManager | None = None

    # -- hooks -----------------------------------------------------------------------------
    def __enter__(self) -> AttentionRecorder:
        if self._handles:
            raise RuntimeError("AttentionRecorder: already recording (nested 'with')")
        targets = _taps(self.model, self.kinds)
        ancestors: dict[str, nn.Module] = {}
        modules = dict(self.model.named_modules())
        for parent, name, amap in targets:
            self._handles.append(amap.register_forward_hook(self._map_hook(parent, name)))
            # Every ancestor tracks its input size: the innermost running one with a 4-D
            # input tells the spatial size of the features that the map belongs to.
            parts = parent.split(".") if parent else []
            for depth in range(len(parts) + 1):
                path = ".".join(parts[:depth])
                ancestors[path] = modules[path]
        for module in ancestors.values():
            self._handles.append(module.register_forward_pre_hook(self._enter_module))
            self._handles.append(module.register_forward_hook(self._leave_module))
        self._handles.append(self.model.register_forward_pre_hook(self._start_forward))
        self._capture = capturing(self.model, self.kinds)
        self._capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._running.clear()
        if self._capture is not None:
            self._capture.__exit__(None, None, None)
            self._capture = None

    def _start_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        # Registered last, so it runs after the root's size pre-hook: only reset counters.
        if not self._running[:-1]:  # the root itself, not a recursive call
            self._calls.clear()
            self._new_forward = True

    def _enter_module(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._running.append(_spatial_size(args))

    def _leave_module(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._running:
            self._running.pop()

    def _map_hook(self, parent: str, name: str):
        def hook(module: AttentionMap, args: tuple[Any, ...], output: Tensor) -> None:
            if self._new_forward or not self.forwards:
                self.forwards.append([])
                self._new_forward = False
            call = self._calls[(parent, name)]
            self._calls[(parent, name)] += 1
            size = next((s for s in reversed(self._running) if s is not None), None)
            tensor = output.detach()
            if self.to_cpu:
                tensor = tensor.cpu()
            self.forwards[-1].append(MapRecord(parent, name, module.kind, call, tensor, size))

        return hook

    # -- results -----------------------------------------------------------------------------
    @property
    def records(self) -> list[MapRecord]:
        """The maps of the latest forward pass, in the order they fired."""
        return self.forwards[-1] if self.forwards else []

    @property
    def maps(self) -> dict[tuple[str, str], list[Tensor]]:
        """Latest forward pass: ``(parent_path, kind) -> [tensor per call]``, in call order
        (two maps of one kind in one parent, as DynamicCBAM's mixtures, share a list)."""
        grouped: dict[tuple[str, str], list[Tensor]] = defaultdict(list)
        for r in self.records:
            grouped[(r.path, r.kind)].append(r.tensor)
        return dict(grouped)

    def merged(self) -> list[MapRecord]:
        """All forward passes so far, each map's tensors joined along the batch dimension."""
        return merge_records(self.forwards)

    def save(self, path: str | os.PathLike[str], indices: Sequence[int] | None = None) -> Path:
        """Every recorded map as arrays in one ``.npz``, for plotting with other tools.

        All forward passes so far are joined along the batch (:meth:`merged`). Each map is
        keyed by its label, ``"<module path>:<kind>"`` (``#2`` for a second pass, as RCCA's);
        ``index`` holds the input index of every batch row (``indices`` if given, else
        0, 1, ...), ``feature_size`` per label the (H, W) of the features when known::

            maps = numpy.load("maps.npz")
            maps["block2.attn.spatial_gate:spatial"]  # (B, 1, H, W)
        """
        from .._base.io import save_npz

        records = self.merged()
        if not records:
            raise Attn2dError("AttentionRecorder: expected recorded maps to save, got none (run "
                              "the model inside the with block first)")
        rows = next((int(r.tensor.shape[0]) for r in records if r.kind != "mixture"), 0)
        index = list(range(rows)) if indices is None else [int(i) for i in indices]
        if len(index) != rows:
            raise Attn2dError(f"AttentionRecorder: expected {rows} indices (one per recorded "
                              f"input), got {len(index)}")
        arrays = {r.label: r.tensor.float().numpy() for r in records}
        sizes = {r.label: list(r.feature_size) for r in records if r.feature_size}
        return save_npz(path, index=np.asarray(index, dtype=np.int64),
                        feature_size=np.asarray(json.dumps(sizes)), **arrays)

    def clear(self) -> None:
        """Forget what was recorded (hooks stay attached inside the ``with`` block)."""
        self.forwards.clear()
        self._new_forward = True


def merge_records(forwards: Sequence[Sequence[MapRecord]]) -> list[MapRecord]:
    """Join the same map across forward passes along dim 0 (stacking ``"mixture"`` maps,
    which have no batch dimension)."""
    order: dict[tuple[str, str, int], list[MapRecord]] = {}
    for records in forwards:
        for r in records:
            order.setdefault(r.key, []).append(r)
    merged = []
    for group in order.values():
        first = group[0]
        tensors = [r.tensor for r in group]
        joined = torch.stack(tensors) if first.kind == "mixture" else torch.cat(tensors)
        merged.append(MapRecord(first.path, first.name, first.kind, first.call, joined,
                                first.feature_size))
    return merged


class FeatureRecorder:
    """Record the outputs (or inputs) of chosen layers while inside a ``with`` block.

    Args:
        model: the model.
        layers: module paths (as in ``model.named_modules()``) or the modules themselves.
        inputs: record each layer's first input instead of its output.
        to_cpu: move recorded tensors to the CPU.

    ``recorder[path]`` is the latest tensor of that layer; :attr:`features` keeps one entry
    per call.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str | nn.Module],
        inputs: bool = False,
        to_cpu: bool = True,
    ) -> None:
        modules = dict(model.named_modules())
        by_identity = {id(m): p for p, m in modules.items()}
        self.layers: dict[str, nn.Module] = {}
        for layer in layers:
            if isinstance(layer, nn.Module):
                if id(layer) not in by_identity:
                    raise Attn2dError("FeatureRecorder: expected a submodule of the model, got "
                                      f"a {type(layer).__name__} that is not in it")
                self.layers[by_identity[id(layer)]] = layer
            elif isinstance(layer, str):
                if layer not in modules:
                    valid = ", ".join(p for p in modules if p) or "(none)"
                    raise Attn2dError(f"FeatureRecorder: expected a module path, got {layer!r}; "
                                      f"valid: {valid}")
                self.layers[layer] = modules[layer]
            else:
                raise Attn2dError("FeatureRecorder: expected module paths or modules, got "
                                  f"{type(layer).__name__}")
        self.inputs = inputs
        self.to_cpu = to_cpu
        self.features: dict[str, list[Tensor]] = defaultdict(list)
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> FeatureRecorder:
        for path, module in self.layers.items():
            if self.inputs:
                handle = module.register_forward_pre_hook(self._hook(path, from_input=True))
            else:
                handle = module.register_forward_hook(self._hook(path, from_input=False))
            self._handles.append(handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, path: str, from_input: bool):
        def hook(module: nn.Module, args: tuple[Any, ...], *output: Any) -> None:
            value = args[0] if from_input else output[0]
            if isinstance(value, Tensor):
                value = value.detach()
                self.features[path].append(value.cpu() if self.to_cpu else value)

        return hook

    def __getitem__(self, path: str) -> Tensor:
        if not self.features.get(path):
            raise KeyError(f"FeatureRecorder: nothing recorded for {path!r}")
        return self.features[path][-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)
