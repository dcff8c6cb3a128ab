"""A comparison's runs: which (mechanism, seed) pairs, with which settings, in which folder.

Seed-major order, so a comparison stopped early still has every mechanism at the first
seeds. A folder that already holds runs with other settings is refused, naming them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._base.errors import Attn2dError
from .._base.io import write_json
from ..modules.registry import lookup
from ..training import RunResult, TrainConfig
from ..training.setup import CONFIG_FILE
from .records import BASELINE, describe_differences

__all__ = [
    "CompareConfig",
    "ComparisonInterrupted",
    "Failure",
    "RunPlan",
    "check_specs",
    "parse_seeds",
    "plan_pairs",
    "plan_runs",
    "run_name",
    "run_started",
    "slug",
    "split_specs",
]


# What `attn2d compare` compares unless told otherwise (the demo's list).
DEFAULT_MECHANISMS = "none,se,eca,cbam,nonlocal,danet,criss-cross"
DEFAULT_SEEDS = 3
DEFAULT_MAX_SEEDS = 10  # --seeds auto: seeds per mechanism at the last look
DEFAULT_MARGIN_PP = 0.5  # a smaller |Δ| than this is "equivalent" when the interval shows it


@dataclass(frozen=True)
class CompareConfig(TrainConfig):
    """The settings of every run of a comparison: :class:`~attn2d.training.TrainConfig`
    with the defaults that fit comparing mechanisms, shared by :func:`attn2d.comparison.compare`
    and ``attn2d compare``.

    ``precise_bn=20``: BatchNorm statistics recomputed before every evaluation, so short runs
    compare the mechanisms, not how far each one's running statistics lag its weights.
    ``compile="auto"``: CUDA graphs on a GPU, eager on a CPU.
    """

    precise_bn: int = 20
    compile: str = "auto"


def split_specs(text: str) -> list[str]:
    """Split ``"none,se,cbam(reduction=8, spatial_kernel=3)"`` on top-level commas only."""
    if not isinstance(text, str):
        raise Attn2dError(f"expected a comma-separated string, got "
                          f"{type(text).__name__}")
    specs, depth, current = [], 0, []
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise Attn2dError(f"expected balanced parentheses, got {text!r}")
        if char == "," and depth == 0:
            specs.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth:
        raise Attn2dError(f"expected balanced parentheses, got {text!r}")
    specs.append("".join(current).strip())
    if any(not s for s in specs):
        raise Attn2dError(f"expected non-empty names between commas, got {text!r}")
    return specs


def slug(spec: str) -> str:
    """A spec made filesystem-safe."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", spec.strip().lower()).strip("_")


def run_name(spec: str, seed: int) -> str:
    """Folder name of one run: the spec made filesystem-safe, then the seed."""
    return f"{slug(spec)}-seed{seed}"


@dataclass
class RunPlan:
    """One (mechanism, seed) run of a comparison."""

    spec: str
    seed: int
    config: TrainConfig
    number: int = 1  # position in the comparison, for the progress lines
    total: int = 1
    tries: int = 0  # starts given to a worker that then died

    @property
    def dir(self) -> Path:
        return Path(self.config.out)

    @property
    def finished(self) -> bool:
        return (self.dir / "result.json").is_file()

    @property
    def label(self) -> str:
        return f"[{self.number}/{self.total}] {self.spec} seed {self.seed}"

    def write_settings(self) -> None:
        """The run's ``config.json`` now, before anything runs it (a task that a scheduler
        starts over before its first checkpoint then starts over, not refuses)."""
        write_json(self.dir / CONFIG_FILE, dataclasses.asdict(self.config.resolved()))


class ComparisonInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a comparison; every run in flight saved its checkpoint.

    Its message says how to continue (the command, when known); ``signal`` is the number.
    """

    def __init__(self, signal: int, message: str = "") -> None:
        super().__init__(message)
        self.signal = signal


@dataclass(frozen=True)
class Failure:
    """A run that did not finish, and why."""

    mechanism: str
    seed: int
    error: str


def parse_seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """The seeds of a fixed comparison: ``3`` or ``"3"`` for 0, 1, 2; ``"3-5"`` for 3, 4, 5
    (a later comparison that adds seeds to an earlier one, merged with ``attn2d report``);
    or the seeds themselves. (``"auto"``, the sequential design, is not a list of seeds.)"""
    if isinstance(seeds, str):
        text = seeds.strip()
        low, dash, high = text.partition("-")
        try:
            if not dash:
                return parse_seeds(int(text))
            first, last = int(low), int(high)
        except ValueError:
            raise Attn2dError(f"expected --seeds as a count N (seeds 0..N-1), a range A-B or "
                              f"auto, got {seeds!r}") from None
        if not 0 <= first <= last:
            raise Attn2dError(f"expected --seeds A-B with 0 <= A <= B, got {seeds!r}")
        return list(range(first, last + 1))
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise Attn2dError(f"expected --seeds >= 1, got {seeds}")
        return list(range(seeds))
    chosen = list(seeds)
    if not chosen or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                         for s in chosen) or len(set(chosen)) != len(chosen):
        raise Attn2dError(f"expected distinct seeds >= 0, got {seeds!r}")
    return chosen


def check_specs(mechanisms: Sequence[str]) -> list[str]:
    specs = list(dict.fromkeys(s.strip() for s in mechanisms))
    if not specs:
        raise Attn2dError("expected at least one mechanism, got none")
    if BASELINE in specs:
        specs.remove(BASELINE)
    for spec in specs:
        lookup(spec)  # an unknown name fails now, not after an hour of training
    return [BASELINE, *specs]


def plan_runs(specs: Sequence[str], base: TrainConfig, seeds: Sequence[int], out: Path
              ) -> list[RunPlan]:
    """Every run of ``specs`` × ``seeds``, seed-major (a comparison stopped early still has
    every mechanism at its first seeds); see :func:`plan_pairs`."""
    return plan_pairs([(spec, seed) for seed in seeds for spec in specs], base, out)


def plan_pairs(pairs: Sequence[tuple[str, int]], base: TrainConfig, out: Path
               ) -> list[RunPlan]:
    """One run per (mechanism, seed), in the order given; refuse a folder that holds a
    finished run with other settings, naming them."""
    plans = []
    for spec, seed in pairs:
        run_dir = out / "runs" / run_name(spec, seed)
        config = dataclasses.replace(
            base, attention=None if spec == BASELINE else spec, seed=seed,
            out=str(run_dir), resume=run_started(run_dir))
        plan = RunPlan(spec, seed, config, len(plans) + 1, len(pairs))
        if plan.finished:
            saved = RunResult.read(run_dir / "result.json").config
            wanted = {**dataclasses.asdict(config.resolved()), "dataset": saved["dataset"]}
            diff = describe_differences({k: saved.get(k) for k in wanted}, wanted)
            if diff:
                raise Attn2dError(f"expected {run_dir} to hold a run with the same settings, "
                                  f"got different ones ({diff}); use another --out")
        plans.append(plan)
    return plans


def run_started(run_dir: Path) -> bool:
    """Whether a run was started in ``run_dir`` (it then resumes, or starts over when it was
    killed before its first checkpoint)."""
    return (run_dir / "last.pt").is_file() or (run_dir / CONFIG_FILE).is_file()
