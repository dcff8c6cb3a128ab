"""Batches per second of the data paths, and their share of a small CNN training step.

Variants, each producing augmented, normalised training batches of one epoch:

- ``DataLoader + ImageDataset``: one image at a time through ``ImageDataset.__getitem__``,
  collated by a DataLoader (the per-sample path that ``attn2d train`` used before the data
  moved to the device);
- ``TrainBatches (in memory)``: :meth:`attn2d.data.TrainBatches.batches` on images held on
  the device, a whole batch gathered, cropped, flipped and normalised at once;
- ``TrainBatches (streamed)``: the same batches read through a DataLoader (the path for data
  that does not fit in memory).

    python benchmarks/data_throughput.py --dataset fashion-mnist --batch-size 128 --threads 2

Variants run interleaved over ``--repeats`` rounds and the median is reported. The last
column puts the data time beside one training step of ``--model`` at the same batch size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from attn2d.data import DataSpec, get_dataset, load_data
from attn2d.models import create_model


def epoch_runners(args: argparse.Namespace) -> dict[str, object]:
    spec = DataSpec(args.dataset, data_dir=args.data_dir, subset=args.subset)
    memory = load_data(spec, args.device, seed=0).train
    streamed = load_data(dataclasses.replace(spec, in_memory="never",
                                           num_workers=args.workers), args.device, seed=0).train
    per_image = get_dataset(args.dataset, "train", args.data_dir, subset=args.subset, seed=0)
    device = torch.device(args.device)

    def loader(epoch: int) -> int:
        per_image.set_epoch(epoch)
        order = memory.order(epoch).tolist()
        count = 0
        for x, y in DataLoader(per_image, batch_size=args.batch_size, sampler=order,
                               num_workers=args.workers, drop_last=True,
                               pin_memory=device.type == "cuda"):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            count += 1
        return count

    def batches(train):
        def run(epoch: int) -> int:
            count = 0
            for _x, _y in train.batches(epoch, args.batch_size):
                count += 1
            return count
        return run

    return {"DataLoader + ImageDataset": loader, "TrainBatches (in memory)": batches(memory),
            "TrainBatches (streamed)": batches(streamed)}


def step_seconds(args: argparse.Namespace, channels: int, size: int) -> float:
    """Median seconds of one training step of the model at the batch size."""
    torch.manual_seed(0)
    net = create_model(args.model, in_channels=channels, num_classes=10).to(args.device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(args.batch_size, channels, size, size, device=args.device)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device)
    times = []
    for _ in range(args.steps + 3):
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--subset", type=int, default=None, help="training images (default all)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved epochs per variant")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the model")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    runners = epoch_runners(args)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for epoch in range(args.repeats):
        for name, run in runners.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            count = run(epoch)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            rates[name].append(count / (time.perf_counter() - start))
    info = load_data(DataSpec(args.dataset, data_dir=args.data_dir), "cpu", 0).info
    step = step_seconds(args, info.in_channels, info.image_size)
    rows = []
    for name, values in rates.items():
        per_second = statistics.median(values)
        data_ms = 1000 / per_second
        rows.append({"variant": name, "batches_per_s": per_second, "ms_per_batch": data_ms,
                     "share_of_step": data_ms / (data_ms + step * 1000)})
    result = {"dataset": args.dataset, "batch_size": args.batch_size, "device": args.device,
              "threads": args.threads, "workers": args.workers, "model": args.model,
              "step_ms": step * 1000, "rows": rows}
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.dataset}, batch {args.batch_size}, {args.device}, {args.threads} threads, "
          f"{args.workers} workers; {args.model} step {step * 1000:.1f} ms")
    print(f"{'variant':<28} {'batches/s':>10} {'ms/batch':>9} {'share of step':>14}")
    for row in rows:
        print(f"{row['variant']:<28} {row['batches_per_s']:>10.1f} {row['ms_per_batch']:>9.2f} "
              f"{row['share_of_step']:>13.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
