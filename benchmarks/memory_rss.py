"""Peak RSS of one forward+backward, each measured in a fresh process.

    python benchmarks/memory_rss.py               # the targets: CBAM vs naive, RCCA vs non-local
    python benchmarks/memory_rss.py --repeats 9 --out DIR
    python benchmarks/memory_rss.py --pairs "cbam-lite,naive:cbam-lite,8x64x64x64"

Each figure is the growth of the resident set (Linux ``VmHWM`` − ``VmRSS``) over one
training step, in a process of its own: Python, torch and attn2d imported, the module
built, ``--warmup`` steps run on an 8×8 map (libraries set themselves up on their first
call: thread pools, kernels), the full-size input and output gradient made, the peak
counter reset (``/proc/self/clear_refs``), one step run. This is what the operating system
had to hand over, not the bytes PyTorch asked for (the allocator peak of ``attn2d bench``):
buffers that kernels allocate outside PyTorch count, and so does how the C allocator lays
blocks out. Two allocator regimes (``--regimes``), each in its own children:

* ``exact``: ``MALLOC_MMAP_THRESHOLD_=65536``, so every block of 64 KiB or more is a
  mapping of its own, returned when freed: the figure is what the step holds at its
  highest point. Repeats agree to 0.1 MiB.
* ``glibc``: glibc's defaults, as a training process has them. After the first large
  free, glibc serves large blocks from its heap; a freed block is often split by a small
  request before a block of its size comes again, and that one is placed on fresh pages.
  The figure then adds that fragmentation, which depends on where the address-space
  layout put things: it varies by about ±20 % from process to process, so read medians.

The two sides of a pair alternate process by process, ``--repeats`` times each;
``MALLOC_*`` variables of this shell are not passed on. An implementation is a registry
spec (``cbam``, ``"rcca(reduction=4)"``) or ``naive:`` and a spec, the naive reference of
that module (:func:`attn2d.tools.naive.naive_version`) with its weights. A pair is
``OURS,THEIRS,BxCxHxW``; the ratio is OURS ÷ THEIRS of the medians, met when at most 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The two figures issue 17 asks for: CBAM against a naive CBAM, RCCA against non-local.
TARGET_PAIRS = ("cbam,naive:cbam,8x64x64x64", "rcca,nonlocal,1x64x96x96",
                "rcca,nonlocal,1x64x128x128")
QUICK_PAIRS = ("cbam,naive:cbam,2x16x16x16", "rcca,nonlocal,1x16x24x24")
REGIMES = {"exact": {"MALLOC_MMAP_THRESHOLD_": "65536"}, "glibc": {}}


@dataclass(frozen=True)
class Pair:
    ours: str
    theirs: str
    shape: tuple[int, int, int, int]

    @property
    def size(self) -> str:
        return "x".join(map(str, self.shape))


def parse_pair(text: str) -> Pair:
    """``OURS,THEIRS,BxCxHxW`` (a spec may hold commas inside parentheses)."""
    from attn2d._base.shape import parse_shape

    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    if len(parts) != 3:
        raise SystemExit(f"memory_rss: expected --pairs OURS,THEIRS,BxCxHxW, got {text!r}")
    shape = parse_shape(parts[2], (4,), owner="memory_rss", name="--pairs")
    return Pair(parts[0], parts[1], shape)  # type: ignore[arg-type]


# --- the child: one measurement --------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    raise RuntimeError(f"memory_rss: no {key} in /proc/self/status")


def measure(impl: str, shape: Sequence[int], warmup: int) -> dict[str, float]:
    """In a fresh process: MiB the resident set grew by over one training step of ``impl``."""
    import torch

    import attn2d
    from attn2d.tools import naive

    torch.manual_seed(0)
    module = attn2d.create(impl.removeprefix("naive:"), shape[1])
    if impl.startswith("naive:"):
        module = naive.naive_version(module)
    module.train()

    def step(x: torch.Tensor, grad: torch.Tensor) -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)

    small = torch.randn(*shape[:2], min(shape[2], 8), min(shape[3], 8), requires_grad=True)
    for _ in range(warmup):
        step(small, torch.randn_like(small))
    x = torch.randn(*shape, requires_grad=True)
    grad = torch.randn_like(x)
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    step(x, grad)
    peak = _status_kib("VmHWM")
    return {"base_mib": before / 1024, "peak_mib": peak / 1024, "step_mib": (peak - before) / 1024}


# --- the parent: fresh processes, alternated -------------------------------------------


def _child_env(regime: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return {**env, **REGIMES[regime]}


def run_child(impl: str, shape: Sequence[int], regime: str, args: argparse.Namespace) -> float:
    """MiB one step of ``impl`` grew a fresh process by, under the allocator ``regime``."""
    command = [sys.executable, __file__, "--child", impl, "x".join(map(str, shape)),
               "--threads", str(args.threads), "--warmup", str(args.warmup)]
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env(regime),
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"memory_rss: the child measuring {impl} at {shape} failed:\n"
                         f"{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])["step_mib"]


def measure_pairs(pairs: Sequence[Pair], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per pair and regime: median, min and max MiB of each side."""
    rows = []
    for pair in pairs:
        for regime in args.regimes:
            samples: dict[str, list[float]] = {pair.ours: [], pair.theirs: []}
            for r in range(args.repeats):
                for impl in (pair.ours, pair.theirs)[:: 1 if r % 2 == 0 else -1]:
                    samples[impl].append(run_child(impl, pair.shape, regime, args))
            ours, theirs = (statistics.median(samples[k]) for k in (pair.ours, pair.theirs))
            rows.append({"ours": pair.ours, "theirs": pair.theirs, "size": pair.size,
                         "regime": regime, "ours_mib": ours, "theirs_mib": theirs,
                         "ours_range": (min(samples[pair.ours]), max(samples[pair.ours])),
                         "theirs_range": (min(samples[pair.theirs]), max(samples[pair.theirs])),
                         "ratio": ours / theirs, "met": ours <= theirs, "samples": samples})
            print(f"memory_rss {pair.ours} vs {pair.theirs} {pair.size} {regime}: "
                  f"{ours:.1f} / {theirs:.1f} MiB = {ours / theirs:.3f}", file=sys.stderr)
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace):
    """The rows as an :class:`attn2d._base.tables.Table`."""
    from attn2d._base.tables import Table

    def spread(pair: tuple[float, float]) -> str:
        return f"{pair[0]:.1f}–{pair[1]:.1f}"

    mib = "{:.1f}".format
    return Table([("ours", "attn2d"), ("theirs", "against"), ("size", "input"),
                  ("regime", "malloc"), ("ours_mib", "MiB"), ("ours_range", "min–max"),
                  ("theirs_mib", "against MiB"), ("theirs_range", "min–max"),
                  ("ratio", "ratio"), ("met", "≤ 1")], rows,
                 {"ours_mib": mib, "theirs_mib": mib, "ours_range": spread,
                  "theirs_range": spread, "ratio": "{:.3f}×".format,
                  "met": lambda v: "met" if v else "missed"},
                 align_left=("ours", "theirs", "size", "regime"),
                 notes=[f"Peak RSS growth over one fwd+bwd step (float32, {args.threads} "
                        f"thread(s)), median of {args.repeats} fresh processes per side, "
                        f"alternated; malloc: see the docstring of benchmarks/memory_rss.py."])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", metavar="OURS,THEIRS,BxCxHxW")
    parser.add_argument("--regimes", nargs="+", choices=tuple(REGIMES), default=list(REGIMES))
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1, help="8×8 steps before the measured one")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat")
    parser.add_argument("--out", type=Path, help="write memory-rss.md and memory-rss.json here")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        impl, size = args.child
        print(json.dumps(measure(impl, [int(s) for s in size.split("x")], args.warmup)))
        return 0
    if args.quick:
        args.repeats, args.pairs = 1, list(QUICK_PAIRS)
    start = time.perf_counter()
    result = table(measure_pairs([parse_pair(p) for p in args.pairs or TARGET_PAIRS], args),
                   args)
    print(result.render("text"))
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    if args.out:
        from attn2d._base.io import write_json
        from attn2d.tools.bench import environment

        result.save(args.out / "memory-rss.md")
        write_json(args.out / "memory-rss.json",
                   {"environment": environment(), "command": " ".join(sys.argv),
                    "rows": result.rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
