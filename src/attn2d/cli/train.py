"""``attn2d train``: train one model (also under ``torchrun -m attn2d train``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..train import TrainConfig, train

HELP = "train one model with or without attention; metrics, checkpoints, resume, torchrun"

_DEFAULTS = TrainConfig()


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``compare``: data, optimisation, speed."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=_DEFAULTS.dataset,
                      help="fashion-mnist or cifar10 (default: %(default)s)")
    data.add_argument("--data-dir", default=None,
                      help="dataset folder (default: $ATTN2D_DATA_DIR or ./data); "
                           "Fashion-MNIST is copied there from /usr/share/datasets/fashion-mnist")
    data.add_argument("--download", action="store_true",
                      help="let torchvision download missing files (needs a network)")
    data.add_argument("--subset", type=int, default=None,
                      help="train on a stratified subset of N training images")
    data.add_argument("--test-subset", type=int, default=None,
                      help="evaluate on a stratified subset of N test images")
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--model", default=_DEFAULTS.model,
                     help="small_cnn, resnet18, resnet34 or resnet50 (default: %(default)s)")
    opt.add_argument("--placement", default=None, choices=("block", "stage"),
                     help="where attention goes (default: the mechanism's registry default)")
    opt.add_argument("--epochs", type=int, default=_DEFAULTS.epochs)
    opt.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size,
                     help="global batch, split across torchrun processes")
    opt.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    opt.add_argument("--lr", type=float, default=None,
                     help="peak learning rate (default: 0.05 SGD, 1e-3 AdamW)")
    opt.add_argument("--momentum", type=float, default=_DEFAULTS.momentum)
    opt.add_argument("--no-nesterov", dest="nesterov", action="store_false")
    opt.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay)
    opt.add_argument("--warmup-epochs", type=float, default=0.0,
                     help="linear learning-rate warm-up before the cosine decay")
    opt.add_argument("--label-smoothing", type=float, default=0.0)
    opt.add_argument("--attention-warmup", type=int, default=0, metavar="K",
                     help="blend attention output with its input, weight 0 -> 1 over K epochs")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"),
                       help="autocast dtype")
    speed.add_argument("--channels-last", action="store_true")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model")
    speed.add_argument("--threads", type=int, default=None,
                       help="torch intra-op threads per process (default: torch's choice)")
    speed.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: auto)")
    speed.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar (one line per epoch still printed)")


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from parsed options (fields that are not options keep defaults)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return TrainConfig(**{**values, **overrides})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attention", default=None,
                        help="spec string, e.g. se or 'cbam(reduction=8)' (default: none)")
    add_training_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/train", help="run directory (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/last.pt exactly where it stopped")
    parser.add_argument("--init-from", default=None, metavar="PATH",
                        help="start from this checkpoint (attention weights may be missing)")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="train only attention modules and the classifier (needs --init-from)")
    parser.add_argument("--config", default=None, metavar="JSON",
                        help="take every setting from this JSON file (as written by attn2d "
                             "compare) instead of the options; --resume still applies")


def _config_from_file(path: str, resume: bool) -> TrainConfig:
    values = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if not isinstance(values, dict) or unknown:
        raise ValueError(f"attn2d train: expected --config to hold TrainConfig fields, got "
                         f"unknown keys {unknown}")
    return TrainConfig(**{**values, "resume": values.get("resume", False) or resume})


def run(args: argparse.Namespace) -> int:
    config = (_config_from_file(args.config, args.resume) if args.config
              else config_from_args(args))
    result = train(config)
    if result["status"] == "interrupted":
        return 128 + int(result["signal"])
    return 0
