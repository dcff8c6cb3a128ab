"""Training one model: the loop (:func:`train`), its configuration, and its pieces.

    config  TrainConfig: every setting of a run, its checks and derived defaults
    process the device, torchrun ranks, stop requests (SIGINT/SIGTERM)
    model   the run's model: built, loaded, started from a baseline, frozen, warmed up
    state   Run: one run's state, which every step reads and updates
    step    the optimisation step
    setup   start(): data, model, optimiser, compile, resume
    evaluate evaluation and precise BatchNorm
    loop    train(): start → train_one_epoch → end_epoch → finish
    result  RunResult: result.json
    checkpoint, tensorboard: files the run writes
"""

from .checkpoint import CHECKPOINT_VERSION, read_checkpoint, read_state_dict, save_checkpoint
from .config import COMPILE_MODES, GATE_INITS, OPTIMIZERS, RUNTIME_FIELDS, TrainConfig
from .evaluate import Evaluation, evaluate, recompute_batch_norm
from .loop import accuracy_gap, end_epoch, finish, interrupted, train, train_one_epoch
from .model import AttentionWarmup, build_model, load_model
from .process import Process, StopRequest, resolve_device
from .result import RunResult
from .setup import start
from .state import Run
from .step import NonFiniteLoss, train_step

__all__ = [
    "CHECKPOINT_VERSION",
    "COMPILE_MODES",
    "GATE_INITS",
    "OPTIMIZERS",
    "RUNTIME_FIELDS",
    "AttentionWarmup",
    "Evaluation",
    "NonFiniteLoss",
    "Process",
    "Run",
    "RunResult",
    "StopRequest",
    "TrainConfig",
    "accuracy_gap",
    "build_model",
    "end_epoch",
    "evaluate",
    "finish",
    "interrupted",
    "load_model",
    "read_checkpoint",
    "read_state_dict",
    "recompute_batch_norm",
    "resolve_device",
    "save_checkpoint",
    "start",
    "train",
    "train_one_epoch",
    "train_step",
]
