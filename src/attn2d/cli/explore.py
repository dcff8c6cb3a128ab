"""``attn2d explore``: one self-contained, interactive HTML page of attention maps."""

from __future__ import annotations

import argparse

from .._base.errors import Attn2dError
from .visualize import add_model_arguments, subject_from_args

HELP = "one interactive HTML page: every model's attention maps and Grad-CAM, side by side"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="*", metavar="SOURCE",
                        help="checkpoints (best.pt, last.pt), run folders, or comparison folders "
                             "(attn2d compare --out: one run per mechanism); by default none, "
                             "for untrained models (--attention se,nonlocal: one per spec)")
    add_model_arguments(parser, seed_help="the seed of the runs taken from a comparison folder; "
                                          "also the seed of untrained models")
    parser.add_argument("--out", required=True, metavar="HTML",
                        help="the page to write, e.g. explore.html (required, no default)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--images", type=int, default=16, metavar="N",
                       help="the split's first N images (at most all of them)")
    which.add_argument("--index", type=int, nargs="+", default=None, metavar="I",
                       help="these images of the split instead (default: the first N)")
    parser.add_argument("--gradcam-layer", default=None, metavar="PATH",
                        help="module path of Grad-CAM's layer (default: the last module with a "
                             "4-D output, e.g. block3 or layer4)")
    parser.add_argument("--no-gradcam", dest="gradcam", action="store_false",
                        help="leave Grad-CAM out (default: in, when the grad-cam package is "
                             "installed: pip install 'attn2d[explore]')")
    parser.add_argument("--title", default=None, help="the page's heading (default: attn2d "
                                                      "explore)")


def _sources(args: argparse.Namespace) -> list:
    """Paths as given, or untrained models: ``--attention`` may list several, comma-separated."""
    paths = [*args.sources, *([args.checkpoint] if args.checkpoint else [])]
    if args.model is None and args.attention is None:
        return paths
    if paths:
        raise Attn2dError("expected checkpoints and folders, or --model/--attention "
                          "for untrained models, got both")
    from ..comparison.plan import split_specs

    specs = split_specs(args.attention) if args.attention else [None]
    return [subject_from_args(argparse.Namespace(**{**vars(args), "attention": spec,
                                                    "model": args.model or "small_cnn"}))
            for spec in specs]


def run(args: argparse.Namespace) -> int:
    from ..viz.explorer import explore

    path = explore(_sources(args), args.out, seed=args.seed, split=args.split,
                   images=args.images, indices=args.index, dataset=args.dataset,
                   data_dir=args.data_dir, gradcam=args.gradcam,
                   gradcam_layer=args.gradcam_layer, title=args.title)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
