"""What defines a training run: :class:`TrainConfig`, its choices and its checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._base.amp import AMP_DTYPES
from .._base.validate import check_choice, check_int, check_number, fail, flag
from ..data import DataSpec, canonical_dataset
from ..models import is_model_name, list_models
from ..modules.registry import get, no_attention

__all__ = [
    "COMPILE_MODES",
    "CUSTOM_DATASET",
    "GATE_INITS",
    "OPTIMIZERS",
    "RUNTIME_FIELDS",
    "TrainConfig",
    "changed_settings",
    "normalize_attention",
    "with_defaults",
]

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "auto")
OPTIMIZERS = ("sgd", "adamw")
GATE_INITS = ("default", "identity")
AMP_CHOICES = tuple(AMP_DTYPES)
CUSTOM_DATASET = "custom"  # the name of runs on the user's own Dataset objects
# Fields that may differ between an interrupted run and its resumption, or between runs of
# one comparison: they change where and how fast a run goes, not what it computes.
RUNTIME_FIELDS = frozenset({
    "out", "resume", "progress", "device", "num_workers", "data_dir", "download",
    "log_every", "threads", "compile", "channels_last", "in_memory", "tensorboard",
    "tensorboard_every", "eval_batch_size",
})


def normalize_attention(spec: str | None) -> str | None:
    """``None`` for no attention (``None``, ``""``, ``"none"`` in any case), else the spec."""
    return None if no_attention(spec) else spec


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
        dataset = self.dataset if self.dataset == CUSTOM_DATASET else \
            canonical_dataset(self.dataset)
        return dataclasses.replace(
            self, dataset=dataset, lr=lr, gate_init=gate_init,
            attention=normalize_attention(self.attention), mean=_tuple(self.mean),
            std=_tuple(self.std))

    def check(self) -> TrainConfig:
        """Validate every field, the data fields included; one error naming the option."""
        if self.dataset != CUSTOM_DATASET:
            super().check()
        # The model first: a typo in a spec must not wait for the data to be read.
        if not is_model_name(self.model):
            raise fail(None, f"expected --model to be one of {', '.join(list_models())} or "
                       f"torchvision:NAME / timm:NAME, got {self.model!r}")
        if normalize_attention(self.attention) is not None:
            get(self.attention)  # parses the spec: unknown names and keywords fail here
        if self.placement is not None:
            check_choice(self.placement, ("block", "stage"), "--placement")
        for name, low in {"epochs": 1, "batch_size": 1, "log_every": 1, "eval_batch_size": 1,
                          "tensorboard_every": 1, "precise_bn": 0, "seed": 0}.items():
            check_int(getattr(self, name), flag(name), minimum=low)
        check_int(self.threads, "--threads", optional=True)
        check_number(self.lr, "--lr", lambda v: v > 0, "> 0", optional=True)
        check_number(self.momentum, "--momentum", lambda v: 0 <= v < 1, "in [0, 1)")
        check_number(self.weight_decay, "--weight-decay", lambda v: v >= 0, ">= 0")
        check_number(self.label_smoothing, "--label-smoothing", lambda v: 0 <= v < 1,
                     "in [0, 1)")
        for name in ("warmup_epochs", "attention_warmup"):
            check_number(getattr(self, name), flag(name), lambda v: 0 <= v <= self.epochs,
                         f"between 0 and --epochs ({self.epochs})")
        check_choice(self.optimizer, OPTIMIZERS, "--optimizer")
        check_choice(self.amp, AMP_CHOICES, "--amp")
        check_choice(self.compile, COMPILE_MODES, "--compile")
        if self.gate_init is not None:
            check_choice(self.gate_init, GATE_INITS, "--gate-init")
        if self.freeze_backbone and not self.init_from:
            raise fail(None, "expected --init-from a baseline checkpoint with "
                       "--freeze-backbone, got none")
        return self


def _tuple(value: Any) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the fields an older attn2d did not have set to their defaults
    (which is what such a run did)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {**defaults, **saved}


def changed_settings(saved: dict[str, Any], config: TrainConfig) -> str:
    """``"attention: 'se' -> 'cbam', lr: 0.05 -> 0.1"``: the settings of ``config`` that a run
    saved with ``saved`` cannot take on (runtime fields may change, ``epochs`` may grow);
    empty when none."""
    saved = with_defaults(saved)
    current = dataclasses.asdict(config)
    changed = sorted(k for k in current if k not in RUNTIME_FIELDS | {"epochs"}
                     and _jsonable(saved.get(k)) != _jsonable(current[k]))
    if config.epochs < saved.get("epochs", 0):
        changed.append("epochs")
    return ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
