"""Latency and peak memory of mechanisms, against naive references and timm.

Method
------
* **Latency**: the median of repeated calls after warm-up, measured with
  :func:`time.perf_counter`. The implementations compared in one case (attn2d, the naive
  reference, timm) run in alternating rounds, each round in a rotated order, so a burst of
  load on a shared machine hits all of them alike; ratios come from the same rounds.
  *Forward* is inference: eval mode under ``torch.no_grad()``. *Forward+backward* is a
  training step: ``train()``, the input requires grad, ``backward`` of a fixed random
  output gradient, parameter gradients cleared before each call.
* **Peak memory**: bytes allocated by one call at its highest point, above what was
  allocated before it (inputs and weights excluded, outputs and gradients included). On
  CUDA from :func:`torch.cuda.max_memory_allocated`; on CPU, where PyTorch keeps no peak
  statistic, from the allocation and free records of :mod:`torch.profiler`
  (``profile_memory=True``) summed in time order to a running maximum. These records come
  from the CPU allocator itself, so buffers a kernel allocates internally are counted.
* **bf16** is ``torch.autocast`` over float32 weights and input; **channels-last** converts
  the module and the input.

The naive references live in ``benchmarks/naive.py`` of the source tree (they are not
installed with the package); :func:`load_naive` finds them. Where their dense N×N maps
would exceed a memory budget, a size is skipped and reported as such, never attempted.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from ._io import write_atomic
from .registry import create, lookup

__all__ = [
    "CLOCKS",
    "DEFAULT_SIZES",
    "QUICK_SIZES",
    "SCALING_MECHANISMS",
    "SCALING_SIDES",
    "TIMM_NOTES",
    "Case",
    "Measurement",
    "ScalingRow",
    "check_targets",
    "format_cases",
    "format_scaling",
    "format_targets",
    "load_naive",
    "memory_scaling",
    "parse_size",
    "peak_memory",
    "plot_scaling",
    "run_benchmarks",
    "time_interleaved",
    "timm_counterpart",
    "write_atomic",
]

Shape = tuple[int, int, int, int]

DEFAULT_SIZES: tuple[Shape, ...] = ((8, 64, 32, 32), (8, 256, 16, 16), (2, 64, 64, 64))
QUICK_SIZES: tuple[Shape, ...] = ((4, 64, 16, 16),)
DTYPES = ("fp32", "bf16")
LAYOUTS = ("contiguous", "channels_last")
IMPLS = ("attn2d", "naive", "timm")
SCALING_MECHANISMS = ("nonlocal", "pam", "criss-cross")
SCALING_SIDES = (16, 32, 48, 64, 96, 128)
GIB = 1024**3
MIB = 1024**2

# One timed sample lasts at least this long (several calls of a fast step), so timer
# resolution and Python overhead stay small against the step itself.
_MIN_SAMPLE_S = 2e-3

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


def parse_size(text: str) -> Shape:
    """``"8x64x32x32"`` → (8, 64, 32, 32)."""
    parts = text.lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"bench: expected a size as BxCxHxW with positive integers, e.g. "
                         f"8x64x32x32, got {text!r}")
    return shape  # type: ignore[return-value]


def _size_text(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


# --- the implementations compared ------------------------------------------------------

_naive_cache: dict[Path, ModuleType] = {}


def load_naive(path: str | Path | None = None) -> ModuleType | None:
    """The naive references (``benchmarks/naive.py``), or None outside a source checkout.

    Without ``path``, looks next to the source tree this package was imported from, then
    under the working directory. A ``path`` that does not exist is an error.
    """
    if path is not None:
        candidates = [Path(path)]
        if not candidates[0].is_file():
            raise FileNotFoundError(f"bench: expected the naive references at {path}, "
                                    "found no file")
    else:
        candidates = [Path(__file__).resolve().parents[2] / "benchmarks" / "naive.py",
                      Path.cwd() / "benchmarks" / "naive.py"]
    for candidate in candidates:
        candidate = candidate.resolve()
        if candidate in _naive_cache:
            return _naive_cache[candidate]
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("attn2d_naive_references", candidate)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _naive_cache[candidate] = module
            return module
    return None


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


def _dense_bytes(naive: ModuleType | None, impl: str, name: str, shape: Shape, itemsize: int,
                 train: bool) -> int:
    """Estimated N×N bytes an implementation would hold (0 for attn2d's fast paths)."""
    if naive is None or impl == "attn2d":
        return 0
    if impl == "timm":  # timm's non-local stores its N×N map like the naive one
        dense = name == "nonlocal"
        return naive.dense_map_bytes(name, shape, itemsize, train) if dense else 0
    return naive.dense_map_bytes(name, shape, itemsize, train)


# --- measuring ------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    steps: dict[str, Callable[[], None]],
    budget_s: float = 0.5,
    min_rounds: int = 5,
    max_rounds: int = 100,
    device: torch.device | str = "cpu",
    clock: str = "wall",
) -> dict[str, float]:
    """Median seconds per call of each step, the steps alternating round by round.

    Each step is called twice first (warm-up, then a probe that sets how many calls make
    one sample); then ``rounds`` samples of every step, as many rounds as fit ``budget_s``
    within [min_rounds, max_rounds]. The order rotates every round, and each sample starts
    with one untimed call. ``clock="cpu"`` counts
    the process's CPU time instead of wall time: with one thread on a shared machine that
    is the latency the step would have on an idle core (time spent preempted is not counted).
    """
    device = torch.device(device)
    now = _clock(clock)
    names = list(steps)
    probe: dict[str, float] = {}
    for name in names:
        steps[name]()
        _sync(device)
        start = now()
        steps[name]()
        _sync(device)
        probe[name] = now() - start
    calls = {n: max(1, math.ceil(_MIN_SAMPLE_S / max(t, 1e-9))) for n, t in probe.items()}
    per_round = sum((calls[n] + 1) * probe[n] for n in names) or 1e-9
    rounds = max(min_rounds, min(max_rounds, int(budget_s / per_round)))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            step, n = steps[name], calls[name]
            # One untimed call first: the previous step left the allocator's free lists
            # shaped for its own tensors, and re-faulting fresh pages would be charged here.
            step()
            _sync(device)
            start = now()
            for _ in range(n):
                step()
            _sync(device)
            samples[name].append((now() - start) / n)
    return {n: statistics.median(s) for n, s in samples.items()}


CLOCKS = ("wall", "cpu")


def _clock(clock: str) -> Callable[[], float]:
    if clock == "wall":
        return time.perf_counter
    if clock == "cpu":
        return time.process_time
    raise ValueError(f"bench: expected clock in {CLOCKS}, got {clock!r}")


def peak_memory(step: Callable[[], None], device: torch.device | str = "cpu") -> int:
    """Bytes allocated at the peak of one call of ``step``, above what was live before it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    if device.type != "cpu":
        raise ValueError(f"bench: expected a cpu or cuda device for peak memory, got {device}")
    return _cpu_peak(step)


def _cpu_peak(step: Callable[[], None]) -> int:
    # Kineto reads its log level when it first starts; above 5 it stops printing
    # "profiler_start"/"profiler_stop" lines on every profile.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def _forward_step(module: nn.Module, x: Tensor, dtype: str) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad(), _autocast(x.device, dtype):
            module(x)

    return step


def _train_step(module: nn.Module, x: Tensor, dtype: str) -> Callable[[], None]:
    grad: list[Tensor] = []  # the output gradient, made once from the first output

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        with _autocast(x.device, dtype):
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


def _implementations(spec: str, channels: int, naive: ModuleType | None,
                     against: Sequence[str]) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """attn2d's module and the requested counterparts with matching widths (and, for the
    naive references, the same weights); notes say why a counterpart is missing."""
    ours = create(spec, channels)
    impls: dict[str, nn.Module] = {"attn2d": ours}
    notes: dict[str, str] = {}
    name = lookup(spec).name
    if "naive" in against:
        if naive is None:
            notes["naive"] = "benchmarks/naive.py not found"
        else:
            impls["naive"] = naive.naive_version(ours)
    if "timm" in against:
        theirs = timm_counterpart(name, ours)
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
    naive: ModuleType | None = None,
    clock: str = "wall",
) -> Case:
    """Time (and measure the memory of) one mechanism against its counterparts."""
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"bench: expected dtype in {DTYPES}, got {dtype!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"bench: expected layout in {LAYOUTS}, got {layout!r}")
    name = lookup(spec).name
    case = Case(spec, tuple(shape), dtype, layout)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(0)
    modules, notes = _implementations(spec, shape[1], naive, against)
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
        need = _dense_bytes(naive, impl, name, shape, itemsize, train=False)
        if need > memory_budget:
            measurement.note = (f"skipped: N×N maps need ~{need / GIB:.1f} GiB > budget "
                                f"{memory_budget / GIB:.1f} GiB")
            continue
        module = _place(module, device, layout)
        forward[impl] = _forward_step(copy.deepcopy(module).eval(), x, dtype)
        if _dense_bytes(naive, impl, name, shape, itemsize, train=True) <= memory_budget:
            train[impl] = _train_step(module.train(), x.detach().clone().requires_grad_(True),
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
    naive: ModuleType | None = None,
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
                                    memory_budget, device, naive, clock)
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
    naive: ModuleType | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ScalingRow]:
    """Peak memory of attn2d and the naive reference from small to large square maps.

    The training step (forward+backward) is profiled once, then timed once; naive sizes
    whose N×N maps would exceed ``memory_budget`` are skipped and say so.
    """
    device = torch.device(device)
    rows = []
    for spec in mechanisms:
        name = lookup(spec).name
        for side in sides:
            shape = (batch, channels, side, side)
            modules, _ = _implementations(spec, channels, naive, ("naive",))
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
            for impl, module in modules.items():
                row = ScalingRow(spec, impl, side, side * side)
                rows.append(row)
                module = module.to(device)
                fwd_need = _dense_bytes(naive, impl, name, shape, 4, train=False)
                train_need = _dense_bytes(naive, impl, name, shape, 4, train=True)
                if fwd_need <= memory_budget:
                    row.forward_peak = peak_memory(
                        _forward_step(copy.deepcopy(module).eval(), x, "fp32"), device)
                if train_need <= memory_budget:
                    step = _train_step(module.train(), x.clone().requires_grad_(True), "fp32")
                    row.train_peak = peak_memory(step, device)
                    start = time.perf_counter()
                    step()
                    _sync(device)
                    row.train_s = time.perf_counter() - start
                need = train_need if fwd_need <= memory_budget else fwd_need
                if need > memory_budget:
                    what = "fwd+bwd" if fwd_need <= memory_budget else "fwd and fwd+bwd"
                    row.note = (f"{what} skipped: N×N maps need ~{need / GIB:.1f} GiB > "
                                f"budget {memory_budget / GIB:.1f} GiB")
                if progress is not None:
                    progress(f"scaling {spec} {impl} {side}x{side}: "
                             f"{_mib(row.train_peak)} MiB fwd+bwd {row.note}".rstrip())
    return rows


def plot_scaling(rows: Sequence[ScalingRow], path: str | Path) -> None:
    """Log-log plot of fwd+bwd peak memory against positions (H·W), one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    series: dict[tuple[str, str], list[ScalingRow]] = {}
    for row in rows:
        series.setdefault((row.mechanism, row.impl), []).append(row)
    colours = dict(zip(sorted({r.mechanism for r in rows}), plt.get_cmap("tab10").colors,
                       strict=False))
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
    fig.tight_layout()
    from io import BytesIO

    buffer = BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


# --- targets and output ---------------------------------------------------------------


def _geomean(values: Iterable[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def check_targets(cases: Sequence[Case], scaling: Sequence[ScalingRow]) -> list[dict[str, Any]]:
    """The performance targets of the project, each with the measured value and a verdict."""
    out: list[dict[str, Any]] = []
    by_mechanism: dict[str, list[float]] = {}
    for case in cases:
        ratio = case.ratio("timm", "train_ms")
        if ratio is not None:
            by_mechanism.setdefault(case.mechanism, []).append(ratio)
    for mechanism, ratios in by_mechanism.items():
        gm = _geomean(ratios)
        out.append({"target": f"{mechanism}: fwd+bwd latency <= 1.0x timm (aim 0.8x)",
                    "value": f"geomean {gm:.2f}x, worst {max(ratios):.2f}x over {len(ratios)}",
                    "met": gm is not None and gm <= 1.0})
    peaks = {(r.mechanism, r.impl, r.side): r.train_peak for r in scaling}
    for mechanism in ("nonlocal", "pam"):
        ours, naive = peaks.get((mechanism, "attn2d", 64)), peaks.get((mechanism, "naive", 64))
        if ours and naive:
            out.append({"target": f"{mechanism} 64x64: fwd+bwd peak <= 1/8 of naive",
                        "value": f"{ours / naive:.3f} ({_mib(ours)} / {_mib(naive)} MiB)",
                        "met": ours <= naive / 8})
    for mechanism in SCALING_MECHANISMS:
        ours = peaks.get((mechanism, "attn2d", 128))
        if ours:
            out.append({"target": f"{mechanism} 128x128: fwd+bwd peak well under 8 GB",
                        "value": f"{_mib(ours)} MiB", "met": ours < 2 * GIB})
    ours, naive = peaks.get(("criss-cross", "attn2d", 64)), peaks.get(("nonlocal", "naive", 64))
    if ours and naive:
        out.append({"target": "criss-cross 64x64: fwd+bwd peak <= 1/10 of naive non-local",
                    "value": f"{ours / naive:.3f} ({_mib(ours)} / {_mib(naive)} MiB)",
                    "met": ours <= naive / 10})
    return out


def _mib(nbytes: int | None) -> str:
    return "–" if nbytes is None else f"{nbytes / MIB:.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], fmt: str) -> str:
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows]) + "\n"


def _check_format(fmt: str) -> None:
    if fmt not in ("text", "markdown", "json"):
        raise ValueError(f"bench: expected format text, markdown or json, got {fmt!r}")


def format_cases(cases: Sequence[Case], fmt: str = "text") -> str:
    """The latency / memory table: attn2d's numbers and its ratios to naive and timm.

    Ratios are attn2d ÷ other, so below 1 means attn2d is faster or smaller.
    """
    _check_format(fmt)
    if fmt == "json":
        return json.dumps([c.to_dict() for c in cases], indent=1) + "\n"
    header = ("mechanism", "input", "dtype", "layout", "fwd ms", "fwd+bwd ms",
              "fwd vs naive", "fwd+bwd vs naive", "fwd vs timm", "fwd+bwd vs timm",
              "peak MiB (fwd+bwd)", "peak vs naive", "notes")
    rows = []
    for c in cases:
        ours = c.results["attn2d"]
        notes = "; ".join(f"{k}: {v.note}" for k, v in c.results.items() if v.note)
        rows.append((c.mechanism, _size_text(c.shape), c.dtype, c.layout,
                     _num(ours.forward_ms), _num(ours.train_ms),
                     _ratio(c.ratio("naive", "forward_ms")), _ratio(c.ratio("naive", "train_ms")),
                     _ratio(c.ratio("timm", "forward_ms")), _ratio(c.ratio("timm", "train_ms")),
                     _mib(ours.train_peak), _ratio(c.ratio("naive", "train_peak")), notes))
    return _table(header, rows, fmt)


def format_scaling(rows: Sequence[ScalingRow], fmt: str = "text") -> str:
    """The memory-scaling table, one row per mechanism and map size, attn2d beside naive."""
    _check_format(fmt)
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=1) + "\n"
    pairs: dict[tuple[str, int], dict[str, ScalingRow]] = {}
    for r in rows:
        pairs.setdefault((r.mechanism, r.side), {})[r.impl] = r
    header = ("mechanism", "map", "N", "attn2d fwd MiB", "attn2d fwd+bwd MiB",
              "naive fwd MiB", "naive fwd+bwd MiB", "fwd+bwd ours/naive",
              "attn2d step s", "naive step s", "notes")
    table = []
    for (mechanism, side), impls in pairs.items():
        ours, naive = impls.get("attn2d"), impls.get("naive")
        ratio = (ours.train_peak / naive.train_peak
                 if ours and naive and ours.train_peak and naive.train_peak else None)
        table.append((mechanism, f"{side}×{side}", str(side * side),
                      _mib(ours.forward_peak if ours else None),
                      _mib(ours.train_peak if ours else None),
                      _mib(naive.forward_peak if naive else None),
                      _mib(naive.train_peak if naive else None),
                      "–" if ratio is None else f"{ratio:.3f}",
                      _num(ours.train_s if ours else None, 2),
                      _num(naive.train_s if naive else None, 2),
                      "; ".join(r.note for r in impls.values() if r.note)))
    return _table(header, table, fmt)


def format_targets(targets: Sequence[dict[str, Any]], fmt: str = "text") -> str:
    _check_format(fmt)
    if fmt == "json":
        return json.dumps(list(targets), indent=1) + "\n"
    rows = [(t["target"], t["value"], "met" if t["met"] else "MISSED") for t in targets]
    return _table(("target", "measured", "verdict"), rows, fmt)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    return {"torch": torch.__version__, "python": sys.version.split()[0],
            "machine": platform.machine(), "processor": platform.processor() or "unknown",
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
