"""``attn2d train``: one model on one dataset, a loop that reads top to bottom.

    run = start(config)                          # data, model, optimiser, resume
    for epoch in range(run.epoch, config.epochs):
        train_one_epoch(run, epoch)              # compiled steps, no host sync
        end_epoch(run, epoch)                    # precise BN, evaluate, checkpoint, log
    finish(run)                                  # result.json, predictions.npz

The run directory gets ``config.json`` (before the first step), ``metrics.jsonl`` (one line
per epoch), ``last.pt`` (every epoch) and ``best.pt`` (the model whose test accuracy the run
reports: the final epoch, or with ``val_split`` the epoch of best validation accuracy), both
written atomically, and, once finished, ``result.json`` and ``predictions.npz`` (the
predicted class of every test image, so that runs can be compared image by image).

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
import logging
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .._base.errors import Attn2dError
from .._base.io import copy_file, save_npz, write_jsonl
from .._base.lock import FolderLock
from .._base.log import plural
from ..data import Data
from ..data.memory import format_bytes, is_out_of_memory
from ..tools.timing import sync
from .checkpoint import save_checkpoint
from .config import TrainConfig, changed_settings
from .evaluate import evaluate, recompute_batch_norm
from .process import StopRequest
from .result import FINISHED, INTERRUPTED, RunResult
from .setup import check_out, start
from .state import EpochTotals, Run
from .step import NonFiniteLoss, train_step

__all__ = ["accuracy_gap", "end_epoch", "finish", "interrupted", "train", "train_one_epoch"]

log = logging.getLogger(__name__)


def train(config: TrainConfig, on_step: Callable[[int, int], None] | None = None, *,
          data: Data | None = None, stop: StopRequest | None = None) -> RunResult:
    """Train one model; return its result (``result.json``; ``status`` says if interrupted).

    Args:
        config: the run (see :class:`TrainConfig`).
        on_step: called as ``on_step(epoch, step)`` after every optimisation step
            (0-based epoch, 1-based step within it), e.g. to watch progress.
        data: ready-made data instead of ``config``'s dataset (see :func:`start`).
        stop: the signals that stop the run, saved, after its current step (default
            SIGINT and SIGTERM; a SLURM task adds its time-limit signal).

    Only one process writes a run folder at a time (:class:`attn2d._base.lock.FolderLock`).
    """
    finished = _finished_result(config)
    if finished is not None:
        return finished
    check_out(Path(config.out))
    threads = torch.get_num_threads()  # `threads` is the run's setting, not the caller's
    try:
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
    except Exception as err:
        if isinstance(err, Attn2dError) or not is_out_of_memory(err):
            raise
        raise _out_of_memory(config, err) from None
    finally:
        torch.set_num_threads(threads)


def _writer_lock(out: str) -> contextlib.AbstractContextManager[Any]:
    """One writer per run folder; under torchrun rank 0 writes."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return FolderLock(out, "attn2d train")


def _out_of_memory(config: TrainConfig, err: BaseException) -> Attn2dError:
    """One line for an allocation that failed in a step or an evaluation."""
    asked = re.search(r"tried to allocate (\d+) bytes", str(err), re.IGNORECASE)
    size = f" (torch asked for {format_bytes(int(asked.group(1)))})" if asked else ""
    last = Path(config.out) / "last.pt"
    kept = f"; {last} is kept" if last.is_file() else ""
    return Attn2dError(f"out of memory while training{size} at --batch-size "
                       f"{config.batch_size}, --eval-batch-size {config.eval_batch_size}"
                       f"{f', --image-size {config.image_size}' if config.image_size else ''}"
                       f"{kept}; expected smaller batches or images")


def _finished_result(config: TrainConfig) -> RunResult | None:
    """A finished run resumed with no more epochs to do: say so and return its result;
    refuse one resumed with other settings."""
    path = Path(config.out) / "result.json"
    if not (config.resume and path.is_file()):
        return None
    result = RunResult.read(path)
    saved_epochs = result.config.get("epochs", 0)
    if not result.finished or config.epochs > saved_epochs:
        return None
    changed = changed_settings(result.config, config.resolved())
    if changed:
        raise Attn2dError(f"expected the settings of the finished run in {config.out} to "
                          f"resume it (only --epochs may grow), got changes ({changed}); use "
                          "another --out")
    log.info("%s is finished (%s); nothing to resume (pass a larger --epochs to extend it)",
             config.out, plural(saved_epochs, "epoch"))
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
        loss, predicted = train_step(run, x, y)
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
    raise NonFiniteLoss(f"expected a finite training loss, got {float(loss)} in "
                        f"epoch {run.epoch + 1} (step {run.step}); {kept}; try a lower --lr or "
                        "--amp none")



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
        log.info(_epoch_line(row, config.epochs))
        gap = accuracy_gap(row)
        if gap:
            log.warning(gap)
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


def interrupted(run: Run, signum: int) -> RunResult:
    """Save where the run stopped (mid-epoch included) and say how to continue."""
    path = run.dir / "last.pt"
    if run.process.main:
        if run.step:  # stopped mid-epoch; at an epoch boundary last.pt is already current
            save_checkpoint(run.checkpoint_state(), path)
        log.warning("stopped by signal %d; saved %s; rerun with --resume to continue",
                    signum, path)
    _close(run)
    return RunResult(INTERRUPTED, signal=signum, checkpoint=str(path), config=run.saved_config)


def _close(run: Run) -> None:
    if run.warmup is not None:
        run.warmup.remove()
    if run.tensorboard is not None:
        run.tensorboard.close()


def finish(run: Run) -> RunResult:
    """``result.json`` and ``predictions.npz`` of a finished run; returns the result."""
    from ..tools.profiler import count_macs

    _close(run)
    info, net = run.data.info, run.net
    history, selected = run.history, run.selected
    macs = count_macs(net.eval(), (1, info.in_channels, info.image_size, info.image_size))
    rates = [row["images_per_s"] for row in history if row["images_per_s"]]
    result = RunResult(
        FINISHED, test_acc=selected["test_acc"], test_epoch=selected["epoch"],
        selection="best validation accuracy" if run.data.val is not None else "final epoch",
        val_acc=selected.get("val_acc"), last_test_acc=history[-1]["test_acc"],
        params=sum(p.numel() for p in net.parameters()),
        trainable_params=sum(p.numel() for p in net.parameters() if p.requires_grad),
        macs=int(macs),
        time_per_epoch_s=statistics.mean(row["epoch_time_s"] for row in history),
        images_per_s=statistics.mean(rates) if rates else None,
        compile_time_s=run.compile_time_s, world_size=run.process.world,
        device=str(run.process.device), torch_threads=torch.get_num_threads(),
        torch_version=torch.__version__, config=run.saved_config)
    if run.process.main:
        save_npz(run.dir / "predictions.npz",
                 predictions=selected["predictions"].numpy().astype(np.int16),
                 targets=run.data.test.targets.numpy().astype(np.int16),
                 epoch=np.int32(selected["epoch"]))
        result.write(run.dir / "result.json")
    return result
