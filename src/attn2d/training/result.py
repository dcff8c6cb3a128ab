"""What a run reports: :class:`RunResult`, written to and read back from ``result.json``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._base.errors import Attn2dError
from .._base.io import read_json, write_json
from .._base.records import ItemAccess

__all__ = ["FINISHED", "INTERRUPTED", "RunResult"]

FINISHED, INTERRUPTED = "finished", "interrupted"


@dataclass(frozen=True)
class RunResult(ItemAccess):
    """The outcome of :func:`attn2d.training.train`; a finished run's is its ``result.json``.

    An interrupted run has only ``status``, ``config``, ``signal`` and ``checkpoint`` (the
    file to resume from); every other field belongs to a finished run. Item access
    (``result["test_acc"]``) works as it did when this was a dict.

    Attributes:
        status: ``"finished"`` or ``"interrupted"``.
        config: the run's settings with the dataset's facts, as checkpoints hold them.
        test_acc: test accuracy of the reported epoch (``test_epoch``).
        test_epoch: the reported epoch (1-based), chosen as ``selection`` says.
        selection: ``"final epoch"`` or ``"best validation accuracy"``.
        last_test_acc: test accuracy of the final epoch.
        val_acc: validation accuracy of the reported epoch (with ``val_split``).
        params, trainable_params: parameter counts.
        macs: multiply-accumulates of one image's forward pass.
        time_per_epoch_s: mean training time of an epoch (evaluation excluded).
        images_per_s: mean training throughput.
        compile_time_s: time spent compiling before the first epoch.
        world_size, device, torch_threads, torch_version: where it ran.
        signal: the signal that interrupted the run.
        checkpoint: where the interrupted run was saved.
    """

    status: str
    test_acc: float | None = None
    test_epoch: int | None = None
    selection: str | None = None
    last_test_acc: float | None = None
    val_acc: float | None = None
    params: int | None = None
    trainable_params: int | None = None
    macs: int | None = None
    time_per_epoch_s: float | None = None
    images_per_s: float | None = None
    compile_time_s: float | None = None
    world_size: int | None = None
    device: str | None = None
    torch_threads: int | None = None
    torch_version: str | None = None
    signal: int | None = None
    checkpoint: str | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, in declaration order (what ``result.json`` holds)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def write(self, path: str | os.PathLike[str]) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "a run result") -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(values, dict) or not {"status", "config"} <= values.keys():
            got = f"keys {sorted(values)}" if isinstance(values, dict) else \
                type(values).__name__
            raise Attn2dError(f"expected {source} to hold a status and a config, got {got}")
        if not isinstance(values["config"], dict):
            raise Attn2dError(f"expected {source} to hold a config object, got a JSON "
                              f"{type(values['config']).__name__}")
        # Keys this version does not know (a newer writer) are left out, not refused.
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> RunResult:
        """A ``result.json``; one error naming the file when it is missing or damaged."""
        return cls.from_dict(read_json(path, "a run's result.json"), str(path))
