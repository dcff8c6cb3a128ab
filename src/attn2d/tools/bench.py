"""Latency and peak memory of mechanisms, against naive references and timm.

Method
------
* **Latency**: :func:`attn2d.timing.time_interleaved`, the median of repeated calls after
  warm-up. The implementations compared in one case (attn2d, the naive reference, timm)
  run in alternating rounds, each round in a rotated order, so a burst of load on a shared
  machine hits all of them alike; ratios come from the same rounds. *Forward* is
  inference: eval mode under ``torch.no_grad()``. *Forward+backward* is a training step:
  ``train()``, the input requires grad, ``backward`` of a fixed random output gradient,
  parameter gradients cleared before each call.
* **Peak memory**: :func:`attn2d.timing.peak_memory`, bytes allocated by one call at its
  highest point, above what was allocated before it (inputs and weights excluded, outputs
  and gradients included); on CPU from the allocator's own records.
* **bf16** is ``torch.autocast`` over float32 weights and input; **channels-last** converts
  the module and the input.

The naive references are :mod:`attn2d.naive`. Where their dense N×N maps would exceed a
memory budget, a size is skipped and reported as such, never attempted.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._base.amp import autocast
from .._base.errors import Attn2dError
from .._base.io import save_figure
from .._base.tables import MISSING, Table
from ..modules.registry import create, lookup
from . import naive
from .timing import peak_memory, sync, time_interleaved

__all__ = [
    "DEFAULT_SIZES",
    "DTYPES",
    "LAYOUTS",
    "QUICK_SIZES",
    "SCALING_MECHANISMS",
    "SCALING_SIDES",
    "TIMM_NOTES",
    "Case",
    "Measurement",
    "ScalingRow",
    "cases_table",
    "check_targets",
    "environment",
    "forward_step",
    "geomean",
    "memory_scaling",
    "plot_scaling",
    "run_benchmarks",
    "run_case",
    "scaling_table",
    "targets_table",
    "timm_counterpart",
    "train_step",
]

Shape = tuple[int, int, int, int]

DEFAULT_SIZES: tuple[Shape, ...] = ((8, 64, 32, 32), (8, 256, 16, 16), (2, 64, 64, 64))
QUICK_SIZES: tuple[Shape, ...] = ((4, 64, 16, 16),)
DTYPES = ("fp32", "bf16")
LAYOUTS = ("contiguous", "channels_last")
SCALING_MECHANISMS = ("nonlocal", "pam", "criss-cross", "rcca")
SCALING_SIDES = (16, 32, 48, 64, 96, 128, 192, 256)
GIB = 1024**3
MIB = 1024**2

# What timm computes differently, and how its module is configured to match ours.
TIMM_NOTES: dict[str, str] = {
    "se": "timm SEModule rounds the hidden width to a multiple of 8; set rd_channels=C//16.",
    "eca": "timm EcaModule forces k >= 3 from C; given our k explicitly (channels=None).",
    "cbam": "timm CbamModule: MLP as 1×1 convs without bias by default, [mean, max] order; "
    "set mlp_bias=True, rd_channels=C//16.",
    "gc": "timm GlobalContext defaults to the multiplicative fusion and ratio 1/8; set "
    "fuse_add=True, fuse_scale=False, rd_channels=C//16.",
    "nonlocal": "timm NonLocalAttn (BAT-style) uses width C/8 and a C^-1/2 scale, and stores "
    "the N×N map; set rd_channels=C//2, use_scale=False (embedded Gaussian only).",
    "coord": "timm CoordAttn sizes the hidden width as C/16·2/3 rounded to 8, convs without "
    "bias; set rd_channels=max(8, C//32), bias=True.",
}


def _size_text(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


# --- the implementations compared ------------------------------------------------------


def timm_counterpart(name: str, module: nn.Module) -> nn.Module | None:
    """timm's module for the same mechanism at the same widths, or None where timm has none.

    ``name`` is the registry name; ``module`` the attn2d instance whose configuration is
    matched (see :data:`TIMM_NOTES` for what differs).
    """
    try:
        from timm.layers.cbam import CbamModule
        from timm.layers.coord_attn import CoordAttn
        from timm.layers.eca import EcaModule
        from timm.layers.global_context import GlobalContext
        from timm.layers.non_local_attn import NonLocalAttn
        from timm.layers.squeeze_excite import SEModule
    except ImportError:
        return None
    c = getattr(module, "channels", None)
    if name == "se":
        return SEModule(c, rd_channels=module.fc1.out_features)
    if name == "eca":
        return EcaModule(None, kernel_size=module.conv.kernel_size[0])
    if name == "cbam":
        gate, spatial = module.channel_gate, module.spatial_gate
        if tuple(gate.pool_types) != ("avg", "max") or spatial is None:
            return None
        if not isinstance(spatial.conv, nn.Conv2d):
            return None
        return CbamModule(c, rd_channels=gate.mlp[0].out_features, mlp_bias=True,
                          spatial_kernel_size=spatial.conv.kernel_size[0])
    if name == "gc":
        hidden = module.transform[0].out_channels
        return GlobalContext(c, fuse_add=module.fusion == "add",
                             fuse_scale=module.fusion == "mul", rd_channels=hidden)
    if name == "nonlocal":
        if module.mode != "embedded_gaussian" or module.sub_sample:
            return None
        return NonLocalAttn(c, use_scale=False, rd_channels=module.inner)
    if name == "coord":
        return CoordAttn(c, rd_channels=module.conv1.out_channels, bias=True)
    return None


def _dense_bytes(impl: str, name: str, shape: Shape, itemsize: int, train: bool) -> int:
    """Estimated N×N bytes an implementation would hold (0 for attn2d's fast paths)."""
    if impl == "attn2d" or (impl == "timm" and name != "nonlocal"):
        return 0  # timm's non-local stores its N×N map like the naive one
    return naive.dense_map_bytes(name, shape, itemsize, train)


# --- measuring ------------------------------------------------------------------------


def forward_step(module: nn.Module, x: Tensor, dtype: str) -> Callable[[], None]:
    """One inference call: ``module(x)`` under ``no_grad`` and autocast ``dtype``."""

    def step() -> None:
        with torch.no_grad(), autocast(x.device, dtype):
            module(x)

    return step


def train_step(module: nn.Module, x: Tensor, dtype: str) -> Callable[[], None]:
    """One training step of ``module`` on ``x`` (which should require grad): gradients
    cleared, forward under autocast ``dtype``, backward of a random output gradient made
    on the first call and reused."""
    grad: list[Tensor] = []  # the output gradient, made once from the first output

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        with autocast(x.device, dtype):
            out = module(x)
        if not grad:
            grad.append(torch.randn_like(out))
        out.backward(grad[0])

    return step


@dataclass
class Measurement:
    """One implementation in one case; times in milliseconds, memory in bytes."""

    forward_ms: float | None = None
    train_ms: float | None = None
    forward_peak: int | None = None
    train_peak: int | None = None
    note: str = ""


@dataclass
class Case:
    """One mechanism at one input size, dtype and layout, every implementation measured."""

    mechanism: str
    shape: Shape
    dtype: str
    layout: str
    results: dict[str, Measurement] = field(default_factory=dict)

    def ratio(self, other: str, metric: str) -> float | None:
        """attn2d's ``metric`` divided by ``other``'s (below 1: attn2d is better)."""
        ours, theirs = self.results.get("attn2d"), self.results.get(other)
        if ours is None or theirs is None:
            return None
        a, b = getattr(ours, metric), getattr(theirs, metric)
        return a / b if a is not None and b else None

    def to_dict(self) -> dict[str, Any]:
        row = {"mechanism": self.mechanism, "size": _size_text(self.shape), "dtype": self.dtype,
               "layout": self.layout,
               "results": {k: asdict(v) for k, v in self.results.items()}}
        for other in ("naive", "timm"):
            for metric in ("forward_ms", "train_ms", "forward_peak", "train_peak"):
                row[f"{metric}_vs_{other}"] = self.ratio(other, metric)
        return row


def _implementations(spec: str, channels: int, against: Sequence[str]
                     ) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """attn2d's module and the requested counterparts with matching widths (and, for the
    naive references, the same weights); notes say why a counterpart is missing."""
    ours = create(spec, channels)
    impls: dict[str, nn.Module] = {"attn2d": ours}
    notes: dict[str, str] = {}
    if "naive" in against:
        impls["naive"] = naive.naive_version(ours)
    if "timm" in against:
        theirs = timm_counterpart(lookup(spec).name, ours)
        if theirs is None:
            notes["timm"] = "no timm counterpart"
        else:
            impls["timm"] = theirs
    return impls, notes


def _place(module: nn.Module, device: torch.device, layout: str) -> nn.Module:
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if layout == "channels_last" else module


def run_case(
    spec: str,
    shape: Shape,
    dtype: str = "fp32",
    layout: str = "contiguous",
    against: Sequence[str] = ("naive", "timm"),
    budget_s: float = 0.5,
    memory: bool = True,
    memory_budget: int = 3 * GIB,
    device: torch.device | str = "cpu",
    clock: str = "wall",
) -> Case:
    """Time (and measure the memory of) one mechanism against its counterparts."""
    device = torch.device(device)
    if dtype not in DTYPES:
        raise Attn2dError(f"attn2d bench: expected dtype in {DTYPES}, got {dtype!r}")
    if layout not in LAYOUTS:
        raise Attn2dError(f"attn2d bench: expected layout in {LAYOUTS}, got {layout!r}")
    name = lookup(spec).name
    case = Case(spec, tuple(shape), dtype, layout)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(0)
    modules, notes = _implementations(spec, shape[1], against)
    for impl, note in notes.items():
        case.results[impl] = Measurement(note=note)
    itemsize = 2 if dtype == "bf16" else 4
    x = torch.randn(shape, generator=gen).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    forward: dict[str, Callable[[], None]] = {}
    train: dict[str, Callable[[], None]] = {}
    for impl, module in modules.items():
        measurement = case.results.setdefault(impl, Measurement())
        need = _dense_bytes(impl, name, shape, itemsize, train=False)
        if need > memory_budget:
            measurement.note = (f"skipped: N×N maps need ~{need / GIB:.1f} GiB > budget "
                                f"{memory_budget / GIB:.1f} GiB")
            continue
        module = _place(module, device, layout)
        forward[impl] = forward_step(copy.deepcopy(module).eval(), x, dtype)
        if _dense_bytes(impl, name, shape, itemsize, train=True) <= memory_budget:
            train[impl] = train_step(module.train(), x.detach().clone().requires_grad_(True),
                                      dtype)
        else:
            measurement.note = "forward only: the training step would exceed the memory budget"
    for metric, steps in (("forward", forward), ("train", train)):
        steps = _runnable(steps, case)
        for impl, seconds in time_interleaved(steps, budget_s, device=device, clock=clock).items():
            setattr(case.results[impl], f"{metric}_ms", seconds * 1e3)
        if memory:
            for impl, step in steps.items():
                setattr(case.results[impl], f"{metric}_peak", peak_memory(step, device))
    return case


def _runnable(steps: dict[str, Callable[[], None]], case: Case) -> dict[str, Callable[[], None]]:
    """The steps that run at all; a failure is recorded as the implementation's note."""
    ok = {}
    for impl, step in steps.items():
        try:
            step()
        except RuntimeError as err:  # e.g. an op without a bf16 kernel in one implementation
            case.results[impl].note = f"failed: {str(err).splitlines()[0][:120]}"
        else:
            ok[impl] = step
    return ok


def run_benchmarks(
    mechanisms: Iterable[str],
    sizes: Sequence[Shape] = DEFAULT_SIZES,
    dtypes: Sequence[str] = ("fp32",),
    layouts: Sequence[str] = ("contiguous",),
    against: Sequence[str] = ("naive", "timm"),
    budget_s: float = 0.5,
    memory: bool = True,
    memory_budget: int = 3 * GIB,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] | None = None,
    clock: str = "wall",
) -> list[Case]:
    """Every mechanism × size × dtype × layout; see the module docstring for the method."""
    cases = []
    for spec in mechanisms:
        for shape in sizes:
            for dtype in dtypes:
                for layout in layouts:
                    case = run_case(spec, shape, dtype, layout, against, budget_s, memory,
                                    memory_budget, device, clock)
                    cases.append(case)
                    if progress is not None:
                        ms = case.results["attn2d"].train_ms
                        progress(f"{spec} {_size_text(shape)} {dtype} {layout}: "
                                 f"fwd+bwd {ms:.3g} ms" if ms else f"{spec}: no timing")
    return cases


# --- memory scaling -------------------------------------------------------------------


@dataclass
class ScalingRow:
    """Peak memory of one implementation at one map size (bytes; seconds for one step)."""

    mechanism: str
    impl: str
    side: int
    positions: int
    forward_peak: int | None = None
    train_peak: int | None = None
    train_s: float | None = None
    note: str = ""


def memory_scaling(
    mechanisms: Sequence[str] = SCALING_MECHANISMS,
    sides: Sequence[int] = SCALING_SIDES,
    batch: int = 1,
    channels: int = 64,
    memory_budget: int = 3 * GIB,
    device: torch.device | str = "cpu",
    against: Sequence[str] = ("naive",),
    progress: Callable[[str], None] | None = None,
) -> list[ScalingRow]:
    """Peak memory of attn2d (and the naive reference) from small to large square maps.

    The training step (forward+backward) is timed once (its first call), then profiled
    once; naive sizes whose N×N maps would exceed ``memory_budget`` are skipped and say so.
    """
    device = torch.device(device)
    rows = []
    for spec in mechanisms:
        name = lookup(spec).name
        for side in sides:
            shape = (batch, channels, side, side)
            modules, _ = _implementations(spec, channels, [a for a in against if a == "naive"])
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
            for impl, module in modules.items():
                row = ScalingRow(spec, impl, side, side * side)
                rows.append(row)
                module = module.to(device)
                fwd_need = _dense_bytes(impl, name, shape, 4, train=False)
                train_need = _dense_bytes(impl, name, shape, 4, train=True)
                if fwd_need <= memory_budget:
                    row.forward_peak = peak_memory(
                        forward_step(copy.deepcopy(module).eval(), x, "fp32"), device)
                if train_need <= memory_budget:
                    step = train_step(module.train(), x.clone().requires_grad_(True), "fp32")
                    start = time.perf_counter()
                    step()  # also makes the output gradient, which is then live before
                    sync(device)
                    row.train_s = time.perf_counter() - start
                    row.train_peak = peak_memory(step, device)
                need = train_need if fwd_need <= memory_budget else fwd_need
                if need > memory_budget:
                    what = "fwd+bwd" if fwd_need <= memory_budget else "fwd and fwd+bwd"
                    row.note = (f"{what} skipped: N×N maps need ~{need / GIB:.1f} GiB > "
                                f"budget {memory_budget / GIB:.1f} GiB")
                if progress is not None:
                    progress(f"scaling {spec} {impl} {side}x{side}: "
                             f"{_mib(row.train_peak)} MiB fwd+bwd {row.note}".rstrip())
    return rows


def plot_scaling(rows: Sequence[ScalingRow], path: str | Path) -> Path:
    """Log-log plot of fwd+bwd peak memory against positions (H·W), one line per series.

    A :class:`matplotlib.figure.Figure` built directly (the Agg canvas): matplotlib's
    global backend and pyplot state are left alone.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    series: dict[tuple[str, str], list[ScalingRow]] = {}
    for row in rows:
        series.setdefault((row.mechanism, row.impl), []).append(row)
    mechanisms = sorted({r.mechanism for r in rows})
    colours = dict(zip(mechanisms, colormaps["tab10"].colors, strict=False))
    for (mechanism, impl), points in series.items():
        points = [p for p in points if p.train_peak]
        if not points:
            continue
        ax.plot([p.positions for p in points], [p.train_peak / MIB for p in points],
                marker="o" if impl == "attn2d" else "x",
                linestyle="-" if impl == "attn2d" else "--",
                color=colours[mechanism], label=f"{mechanism} ({impl})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("positions N = H·W")
    ax.set_ylabel("peak memory, forward+backward (MiB)")
    ax.set_title("Memory scaling (B=1, C=64, float32)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


# --- targets and output ---------------------------------------------------------------


def geomean(values: Iterable[float | None]) -> float | None:
    """Geometric mean of the values that are set (None and 0 are left out)."""
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def check_targets(cases: Sequence[Case], scaling: Sequence[ScalingRow]) -> list[dict[str, Any]]:
    """The performance targets of the project, each with the measured value and a verdict."""
    out: list[dict[str, Any]] = []
    by_mechanism: dict[str, list[float]] = {}
    peaks_vs_naive: dict[str, list[float]] = {}
    for case in cases:
        ratio = case.ratio("timm", "train_ms")
        if ratio is not None:
            by_mechanism.setdefault(case.mechanism, []).append(ratio)
        ratio = case.ratio("naive", "train_peak")
        if ratio is not None:
            peaks_vs_naive.setdefault(case.mechanism, []).append(ratio)
    for mechanism, ratios in by_mechanism.items():
        gm = geomean(ratios)
        out.append({"target": f"{mechanism}: fwd+bwd latency vs timm, geomean <= 1.0x and "
                              "worst size <= 1.1x",
                    "value": f"geomean {gm:.2f}x, worst {max(ratios):.2f}x over {len(ratios)}",
                    "met": gm is not None and gm <= 1.0 and max(ratios) <= 1.1})
    if "cbam" in peaks_vs_naive:
        ratios = peaks_vs_naive["cbam"]
        out.append({"target": "cbam: fwd+bwd peak <= 1.0x naive at every size",
                    "value": f"worst {max(ratios):.3f}x over {len(ratios)}",
                    "met": max(ratios) <= 1.0})
    peaks = {(r.mechanism, r.impl, r.side): r.train_peak for r in scaling}
    for mechanism in ("nonlocal", "pam"):
        ours, theirs = peaks.get((mechanism, "attn2d", 64)), peaks.get((mechanism, "naive", 64))
        if ours and theirs:
            out.append({"target": f"{mechanism} 64x64: fwd+bwd peak <= 1/8 of naive",
                        "value": f"{ours / theirs:.3f} ({_mib(ours)} / {_mib(theirs)} MiB)",
                        "met": ours <= theirs / 8})
    for mechanism in SCALING_MECHANISMS:
        ours = peaks.get((mechanism, "attn2d", 128))
        if ours:
            out.append({"target": f"{mechanism} 128x128: fwd+bwd peak < 2 GiB",
                        "value": f"{_mib(ours)} MiB", "met": ours < 2 * GIB})
    ours, theirs = peaks.get(("criss-cross", "attn2d", 64)), peaks.get(("nonlocal", "naive", 64))
    if ours and theirs:
        out.append({"target": "criss-cross 64x64: fwd+bwd peak <= 1/10 of naive non-local",
                    "value": f"{ours / theirs:.3f} ({_mib(ours)} / {_mib(theirs)} MiB)",
                    "met": ours <= theirs / 10})
    for mechanism in ("criss-cross", "rcca"):
        for side in sorted({r.side for r in scaling if r.side >= 96}):
            ours, theirs = peaks.get((mechanism, "attn2d", side)), peaks.get(("nonlocal",
                                                                              "attn2d", side))
            if ours and theirs:
                out.append({"target": f"{mechanism} {side}x{side}: fwd+bwd peak <= non-local's",
                            "value": f"{ours / theirs:.3f} ({_mib(ours)} / {_mib(theirs)} MiB)",
                            "met": ours <= theirs})
    return out


def _mib(nbytes: int | None) -> str:
    return MISSING if nbytes is None else f"{nbytes / MIB:.1f}"


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}"


def _ratio(value: float) -> str:
    return f"{value:.2f}×"


def cases_table(cases: Sequence[Case]) -> Table:
    """The latency / memory table: attn2d's numbers and its ratios to naive and timm.

    Ratios are attn2d ÷ other, so below 1 means attn2d is faster or smaller.
    """
    ratios = [(f"{metric}_vs_{other}", f"{label} vs {other}")
              for other in ("naive", "timm")
              for metric, label in (("forward_ms", "fwd"), ("train_ms", "fwd+bwd"))]
    columns = [("mechanism", "mechanism"), ("size", "input"), ("dtype", "dtype"),
               ("layout", "layout"), ("forward_ms", "fwd ms"), ("train_ms", "fwd+bwd ms"),
               *ratios, ("train_peak", "peak MiB (fwd+bwd)"),
               ("train_peak_vs_naive", "peak vs naive"), ("notes", "notes")]
    rows = []
    for c in cases:
        row = c.to_dict()
        ours = c.results["attn2d"]
        row.update(forward_ms=ours.forward_ms, train_ms=ours.train_ms,
                   train_peak=ours.train_peak,
                   notes="; ".join(f"{k}: {v.note}" for k, v in c.results.items() if v.note))
        rows.append(row)
    display: dict[str, Callable[[Any], str]] = {
        "forward_ms": _num, "train_ms": _num, "train_peak": _mib, "notes": lambda v: v or "",
        **{key: _ratio for key, _ in ratios}, "train_peak_vs_naive": _ratio}
    return Table(columns, rows, display,
                 align_left=("mechanism", "size", "dtype", "layout", "notes"))


def scaling_table(rows: Sequence[ScalingRow]) -> Table:
    """The memory-scaling table, one row per mechanism and map size, attn2d beside naive."""
    pairs: dict[tuple[str, int], dict[str, ScalingRow]] = {}
    for r in rows:
        pairs.setdefault((r.mechanism, r.side), {})[r.impl] = r
    table = []
    for (mechanism, side), impls in pairs.items():
        ours, theirs = impls.get("attn2d"), impls.get("naive")
        ratio = (ours.train_peak / theirs.train_peak
                 if ours and theirs and ours.train_peak and theirs.train_peak else None)
        table.append({"mechanism": mechanism, "map": f"{side}×{side}", "positions": side * side,
                      "forward_peak": ours.forward_peak if ours else None,
                      "train_peak": ours.train_peak if ours else None,
                      "naive_forward_peak": theirs.forward_peak if theirs else None,
                      "naive_train_peak": theirs.train_peak if theirs else None,
                      "train_peak_vs_naive": ratio,
                      "train_s": ours.train_s if ours else None,
                      "naive_train_s": theirs.train_s if theirs else None,
                      "notes": "; ".join(r.note for r in impls.values() if r.note)})
    columns = [("mechanism", "mechanism"), ("map", "map"), ("positions", "N"),
               ("forward_peak", "attn2d fwd MiB"), ("train_peak", "attn2d fwd+bwd MiB"),
               ("naive_forward_peak", "naive fwd MiB"), ("naive_train_peak", "naive fwd+bwd MiB"),
               ("train_peak_vs_naive", "fwd+bwd ours/naive"), ("train_s", "attn2d step s"),
               ("naive_train_s", "naive step s"), ("notes", "notes")]
    display: dict[str, Callable[[Any], str]] = {
        "forward_peak": _mib, "train_peak": _mib, "naive_forward_peak": _mib,
        "naive_train_peak": _mib, "train_peak_vs_naive": lambda v: _num(v, 3),
        "train_s": lambda v: _num(v, 2), "naive_train_s": lambda v: _num(v, 2)}
    return Table(columns, table, display, align_left=("mechanism", "map", "notes"))


def targets_table(targets: Sequence[dict[str, Any]]) -> Table:
    """The targets of :func:`check_targets` with their verdicts."""
    return Table([("target", "target"), ("value", "measured"), ("met", "verdict")],
                 list(targets), {"met": lambda met: "met" if met else "MISSED"},
                 align_left=("target", "value", "met"))


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    env = {"torch": torch.__version__, "python": sys.version.split()[0],
           "machine": platform.machine(), "processor": platform.processor() or "unknown",
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name()
    return env
