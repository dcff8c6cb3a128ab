"""``attn2d train``: one model on one dataset, a loop that reads top to bottom.

The run directory gets ``metrics.jsonl`` (one line per epoch), ``last.pt`` and ``best.pt``
(written atomically every epoch) and, once finished, ``result.json``.

Reproducibility: a run is a function of its config. Shuffling is a seeded permutation per
epoch (:class:`~torch.utils.data.DistributedSampler`, also with one process), augmentation a
hash of (seed, epoch, index) (see :mod:`attn2d.data`), and a checkpoint holds every RNG
state, so an interrupted run resumed with ``resume=True`` ends with the same weights, bit for
bit, as one never interrupted (same device and thread count; mid-epoch with
``num_workers=0``). SIGINT/SIGTERM finish the current step, save ``last.pt`` and return.

Multi-process: under ``torchrun`` the loop uses DistributedDataParallel (gloo on CPU, nccl on
GPU); ``batch_size`` stays the global batch, each process takes ``batch_size / world``
images of the same global permutation, and only rank 0 prints and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import resource
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ._io import atomic_path
from .data import ImageDataset, dataset_info, get_dataset
from .registry import is_mechanism

__all__ = [
    "TrainConfig",
    "build_model",
    "load_model",
    "read_checkpoint",
    "top_level_mechanisms",
    "train",
]

CHECKPOINT_FORMAT = "attn2d-checkpoint"
CHECKPOINT_VERSION = 1
# Fields that may differ between an interrupted run and its resumption: they change
# where and how fast a run goes, not what it computes.
RUNTIME_FIELDS = frozenset({"out", "resume", "progress", "device", "num_workers", "data_dir",
                            "download", "log_every", "threads"})


@dataclass
class TrainConfig:
    """Everything that defines a training run (``attn2d train --help`` documents each)."""

    model: str = "small_cnn"
    attention: str | None = None
    placement: str | None = None
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    subset: int | None = None
    test_subset: int | None = None
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
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    freeze_backbone: bool = False
    init_from: str | None = None
    attention_warmup: int = 0
    num_workers: int = 0
    threads: int | None = None  # torch intra-op threads; None: torch's default
    device: str = "auto"
    out: str = "runs/train"
    resume: bool = False
    progress: bool = True
    log_every: int = 25

    def check(self) -> TrainConfig:
        owner = "attn2d train"
        for name in ("epochs", "batch_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner}: expected {name} >= 1, got {value!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"{owner}: expected optimizer 'sgd' or 'adamw', got "
                             f"{self.optimizer!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"{owner}: expected amp 'none', 'bf16' or 'fp16', got {self.amp!r}")
        if self.attention_warmup < 0 or self.warmup_epochs < 0 or self.num_workers < 0:
            raise ValueError(f"{owner}: expected attention_warmup, warmup_epochs and "
                             f"num_workers >= 0, got {self.attention_warmup}, "
                             f"{self.warmup_epochs}, {self.num_workers}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"{owner}: expected 0 <= label_smoothing < 1, got "
                             f"{self.label_smoothing}")
        if self.freeze_backbone and not self.init_from:
            raise ValueError(f"{owner}: expected --init-from a baseline checkpoint with "
                             "--freeze-backbone, got none")
        return self

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.05 if self.optimizer == "sgd" else 1e-3


# ----------------------------------------------------------------------------- model


def build_model(config: dict[str, Any]) -> nn.Module:
    """The model a checkpoint config describes (model, attention, placement, classes...)."""
    from .models import create_model

    attention = config.get("attention")
    return create_model(
        config["model"],
        attention=None if attention in (None, "", "none") else attention,
        placement=config.get("placement"),
        num_classes=config["num_classes"],
        in_channels=config["in_channels"],
    )


def top_level_mechanisms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every attention mechanism not nested in another one."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():  # pre-order: ancestors come first
        if is_mechanism(module) and not any(name.startswith(f"{p}.") for p, _ in found):
            found.append((name, module))
    return found


def _head(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    mechanisms = {id(p) for _, m in top_level_mechanisms(model) for p in m.parameters()}
    heads = [m for m in linears if id(m.weight) not in mechanisms]
    if not heads:
        raise ValueError(f"attn2d train: expected a final nn.Linear classifier in "
                         f"{type(model).__name__}, got none")
    return heads[-1]


def _freeze_backbone(model: nn.Module) -> list[nn.Module]:
    """Train only the mechanisms and the head; return the norm layers to keep in eval mode.

    Frozen BatchNorm layers must also stop updating their running statistics, else the
    backbone changes although none of its parameters do.
    """
    trainable = [m for _, m in top_level_mechanisms(model)] + [_head(model)]
    model.requires_grad_(False)
    inside = set()
    for module in trainable:
        module.requires_grad_(True)
        inside.update(id(m) for m in module.modules())
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and id(m) not in inside]


class _AttentionWarmup:
    """Blend each top-level mechanism's output with its input: ``a·out + (1 − a)·in``.

    ``a`` rises linearly from 0 at epoch 0 to 1 at epoch ``epochs``, so a freshly inserted
    mechanism starts as the identity and the backbone is not disturbed at the start.
    """

    def __init__(self, model: nn.Module, epochs: int) -> None:
        self.epochs = epochs
        self.alpha = 1.0
        self.handles = [m.register_forward_hook(self._hook)
                        for _, m in top_level_mechanisms(model)] if epochs else []

    def set_epoch(self, epoch: int) -> float:
        self.alpha = min(1.0, epoch / self.epochs) if self.epochs else 1.0
        return self.alpha

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        if self.alpha >= 1.0:
            return None  # keep the output as is
        return self.alpha * output + (1.0 - self.alpha) * inputs[0]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


# ----------------------------------------------------------------------------- checkpoints


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state as tensors and plain lists, so ``weights_only=True`` can load it."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [version, list(internal), gauss_next],
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load an attn2d checkpoint with ``weights_only=True``; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attn2d: expected a checkpoint file, got no file at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for truncated or foreign files
        raise ValueError(f"attn2d: expected an attn2d checkpoint at {path}, got an unreadable "
                         f"file ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                         ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        kind = (f"a dict with keys {sorted(map(str, checkpoint))[:8]}"
                if isinstance(checkpoint, dict) else type(checkpoint).__name__)
        raise ValueError(f"attn2d: expected an attn2d checkpoint at {path} (written by "
                         f"attn2d train), got {kind}")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"attn2d: expected checkpoint version {CHECKPOINT_VERSION} at {path}, "
                         f"got {checkpoint.get('version')!r}")
    return checkpoint


def _save(checkpoint: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_model(checkpoint_path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint, load its weights, eval mode; also return its config."""
    checkpoint = read_checkpoint(checkpoint_path)
    model = build_model(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint["config"]


def _load_init(model: nn.Module, path: str) -> None:
    """Initialise from a (baseline) checkpoint; only attention parameters may be missing."""
    state = read_checkpoint(path)["model"]
    attention = [name for name, _ in top_level_mechanisms(model)]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"attn2d train: expected --init-from {path} to match the model's "
                         f"shapes, got: {str(err).splitlines()[-1].strip()}") from None
    foreign = [k for k in missing if not any(k.startswith(f"{a}.") for a in attention)]
    if foreign or unexpected:
        raise ValueError(f"attn2d train: expected --init-from {path} to hold every backbone "
                         f"weight, got missing {foreign[:5]} and unexpected {unexpected[:5]}")


# ----------------------------------------------------------------------------- processes


@dataclass
class _Process:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_processes(device: str) -> _Process:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world == 1:
        return _Process(0, 1, torch.device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return _Process(dist.get_rank(), world, torch.device(device))


def _all_sum(process: _Process, *values: Tensor) -> list[Tensor]:
    if process.world == 1:
        return list(values)
    packed = torch.stack([v.double() for v in values])
    dist.all_reduce(packed)
    return list(packed.unbind())


class _StopRequest:
    """SIGINT/SIGTERM set a flag that the loop reads after each step (never mid-step)."""

    def __init__(self) -> None:
        self.signal = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def agreed(self, process: _Process) -> bool:
        # Every rank must stop after the same step, else DDP waits forever for the others.
        if process.world == 1:
            return bool(self.signal)
        flag = torch.tensor([float(self.signal)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signal = self.signal or int(flag.item())
        return bool(self.signal)


# ----------------------------------------------------------------------------- measures


def _to_input(x: Tensor, config: TrainConfig, device: torch.device) -> Tensor:
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    return x.to(device, non_blocking=True, memory_format=fmt)


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def _evaluate(model: nn.Module, loader: DataLoader, config: TrainConfig,
              process: _Process) -> tuple[float, float]:
    model.eval()
    loss = torch.zeros((), device=process.device, dtype=torch.float64)
    correct = torch.zeros((), device=process.device, dtype=torch.int64)
    seen = torch.zeros((), device=process.device, dtype=torch.int64)
    for x, y in loader:
        x, y = _to_input(x, config, process.device), y.to(process.device)
        with _autocast(config, process.device):
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    loss, correct, seen = _all_sum(process, loss, correct, seen)
    return float(loss / seen), float(correct / seen)


@torch.no_grad()
def _latency_ms(model: nn.Module, shape: tuple[int, ...], config: TrainConfig,
                device: torch.device, repeats: int = 10) -> float:
    """Median forward time of one batch in eval mode (after warm-up)."""
    model.eval()
    x = _to_input(torch.zeros(shape), config, device)
    times = []
    for i in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with _autocast(config, device):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    # Linux reports ru_maxrss in KiB: the process's resident-set high-water mark.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def _write_json(path: Path, value: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2) + "\n")


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in history))


def _cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _check_same_run(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current = dataclasses.asdict(config)
    changed = sorted(k for k in current
                     if k not in RUNTIME_FIELDS and saved.get(k) != current[k])
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(f"attn2d train: expected the same settings as the checkpoint "
                         f"{path} to resume it, got changes ({diff}); use another --out")


# ----------------------------------------------------------------------------- the loop


def train(config: TrainConfig, on_step: Callable[[int, int], None] | None = None
          ) -> dict[str, Any]:
    """Train one model; return ``result.json``'s content (``status`` says if interrupted).

    Args:
        config: the run (see :class:`TrainConfig`).
        on_step: called as ``on_step(epoch, step)`` after every optimisation step
            (0-based epoch, 1-based step within it), e.g. to watch progress.
    """
    config.check()
    if config.threads:
        torch.set_num_threads(config.threads)
    process = _start_processes(config.device)
    run_dir = Path(config.out)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last_path.exists() and not config.resume:
        raise ValueError(f"attn2d train: expected a fresh --out, got {run_dir} with a "
                         "checkpoint; pass --resume to continue it or choose another --out")
    if config.batch_size % process.world:
        raise ValueError(f"attn2d train: expected batch_size divisible by the {process.world} "
                         f"processes, got {config.batch_size}")
    info = dataset_info(config.dataset)
    model_config = {**dataclasses.asdict(config), "dataset": info.name,
                    "num_classes": info.num_classes, "in_channels": info.in_channels,
                    "image_size": info.image_size}

    # Data: the same seeded permutation on every rank, each taking its share.
    generator = _seed_everything(config.seed)
    train_set = get_dataset(info.name, "train", config.data_dir, subset=config.subset,
                            seed=config.seed, download=config.download)
    test_set = get_dataset(info.name, "test", config.data_dir, subset=config.test_subset,
                           download=config.download)
    sampler = DistributedSampler(train_set, process.world, process.rank, shuffle=True,
                                 seed=config.seed)
    local_batch = config.batch_size // process.world
    steps_per_epoch = math.ceil(len(sampler) / local_batch)
    test_loader = _loader(test_set, list(range(process.rank, len(test_set), process.world)),
                          512, config, generator)

    # Model, optionally from a baseline checkpoint with the backbone frozen.
    net = build_model(model_config).to(process.device)
    if config.init_from:
        _load_init(net, config.init_from)
    frozen_norms = _freeze_backbone(net) if config.freeze_backbone else []
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    warmup = _AttentionWarmup(net, config.attention_warmup)
    model: nn.Module = net
    if process.world > 1:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[process.device.index] if process.device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)

    params = [p for p in net.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=config.learning_rate, momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(
        config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch)))
    scaler = torch.amp.GradScaler(process.device.type, enabled=config.amp == "fp16")

    # Resume: weights, optimiser, schedule, RNG states and the position in the epoch.
    start_epoch, start_step, history, best_acc = 0, 0, [], -1.0
    progress = {"loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0}
    if config.resume and last_path.exists():
        checkpoint = read_checkpoint(last_path)
        _check_same_run(checkpoint["config"], config, last_path)
        net.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"], generator)
        start_epoch, start_step = checkpoint["epoch"], checkpoint["step"]
        history, best_acc = checkpoint["history"], checkpoint["best_acc"]
        progress = checkpoint["progress"]
    if process.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_metrics(run_dir / "metrics.jsonl", history)

    def checkpoint_state(epoch: int, step: int) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": model_config, "model": net.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                "rng": _rng_state(generator), "progress": progress, "history": history,
                "best_acc": best_acc}

    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    stop = _StopRequest()
    with stop.installed():
        for epoch in range(start_epoch, config.epochs):
            alpha = warmup.set_epoch(epoch)
            train_set.set_epoch(epoch)
            sampler.set_epoch(epoch)
            order = list(sampler)[start_step * local_batch:]
            model.train()
            for norm in frozen_norms:
                norm.eval()
            # Running sums stay on the device: reading them forces a sync, so only the
            # progress bar (every log_every steps) and the end of the epoch read them.
            loss_sum = torch.tensor(progress["loss_sum"], device=process.device,
                                    dtype=torch.float64)
            correct = torch.tensor(progress["correct"], device=process.device)
            seen = progress["seen"]
            started = time.perf_counter() - progress["elapsed"]
            bar = tqdm(total=steps_per_epoch, initial=start_step, leave=False,
                       desc=f"epoch {epoch + 1}/{config.epochs}", dynamic_ncols=True,
                       disable=not (config.progress and process.main))
            step = start_step
            for x, y in _loader(train_set, order, local_batch, config, generator):
                x, y = _to_input(x, config, process.device), y.to(process.device)
                with _autocast(config, process.device):
                    logits = model(x)
                    loss = loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                step += 1
                bar.update(1)
                if step % config.log_every == 0 and bar.disable is False:
                    rate = seen * process.world / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}",
                                    acc=f"{float(correct) / seen:.1%}", img_s=f"{rate:.0f}")
                if on_step is not None:
                    on_step(epoch, step)
                if stop.agreed(process) and step < steps_per_epoch:
                    bar.close()
                    progress = {"loss_sum": float(loss_sum), "correct": int(correct),
                                "seen": seen, "elapsed": time.perf_counter() - started}
                    return _interrupted(checkpoint_state(epoch, step), last_path, process,
                                        stop.signal, warmup)
            bar.close()
            elapsed = time.perf_counter() - started
            totals = _all_sum(process, loss_sum, correct.double(),
                              torch.tensor(float(seen), device=process.device))
            test_loss, test_acc = _evaluate(net, test_loader, config, process)
            row = {"epoch": epoch + 1, "train_loss": float(totals[0] / totals[2]),
                   "train_acc": float(totals[1] / totals[2]), "test_loss": test_loss,
                   "test_acc": test_acc, "lr": optimizer.param_groups[0]["lr"],
                   "epoch_time_s": elapsed, "images_per_s": float(totals[2]) / elapsed,
                   "attention_alpha": alpha}
            history.append(row)
            start_step, progress = 0, {"loss_sum": 0.0, "correct": 0, "seen": 0, "elapsed": 0.0}
            improved = test_acc > best_acc
            best_acc = max(best_acc, test_acc)
            if process.main:
                state = checkpoint_state(epoch + 1, 0)
                _save(state, last_path)
                if improved:
                    _save(state, best_path)
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                tqdm.write(f"epoch {epoch + 1}/{config.epochs}  train loss {row['train_loss']:.4f}"
                           f" acc {row['train_acc']:.2%}  test loss {test_loss:.4f} acc "
                           f"{test_acc:.2%}  {elapsed:.1f} s  {row['images_per_s']:.0f} img/s")
            if stop.agreed(process):
                return _interrupted(None, last_path, process, stop.signal, warmup)

    warmup.remove()
    result = _result(net, history, model_config, info.image_size, config, process)
    if process.main:
        _write_json(run_dir / "result.json", result)
    return result


def _loader(dataset: ImageDataset, order: list[int], batch_size: int, config: TrainConfig,
            generator: torch.Generator) -> DataLoader:
    # The order is fixed beforehand (a list is a valid sampler), so resuming mid-epoch is
    # a matter of dropping the batches already done.
    return DataLoader(dataset, batch_size=batch_size, sampler=order,
                      num_workers=config.num_workers, generator=generator,
                      pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


def _interrupted(state: dict[str, Any] | None, path: Path, process: _Process, signum: int,
                 warmup: _AttentionWarmup) -> dict[str, Any]:
    if state is not None and process.main:
        _save(state, path)
    warmup.remove()
    if process.main:
        tqdm.write(f"attn2d train: stopped by signal {signum}; saved {path}; "
                   "rerun with --resume to continue")
    return {"status": "interrupted", "signal": signum, "checkpoint": str(path)}


def _result(net: nn.Module, history: list[dict[str, Any]], model_config: dict[str, Any],
            image_size: int, config: TrainConfig, process: _Process) -> dict[str, Any]:
    from .profiler import count_macs

    shape = (model_config["in_channels"], image_size, image_size)
    net.eval()
    macs = count_macs(net, (1, *shape))
    latency = _latency_ms(net, (config.batch_size, *shape), config, process.device)
    peak, peak_kind = _peak_memory_mb(process.device)
    accs = [row["test_acc"] for row in history]
    best = max(range(len(accs)), key=accs.__getitem__)
    return {
        "status": "finished",
        "best_test_acc": accs[best], "best_epoch": best + 1, "last_test_acc": accs[-1],
        "params": sum(p.numel() for p in net.parameters()),
        "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "macs": int(macs),
        "time_per_epoch_s": statistics.mean(row["epoch_time_s"] for row in history),
        "images_per_s": statistics.mean(row["images_per_s"] for row in history),
        "latency_ms_per_batch": latency, "latency_batch_size": config.batch_size,
        "peak_memory_mb": peak, "peak_memory_kind": peak_kind,
        "world_size": process.world, "device": str(process.device),
        "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "config": model_config,
    }
