"""Per-module cost of a mechanism or a model: shapes, parameters, MACs, elementwise work,
memory and measured time.

Counting runs one forward pass under :class:`~torch.utils.flop_counter.FlopCounterMode` for
the MACs, and under a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that sees
every ATen operator for the rest, attributing each operator to the innermost module running
it (forward hooks on every module). Conventions:

- **MACs**: multiply-accumulates of convolutions, matrix products and attention, counted by
  ``FlopCounterMode`` (FLOPs / 2, the papers' "FLOPs") with :data:`FLOP_FORMULAS` for the
  CPU attention kernel that PyTorch does not count; a module's own MACs are its total from
  the counter's module tracking less its children's. Biases are not MACs (they are
  elementwise).
- **Elementwise**: one op per output element of pointwise ops (add, multiply, sigmoid,
  ReLU, bias adds, ...); one per input element of reductions (mean, sum, max; 3 for
  var/std); one per window element of pooling; softmax 5 per element (max, subtract, exp,
  sum, divide); normalisation 2 per element (scale, shift) plus 2 when it computes
  statistics (training BatchNorm, LayerNorm, GroupNorm); fused attention 5 per score
  for the softmax plus 1 when it scales (as on the explicit path, which skips a scale of 1).
- **Activation**: bytes of the distinct tensors the modules return (a tensor that a child
  returns and its parent passes on counts once, at the child).
- **Read / written**: bytes each operator reads and writes, without fusion (views are free;
  a broadcast input is read once).
- **Time**: share of the measured forward time spent in the row's own code.

Each operator and parameter is counted in exactly one row: the deepest shown module that
ran or owns it, so the total row is the sum of the rows. Profiling never switches capture
on (see :mod:`attn2d.capture`): a mechanism runs its own fast path.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._base.errors import Attn2dError
from .._base.io import write_atomic
from .._base.shape import parse_shape
from .._base.tables import Table, format_for
from ..modules import _cross  # noqa: F401  (registers the attn2d::criss_cross operators)
from .counting import FLOP_FORMULAS, ModuleCounts, flop_counter, hooked_modules, run_counted

__all__ = [
    "FLOP_FORMULAS",
    "ProfileReport",
    "ProfileRow",
    "cost_table",
    "count_macs",
    "profile",
]



@dataclass
class ProfileRow:
    """One row: a module's own work, plus that of its descendants below the shown depth."""

    path: str
    module: str
    depth: int
    calls: int
    input_shape: str
    output_shape: str
    params: int
    macs: int
    elementwise: int
    activation_bytes: int
    bytes_read: int
    bytes_written: int
    time_share: float


_SUMMED = ("params", "macs", "elementwise", "activation_bytes", "bytes_read", "bytes_written",
           "time_share")


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:g} B"


def _share(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}%"


_CONVENTIONS = (
    "MACs: conv/linear/matmul/attention multiply-accumulates (= FLOPs / 2, the papers' "
    "'FLOPs'). elementwise: pointwise ops and bias adds 1/output element, reductions "
    "1/input element, pooling 1/window element, softmax 5/element, normalisation 2/element "
    "(+2 computing statistics). activation: bytes of distinct module outputs. read/written: "
    "bytes moved by each op, unfused. time: share of the measured forward pass."
)


@dataclass
class ProfileReport:
    """The per-module table of :func:`profile`: ``rows`` and their sum ``total``."""

    rows: list[ProfileRow]
    total: ProfileRow
    input_shape: tuple[int, ...]
    forward_ms: float
    uncounted_ops: dict[str, int]

    def table(self) -> Table:
        columns = [("path", "module path"), ("module", "type"), ("input_shape", "input"),
                   ("output_shape", "output"), ("params", "params"), ("macs", "MACs"),
                   ("elementwise", "elementwise"), ("activation_bytes", "activation"),
                   ("bytes_read", "read"), ("bytes_written", "written"),
                   ("time_share", "time")]
        rows = [asdict(r) for r in [*self.rows, self.total]]
        notes = [f"forward: {self.forward_ms:.2f} ms (input {'x'.join(map(str, self.input_shape))})"
                 if not math.isnan(self.forward_ms) else "", _CONVENTIONS]
        if self.uncounted_ops:
            listed = ", ".join(f"{k} ×{v}" for k, v in sorted(self.uncounted_ops.items()))
            notes.append(f"ops without a cost formula (counted as memory only): {listed}")
        display = {"params": _count, "macs": _count, "elementwise": _count,
                   "activation_bytes": _bytes, "bytes_read": _bytes, "bytes_written": _bytes,
                   "time_share": _share}
        meta = {"input_shape": list(self.input_shape),
                "forward_ms": None if math.isnan(self.forward_ms) else self.forward_ms,
                "total": {k: (None if isinstance(v, float) and math.isnan(v) else v)
                          for k, v in asdict(self.total).items()},
                "uncounted_ops": self.uncounted_ops, "conventions": _CONVENTIONS}
        text_rows = []
        for r in rows:
            indent = "  " * max(r["depth"] - 1, 0) if r["path"] not in ("(root)", "total") else ""
            text_rows.append({**r, "path": indent + r["path"]})
        return Table(columns, text_rows, display, align_left=("path", "module", "input_shape",
                                                              "output_shape"),
                     notes=[n for n in notes if n], meta=meta)

    def render(self, fmt: str = "text") -> str:
        """Text or Markdown (indented paths), CSV or JSON (plain paths, the total apart)."""
        fmt = format_for(None, fmt)
        table = self.table()
        if fmt in ("csv", "json"):  # data, not a picture: paths unindented
            table.rows = [asdict(r) for r in [*self.rows, self.total]]
            if fmt == "json":
                table.rows = table.rows[:-1]  # the total has its own key
        return table.render(fmt)

    def save(self, path: str | os.PathLike, fmt: str | None = None) -> None:
        """Write atomically; the format defaults to the suffix (.md, .csv, .json, else text)."""
        write_atomic(path, self.render(format_for(path, fmt)))


def _batch_shape(input_shape: Sequence[int], channels: int | None) -> tuple[int, ...]:
    shape = parse_shape(input_shape, (2, 3, 4), owner="profile", name="input_shape")
    if len(shape) == 2:
        if channels is None:
            raise Attn2dError(f"profile: expected (C, H, W), (B, C, H, W) or (H, W) with "
                              f"channels=, got {shape} and no channels")
        shape = (channels, *shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise Attn2dError(f"profile: expected input_shape (C, H, W) or (B, C, H, W), got {shape}")
    if channels is not None and shape[1] != channels:
        raise Attn2dError(f"profile: expected the input to have channels={channels}, "
                          f"got shape {shape}")
    return shape


def _build(
    target: nn.Module | str, shape: tuple[int, ...], model_kwargs: dict[str, Any]
) -> nn.Module:
    if isinstance(target, nn.Module):
        if model_kwargs:
            raise Attn2dError(f"profile: expected no model options ({', '.join(model_kwargs)}) "
                              "with a ready-built module")
        return target
    if not isinstance(target, str):
        raise Attn2dError(f"profile: expected an nn.Module, a model name or a mechanism spec, "
                          f"got {type(target).__name__}")
    from ..models import create_model, is_model_name, list_models
    from ..modules.registry import create

    if is_model_name(target):
        return create_model(target, in_channels=shape[1], **model_kwargs)
    if model_kwargs:
        raise Attn2dError(f"profile: expected a model name ({', '.join(list_models())}) with "
                          f"{', '.join(model_kwargs)}, got mechanism spec {target!r}")
    return create(target, shape[1])


def _input_for(model: nn.Module, shape_or_input: Tensor | Sequence[int] | str,
               channels: int | None = None) -> Tensor:
    if isinstance(shape_or_input, Tensor):
        return shape_or_input
    shape = _batch_shape(shape_or_input, channels)
    param = next(model.parameters(), None)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)
    if param is not None:
        x = x.to(param.device, param.dtype if param.is_floating_point() else None)
    return x


def _with_mode(model: nn.Module, train: bool, fn: Callable[[], Any]) -> Any:
    modes = {m: m.training for m in model.modules()}
    model.train(train)
    try:
        return fn()
    finally:
        for m, mode in modes.items():
            m.training = mode


def count_macs(model: nn.Module, input_or_shape: Tensor | Sequence[int] | str) -> int:
    """MACs of one forward pass of ``model`` in eval mode (FLOPs / 2, the papers' "FLOPs").

    ``input_or_shape`` is a tensor or a shape: (C, H, W) means a batch of one.
    """
    x = _input_for(model, input_or_shape)
    counter = flop_counter()

    def run() -> None:
        with counter, torch.no_grad():
            model(x)

    _with_mode(model, False, run)
    return counter.get_total_flops() // 2


def profile(
    target: nn.Module | str,
    input_shape: Sequence[int] | str | Tensor,
    *,
    channels: int | None = None,
    depth: int | None = None,
    timing_runs: int = 3,
    train: bool = False,
    **model_kwargs: Any,
) -> ProfileReport:
    """Per-module table for a model, a model name or a mechanism spec.

    Args:
        target: an ``nn.Module``; a model name from :func:`attn2d.models.list_models`
            (built for the input's channel count); or a mechanism spec such as
            ``"cbam(reduction=8)"`` (that mechanism alone).
        input_shape: (C, H, W) (batch of one), (B, C, H, W), ``"3x32x32"``, (H, W) with
            ``channels``, or an input tensor.
        channels: the input's channel count, checked against (or completing) the shape.
        depth: deepest module level shown; deeper modules are folded into their ancestor.
            None shows every module.
        timing_runs: forward passes timed for the time column (0: no timing).
        train: profile in training mode (BatchNorm computes batch statistics).
        **model_kwargs: for a model name: ``attention``, ``placement``, ``stages``,
            ``num_classes`` (see :func:`attn2d.models.create_model`).
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                              or depth < 0):
        raise Attn2dError(f"profile: expected depth as an int >= 0 or None, got {depth!r}")
    if isinstance(input_shape, Tensor):
        x = input_shape
        model = _build(target, tuple(x.shape), model_kwargs)
    else:
        shape = _batch_shape(input_shape, channels)
        model = _build(target, shape, model_kwargs)
        x = _input_for(model, shape)
    stats, uncounted, forward_s = _with_mode(
        model, train, lambda: run_counted(model, x, timing_runs))
    return _profile_report(model, x, stats, uncounted, forward_s, depth)


def _profile_report(model: nn.Module, x: Tensor, stats: dict[str, ModuleCounts],
                    uncounted: dict[str, int], forward_s: float, depth: int | None
                    ) -> ProfileReport:
    modules = dict(hooked_modules(model))
    owned: dict[str, int] = defaultdict(int)
    counted: set[int] = set()
    for path, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if id(p) not in counted:
                counted.add(id(p))
                owned[path] += p.numel()

    def level(path: str) -> int:
        return 0 if not path else path.count(".") + 1

    def shown(path: str, keep: set[str]) -> str:
        while path and path not in keep:
            path = path.rpartition(".")[0]
        return path

    total_s = sum(s.seconds for s in stats.values())
    # Fold deeper modules into their ancestor at ``depth``, then fold empty rows upwards.
    paths = [p for p in modules if depth is None or level(p) <= depth]
    for _ in range(2):
        keep = set(paths)
        rows: dict[str, ProfileRow] = {}
        for p in paths:
            m, s = modules[p], stats.get(p, ModuleCounts())
            rows[p] = ProfileRow(p or "(root)", type(m).__name__, level(p), s.calls, s.inputs,
                                 s.outputs, 0, 0, 0, 0, 0, 0, 0.0)
        for p in set(modules) | set(owned):
            row = rows[shown(p, keep)]
            s = stats.get(p, ModuleCounts())
            row.params += owned.get(p, 0)
            row.macs += s.macs
            row.elementwise += s.elementwise
            row.activation_bytes += s.activation
            row.bytes_read += s.read
            row.bytes_written += s.written
            row.time_share += s.seconds / total_s if total_s > 0 else 0.0
        paths = [p for p in paths if not p or any(
            getattr(rows[p], k) for k in _SUMMED if k != "time_share")]
    order = {p: (stats[p].order if p in stats else math.inf, i) for i, p in enumerate(modules)}
    ordered = [rows[p] for p in sorted(paths, key=order.__getitem__)]
    no_time = math.isnan(forward_s)
    if no_time:
        for r in ordered:
            r.time_share = math.nan
    root = stats.get("", ModuleCounts())
    total = ProfileRow("total", "", 0, 1, root.inputs, root.outputs,
                       *(sum(getattr(r, k) for r in ordered) for k in _SUMMED[:-1]),
                       math.nan if no_time else 1.0)
    return ProfileReport(ordered, total, tuple(x.shape), forward_s * 1e3, uncounted)


def cost_table(
    model: str = "resnet18",
    input_shape: Sequence[int] | str = (3, 32, 32),
    mechanisms: Iterable[str] | None = None,
    *,
    num_classes: int = 10,
    placement: str | None = None,
) -> Table:
    """Parameters and MACs of a backbone without attention and with each mechanism.

    Args:
        model: a model name from :func:`attn2d.models.list_models`.
        input_shape: (C, H, W) of one image.
        mechanisms: spec strings; default every registry mechanism.
        num_classes: classifier outputs.
        placement: ``"block"`` / ``"stage"`` for all, or None for each mechanism's default.
    """
    from ..models import create_model
    from ..modules.registry import NO_ATTENTION, available, lookup

    shape = _batch_shape(input_shape, None)
    specs = list(mechanisms) if mechanisms is not None else [m.name for m in available()]
    rows: list[dict[str, Any]] = []
    for spec in [NO_ATTENTION, *specs]:
        net = create_model(model, attention=spec, placement=placement, num_classes=num_classes,
                           in_channels=shape[1])
        params = sum(p.numel() for p in net.parameters())
        macs = count_macs(net, shape)
        base = rows[0] if rows else {"params": params, "macs": macs}
        where = "-" if spec == NO_ATTENTION else placement or lookup(spec).placement
        rows.append({"mechanism": spec, "placement": where,
                     "params": params,
                     "delta_params": params - base["params"], "macs": macs,
                     "delta_macs_pct": round(100 * (macs - base["macs"]) / base["macs"], 2)})
    columns = [("mechanism", "mechanism"), ("placement", "placement"),
               ("params", "params (M)"), ("delta_params", "Δ params"), ("macs", "MACs"),
               ("delta_macs_pct", "Δ MACs")]
    display = {"params": lambda v: f"{v / 1e6:.3f}", "delta_params": lambda v: f"{v:+,}",
               "macs": _macs_text, "delta_macs_pct": lambda v: f"{v:+.2f}%"}
    note = (f"{model}, {num_classes} classes, input {'x'.join(map(str, shape[1:]))}, batch 1; "
            "MACs = multiply-accumulates (FLOPs / 2).")
    return Table(columns, rows, display, align_left=("mechanism", "placement"), notes=[note],
                 meta={"model": model, "input_shape": list(shape[1:]),
                       "num_classes": num_classes})


def _macs_text(n: int) -> str:
    return f"{n / 1e9:.3f} G" if n >= 1e9 else f"{n / 1e6:.2f} M"
