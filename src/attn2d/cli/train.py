"""``attn2d train``: train one model (also under ``torchrun -m attn2d train``).

Where settings come from, strongest first: options given on the command line, then
``--config FILE`` (a JSON object of :class:`~attn2d.train.TrainConfig` fields, as ``attn2d
compare`` writes for each run), then the defaults of :class:`~attn2d.train.TrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._base.errors import Attn2dError
from . import default_text

if TYPE_CHECKING:
    from ..training import TrainConfig

HELP = "train one model with or without attention; metrics, checkpoints, resume, torchrun"


@functools.cache
def _config_fields() -> frozenset[str]:
    from ..training import TrainConfig

    return frozenset(f.name for f in dataclasses.fields(TrainConfig))


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from None


class _Group:
    """Adds options for :class:`TrainConfig` fields to one help group. Their parser default
    is SUPPRESS, so an option is in the parsed namespace only when the user gave it: that
    is what lets the command line override ``--config`` without argparse's defaults
    overwriting the file. The help shows the field's default."""

    def __init__(self, parser: argparse.ArgumentParser, title: str, defaults: TrainConfig
                 ) -> None:
        self.group = parser.add_argument_group(title)
        self.defaults = defaults

    def add(self, *flags: str, help: str, dest: str | None = None, **kwargs: Any) -> None:
        dest = dest or flags[0].lstrip("-").replace("-", "_")
        if dest.startswith("no_"):
            dest = dest[3:]
        assert dest in _config_fields(), dest
        if not flags[0].startswith("--no-"):  # a --no-X flag's help says X is on by default
            help = f"{help} (default: {default_text(getattr(self.defaults, dest))})"
        self.group.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, help=help,
                                **kwargs)


def add_training_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig,
                           attention: bool = True) -> None:
    """Options shared by ``train`` and ``compare``: model, data, optimisation, speed."""
    from .._base.amp import AMP_DTYPES
    from ..data.folder import BAD_IMAGES
    from ..data.load import IN_MEMORY
    from ..training import COMPILE_MODES, GATE_INITS, OPTIMIZERS

    model = _Group(parser, "model", defaults)
    model.add("--model", help="small_cnn, resnet18, resnet34, resnet50, or torchvision:NAME / "
              "timm:NAME")
    if attention:
        model.add("--attention", help="mechanism spec, e.g. se or 'cbam(reduction=8)'")
    model.add("--placement", choices=("block", "stage"),
              help="where attention goes (none: the mechanism's registry default)")
    model.add("--gate-init", choices=GATE_INITS,
              help="identity: attention starts as the identity (a zero-initialised blend); "
                   "none means identity with --freeze-backbone, else the papers' default")
    data = _Group(parser, "data", defaults)
    data.add("--dataset", help="fashion-mnist, cifar10, cifar100, svhn or folder:PATH")
    data.add("--data-dir", help="dataset folder (none: $ATTN2D_DATA_DIR or ./data)")
    data.add("--download", action="store_true",
             help="let torchvision download missing files (needs a network)")
    data.add("--subset", type=int, help="train on a stratified subset of N training images")
    data.add("--resample-train", action="store_true",
             help="draw the --subset of training images from each run's seed (seeds then "
                  "differ in their data too)")
    data.add("--test-subset", type=int, help="evaluate on a stratified subset of N test images")
    data.add("--val-split", type=int, metavar="N",
             help="hold out N training images (stratified); the reported epoch is then the "
                  "one with the best validation accuracy")
    data.add("--image-size", type=int, help="image folders: resize to this side (none: the "
             "images' own, when all share one square size)")
    data.add("--channels", type=int, choices=(1, 3),
             help="image folders: 1 (grey) or 3 (RGB) (none: 1 when every image is grey)")
    data.add("--mean", type=_floats, help="image folders: per-channel mean, e.g. 0.5,0.5,0.5 "
             "(none: computed from the training images)")
    data.add("--std", type=_floats, help="image folders: per-channel std (none: computed)")
    data.add("--no-augment", dest="augment", action="store_false",
             help="no training augmentation (random crop, flip; on by default)")
    data.add("--bad-images", choices=BAD_IMAGES,
             help="image folders: refuse or skip unreadable images")
    data.add("--in-memory", choices=IN_MEMORY,
             help="hold the images on the training device (auto: when they fit)")
    data.add("--num-workers", type=int, help="DataLoader workers for streamed data")
    opt = _Group(parser, "optimisation", defaults)
    opt.add("--epochs", type=int, help="training epochs")
    opt.add("--batch-size", type=int, help="global batch, split across torchrun processes")
    opt.add("--optimizer", choices=OPTIMIZERS, help="optimiser, with a cosine schedule")
    opt.add("--lr", type=float, help="peak learning rate (none: 0.05 SGD, 1e-3 AdamW)")
    opt.add("--momentum", type=float, help="SGD momentum")
    opt.add("--no-nesterov", dest="nesterov", action="store_false",
            help="plain instead of Nesterov momentum (Nesterov is on by default)")
    opt.add("--weight-decay", type=float, help="weight decay")
    opt.add("--warmup-epochs", type=float, help="linear learning-rate warm-up before the decay")
    opt.add("--label-smoothing", type=float, help="label smoothing")
    opt.add("--attention-warmup", type=float, metavar="EPOCHS",
            help="blend attention output with its input, weight rising per step to 1 over "
                 "this many epochs")
    opt.add("--precise-bn", type=int, metavar="N",
            help="recompute BatchNorm statistics over N training batches before each "
                 "evaluation (0: off)")
    speed = _Group(parser, "speed", defaults)
    speed.add("--amp", choices=tuple(AMP_DTYPES), help="autocast dtype")
    speed.add("--channels-last", action=argparse.BooleanOptionalAction,
              help="channels-last memory format for the model and the batches")
    speed.add("--compile", nargs="?", const="default", choices=COMPILE_MODES,
              metavar="MODE", help="torch.compile the model: default, reduce-overhead (CUDA "
              "graphs), max-autotune, or auto (reduce-overhead on a GPU, none on a CPU); a bare "
              "--compile means default")
    speed.add("--threads", type=int, help="torch intra-op threads per process (none: torch's "
              "choice)")
    speed.add("--device", help="auto, cpu, cuda or cuda:N")
    speed.add("--eval-batch-size", type=int, help="evaluation batch (the last one is padded)")
    output = _Group(parser, "output", defaults)
    output.add("--no-progress", dest="progress", action="store_false",
               help="no progress bar; one line per epoch is still printed (the bar is on by "
                    "default)")
    output.add("--log-every", type=int, help="steps between progress-bar updates")
    output.add("--tensorboard", action="store_true",
               help="write TensorBoard events to OUT/tensorboard (pip install attn2d[tensorboard])")
    output.add("--tensorboard-every", type=int, metavar="K",
               help="attention maps and weight histograms every K epochs")


def read_config_file(path: str, owner: str = "attn2d train") -> dict[str, Any]:
    """The TrainConfig fields in a JSON file; one clear error for anything else."""
    file = Path(path)
    if not file.is_file():
        raise Attn2dError(f"{owner}: expected --config to name a JSON file, got {path!r} "
                          "(no such file)")
    try:
        values = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise Attn2dError(f"{owner}: expected --config {path} to be JSON, got invalid JSON at "
                          f"line {err.lineno}, column {err.colno} ({err.msg})") from None
    except UnicodeDecodeError:
        raise Attn2dError(f"{owner}: expected --config {path} to be JSON text, got binary data"
                          ) from None
    if not isinstance(values, dict):
        raise Attn2dError(f"{owner}: expected --config {path} to hold a JSON object of "
                          f"settings, got a JSON {type(values).__name__}")
    fields = _config_fields()
    unknown = sorted(set(values) - fields)
    if unknown:
        raise Attn2dError(f"{owner}: expected --config {path} to hold only TrainConfig fields, "
                          f"got unknown keys {unknown}; valid: {', '.join(sorted(fields))}")
    return values


def config_from_args(args: argparse.Namespace, defaults: TrainConfig | None = None,
                     file_values: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """Command line over ``file_values`` over ``defaults`` (see the module docstring)."""
    from ..training import TrainConfig

    fields = _config_fields()
    given = {k: v for k, v in vars(args).items() if k in fields}
    base = dataclasses.asdict(defaults or TrainConfig())
    return type(defaults or TrainConfig())(**{**base, **(file_values or {}), **given,
                                               **overrides})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training import TrainConfig

    add_training_arguments(parser, TrainConfig())
    options = _Group(parser, "run", TrainConfig())
    options.add("--seed", type=int, help="seed of the weights, the order and the augmentation")
    options.add("--out", help="run directory")
    options.add("--resume", action="store_true",
                help="continue from OUT/last.pt exactly where it stopped (a larger --epochs "
                     "extends a finished run)")
    options.add("--init-from", metavar="PATH",
                help="start from an attn2d checkpoint or a plain state dict (torchvision, "
                     "timm); attention weights may be missing")
    options.add("--freeze-backbone", action="store_true",
                help="train only attention modules and the classifier (needs --init-from)")
    options.group.add_argument("--config", default=None, metavar="JSON",
                     help="settings from this JSON file (as written by attn2d compare); options "
                          "given on the command line override it (default: none)")


def run(args: argparse.Namespace) -> int:
    from ..training import train

    file_values = read_config_file(args.config) if args.config else None
    result = train(config_from_args(args, file_values=file_values))
    if result["status"] == "interrupted":
        return 128 + int(result["signal"])
    return 0
