"""Images per second of the training step: plain eager against the loop's speed options.

The step is the one ``attn2d.train`` runs (autocast forward, cross-entropy, backward, SGD
with Nesterov momentum) on batches held in memory, so the numbers measure the model and
the options, not the data pipeline. "plain" reads the loss back every step
(``loss.item()``), as many tutorial loops do; the other variants keep running sums on the
device, as ``attn2d train`` does.

    python benchmarks/train_throughput.py --model small_cnn --attention none --steps 30

Variants run interleaved over ``--repeats`` rounds and the median is reported, so that a
burst of load on a shared machine hits every variant alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attn2d.models import create_model

VARIANTS = {
    # name: (channels_last, amp dtype or None, compile, sync every step)
    "plain eager": (False, None, False, True),
    "no host sync": (False, None, False, False),
    "channels-last": (True, None, False, False),
    "bf16": (False, torch.bfloat16, False, False),
    "channels-last + bf16": (True, torch.bfloat16, False, False),
    "compile": (False, None, True, False),
    "compile + channels-last": (True, None, True, False),
    "compile + bf16": (False, torch.bfloat16, True, False),
}


def make_step(args: argparse.Namespace, variant: str):
    channels_last, dtype, compiled, sync = VARIANTS[variant]
    torch.manual_seed(0)
    net = create_model(args.model, attention=args.attention, in_channels=args.channels,
                       num_classes=10)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(args.device, memory_format=fmt).train()
    model = torch.compile(net) if compiled else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(args.batch_size, args.channels, args.size, args.size, device=args.device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device)
    running = torch.zeros((), device=args.device)

    def step() -> None:
        nonlocal running
        with torch.autocast(torch.device(args.device).type, dtype=dtype,
                            enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if sync:
            float(loss.item())
        else:
            running += loss.detach()

    return step


def timed(step, steps: int, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--attention", default=None)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (and compiling)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {list(VARIANTS)}")

    steps, warm = {}, {}
    for name in names:
        steps[name] = make_step(args, name)
        start = time.perf_counter()
        for _ in range(args.warmup):
            steps[name]()
        warm[name] = time.perf_counter() - start
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for name in names:
            rates[name].append(args.batch_size * args.steps / timed(steps[name], args.steps,
                                                                    args.device))
    base = statistics.median(rates[names[0]])
    print(f"{args.model} attention={args.attention} batch {args.batch_size} "
          f"{args.channels}x{args.size}x{args.size} on {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'variant':<26}{'images/s':>10}{'vs ' + names[0]:>18}{'warm-up s':>11}")
    rows = []
    for name in names:
        rate = statistics.median(rates[name])
        rows.append({"variant": name, "images_per_s": rate, "speedup": rate / base,
                     "warmup_s": warm[name], "rounds": rates[name]})
        print(f"{name:<26}{rate:>10.0f}{rate / base:>17.2f}x{warm[name]:>11.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
