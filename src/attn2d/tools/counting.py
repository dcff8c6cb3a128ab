"""Counting what a forward pass does, per module: MACs through
:class:`~torch.utils.flop_counter.FlopCounterMode` (with :data:`FLOP_FORMULAS` for the
attention kernels PyTorch leaves at zero), and elementwise work and bytes through a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees every ATen operator.
:mod:`.profiler` turns the counts into its table; the conventions are documented there.
"""


import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..modules import _cross  # noqa: F401  (registers the attn2d::criss_cross operators)
from ..modules._common import AttentionMap

__all__ = ["FLOP_FORMULAS", "ModuleCounts", "flop_counter", "hooked_modules", "run_counted"]

aten = torch.ops.aten


Shape = Sequence[int]


def _sdpa_cpu_flop(
    query_shape: Shape, key_shape: Shape, value_shape: Shape, *args: Any, **kwargs: Any
) -> int:
    """The fused CPU kernel does the same two products as the GPU kernels PyTorch counts."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(
    grad_out_shape: Shape, query_shape: Shape, key_shape: Shape, value_shape: Shape,
    *args: Any, **kwargs: Any,
) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _cross_scores(query_shape: Shape) -> int:
    b, _, h, w = query_shape
    return b * h * w * (h + w)


def _criss_cross_flop(
    query_shape: Shape, key_shape: Shape, value_shape: Shape, *args: Any, **kwargs: Any
) -> int:
    """The fused criss-cross operator does the explicit path's two products: every pixel
    scores its H + W positions (d wide) and sums as many values (C wide)."""
    return 2 * _cross_scores(query_shape) * (query_shape[1] + value_shape[1])


def _criss_cross_backward_flop(
    query_shape: Shape, key_shape: Shape, value_shape: Shape, *args: Any, **kwargs: Any
) -> int:
    """Recomputed scores (d) and p·vᵀ gradient (C), then dv (C), dq and dk (d each)."""
    return 2 * _cross_scores(query_shape) * (3 * query_shape[1] + 2 * value_shape[1])


#: FLOP formulas (shape functions, PyTorch's convention) for attention kernels that
#: ``torch.utils.flop_counter`` leaves at zero; usable as
#: ``FlopCounterMode(custom_mapping=FLOP_FORMULAS)``.
FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flop,
    aten._scaled_dot_product_fused_attention_overrideable: _sdpa_cpu_flop,
    torch.ops.attn2d.criss_cross: _criss_cross_flop,
    torch.ops.attn2d.criss_cross_backward: _criss_cross_backward_flop,
}



def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)


_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu,
              aten._scaled_dot_product_fused_attention_overrideable,
              aten._scaled_dot_product_flash_attention,
              aten._scaled_dot_product_efficient_attention,
              aten._scaled_dot_product_cudnn_attention}
_BIASED = {aten.convolution: 2, aten._convolution: 2, aten.addmm: 0, aten.baddbmm: 0}
# Ops that only move or create data: memory traffic, no arithmetic.
_MOVES = frozenset({
    "clone", "copy", "copy_", "_to_copy", "cat", "stack", "constant_pad_nd", "lift_fresh",
    "lift_fresh_copy", "detach", "alias", "_unsafe_view", "_reshape_alias", "empty", "empty_like",
    "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros", "ones",
    "ones_like", "new_ones", "full", "full_like", "new_full", "fill", "fill_", "zero_",
    "scalar_tensor", "arange", "repeat", "index", "index_select", "gather", "slice_scatter",
    "select_scatter", "as_strided_scatter", "_local_scalar_dense", "flip", "roll", "contiguous",
    "resize_", "set_", "randn", "rand", "normal_", "uniform_", "bernoulli_"
})
_SOFTMAX = frozenset({"_softmax", "_log_softmax", "_safe_softmax"})
_NORMS = frozenset({"native_batch_norm", "_native_batch_norm_legit",
                    "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional",
                    "_batch_norm_with_update", "_batch_norm_no_update", "native_layer_norm",
                    "native_group_norm"})
_WINDOW_POOLS = frozenset({"max_pool2d_with_indices", "max_pool2d", "avg_pool2d",
                           "max_pool1d", "avg_pool1d", "max_pool3d_with_indices", "avg_pool3d"})
_ADAPTIVE_POOLS = frozenset({"_adaptive_avg_pool2d", "adaptive_max_pool2d",
                             "_adaptive_avg_pool3d", "adaptive_max_pool3d"})
_EXTRA_POINTWISE = frozenset({"hardswish", "hardsigmoid", "hardtanh", "mish", "elu", "softplus",
                              "leaky_relu", "threshold", "relu6", "celu", "selu"})
_HEAVY_REDUCTIONS = frozenset({"var", "std", "var_mean", "std_mean", "logsumexp"})


def _tensors(tree: object) -> list[Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, Tensor)]


def _numel(t: object) -> int:
    return t.numel() if isinstance(t, Tensor) else 0


def _read_bytes(t: Tensor) -> int:
    """Bytes actually read: a broadcast (stride-0) dimension is read once."""
    n = math.prod(s for s, st in zip(t.shape, t.stride(), strict=True) if st != 0) if t.dim() else 1
    return n * t.element_size()


def _arg(func: Any, args: tuple, kwargs: dict, name: str, default: object = None) -> object:
    for i, a in enumerate(func._schema.arguments):
        if a.name == name:
            return args[i] if i < len(args) else kwargs.get(name, default)
    return default


def _elementwise(func: Any, name: str, args: tuple, kwargs: dict, out: object) -> int | None:
    """Elementwise ops of one ATen call under the conventions above; None if unknown."""
    first = next(iter(_tensors(args)), None)
    result = next(iter(_tensors(out)), None)
    packet = func._overloadpacket
    if packet in _BIASED:
        bias = args[_BIASED[packet]] if len(args) > _BIASED[packet] else None
        return _numel(result) if isinstance(bias, Tensor) else 0
    if func._overloadpacket in _ATTENTION:
        q, k = args[0], args[1]
        scores = math.prod(q.shape[:-1]) * k.shape[-2]
        scaled = _arg(func, args, kwargs, "scale") != 1.0  # None means 1/sqrt(d)
        return (6 if scaled else 5) * scores
    if packet is torch.ops.attn2d.criss_cross:  # softmax over each cross, then γ·out
        return 5 * _cross_scores(args[0].shape) + _numel(result)
    base = name.rstrip("_")
    if name in _MOVES or base in _MOVES:
        return 0
    if torch.Tag.pointwise in func.tags or base in _EXTRA_POINTWISE:
        return _numel(result)
    if torch.Tag.reduction in func.tags:
        return _numel(first) * (3 if base in _HEAVY_REDUCTIONS else 1)
    if base in _SOFTMAX:
        return 5 * _numel(first)
    if base in _NORMS:
        stats = base in ("native_layer_norm", "native_group_norm") or bool(
            _arg(func, args, kwargs, "training", "no_training" not in base
                 and "no_update" not in base))
        return (4 if stats else 2) * _numel(first)
    if base in _WINDOW_POOLS:
        kernel = _arg(func, args, kwargs, "kernel_size")
        window = math.prod(kernel) if isinstance(kernel, (list, tuple)) else int(kernel)
        return _numel(result) * window
    if base in _ADAPTIVE_POOLS:
        return _numel(first)
    return None


@dataclass
class ModuleCounts:
    """What one module did itself (children excluded), summed over its calls."""

    macs: int = 0
    elementwise: int = 0
    activation: int = 0
    read: int = 0
    written: int = 0
    seconds: float = 0.0
    calls: int = 0
    order: float = math.inf
    inputs: str = "-"
    outputs: str = "-"


def _shapes(tree: object) -> str:
    found = _tensors(tree)
    return ", ".join("x".join(map(str, t.shape)) or "scalar" for t in found) if found else "-"


class _Counter(TorchDispatchMode):
    """Adds every ATen call's elementwise work and bytes to the module on top of ``stack``;
    ``formulas`` are the ops the MAC counter knows."""

    def __init__(self, stats: dict[str, ModuleCounts], stack: list[str],
                 uncounted: dict[str, int], formulas: dict[Any, Any]) -> None:
        super().__init__()
        self.stats, self.stack, self.uncounted = stats, stack, uncounted
        self.formulas = formulas

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or torch.Tag.inplace_view in func.tags:
            return out
        s = self.stats[self.stack[-1]]
        name = func._overloadpacket.__name__
        ew = _elementwise(func, name, args, kwargs, out)
        if ew is None and func._overloadpacket not in self.formulas and _tensors(out):
            self.uncounted[name] = self.uncounted.get(name, 0) + 1
        s.elementwise += ew or 0
        s.read += sum(_read_bytes(t) for t in _tensors((args, kwargs)))
        s.written += sum(t.numel() * t.element_size() for t in _tensors(out))
        return out


def hooked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # Taps are identities: hooked, each would count the weights it passes on as an output
    # of its own, although the weights are their owner's working memory.
    return [(p, m) for p, m in model.named_modules() if not isinstance(m, AttentionMap)]


def _own_macs(model: nn.Module, counter: FlopCounterMode) -> dict[str, int]:
    """Each module's MACs less its children's, from the counter's per-module totals (keyed
    by the root's class name and the module path)."""
    totals = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__

    def total(path: str) -> int:
        return totals.get(f"{root}.{path}" if path else root, 0)

    own = {}
    for path, module in model.named_modules():
        children = (f"{path}.{name}" if path else name for name, _ in module.named_children())
        own[path] = (total(path) - sum(total(c) for c in children)) // 2
    return own


def run_counted(
    model: nn.Module, x: Tensor, timing_runs: int
) -> tuple[dict[str, ModuleCounts], dict[str, int], float]:
    """One counted forward pass, then ``timing_runs`` timed ones; self stats per path."""
    stats: dict[str, ModuleCounts] = defaultdict(ModuleCounts)
    stack: list[str] = []
    times: list[list] = []  # [path, start, children's time]
    seen: set[int] = {x.untyped_storage().data_ptr()}
    keep: list[Tensor] = [x]  # holds outputs alive so no storage address is reused
    timing = False
    clock = [0]

    HookFn = Callable[..., None]

    def pre(path: str) -> HookFn:
        def hook(module: nn.Module, inputs: tuple) -> None:
            s = stats[path]
            if timing:
                times.append([path, time.perf_counter(), 0.0])
                return
            stack.append(path)
            s.calls += 1
            if s.calls == 1:
                s.order, s.inputs = clock[0], _shapes(inputs)
                clock[0] += 1
        return hook

    def post(path: str) -> HookFn:
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if timing:
                _, start, inner = times.pop()
                spent = time.perf_counter() - start
                stats[path].seconds += spent - inner
                if times:
                    times[-1][2] += spent
                return
            stack.pop()
            s = stats[path]
            if s.calls == 1 and s.outputs == "-":
                s.outputs = _shapes(output)
            for t in _tensors(output):
                ptr = t.untyped_storage().data_ptr()
                if ptr not in seen:
                    seen.add(ptr)
                    keep.append(t)
                    s.activation += t.numel() * t.element_size()
        return hook

    handles = []
    for path, module in hooked_modules(model):
        handles.append(module.register_forward_pre_hook(pre(path)))
        handles.append(module.register_forward_hook(post(path), always_call=True))
    uncounted: dict[str, int] = {}
    forward_s = math.nan
    counter = flop_counter()
    try:
        with torch.no_grad():
            stack.append("")  # ops outside any module's own code: the root row
            with counter, _Counter(stats, stack, uncounted, counter.flop_registry):
                model(x)
            keep.clear()
            for path, macs in _own_macs(model, counter).items():
                if macs:
                    stats[path].macs = macs
            if timing_runs > 0:
                timing = True
                model(x)  # warm-up
                for s in stats.values():
                    s.seconds = 0.0
                start = time.perf_counter()
                for _ in range(timing_runs):
                    model(x)
                forward_s = (time.perf_counter() - start) / timing_runs
    finally:
        for h in handles:
            h.remove()
    return stats, uncounted, forward_s
