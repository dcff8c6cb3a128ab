"""Where a comparison's runs go: the seam between planning runs and running them.

:class:`~attn2d.comparison.local.LocalExecutor` runs them on this machine, and
:class:`~attn2d.comparison.slurm.SlurmExecutor` as SLURM job arrays; another backend (Ray,
say) is one more file with these four methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .plan import Failure, RunPlan

__all__ = ["Executor"]


class Executor(Protocol):
    """Runs a comparison's plans. ``run`` may be called again on the same folder with more
    plans (the next look of ``--seeds auto``): it trains only what is unfinished and not
    already under way."""

    def describe(self) -> str:
        """How the runs go, for the opening line (``"2 at a time"``)."""
        ...

    def settings(self) -> dict[str, Any]:
        """What ``comparison.json`` records about the executor (not a run setting)."""
        ...

    def run(self, plans: Sequence[RunPlan]) -> list[Failure]:
        """Train the unfinished plans; return the failures. Plans left unfinished and not
        failed are still running elsewhere (a detached SLURM array)."""
        ...

    def measure_costs(self, out: Path, specs: Sequence[str]) -> None:
        """The cost pass (:func:`attn2d.comparison.costs.measure_costs`) on the device the
        runs trained on."""
        ...
