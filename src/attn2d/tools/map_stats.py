"""Debugging helpers: shape tracing, float64 gradient checks, attention statistics.

- :func:`trace_shapes` runs one forward pass with hooks on every module and lists the
  input and output shapes, in call order.
- :func:`check_gradients` runs :func:`torch.autograd.gradcheck` on a float64 copy of a
  module, with respect to the input and to every parameter.
- :func:`attention_stats` / :func:`collect_attention_stats` summarise attention maps
  (mean, spread, entropy, saturation) and flag maps that are near-uniform or saturated.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call

from .capture import DISTRIBUTION_KINDS, AttentionRecorder, MapRecord, capturing
from .registry import create
from .tables import Table

__all__ = [
    "GradcheckReport",
    "MapStats",
    "ShapeRow",
    "ShapeTrace",
    "attention_stats",
    "check_gradients",
    "collect_attention_stats",
    "format_stats",
    "trace_shapes",
]

# -- shape tracing ------------------------------------------------------------------------


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
    from .modules import AttentionMap

    if not isinstance(model, nn.Module):
        raise TypeError(f"trace_shapes: expected an nn.Module, got {type(model).__name__}")
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


# -- gradient check -----------------------------------------------------------------------


@dataclass
class GradcheckReport:
    """Result of :func:`check_gradients`: one ``(what, shape, passed, detail)`` per check."""

    module: str
    input_shape: tuple[int, ...]
    checks: list[tuple[str, tuple[int, ...], bool, str]]

    @property
    def passed(self) -> bool:
        return all(ok for _, _, ok, _ in self.checks)

    def render(self) -> str:
        head = (f"gradcheck {self.module} on input {tuple(self.input_shape)} (float64, eval "
                f"mode): {'PASS' if self.passed else 'FAIL'}")
        width = max(len(w) for w, *_ in self.checks)
        lines = [head]
        for what, shape, ok, detail in self.checks:
            line = f"  {'ok  ' if ok else 'FAIL'}  {what.ljust(width)}  {tuple(shape)}"
            lines.append(line + (f"\n        {detail}" if detail else ""))
        return "\n".join(lines)

    __str__ = render


def _first_lines(message: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return " | ".join(lines[:n])


def check_gradients(
    module_or_spec: nn.Module | str,
    input_shape: Sequence[int],
    channels: int | None = None,
    *,
    train: bool = False,
    seed: int = 0,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> GradcheckReport:
    """:func:`torch.autograd.gradcheck` of a module w.r.t. its input and each parameter.

    The module is deep-copied and converted to float64 (the original is untouched), then
    put in eval mode: gradcheck evaluates the function hundreds of times and compares
    finite differences with autograd, so it must be the same deterministic function on
    every call: dropout must be off, and BatchNorm must use its running statistics (a
    fixed affine map) rather than update them on every call. ``train=True`` checks train
    mode instead (BatchNorm then normalises with batch statistics, still deterministic).

    Args:
        module_or_spec: a module, or a registry spec string such as ``"cbam"``.
        input_shape: (B, C, H, W) of the random test input; keep it small (every input
            and parameter element costs two forward passes).
        channels: channels for a spec string; default ``input_shape[1]``.
        train: check in train mode instead of eval mode.
        seed: seed of the random input.
        atol, rtol: gradcheck tolerances.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 1 or any(d < 1 for d in shape):
        raise ValueError(f"check_gradients: expected a positive input shape such as "
                         f"(1, 8, 5, 5), got {tuple(input_shape)}")
    if isinstance(module_or_spec, str):
        name = module_or_spec
        module = create(module_or_spec, channels if channels is not None else shape[1])
    elif isinstance(module_or_spec, nn.Module):
        name = type(module_or_spec).__name__
        module = copy.deepcopy(module_or_spec)
    else:
        raise TypeError("check_gradients: expected an nn.Module or a spec string, got "
                        f"{type(module_or_spec).__name__}")
    module = module.double().train(train)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in module.named_parameters()}

    checks = []
    for what in ["input", *names]:
        def f(t: Tensor, what: str = what) -> Tensor:
            if what == "input":
                return functional_call(module, params, (t,))
            return functional_call(module, {**params, what: t}, (x,))

        target = x if what == "input" else params[what]
        try:
            ok = torch.autograd.gradcheck(f, (target,), eps=1e-6, atol=atol, rtol=rtol,
                                          raise_exception=True)
            detail = ""
        except GradcheckError as err:
            ok, detail = False, _first_lines(str(err))
        except RuntimeError as err:  # e.g. an output that does not require grad
            ok, detail = False, f"{type(err).__name__}: {_first_lines(str(err), 2)}"
        checks.append((what, tuple(target.shape), bool(ok), detail))
    return GradcheckReport(name, shape, checks)


# -- attention statistics -----------------------------------------------------------------

LOW, HIGH = 0.05, 0.95
UNIFORM_STD = 0.01  # a gate whose weights differ by less than this scales everything alike
UNIFORM_ENTROPY = 0.98  # normalised row entropy at or above this: rows spread almost evenly
SATURATED_SHARE = 0.5  # "most": over half the weights (gates) or rows (distributions)


@dataclass
class MapStats:
    """Statistics of one attention map over a sample of images.

    Attributes:
        label: the map's ``path:kind`` label.
        kind: its kind.
        images: images seen.
        count: weights seen.
        mean, std, minimum, maximum: of all weights.
        entropy: for distributions (softmax rows: position, criss-cross,
            channel-affinity, mixture) the mean over rows of the row entropy divided by
            log(number of entries the row can use), in [0, 1], 1 = uniform; for gates in
            [0, 1] (sigmoid: channel, spatial, …) the mean Bernoulli entropy
            −w·log₂ w − (1 − w)·log₂(1 − w), in [0, 1], 1 = every weight 0.5,
            0 = every weight 0 or 1; ``None`` when the weights are neither.
        entropy_name: ``"row entropy"`` or ``"gate entropy"``.
        low, high: share of weights below 0.05 and above 0.95.
        peaked: for distributions, share of rows with one entry above 0.95.
        flags: ``"near-uniform: …"`` / ``"saturated: …"`` with the reason; empty if healthy.
        sample, sample_weights: a weighted random sample of the values, for histograms.
    """

    label: str
    kind: str
    images: int
    count: int
    mean: float
    std: float
    minimum: float
    maximum: float
    entropy: float | None
    entropy_name: str
    low: float
    high: float
    peaked: float | None
    flags: list[str] = field(default_factory=list)
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    sample_weights: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def status(self) -> str:
        return ", ".join(f.split(":")[0] for f in self.flags) or "ok"

    def as_dict(self) -> dict[str, Any]:
        keys = ("label", "kind", "images", "count", "mean", "std", "minimum", "maximum",
                "entropy", "entropy_name", "low", "high", "peaked", "flags")
        return {k: getattr(self, k) for k in keys}


def _free_weights(t: Tensor, kind: str) -> Tensor:
    """The weights as a flat vector, without the criss-cross map's structural zeros (each
    pixel's own entry in its column part, there only for the layout)."""
    if kind == "criss-cross" and t.dim() == 4 and t.shape[3] == t.shape[1] + t.shape[2]:
        h, w = t.shape[1], t.shape[2]
        keep = torch.ones(h, w, w + h, dtype=torch.bool, device=t.device)
        rows = torch.arange(h, device=t.device)
        keep[rows, :, w + rows] = False
        return t[:, keep].reshape(-1)
    return t.reshape(-1)


class _Accumulator:
    """Running sums for one map over many batches, so no map is kept whole."""

    def __init__(self, label: str, kind: str, sample_size: int, gen: torch.Generator) -> None:
        self.label, self.kind = label, kind
        self.sample_size, self.gen = sample_size, gen
        self.images = self.count = self.low = self.high = 0
        self.total = self.total_sq = 0.0
        self.minimum, self.maximum = math.inf, -math.inf
        self.rows = self.peaked_rows = 0
        self.entropy_sum = 0.0
        self.is_distribution = kind in DISTRIBUTION_KINDS
        self.is_gate = not self.is_distribution
        self.in_unit = True
        self.samples: list[Tensor] = []
        self.weights: list[float] = []

    def update(self, t: Tensor) -> None:
        t = t.detach().double()
        flat = _free_weights(t, self.kind)
        if flat.numel() == 0:
            return
        self.images += t.shape[0] if self.kind != "mixture" and t.dim() > 1 else 1
        self.count += flat.numel()
        self.total += float(flat.sum())
        self.total_sq += float((flat * flat).sum())
        self.minimum = min(self.minimum, float(flat.min()))
        self.maximum = max(self.maximum, float(flat.max()))
        self.low += int((flat < LOW).sum())
        self.high += int((flat > HIGH).sum())
        self.in_unit &= bool(((flat >= 0) & (flat <= 1)).all())
        if self.is_distribution:
            self._rows(t)
        elif self.is_gate and self.in_unit:
            w = flat.clamp(1e-12, 1 - 1e-12)
            bern = -(w * w.log2() + (1 - w) * (1 - w).log2())
            self.entropy_sum += float(bern.sum())
        m = min(flat.numel(), self.sample_size)
        idx = torch.randint(flat.numel(), (m,), generator=self.gen)
        self.samples.append(flat[idx].float())
        self.weights.append(flat.numel() / m)  # each sampled value stands for this many

    def _rows(self, t: Tensor) -> None:
        rows = t.reshape(-1, t.shape[-1])
        sums = rows.sum(-1)
        # A "position" map of dot-product non-local is not a softmax: no row entropy then.
        if bool((rows < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            self.is_distribution = False
            return
        support = t.shape[-1]
        if self.kind == "criss-cross":  # the pixel's own column entry is structurally zero
            support = t.shape[-1] - 1
        ent = -(rows * rows.clamp_min(1e-300).log()).sum(-1)
        self.entropy_sum += float(ent.sum()) / max(math.log(support), 1e-12)
        self.rows += rows.shape[0]
        self.peaked_rows += int((rows.amax(-1) > HIGH).sum())

    def result(self) -> MapStats:
        n = max(self.count, 1)
        mean = self.total / n
        std = math.sqrt(max(self.total_sq / n - mean * mean, 0.0))
        low, high = self.low / n, self.high / n
        if self.is_distribution and self.rows:
            entropy, name = self.entropy_sum / self.rows, "row entropy"
            peaked = self.peaked_rows / self.rows
        elif self.is_gate and self.in_unit:
            entropy, name, peaked = self.entropy_sum / n, "gate entropy", None
        else:
            entropy, name, peaked = None, "entropy", None
        mode = ("distribution" if self.is_distribution and self.rows
                else "gate" if self.is_gate and self.in_unit else "other")
        flags = _flags(mode, mean, std, entropy, low, high, peaked)
        sample, weights = np.zeros(0), np.zeros(0)
        if self.samples:
            sample = torch.cat(self.samples).numpy()
            weights = np.concatenate([np.full(len(s), w)
                                      for s, w in zip(self.samples, self.weights, strict=True)])
        return MapStats(self.label, self.kind, self.images, self.count, mean, std,
                        self.minimum, self.maximum, entropy, name, low, high, peaked, flags,
                        sample, weights)


def _flags(mode: str, mean: float, std: float, entropy: float | None, low: float,
           high: float, peaked: float | None) -> list[str]:
    flags = []
    if mode == "distribution":
        assert entropy is not None and peaked is not None
        if entropy >= UNIFORM_ENTROPY:
            flags.append(f"near-uniform: mean normalised row entropy {entropy:.3f} >= "
                         f"{UNIFORM_ENTROPY} (rows spread evenly; the map prefers nothing)")
        if peaked > SATURATED_SHARE:
            flags.append(f"saturated: {peaked:.0%} of rows put > {HIGH} on one entry "
                         "(one-hot rows; softmax gradients vanish)")
        return flags
    if mode == "gate":
        if std < UNIFORM_STD:
            flags.append(f"near-uniform: std {std:.4f} < {UNIFORM_STD} (every weight ≈ "
                         f"{mean:.3f}; the gate scales all features alike)")
        if low + high > SATURATED_SHARE:
            flags.append(f"saturated: {low:.0%} of weights < {LOW} and {high:.0%} > {HIGH} "
                         "(sigmoid in its flat tails; gradients vanish)")
    elif std < UNIFORM_STD * max(abs(mean), 1e-12):
        flags.append(f"near-uniform: std {std:.3g} is under 1% of |mean| {abs(mean):.3g}")
    return flags


def attention_stats(
    maps: Iterable[MapRecord] | Mapping[str, tuple[str, Tensor]],
    *,
    sample_size: int = 20_000,
    seed: int = 0,
) -> list[MapStats]:
    """Statistics of attention maps, with near-uniform / saturated flags and the reason.

    Args:
        maps: recorded maps (e.g. ``AttentionRecorder.merged()``; records with the same
            label are pooled), or ``{label: (kind, tensor)}``.
        sample_size: values kept per map and batch for histograms.
        seed: seed of that sampling.

    Definitions (thresholds are module constants): weights are "low" below 0.05 and "high"
    above 0.95. A gate (values in [0, 1]) is *near-uniform* when its std is below 0.01 and
    *saturated* when over half its weights are low or high. A distribution (softmax rows)
    is *near-uniform* when its mean normalised row entropy is at least 0.98 and
    *saturated* when over half its rows put more than 0.95 on one entry.
    """
    gen = torch.Generator().manual_seed(seed)
    accs: dict[str, _Accumulator] = {}
    items = ([(label, kind, t) for label, (kind, t) in maps.items()]
             if isinstance(maps, Mapping) else [(r.label, r.kind, r.tensor) for r in maps])
    for label, kind, tensor in items:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"attention_stats: expected a tensor for {label!r}, got "
                            f"{type(tensor).__name__}")
        acc = accs.setdefault(label, _Accumulator(label, kind, sample_size, gen))
        acc.update(tensor)
    return [acc.result() for acc in accs.values()]


def collect_attention_stats(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    sample_size: int = 20_000,
    seed: int = 0,
) -> list[MapStats]:
    """Run ``model`` (in eval mode, no grad) on ``batches`` and summarise every attention
    map with :func:`attention_stats`, one batch at a time so no map is kept whole."""
    gen = torch.Generator().manual_seed(seed)
    accs: dict[str, _Accumulator] = {}
    was_training = model.training
    model.eval()
    try:
        with AttentionRecorder(model) as recorder, torch.no_grad():
            for x in batches:
                model(x)
                for r in recorder.records:
                    accs.setdefault(r.label, _Accumulator(r.label, r.kind, sample_size, gen)
                                    ).update(r.tensor)
                recorder.clear()
    finally:
        model.train(was_training)
    return [acc.result() for acc in accs.values()]


def format_stats(stats: Sequence[MapStats]) -> str:
    """A text table of :class:`MapStats`, flag reasons listed under it."""
    if not stats:
        return "no attention maps found (is the model built with an attention mechanism?)"
    def entropy(s: MapStats) -> str:
        if s.entropy is None:
            return "-"
        return f"{s.entropy:.3f} ({'row' if s.entropy_name == 'row entropy' else 'gate'})"

    columns = [("label", "map"), ("images", "images"), ("mean", "mean"), ("std", "std"),
               ("entropy", "entropy"), ("low", "<0.05"), ("high", ">0.95"),
               ("status", "status")]
    rows = [{**s.as_dict(), "entropy": entropy(s), "status": s.status} for s in stats]
    percent = "{:.1%}".format
    notes = [f"  {s.label}: {flag}" for s in stats for flag in s.flags]
    table = Table(columns, rows, {"mean": "{:.4f}".format, "std": "{:.4f}".format,
                                  "low": percent, "high": percent},
                  align_left=tuple(k for k, _ in columns),
                  notes=["", "flags:", *notes] if notes else [])
    return table.render("text").rstrip("\n")
