"""``attn2d train``: one model on one dataset, a loop that reads top to bottom.

    run = start(config)                          # data, model, optimiser, resume
    for epoch in range(run.epoch, config.epochs):
        train_one_epoch(run, epoch)              # compiled steps, no host sync
        end_epoch(run, epoch)                    # precise BN, evaluate, checkpoint, log
    finish(run)                                  # result.json, predictions.npz

The run directory gets ``metrics.jsonl`` (one line per epoch), ``last.pt`` (every epoch)
and ``best.pt`` (the model whose test accuracy the run reports: the final epoch, or with
``val_split`` the epoch of best validation accuracy), both written atomically, and, once
finished, ``result.json`` and ``predictions.npz`` (the predicted class of every test image,
so that runs can be compared image by image).

Reproducibility: a run is a function of its config. The epoch's order is a permutation of
(seed, epoch) and augmentation a function of (seed, epoch, index) (see :mod:`attn2d.data`);
a checkpoint holds every RNG state, so an interrupted run resumed with ``resume=True`` ends
with the same weights, bit for bit, as one never interrupted (same device and thread count).
SIGINT/SIGTERM finish the current step (under torchrun: the steps up to the next log
point, where the processes agree to stop), save ``last.pt`` and return.

Static shapes: training drops the last partial batch (a fresh permutation every epoch, so
every image is still seen); evaluation pads its last batch and masks the padding. Steps
make no host sync, so ``compile="reduce-overhead"`` can replay them as CUDA graphs.

Multi-process: under ``torchrun`` the loop uses DistributedDataParallel (gloo on CPU, nccl on
GPU); ``batch_size`` stays the global batch, each process takes its share of every global
batch, and only rank 0 prints and writes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ._amp import AMP_DTYPES, autocast
from ._io import copy_file, save_npz, write_json, write_jsonl
from .checkpoint import read_checkpoint, read_state_dict, restore_rng, rng_state, save_checkpoint
from .data import Data, DataSpec, EvalBatches, canonical_dataset, load_data
from .lock import FolderLock
from .models import attention_modules, create_model, load_backbone_state
from .timing import sync

__all__ = [
    "COMPILE_MODES",
    "RUNTIME_FIELDS",
    "AttentionWarmup",
    "Evaluation",
    "NonFiniteLoss",
    "Process",
    "Run",
    "StopRequest",
    "TrainConfig",
    "accuracy_gap",
    "build_model",
    "end_epoch",
    "evaluate",
    "finish",
    "interrupted",
    "load_model",
    "recompute_batch_norm",
    "resolve_device",
    "start",
    "train",
    "train_one_epoch",
    "warn",
]

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "auto")
OPTIMIZERS = ("sgd", "adamw")
GATE_INITS = ("default", "identity")
CUSTOM_DATASET = "custom"  # the name of runs on the user's own Dataset objects
# Fields that may differ between an interrupted run and its resumption, or between runs of
# one comparison: they change where and how fast a run goes, not what it computes.
RUNTIME_FIELDS = frozenset({
    "out", "resume", "progress", "device", "num_workers", "data_dir", "download",
    "log_every", "threads", "compile", "channels_last", "in_memory", "tensorboard",
    "tensorboard_every", "eval_batch_size",
})


@dataclass(frozen=True)
class TrainConfig(DataSpec):
    """Everything that defines a training run; ``attn2d train --help`` documents each field.

    The data options are those of :class:`~attn2d.data.DataSpec` (this class extends it);
    the rest say what model to train, how, how fast and where to write. :meth:`resolved`
    fills in the defaults that depend on other fields (the learning rate of the optimiser,
    the gate initialisation of a frozen backbone, the canonical dataset name), so the saved
    config, ``resume`` and ``compare`` all see the same values.
    """

    # model
    model: str = "small_cnn"
    attention: str | None = None
    placement: str | None = None
    gate_init: str | None = None  # None: "identity" with freeze_backbone, else "default"
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None  # None: 0.05 for SGD, 1e-3 for AdamW
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    init_from: str | None = None
    freeze_backbone: bool = False
    attention_warmup: float = 0.0
    precise_bn: int = 0
    # speed
    amp: str = "none"
    channels_last: bool = True
    compile: str = "none"
    threads: int | None = None  # torch intra-op threads; None: torch's default
    device: str = "auto"
    eval_batch_size: int = 512
    # output
    out: str = "runs/train"
    resume: bool = False
    progress: bool = True
    log_every: int = 25
    tensorboard: bool = False
    tensorboard_every: int = 1

    def resolved(self) -> TrainConfig:
        """A copy with every derived default made explicit (see the class docstring)."""
        lr = self.lr if self.lr is not None else 0.05 if self.optimizer == "sgd" else 1e-3
        gate_init = self.gate_init or ("identity" if self.freeze_backbone else "default")
        attention = self.attention
        if attention is not None and attention.strip().lower() in ("", "none"):
            attention = None
        dataset = self.dataset if self.dataset == CUSTOM_DATASET else \
            canonical_dataset(self.dataset)
        return dataclasses.replace(
            self, dataset=dataset, lr=float(lr), gate_init=gate_init,
            attention=attention, mean=_tuple(self.mean), std=_tuple(self.std))

    def check(self) -> TrainConfig:
        """Validate every field; one clear error naming the option."""
        owner = "attn2d train"
        ints = {"epochs": 1, "batch_size": 1, "log_every": 1, "eval_batch_size": 1,
                "tensorboard_every": 1, "num_workers": 0, "precise_bn": 0, "seed": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{owner}: expected --{_flag(name)} to be an integer >= {low},"
                                 f" got {value!r}")
        for name in ("subset", "test_subset", "val_split", "threads", "image_size", "channels"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{owner}: expected --{_flag(name)} to be an integer >= 1, "
                                 f"got {value!r}")
        _check_number(self.lr, "lr", lambda v: v > 0, "> 0", allow_none=True)
        _check_number(self.momentum, "momentum", lambda v: 0 <= v < 1, "in [0, 1)")
        _check_number(self.weight_decay, "weight_decay", lambda v: v >= 0, ">= 0")
        _check_number(self.label_smoothing, "label_smoothing", lambda v: 0 <= v < 1,
                      "in [0, 1)")
        for name in ("warmup_epochs", "attention_warmup"):
            _check_number(getattr(self, name), name, lambda v: 0 <= v <= self.epochs,
                          f"between 0 and --epochs ({self.epochs})")
        choices = {"optimizer": OPTIMIZERS, "amp": tuple(AMP_DTYPES), "compile": COMPILE_MODES,
                   "bad_images": ("error", "skip"), "in_memory": ("auto", "always", "never")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{owner}: expected --{_flag(name)} in {allowed}, got "
                                 f"{getattr(self, name)!r}")
        if self.gate_init not in (None, *GATE_INITS):
            raise ValueError(f"{owner}: expected --gate-init in {GATE_INITS}, got "
                             f"{self.gate_init!r}")
        if self.freeze_backbone and not self.init_from:
            raise ValueError(f"{owner}: expected --init-from a baseline checkpoint with "
                             "--freeze-backbone, got none")
        return self


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _tuple(value: Any) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


def _check_number(value: Any, name: str, ok: Callable[[float], bool], want: str,
                  allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"attn2d train: expected --{_flag(name)} to be a number {want}, got "
                         f"{value!r}")
    if not math.isfinite(value) or not ok(value):
        raise ValueError(f"attn2d train: expected --{_flag(name)} to be finite and {want}, got "
                         f"{value!r}")


def warn(message: str) -> None:
    """One line on stderr for a setting that is legal but almost certainly a mistake."""
    tqdm.write(f"attn2d train: warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- model


def build_model(config: dict[str, Any]) -> nn.Module:
    """The model a run's config describes (model, attention, placement, classes, gate init)."""
    return create_model(
        config["model"], attention=config.get("attention"), placement=config.get("placement"),
        num_classes=config["num_classes"], in_channels=config["in_channels"],
        attention_init=config.get("gate_init") or "default")


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint with its weights, in eval mode, and the run's config.

    It is exactly the model the run evaluated when the checkpoint was written: a
    checkpoint saved during an attention warm-up (``attention_alpha`` < 1) gets the same
    blend installed.
    """
    checkpoint = read_checkpoint(path)
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    alpha = float(checkpoint.get("attention_alpha", 1.0))
    if alpha < 1.0:
        AttentionWarmup(model).set(alpha)
    return model.eval(), checkpoint["config"]


class AttentionWarmup:
    """Blend each attention module's output with its input: ``α·out + (1 − α)·in``.

    ``α`` is a 0-d tensor on the model's device, updated in place every step, so a compiled
    (or CUDA-graph) step sees its new value without recompiling. It rises linearly to 1
    over the warm-up steps, starting above 0, so the mechanism gets gradient from the
    first step while the backbone is barely disturbed.
    """

    def __init__(self, model: nn.Module) -> None:
        param = next(model.parameters(), None)
        self.alpha = torch.ones((), device=param.device if param is not None else None)
        self.value = 1.0
        self.handles = [m.register_forward_hook(self._blend)
                        for _, m in attention_modules(model)]

    def set(self, value: float) -> None:
        self.value = float(value)
        self.alpha.fill_(self.value)

    def _blend(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        alpha = self.alpha.to(output.dtype)
        return alpha * output + (1 - alpha) * inputs[0]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _classifier(model: nn.Module, attention: list[nn.Module]) -> nn.Module:
    inside = {id(p) for module in attention for p in module.parameters()}
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) not in inside]
    if not heads:
        raise ValueError(f"attn2d train: expected a final nn.Linear classifier in "
                         f"{type(model).__name__} for --freeze-backbone, got none")
    return heads[-1]


def _freeze_backbone(model: nn.Module) -> list[nn.Module]:
    """Train only the attention modules and the classifier; return the norm layers that
    must stay in eval mode (a frozen BatchNorm must not update its running statistics)."""
    attention = [m for _, m in attention_modules(model)]
    trainable = [*attention, _classifier(model, attention)]
    model.requires_grad_(False)
    inside = set()
    for module in trainable:
        module.requires_grad_(True)
        inside.update(id(m) for m in module.modules())
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and id(m) not in inside]


def _init_from(model: nn.Module, path: str) -> None:
    """Start from a checkpoint or plain state dict of the same network without attention
    (torchvision, timm or attn2d); the attention modules keep their initial weights."""
    try:
        load_backbone_state(model, read_state_dict(path))
    except ValueError as err:
        raise ValueError(f"attn2d train: expected --init-from {path} to hold the backbone's "
                         f"weights, got a mismatch ({err})") from None


# ----------------------------------------------------------------------------- processes


@dataclass
class Process:
    """This process's place in a (possibly distributed) run."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, *values: Tensor) -> list[Tensor]:
        if self.world == 1:
            return list(values)
        packed = torch.stack([v.double() for v in values])
        dist.all_reduce(packed)
        return list(packed.unbind())


def resolve_device(device: str) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; a clear error for the rest."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"attn2d train: expected --device auto, cpu, cuda or cuda:N, got "
                         f"{device!r}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"attn2d train: expected --device cpu (no CUDA GPU is available to "
                         f"this process), got {device!r}")
    if parsed.type == "cuda" and parsed.index is not None and \
            parsed.index >= torch.cuda.device_count():
        raise ValueError(f"attn2d train: expected a CUDA device index below "
                         f"{torch.cuda.device_count()}, got {device!r}")
    return parsed


def _start_process(device: str) -> Process:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = resolve_device(device)
    if world == 1:
        return Process(0, 1, chosen)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        torch.cuda.set_device(local)
        chosen = torch.device(f"cuda:{local}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Process(dist.get_rank(), world, chosen)


class StopRequest:
    """SIGINT/SIGTERM (or the given ``signals``) set a flag that the loop reads after each
    step (never mid-step)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signal = 0
        self.signals = signals

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in self.signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def agreed(self, process: Process) -> bool:
        # Every rank must stop after the same step, else DDP waits forever for the others.
        if process.world == 1:
            return bool(self.signal)
        flag = torch.tensor([float(self.signal)], device=process.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signal = self.signal or int(flag.item())
        return bool(self.signal)


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- the run


@dataclass
class EpochTotals:
    """Running sums of the epoch in progress (device tensors: reading them syncs)."""

    loss: Tensor
    correct: Tensor
    seen: int = 0
    elapsed: float = 0.0

    @classmethod
    def zero(cls, device: torch.device) -> EpochTotals:
        return cls(torch.zeros((), device=device, dtype=torch.float64),
                   torch.zeros((), device=device, dtype=torch.int64))

    def state(self) -> dict[str, Any]:
        return {"loss": float(self.loss), "correct": int(self.correct), "seen": self.seen,
                "elapsed": self.elapsed}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochTotals:
        return cls(torch.tensor(state["loss"], device=device, dtype=torch.float64),
                   torch.tensor(state["correct"], device=device, dtype=torch.int64),
                   state["seen"], state["elapsed"])


@dataclass
class Run:
    """One training run's state; every step below reads and updates it."""

    config: TrainConfig
    process: Process
    data: Data
    net: nn.Module  # the model whose weights are saved
    model: nn.Module  # what runs the steps: net, or net under DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    saved_config: dict[str, Any]  # the config with the dataset's facts, as checkpoints hold it
    frozen_norms: list[nn.Module]
    warmup: AttentionWarmup | None
    steps_per_epoch: int
    dir: Path
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    totals: EpochTotals | None = None
    selected: dict[str, Any] = field(default_factory=dict)  # the epoch the run reports
    predictions: Tensor | None = None  # test predictions of the latest evaluation
    compile_time_s: float = 0.0
    tensorboard: Any = None

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    def to_input(self, x: Tensor) -> Tensor:
        """A batch in the model's memory format."""
        if self.config.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "config": self.saved_config, "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
            "rng": rng_state(), "totals": self.totals.state() if self.totals else None,
            "history": self.history, "selected": self.selected,
            "predictions": self.predictions,
            "attention_alpha": self.warmup.value if self.warmup else 1.0,
        }


def _check_out(path: Path) -> None:
    """``--out`` must be (or become) a writable folder; checked before any work."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"attn2d train: expected --out to be a folder, got the file {path}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"attn2d train: expected --out {path} to be creatable, got the file "
                         f"{existing} in its path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"attn2d train: expected --out {path} to be writable, got no write "
                         f"permission on {existing}")


def _check_resume(config: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None for a fresh run; refuse a mix-up either way."""
    last = run_dir / "last.pt"
    if not config.resume:
        if last.exists():
            raise ValueError(f"attn2d train: expected a fresh --out, got {run_dir} with a "
                             "checkpoint; pass --resume to continue it or choose another --out")
        return None
    if not last.exists():
        _check_started(config, run_dir)
        return None
    checkpoint = read_checkpoint(last)
    if checkpoint.get("version") != 2:
        raise ValueError(f"attn2d train: expected a checkpoint of this attn2d version to "
                         f"resume, got version {checkpoint.get('version')} at {last}")
    _check_same_settings(checkpoint["config"], config, f"the checkpoint {last}", "resume it")
    return checkpoint


def _check_started(config: TrainConfig, run_dir: Path) -> None:
    """Resume-or-start: a run killed before its first checkpoint left its settings
    (``config.json``, written before the first step) and starts over under ``--resume``;
    a folder without them holds no run to resume."""
    settings = run_dir / "config.json"
    if not settings.is_file():
        raise ValueError(f"attn2d train: expected a run to resume in --out {run_dir}, got no "
                         "last.pt there; leave out --resume to start a new run")
    try:
        saved = json.loads(settings.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"attn2d train: expected the run's settings as JSON in {settings}, "
                         f"got unreadable content ({err})") from None
    _check_same_settings(saved, config, f"the run started in {run_dir}", "start it over")
    tqdm.write(f"attn2d train: {run_dir} holds the run's settings but no checkpoint yet; "
               "starting the run from its beginning")


def _check_same_settings(saved: dict[str, Any], config: TrainConfig, what: str,
                         action: str) -> None:
    current = dataclasses.asdict(config)
    changed = sorted(k for k in current if k not in RUNTIME_FIELDS | {"epochs"}
                     and _jsonable(saved.get(k)) != _jsonable(current[k]))
    if config.epochs < saved["epochs"]:
        changed.append("epochs")
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"attn2d train: expected the settings of {what} to {action} (only "
                         f"--epochs may grow), got changes ({diff}); use another --out")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _optimizer(config: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _warnings(config: TrainConfig, device: torch.device) -> None:
    if config.amp == "fp16" and device.type == "cpu":
        warn("--amp fp16 on a CPU is emulated and about 30x slower than float32; use "
             "--amp none (or bf16 on a CPU with bf16 instructions)")
    if config.threads and config.threads > (os.cpu_count() or 1):
        warn(f"--threads {config.threads} exceeds the {os.cpu_count()} CPU cores; the threads "
             "will compete for them")
    if config.warmup_epochs == config.epochs or config.attention_warmup == config.epochs > 0:
        warn("a warm-up as long as the whole run: the model trains at full strength for no "
             "epoch")


def start(config: TrainConfig, data: Data | None = None) -> Run:
    """Set up a run: validate, data, model, optimiser, compile; resume where it stopped.

    Args:
        config: the run's settings.
        data: ready-made data (e.g. from :func:`attn2d.data.data_from_datasets`); by default
            loaded from ``config``'s dataset options.
    """
    if data is not None:
        config = dataclasses.replace(config, dataset=data.info.name)
    config = config.resolved().check()
    if config.threads:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.out)
    _check_out(run_dir)
    checkpoint = _check_resume(config, run_dir)
    process = _start_process(config.device)
    _warnings(config, process.device)
    if config.batch_size % process.world:
        raise ValueError(f"attn2d train: expected --batch-size divisible by the "
                         f"{process.world} processes, got {config.batch_size}")
    if process.main and checkpoint is None:  # the run's settings, before any work
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", dataclasses.asdict(config))
    if data is None:
        data = load_data(DataSpec.from_mapping(dataclasses.asdict(config)), process.device,
                         config.seed)
    info = data.info
    # The run's settings plus the dataset's facts that rebuilding the model needs.
    saved_config = {**dataclasses.asdict(config), "dataset": info.name,
                    "num_classes": info.num_classes, "in_channels": info.in_channels,
                    "input_size": info.image_size, "train_images": len(data.train),
                    "normalization": {"mean": list(info.mean), "std": list(info.std)}}
    steps = data.train.steps_per_epoch(config.batch_size)

    torch.manual_seed(config.seed)
    net = build_model(saved_config).to(process.device)
    if config.init_from and checkpoint is None:
        _init_from(net, config.init_from)
    frozen = _freeze_backbone(net) if config.freeze_backbone else []
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    warmup = AttentionWarmup(net) if config.attention_warmup else None
    optimizer = _optimizer(config, net)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(
        config.epochs * steps, round(config.warmup_epochs * steps)))
    model: nn.Module = net
    if process.world > 1:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[process.device.index] if process.device.type == "cuda" else None)
    run = Run(config, process, data, net, model, optimizer, scheduler,
              torch.amp.GradScaler(process.device.type, enabled=config.amp == "fp16"),
              nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), saved_config,
              frozen, warmup, steps, run_dir)
    if checkpoint is not None:
        _restore(run, checkpoint)
        if process.main and config.epochs > checkpoint["config"]["epochs"]:
            for stale in ("result.json", "predictions.npz"):  # an extended run is unfinished
                (run_dir / stale).unlink(missing_ok=True)
    run.compile_time_s = _compile(run)
    if process.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(run_dir / "metrics.jsonl", run.history)
        if config.tensorboard:
            from .tensorboard import TensorBoardLog

            run.tensorboard = TensorBoardLog(run_dir / "tensorboard", config.tensorboard_every)
    return run


def _restore(run: Run, checkpoint: dict[str, Any]) -> None:
    """Weights, optimiser, schedule, RNG states and the position in the epoch."""
    run.net.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    restore_rng(checkpoint["rng"])
    run.epoch, run.step = checkpoint["epoch"], checkpoint["step"]
    run.history, run.selected = checkpoint["history"], checkpoint["selected"]
    run.predictions = checkpoint["predictions"]
    if checkpoint["totals"] is not None:
        run.totals = EpochTotals.from_state(checkpoint["totals"], run.process.device)
    if run.warmup is not None:
        run.warmup.set(checkpoint["attention_alpha"])


def _compile(run: Run) -> float:
    """``torch.compile`` the model and compile its steps now, so that epoch times exclude
    compilation; return the seconds it took. The warm-up steps are undone (weights,
    optimiser, schedule, RNG), so a compiled run computes what an eager run computes."""
    mode = run.config.compile
    if mode == "auto":  # CUDA graphs where launches dominate; a CPU gains nothing here
        mode = "reduce-overhead" if run.process.device.type == "cuda" else "none"
    if mode == "none":
        return 0.0
    if mode == "reduce-overhead" and run.process.device.type != "cuda":
        warn(f"--compile reduce-overhead replays CUDA graphs, which need a GPU; on "
             f"{run.process.device.type} it runs as --compile default")
        mode = "default"
    eager = run.model
    run.model = torch.compile(eager, mode=mode)
    saved = (copy.deepcopy(run.net.state_dict()), copy.deepcopy(run.optimizer.state_dict()),
             run.scheduler.state_dict(), run.scaler.state_dict(), rng_state())
    started = time.perf_counter()
    try:
        x, y = next(iter(run.data.train.batches(run.epoch, run.config.batch_size,
                                                 rank=run.process.rank,
                                                 world=run.process.world)))
        for _ in range(3):  # CUDA graph trees record on the second call, replay from the third
            _train_step(run, x, y)
        x, _, _ = next(iter(run.data.test.batches(run.config.eval_batch_size,
                                                  rank=run.process.rank,
                                                  world=run.process.world)))
        run.model.eval()
        with torch.no_grad(), autocast(run.process.device, run.config.amp):
            for _ in range(3):
                run.model(run.to_input(x))
        sync(run.process.device)
    except Exception as err:  # a backend that cannot compile some op: train eagerly
        if isinstance(err, (KeyboardInterrupt, NonFiniteLoss)):
            raise
        warn(f"--compile {mode} failed ({type(err).__name__}: "
             f"{str(err).strip().splitlines()[0][:160] if str(err).strip() else ''}); "
             "training eagerly")
        run.model = eager
    finally:
        model_state, optimizer_state, scheduler_state, scaler_state, rng = saved
        run.net.load_state_dict(model_state)
        run.optimizer.load_state_dict(optimizer_state)
        run.scheduler.load_state_dict(scheduler_state)
        run.scaler.load_state_dict(scaler_state)
        restore_rng(rng)
        run.model.train()
    return time.perf_counter() - started


def _train_step(run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One optimisation step; returns the loss and the predictions, still on the device."""
    with autocast(run.process.device, run.config.amp):
        logits = run.model(run.to_input(x))
        loss = run.loss_fn(logits.float(), y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss.detach(), logits.detach().argmax(1)


# ----------------------------------------------------------------------------- the loop


def train(config: TrainConfig, on_step: Callable[[int, int], None] | None = None, *,
          data: Data | None = None, stop: StopRequest | None = None) -> dict[str, Any]:
    """Train one model; return ``result.json``'s content (``status`` says if interrupted).

    Args:
        config: the run (see :class:`TrainConfig`).
        on_step: called as ``on_step(epoch, step)`` after every optimisation step
            (0-based epoch, 1-based step within it), e.g. to watch progress.
        data: ready-made data instead of ``config``'s dataset (see :func:`start`).
        stop: the signals that stop the run, saved, after its current step (default
            SIGINT and SIGTERM; a SLURM task adds its time-limit signal).
    """
    finished = _finished_result(config)
    if finished is not None:
        return finished
    _check_out(Path(config.out))
    with _writer_lock(config.out):
        run = start(config, data)
        with (stop or StopRequest()).installed() as stop:
            for epoch in range(run.epoch, run.config.epochs):
                if not train_one_epoch(run, epoch, stop, on_step):
                    return interrupted(run, stop.signal)
                end_epoch(run, epoch)
                if stop.agreed(run.process):
                    return interrupted(run, stop.signal)
        return finish(run)


def _writer_lock(out: str) -> contextlib.AbstractContextManager[Any]:
    """One writer per run folder (:mod:`attn2d.lock`); under torchrun rank 0 writes."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return FolderLock(out, "attn2d train")


def _finished_result(config: TrainConfig) -> dict[str, Any] | None:
    """A finished run resumed with no more epochs to do: say so and return its result."""
    path = Path(config.out) / "result.json"
    if not (config.resume and path.is_file()):
        return None
    result = json.loads(path.read_text())
    if result.get("status") != "finished" or config.epochs > result["config"]["epochs"]:
        return None
    tqdm.write(f"attn2d train: {config.out} is finished ({result['config']['epochs']} epochs); "
               "nothing to resume (pass a larger --epochs to extend it)")
    return result


def train_one_epoch(run: Run, epoch: int, stop: StopRequest,
                    on_step: Callable[[int, int], None] | None = None) -> bool:
    """Train one epoch from ``run.step``; False if a stop was requested mid-epoch."""
    config, process = run.config, run.process
    run.epoch = epoch
    if run.totals is None or run.step == 0:
        run.totals = EpochTotals.zero(process.device)
    totals = run.totals
    run.model.train()
    for norm in run.frozen_norms:
        norm.eval()
    started = time.perf_counter() - totals.elapsed
    bar = tqdm(total=run.steps_per_epoch, initial=run.step, leave=False,
               desc=f"epoch {epoch + 1}/{config.epochs}", dynamic_ncols=True,
               disable=not (config.progress and process.main))
    warmup_steps = config.attention_warmup * run.steps_per_epoch
    batches = run.data.train.batches(epoch, config.batch_size, start_step=run.step,
                                     rank=process.rank, world=process.world)
    for x, y in batches:
        if run.warmup is not None:
            run.warmup.set(min(1.0, (run.global_step + 1) / warmup_steps))
        loss, predicted = _train_step(run, x, y)
        totals.loss += loss * len(y)
        totals.correct += (predicted == y).sum()
        totals.seen += len(y)
        run.step += 1
        bar.update(1)
        if run.step % config.log_every == 0 and not bar.disable:
            _check_finite(run, totals.loss)
            rate = totals.seen * process.world / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{float(totals.loss) / totals.seen:.3f}",
                            acc=f"{float(totals.correct) / totals.seen:.1%}", img_s=f"{rate:.0f}")
        if on_step is not None:
            on_step(epoch, run.step)
        # Across processes, agreeing on a stop costs an all-reduce and a host sync: only at
        # the log points (one process reads its own flag, which is free, every step).
        at_log_point = process.world == 1 or run.step % config.log_every == 0
        if at_log_point and stop.agreed(process) and run.step < run.steps_per_epoch:
            bar.close()
            sync(process.device)
            totals.elapsed = time.perf_counter() - started
            return False
    sync(process.device)
    totals.elapsed = time.perf_counter() - started
    bar.close()
    return True


def _check_finite(run: Run, loss: Tensor) -> None:
    if bool(torch.isfinite(loss)):
        return
    done = run.history[-1]["epoch"] if run.history else 0
    kept = (f"the last good checkpoint {run.dir / 'last.pt'} (epoch {done}) is kept"
            if done else "no checkpoint was written")
    raise NonFiniteLoss(f"attn2d train: expected a finite training loss, got {float(loss)} in "
                        f"epoch {run.epoch + 1} (step {run.step}); {kept}; try a lower --lr or "
                        "--amp none")


@dataclass
class Evaluation:
    """Loss, accuracy and the predicted class of every image of an evaluation set."""

    loss: float
    accuracy: float
    predictions: Tensor  # (N,) int64 on the CPU, in the set's fixed order


@torch.inference_mode()
def evaluate(run: Run, batches: EvalBatches) -> Evaluation:
    """Evaluate on a padded, fixed-order set; no host sync until the end."""
    config, process = run.config, run.process
    run.model.eval()
    n = len(batches)
    # One spare slot collects the padded rows, so no boolean indexing (and no sync) is needed.
    predictions = torch.zeros(n + 1, device=process.device, dtype=torch.int64)
    loss = torch.zeros((), device=process.device, dtype=torch.float64)
    for x, y, index in batches.batches(config.eval_batch_size, rank=process.rank,
                                       world=process.world):
        with autocast(process.device, config.amp):
            logits = run.model(run.to_input(x))
        valid = index >= 0
        loss += (F.cross_entropy(logits.float(), y, reduction="none") * valid).sum()
        predictions.scatter_(0, torch.where(valid, index, n), logits.argmax(1))
    if process.world > 1:
        dist.all_reduce(predictions)  # ranks fill disjoint slots; the spare one is junk
        (loss,) = process.all_sum(loss)
    predictions = predictions[:n].cpu()
    accuracy = float((predictions == batches.targets).double().mean())
    return Evaluation(float(loss) / n, accuracy, predictions)


@torch.no_grad()
def recompute_batch_norm(run: Run, epoch: int, batches: int) -> None:
    """Precise BatchNorm: running statistics recomputed over ``batches`` training batches
    (a plain average, weights unchanged), as detectron2's PreciseBN and
    :func:`torch.optim.swa_utils.update_bn` do. Frozen norms keep theirs."""
    frozen = {id(m) for m in run.frozen_norms}
    norms = [m for m in run.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and id(m) not in frozen]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    run.net.train()
    for norm in run.frozen_norms:
        norm.eval()
    config, process = run.config, run.process
    source = run.data.train.batches(epoch, config.batch_size, rank=process.rank,
                                    world=process.world)
    for _, (x, _) in zip(range(batches), source):
        with autocast(process.device, config.amp):
            run.net(run.to_input(x))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
        if process.world > 1:  # each rank saw its own shard: average the estimates
            for stat in (m.running_mean, m.running_var):
                dist.all_reduce(stat)
                stat /= process.world


def end_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """Precise BN, evaluation, the epoch's log line and checkpoints."""
    config, process, totals = run.config, run.process, run.totals
    assert totals is not None
    loss_sum, correct, seen = process.all_sum(totals.loss, totals.correct.double(),
                                              torch.tensor(float(totals.seen),
                                                           device=process.device))
    _check_finite(run, loss_sum)
    if config.precise_bn:
        recompute_batch_norm(run, epoch, config.precise_bn)
    test = evaluate(run, run.data.test)
    val = evaluate(run, run.data.val) if run.data.val is not None else None
    row = {"epoch": epoch + 1, "train_loss": float(loss_sum / seen),
           "train_acc": float(correct / seen), "test_loss": test.loss, "test_acc": test.accuracy,
           **({"val_loss": val.loss, "val_acc": val.accuracy} if val else {}),
           "lr": run.optimizer.param_groups[0]["lr"], "epoch_time_s": totals.elapsed,
           "images_per_s": float(seen) / totals.elapsed if totals.elapsed > 0 else None,
           "attention_alpha": run.warmup.value if run.warmup else 1.0}
    run.history.append(row)
    run.predictions = test.predictions.to(torch.int16)
    run.epoch, run.step, run.totals = epoch + 1, 0, None
    # The reported epoch: the best on validation data, else simply the latest.
    selects = val is None or val.accuracy > run.selected.get("val_acc", -1.0)
    if selects:
        run.selected = {"epoch": epoch + 1, "test_acc": test.accuracy,
                        **({"val_acc": val.accuracy} if val else {}),
                        "predictions": run.predictions}
    if process.main:
        save_checkpoint(run.checkpoint_state(), run.dir / "last.pt")
        if selects:  # the same state: copy the file rather than serialise it again
            copy_file(run.dir / "last.pt", run.dir / "best.pt")
        write_jsonl(run.dir / "metrics.jsonl", run.history)
        tqdm.write(_epoch_line(row, config.epochs))
        gap = accuracy_gap(row)
        if gap:
            warn(gap)
        if run.tensorboard is not None:
            run.tensorboard.log_epoch(run, row)
    return row


ACCURACY_GAP = 0.25  # eval this far below train accuracy: stale BatchNorm or overfitting


def accuracy_gap(row: dict[str, Any]) -> str | None:
    """A warning when an epoch's test accuracy is far below its training accuracy."""
    if row["train_acc"] - row["test_acc"] <= ACCURACY_GAP:
        return None
    return (f"test accuracy {row['test_acc']:.1%} is far below training accuracy "
            f"{row['train_acc']:.1%} in epoch {row['epoch']}: BatchNorm running statistics "
            "may lag the weights (try --precise-bn 50) or the model overfits")


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    val = f"  val acc {row['val_acc']:.2%}" if "val_acc" in row else ""
    rate = f"  {row['images_per_s']:.0f} img/s" if row["images_per_s"] else ""
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc "
            f"{row['train_acc']:.2%}  test loss {row['test_loss']:.4f} acc {row['test_acc']:.2%}"
            f"{val}  {row['epoch_time_s']:.1f} s{rate}")


def interrupted(run: Run, signum: int) -> dict[str, Any]:
    """Save where the run stopped (mid-epoch included) and say how to continue."""
    path = run.dir / "last.pt"
    if run.process.main:
        if run.step:  # stopped mid-epoch; at an epoch boundary last.pt is already current
            save_checkpoint(run.checkpoint_state(), path)
        tqdm.write(f"attn2d train: stopped by signal {signum}; saved {path}; "
                   "rerun with --resume to continue")
    _close(run)
    return {"status": "interrupted", "signal": signum, "checkpoint": str(path)}


def _close(run: Run) -> None:
    if run.warmup is not None:
        run.warmup.remove()
    if run.tensorboard is not None:
        run.tensorboard.close()


def finish(run: Run) -> dict[str, Any]:
    """``result.json`` and ``predictions.npz`` of a finished run; returns the result."""
    from .profiler import count_macs

    _close(run)
    info, net = run.data.info, run.net
    history, selected = run.history, run.selected
    macs = count_macs(net.eval(), (1, info.in_channels, info.image_size, info.image_size))
    rates = [row["images_per_s"] for row in history if row["images_per_s"]]
    result = {
        "status": "finished",
        "test_acc": selected["test_acc"], "test_epoch": selected["epoch"],
        "selection": "best validation accuracy" if run.data.val is not None else "final epoch",
        **({"val_acc": selected["val_acc"]} if "val_acc" in selected else {}),
        "last_test_acc": history[-1]["test_acc"],
        "params": sum(p.numel() for p in net.parameters()),
        "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "macs": int(macs),
        "time_per_epoch_s": statistics.mean(row["epoch_time_s"] for row in history),
        "images_per_s": statistics.mean(rates) if rates else None,
        "compile_time_s": run.compile_time_s,
        "world_size": run.process.world, "device": str(run.process.device),
        "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "config": run.saved_config,
    }
    if run.process.main:
        save_npz(run.dir / "predictions.npz",
                 predictions=selected["predictions"].numpy().astype(np.int16),
                 targets=run.data.test.targets.numpy().astype(np.int16),
                 epoch=np.int32(selected["epoch"]))
        write_json(run.dir / "result.json", result)
    return result

