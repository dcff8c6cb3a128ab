"""Setting a run up: check its folder and resumability, read its data, build the model,
optimiser and schedule, compile its steps, and restore a checkpoint where it stopped."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._base.amp import autocast
from .._base.errors import Attn2dError
from .._base.io import read_json, write_json, write_jsonl
from .._base.log import plural
from .._base.validate import flag
from ..data import Data, DataSpec, load_data
from ..tools.timing import sync
from .checkpoint import CHECKPOINT_VERSION, read_checkpoint, restore_rng, rng_state
from .config import TrainConfig, changed_settings
from .model import AttentionWarmup, build_model, freeze_backbone, init_from
from .process import start_process
from .state import EpochTotals, Run
from .step import NonFiniteLoss, train_step

__all__ = ["CONFIG_FILE", "check_out", "start"]

CONFIG_FILE = "config.json"  # the run's settings, written before its first step

log = logging.getLogger(__name__)


def check_out(path: Path) -> None:
    """``--out`` must be (or become) a writable folder; checked before any work."""
    if path.exists() and not path.is_dir():
        raise Attn2dError(f"expected --out to be a folder, got the file {path}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise Attn2dError(f"expected --out {path} to be creatable, got the file "
                          f"{existing} in its path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise Attn2dError(f"expected --out {path} to be writable, got no write "
                          f"permission on {existing}")


def _check_resume(config: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None for a fresh start; refuse a mix-up either way.

    A folder that a run with these settings started but that has no checkpoint yet (it was
    killed before its first epoch ended) starts over under ``resume``: a scheduler that
    requeues the same command must not fail for that.
    """
    last = run_dir / "last.pt"
    if not config.resume:
        if last.exists():
            raise Attn2dError(f"expected a fresh --out, got {run_dir} with a checkpoint; pass "
                              "--resume to continue it or choose another --out")
        return None
    if not last.exists():
        started = run_dir / CONFIG_FILE
        if not started.is_file():
            raise Attn2dError(f"expected a run to resume in --out {run_dir}, got no last.pt "
                              "there; leave out --resume to start a new run")
        changed = changed_settings(read_json(started, "a run's config.json"), config)
        if changed:
            raise Attn2dError(f"expected the settings of the run started in {run_dir} to "
                              f"resume it, got changes ({changed}); use another --out")
        log.info("%s has no checkpoint yet: starting it over", run_dir)
        return None
    checkpoint = read_checkpoint(last)
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise Attn2dError(f"expected a checkpoint of this attn2d version to resume, got "
                          f"version {checkpoint.get('version')} at {last}")
    changed = changed_settings(checkpoint["config"], config)
    if changed:
        raise Attn2dError(f"expected the settings of the checkpoint {last} to resume it (only "
                          f"--epochs may grow), got changes ({changed}); use another --out")
    return checkpoint


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
        log.warning("--amp fp16 on a CPU is emulated and about 30x slower than float32; use "
                    "--amp none (or bf16 on a CPU with bf16 instructions)")
    if config.threads and config.threads > (os.cpu_count() or 1):
        log.warning("--threads %d exceeds the %s; the threads will compete for them",
                    config.threads, plural(os.cpu_count() or 1, "CPU core"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if config.num_workers > (cores or 1):
        log.warning("--num-workers %d exceeds the %s this process may use; the workers "
                    "will compete for them (and may run slower than fewer)",
                    config.num_workers, plural(cores or 1, "CPU core"))
    if config.warmup_epochs == config.epochs or config.attention_warmup == config.epochs > 0:
        log.warning("a warm-up as long as the whole run: the model trains at full strength for "
                    "no epoch")


def _check_batch_size(config: TrainConfig, images: int, dataset: str) -> None:
    """A batch no larger than the training set (the last partial batch is dropped)."""
    if config.batch_size <= images:
        return
    chosen = "".join(f" after {flag(name)} {getattr(config, name)}"
                     for name in ("val_split", "subset") if getattr(config, name) is not None)
    raise Attn2dError(f"expected --batch-size <= {images}, the training images of {dataset}"
                      f"{chosen}, got {config.batch_size}")


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
    check_out(run_dir)
    checkpoint = _check_resume(config, run_dir)
    process = start_process(config.device)
    if process.main:  # before anything slow: a run killed from here on can start over
        write_json(run_dir / CONFIG_FILE, dataclasses.asdict(config))
    _warnings(config, process.device)
    if config.batch_size % process.world:
        raise Attn2dError(f"expected --batch-size divisible by the "
                          f"{process.world} processes, got {config.batch_size}")
    if data is None:
        data = load_data(DataSpec.from_mapping(dataclasses.asdict(config)), process.device,
                         config.seed, batch_size=config.batch_size // process.world)
    info = data.info
    _check_batch_size(config, len(data.train), info.name)
    # The run's settings plus the dataset's facts that rebuilding the model needs.
    saved_config = {**dataclasses.asdict(config), "dataset": info.name,
                    "num_classes": info.num_classes, "in_channels": info.in_channels,
                    "input_size": info.image_size, "train_images": len(data.train),
                    "normalization": {"mean": list(info.mean), "std": list(info.std)}}
    steps = data.train.steps_per_epoch(config.batch_size)

    torch.manual_seed(config.seed)
    net = build_model(saved_config).to(process.device)
    if config.init_from and checkpoint is None:
        init_from(net, config.init_from)
    frozen = freeze_backbone(net) if config.freeze_backbone else []
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
        log.warning(f"--compile reduce-overhead replays CUDA graphs, which need a GPU; on "
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
            train_step(run, x, y)
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
        log.warning(f"--compile {mode} failed ({type(err).__name__}: "
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
