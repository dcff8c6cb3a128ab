"""``attn2d stats``: statistics of every attention map over N images, with warnings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._io import atomic_path
from ..debug import collect_attention_stats, format_stats
from ..viz.report import sample_batches
from .visualize import add_model_arguments, subject_from_args

HELP = "attention statistics (mean, std, entropy, saturation) over N images; flags bad maps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--images", type=int, default=256, metavar="N",
                        help="images to run (the split's first N; default: 256)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    subject = subject_from_args(args)
    batches = sample_batches(subject.dataset, args.images, args.batch_size, subject.data_dir,
                             args.split)
    stats = collect_attention_stats(subject.model, batches)
    print(f"{subject.title} on {args.images} {subject.dataset} {args.split} images")
    print(format_stats(stats))
    if args.json:
        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps([s.as_dict() for s in stats], indent=2) + "\n")
    return 0
