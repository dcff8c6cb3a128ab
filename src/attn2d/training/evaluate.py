"""Evaluation on a padded, fixed-order set, and precise BatchNorm before it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .._base.amp import autocast
from ..data import EvalBatches
from .state import Run

__all__ = ["Evaluation", "evaluate", "recompute_batch_norm"]


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
