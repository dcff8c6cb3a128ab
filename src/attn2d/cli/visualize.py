"""``attn2d visualize``: every attention picture for one image, as PNG files."""

from __future__ import annotations

import argparse

from .._base.errors import Attn2dError

HELP = "write every attention picture for one image (trained checkpoint or untrained model)"


def add_model_arguments(parser: argparse.ArgumentParser,
                        seed_help: str = "seed of the untrained model") -> None:
    """What to inspect: ``--checkpoint``, or ``--model``/``--attention`` (untrained), and
    the data. Shared with ``attn2d stats`` and ``attn2d explore``."""
    source = parser.add_argument_group("model (a checkpoint, or an untrained model)")
    source.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="checkpoint written by attn2d train (e.g. RUN_DIR/last.pt)")
    source.add_argument("--model", default=None,
                        help="untrained backbone for debugging, e.g. small_cnn or resnet18")
    source.add_argument("--attention", default=None,
                        help="spec string for the untrained model, e.g. cbam or 'rcca'")
    source.add_argument("--placement", default=None, choices=("block", "stage"),
                        help="attention placement of the untrained model (default: registry)")
    source.add_argument("--seed", type=int, default=0, help=seed_help)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=None,
                      help="a dataset name (default: the checkpoint's, else "
                           "fashion-mnist)")
    data.add_argument("--data-dir", default=None,
                      help="dataset folder (default: $ATTN2D_DATA_DIR or ./data)")
    data.add_argument("--split", default="test", choices=("train", "test"),
                      help="which split the images come from")


def subject_from_args(args: argparse.Namespace):
    from ..viz.pictures import load_subject

    return load_subject(args.checkpoint, model=args.model, attention=args.attention,
                        placement=args.placement, dataset=args.dataset,
                        data_dir=args.data_dir, seed=args.seed)


def _query(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise Attn2dError(f"expected --query as ROW,COL in image pixels, e.g. 14,14, "
                          f"got {text!r}") from None
    return row, col


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..viz.pictures import PICTURES

    add_model_arguments(parser)
    parser.add_argument("--index", type=int, default=0, help="image index in the split")
    parser.add_argument("--out", required=True, help="folder for the PNG files (required)")
    parser.add_argument("--query", default=None, metavar="ROW,COL",
                        help="query pixel for position / criss-cross maps (default: centre)")
    parser.add_argument("--sample", type=int, default=256, metavar="N",
                        help="images for the weight histograms: the split's first N, or all of "
                             "a smaller split (0: none; default: 256)")
    parser.add_argument("--layers", nargs="+", default=None, metavar="PATH",
                        help="draw only these mechanisms, e.g. block2.attn (default: all)")
    parser.add_argument("--pictures", nargs="+", default=None, choices=PICTURES,
                        metavar="KIND", help=f"draw only these kinds: {', '.join(PICTURES)} "
                                             "(default: all)")
    parser.add_argument("--prefix", default="", help="file-name prefix (e.g. the run name)")
    parser.add_argument("--save-maps", default=None, metavar="NPZ",
                        help="also write the image's captured maps as arrays, keyed by module "
                             "path and kind (default: none)")


def run(args: argparse.Namespace) -> int:
    from ..viz.pictures import visualize

    files = visualize(subject_from_args(args), args.out, index=args.index, split=args.split,
                      query=_query(args.query), sample=args.sample,
                      layers=args.layers, pictures=args.pictures, prefix=args.prefix,
                      save_maps=args.save_maps)
    for path in files:
        print(path)
    return 0
