"""``compare --seeds auto``: seeds go only where a verdict is still open.

    state = plan or resume (OUT/sequential.json)
    while True:
        result = sequential_update(state, outcomes of the finished runs)   # every look replayed
        store result.state()
        if every mechanism is decided: stop
        executor.run(the seeds result asks for)                            # one batch per look

The statistics are :mod:`attn2d.stats.sequential`'s: looks at 4, 6, 8, … seeds, repeated
confidence intervals with Lan–DeMets O'Brien–Fleming boundaries, so the error rate holds
however often the comparison looks. The plan and every look are stored, so a killed
comparison resumes to the same decisions and ``attn2d report`` rebuilds the same table.
Each batch goes through the executor like any other runs (the local workers or SLURM).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import stats
from .._base.errors import Attn2dError
from .._base.io import read_json, write_json
from .._base.log import plural
from ..training import TrainConfig
from .plan import Failure, plan_pairs
from .records import BASELINE, outcomes_by_spec, read_run

__all__ = ["STATE_FILE", "plan_or_resume", "run_sequential", "sequential_result"]

log = logging.getLogger(__name__)

STATE_FILE = "sequential.json"  # the plan, its boundaries and every look taken


def plan_or_resume(out: Path, mechanisms: Sequence[str], max_seeds: int, margin_pp: float
                   ) -> dict[str, Any]:
    """The stored state of ``out``, checked against these settings, or a new plan."""
    path = out / STATE_FILE
    margin = margin_pp / 100
    if path.is_file():
        state = read_json(path, "a sequential comparison's state")
        design = state.get("design", {})
        wanted = {"mechanisms": list(mechanisms), "max seeds": max_seeds, "margin": margin}
        stored = {"mechanisms": design.get("mechanisms"),
                  "max seeds": (design.get("looks") or [None])[-1],
                  "margin": design.get("margin")}
        differ = [k for k in wanted if not (
            math.isclose(stored[k], wanted[k]) if k == "margin" and stored[k] is not None
            else stored[k] == wanted[k])]
        if differ:
            diff = ", ".join(f"{k}: {stored[k]!r} vs {wanted[k]!r}" for k in differ)
            raise Attn2dError(f"expected the sequential plan stored in {path} to continue it, "
                              f"got other settings ({diff}); use another --out")
        return state
    log.info("planning the sequential comparison (looks, boundaries)...")
    design = stats.sequential_design(list(mechanisms), max_seeds=max_seeds, margin=margin)
    state = stats.sequential_update(design, None, {}).state()
    write_json(path, state)
    return state


def sequential_result(out: Path, state: dict[str, Any]) -> stats.SequentialResult:
    """Where the comparison in ``out`` stands: every look replayed from its finished runs."""
    records = [r for r in map(read_run, sorted((out / "runs").glob("*"))) if r is not None] \
        if (out / "runs").is_dir() else []
    outcomes = outcomes_by_spec(records)
    mechanisms = state["design"]["mechanisms"]
    return stats.sequential_update(state, outcomes.get(BASELINE),
                                   {m: outcomes.get(m) for m in mechanisms})


def run_sequential(out: Path, specs: Sequence[str], base: TrainConfig, executor: Any,
                   max_seeds: int, margin_pp: float) -> tuple[list[Failure], list[str]]:
    """Look, run the seeds the open mechanisms need, look again, until all are decided or
    the last look is taken; return the runs that failed and those still under way
    elsewhere (a detached executor). Either stops the loop: a look needs all its runs."""
    mechanisms = [s for s in specs if s != BASELINE]
    state = plan_or_resume(out, mechanisms, max_seeds, margin_pp)
    while True:
        result = sequential_result(out, state)
        state = result.state()
        write_json(out / STATE_FILE, state)
        _log_look(result, margin_pp)
        if result.finished:
            return [], []
        pairs = sorted({(BASELINE, s) for s in result.baseline_seeds}
                       | {(m, s) for m, seeds in result.mechanism_seeds.items() for s in seeds},
                       key=lambda pair: (pair[1], specs.index(pair[0])))
        plans = plan_pairs(pairs, base, out)
        failed = executor.run(plans)
        given_up = {(f.mechanism, f.seed) for f in failed}
        pending = [p.label for p in plans if not p.finished
                   and (p.spec, p.seed) not in given_up]
        if failed:
            log.warning("%s; the open mechanisms cannot be decided without them: the table "
                        "shows where they stand", plural(len(failed), "run") + " failed")
        if failed or pending:
            return failed, pending


def _log_look(result: stats.SequentialResult, margin_pp: float) -> None:
    for name, verdict in result.decisions.items():
        looks = result.looks[name]
        where = f"after {looks[-1].seeds} seeds" if looks else "before its first look"
        shown = stats.verdict_text(verdict, margin_pp / 100)
        needs = result.mechanism_seeds.get(name)
        more = f"; next: seeds {', '.join(map(str, needs))}" if needs else ""
        log.info("sequential: %s: %s %s%s", name, shown, where, more)
