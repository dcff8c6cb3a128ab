"""``attn2d stats``: statistics of every attention map over N images, with warnings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._base.io import write_json
from .._base.log import plural
from .visualize import add_model_arguments, subject_from_args

HELP = "attention statistics (mean, std, entropy, saturation) over N images; flags bad maps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--images", type=int, default=256, metavar="N",
                        help="images to run: the split's first N, or all of a smaller split "
                             "(default: 256)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    from ..tools.map_stats import collect_attention_stats, format_stats
    from ..training import accuracy_gap
    from ..viz.pictures import sample_batches

    subject = subject_from_args(args)
    batches = sample_batches(subject.data, args.images, args.batch_size, args.split)
    stats = collect_attention_stats(subject.model, batches)
    images = plural(sum(len(b) for b in batches), f"{subject.dataset} {args.split} image")
    print(f"{subject.title} on {images}")
    print(format_stats(stats))
    if subject.metrics is not None:  # a trained run: did its evaluation lag its training?
        rows = [json.loads(line) for line in subject.metrics.read_text().splitlines() if line]
        gap = accuracy_gap(rows[-1]) if rows else None
        if gap:
            print(f"\nwarning: {gap}")
    if args.json:
        write_json(Path(args.json), [s.as_dict() for s in stats])
    return 0
