"""Training throughput: ``attn2d train``'s epoch loop next to a bare step on a batch already
on the device, per mechanism and execution mode; and the step's cost against the baseline.

For every (mode, mechanism):

- **loop**: images/s of :func:`attn2d.training.train_one_epoch` on a real run (on-device data,
  augmentation, running sums, the schedule): what ``attn2d train`` achieves;
- **step**: images/s of the same training step (``attn2d.training.step.train_step``: autocast
  forward, loss, backward, optimiser and schedule) repeated on one batch already on the
  device: what the model and the mode allow;
- **graph** (CUDA only, ``--graphs``): the eager step captured once as a CUDA graph
  (``torch.cuda.graph``, whole-network capture with static input tensors) and replayed: the
  step without launch overhead, and without compiling anything.

Modes are ``eager`` and ``torch.compile`` modes (``default``, ``reduce-overhead``,
``max-autotune``); a compiled mode's compilation happens in :func:`attn2d.training.start`
and is reported apart. Every time is a median over ``--repeats`` interleaved rounds, so a
burst of load hits every variant alike.

    python benchmarks/train_throughput.py --model small_cnn --mechanisms none,se,cbam \\
        --batch-size 128 --threads 2 --modes eager
    python benchmarks/train_throughput.py --device cuda --model resnet18 --batch-size 256 \\
        --amp bf16 --mechanisms none,se,eca,cbam,nonlocal,danet,criss-cross,coord,gc \\
        --modes eager --graphs --out results/throughput
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from attn2d._base.io import write_atomic, write_json
from attn2d._base.tables import Table
from attn2d.training import StopRequest, TrainConfig, start, train_one_epoch, train_step

MODES = ("eager", "default", "reduce-overhead", "max-autotune")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    begin = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - begin


def graph_step(run, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """The eager training step captured as one CUDA graph (PyTorch's whole-network capture:
    warm up on a side stream, capture, then replay on the same static tensors)."""
    static_x, static_y = x.clone(), y.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            run.optimizer.zero_grad(set_to_none=True)
            _forward_backward(run, static_x, static_y)
            run.optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    run.optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        _forward_backward(run, static_x, static_y)
        run.optimizer.step()
    return graph.replay


def _forward_backward(run, x: torch.Tensor, y: torch.Tensor) -> None:
    from attn2d._base.amp import autocast

    with autocast(run.process.device, run.config.amp):
        loss = run.loss_fn(run.model(x).float(), y)
    loss.backward()


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mode in args.modes:
        for spec in args.mechanisms:
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(
                    model=args.model, attention=None if spec == "none" else spec,
                    dataset=args.dataset, data_dir=args.data_dir,
                    subset=args.batch_size * args.steps, test_subset=args.batch_size,
                    epochs=args.repeats + 1, batch_size=args.batch_size, amp=args.amp,
                    channels_last=args.channels_last,
                    compile="none" if mode == "eager" else mode, threads=args.threads,
                    device=args.device, eval_batch_size=args.batch_size, out=out,
                    progress=False)
                run = start(config)
                rows.append(_row(args, run, mode, spec))
                print(f"{mode} {spec}: loop {rows[-1]['loop_images_s']:.0f} img/s, step "
                      f"{rows[-1]['step_images_s']:.0f} img/s", file=sys.stderr, flush=True)
    base = {r["mode"]: r["step_ms"] for r in rows if r["mechanism"] == "none"}
    base_graph = {r["mode"]: r.get("graph_ms") for r in rows if r["mechanism"] == "none"}
    for r in rows:
        r["step_vs_baseline"] = r["step_ms"] / base[r["mode"]] if r["mode"] in base else None
        graph, reference = r.get("graph_ms"), base_graph.get(r["mode"])
        r["graph_vs_baseline"] = graph / reference if graph and reference else None
    return rows


def _row(args: argparse.Namespace, run, mode: str, spec: str) -> dict:
    device = run.process.device
    stop = StopRequest()
    x, y = next(iter(run.data.train.batches(0, args.batch_size)))
    steps: dict[str, Callable[[], None]] = {}

    epochs = itertools.count()

    def loop() -> None:  # one epoch of the real loop, a new epoch (order) each round
        run.step = 0
        train_one_epoch(run, next(epochs), stop)

    steps["loop"] = loop
    steps["step"] = lambda: [train_step(run, x, y) for _ in range(args.steps)]
    if args.graphs and device.type == "cuda":
        replay = graph_step(run, x, y)
        steps["graph"] = lambda: [replay() for _ in range(args.steps)]
    timings: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():  # a warm-up round (allocator, caches)
        seconds(fn, device)
    for _ in range(args.repeats):
        for name, fn in steps.items():
            timings[name].append(seconds(fn, device))
    images = args.batch_size * args.steps
    row = {"mode": mode, "mechanism": spec, "compile_s": run.compile_time_s}
    for name, values in timings.items():
        median = statistics.median(values)
        row[f"{name}_images_s"] = images / median
        row[f"{name}_ms"] = 1e3 * median / args.steps
    return row


def table(rows: list[dict], args: argparse.Namespace) -> Table:
    columns = [("mode", "mode"), ("mechanism", "mechanism"),
               ("loop_images_s", "attn2d train loop (img/s)"),
               ("step_images_s", "step on device (img/s)"), ("step_ms", "step (ms)"),
               ("step_vs_baseline", "step ÷ baseline")]
    if any("graph_ms" in r for r in rows):
        columns += [("graph_images_s", "CUDA graph (img/s)"),
                    ("graph_vs_baseline", "graph ÷ baseline")]
    columns.append(("compile_s", "compile (s)"))

    display = {"loop_images_s": "{:,.0f}".format, "step_images_s": "{:,.0f}".format,
               "graph_images_s": "{:,.0f}".format, "step_ms": "{:.2f}".format,
               "step_vs_baseline": "{:.2f}×".format, "graph_vs_baseline": "{:.2f}×".format,
               "compile_s": "{:.1f}".format}
    note = (f"{args.model} on {args.dataset}, batch {args.batch_size}, amp {args.amp}, "
            f"channels-last {'on' if args.channels_last else 'off'}, {args.device}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}; medians of "
            f"{args.repeats} interleaved rounds of {args.steps} steps.")
    return Table(columns, rows, display, align_left=("mode", "mechanism"), notes=[note])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--mechanisms", default="none,se,cbam",
                        help="comma-separated specs; 'none' is the baseline")
    parser.add_argument("--modes", default="eager", help=f"comma-separated: {', '.join(MODES)}")
    parser.add_argument("--graphs", action="store_true",
                        help="also replay the eager step as a captured CUDA graph (CUDA only)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="a few steps: a check, no figure")
    parser.add_argument("--out", default=None, help="write throughput.{md,json} here")
    args = parser.parse_args()
    args.mechanisms = [s.strip() for s in args.mechanisms.split(",") if s.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(args.modes) - set(MODES):
        parser.error(f"expected --modes among {MODES}, got {args.modes}")
    if args.quick:
        args.steps, args.repeats = 2, 1
    rows = measure(args)
    result = table(rows, args)
    print(result.to_markdown())
    if args.out:
        out = Path(args.out)
        write_atomic(out / "throughput.md", result.to_markdown())
        write_json(out / "throughput.json", {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
