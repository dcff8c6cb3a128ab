"""``compare --seeds auto``: add seeds only where a verdict is still open, and stay valid
however often the comparison looks (docs/statistics.md, "Sequential design").

The plan fixes, before any run, the looks (seeds per mechanism at each look, e.g. 4, 6, 8,
10), the margin M of equivalence, α and the family of mechanisms. At look k a mechanism's
paired difference Δ over seeds 0..n_k − 1 gets two repeated confidence intervals (Jennison &
Turnbull, JRSS B 51:305, 1989; *Group Sequential Methods*, ch. 9):

- the **decision interval** Δ ± c_k · se, c_k from Lan–DeMets O'Brien–Fleming spending of
  α / m two-sided (m mechanisms: Bonferroni), studentised with the look's df
  (:mod:`attn2d.stats.boundaries`). Above 0: ``better``; below 0: ``worse``.
- the **equivalence interval** Δ ± e_k · se, spending 2α / m two-sided (α / m per side, the
  two one-sided tests of TOST, Schuirmann 1987). Within ±M: ``equivalent``.

A repeated confidence interval covers the true Δ at every look at once with its level,
whatever the looks decide, so a false ``better``/``worse`` (true Δ = 0) or a false
``equivalent`` (true |Δ| ≥ M) needs an interval that misses, and over the family those
happen with probability at most α. A mechanism still open after the last look is ``no
detectable difference``.

The controller is a pure function of the plan and the outcomes: each call replays every
look from the stored outcomes (look k uses exactly seeds 0..n_k − 1), so a killed comparison
resumes to the same decisions and ``attn2d report`` rebuilds the same table. The state it
returns (plan, boundaries, α spent, every look) is JSON; given back, it is checked against
the replay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._base.errors import Attn2dError
from ._inputs import Outcomes, images_of, outcomes, probability
from .boundaries import calibrated_bounds, obrien_fleming_spending, t_bounds
from .variance import crossed_mean, studentised
from .verdicts import BETTER, EQUIVALENT, MIN_SEEDS, NO_DIFFERENCE, OPEN, WORSE

__all__ = ["VERDICTS", "Look", "SequentialDesign", "SequentialResult", "decide",
           "sequential_design", "sequential_update", "simulate"]

STATE_VERSION = 1


@dataclass(frozen=True)
class SequentialDesign:
    """The plan of a sequential comparison, fixed before its first run.

    Attributes:
        mechanisms: the family compared with the baseline (the Bonferroni m).
        looks: seeds per mechanism at each look, increasing; the last is the most seeds.
        margin: equivalence margin M, in accuracy fractions (0.005 = 0.5 pp).
        alpha: family-wise level of every false verdict together.
        bounds: normal boundaries of the decision intervals (α / m, calibrated for
            studentised looks: :func:`attn2d.stats.boundaries.calibrated_bounds`).
        equivalence_bounds: normal boundaries of the equivalence intervals (2α / m).
        alpha_spent: the planned cumulative two-sided α per mechanism by each look
            (O'Brien–Fleming spending of α / m).
    """

    mechanisms: tuple[str, ...]
    looks: tuple[int, ...]
    margin: float
    alpha: float
    bounds: tuple[float, ...]
    equivalence_bounds: tuple[float, ...]
    alpha_spent: tuple[float, ...]

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _plan(mechanisms: Sequence[str], max_seeds: int, margin: float, alpha: float,
          looks: Sequence[int] | None, owner: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    names = tuple(mechanisms)
    if not names or len(set(names)) != len(names):
        raise Attn2dError(f"{owner}: expected one or more distinct mechanisms, got {list(names)}")
    probability(alpha, "alpha", owner)
    if not 0 < margin < 1:
        raise Attn2dError(f"{owner}: expected margin in (0, 1) (accuracy fractions: 0.005 = "
                          f"0.5 pp), got {margin}")
    if int(max_seeds) != max_seeds or max_seeds < MIN_SEEDS:
        raise Attn2dError(f"{owner}: expected max_seeds >= {MIN_SEEDS}, got {max_seeds}")
    if looks is None:
        first = min(4, max_seeds)
        looks = sorted({first, *range(first, max_seeds, 2), max_seeds})
    plan = tuple(int(n) for n in looks)
    if (not plan or plan[0] < MIN_SEEDS or list(plan) != sorted(set(plan))
            or plan[-1] != max_seeds):
        raise Attn2dError(f"{owner}: expected increasing looks of >= {MIN_SEEDS} seeds ending at "
                          f"max_seeds = {max_seeds}, got {list(plan)}")
    return names, plan


def sequential_design(mechanisms: Sequence[str], *, max_seeds: int = 10, margin: float = 0.005,
                      alpha: float = 0.05, looks: Sequence[int] | None = None
                      ) -> SequentialDesign:
    """The plan of ``compare --seeds auto`` (about a second: the boundaries are calibrated).

    Args:
        mechanisms: names of the mechanisms compared with the baseline (not the baseline).
        max_seeds: seeds per mechanism at the last look (``--max-seeds``).
        margin: equivalence margin in accuracy fractions (``--margin`` 0.5 pp = 0.005).
        alpha: family-wise level.
        looks: seeds per mechanism at each look; default 4, then every 2 seeds up to
            ``max_seeds`` (e.g. 4, 6, 8, 10).
    """
    names, plan = _plan(mechanisms, max_seeds, margin, alpha, looks, "sequential_design")
    per_mechanism = alpha / len(names)
    fractions = np.array(plan) / plan[-1]
    return SequentialDesign(
        names, plan, float(margin), float(alpha),
        tuple(map(float, calibrated_bounds(plan, per_mechanism))),
        tuple(map(float, calibrated_bounds(plan, min(2 * per_mechanism, 0.5)))),
        tuple(map(float, obrien_fleming_spending(fractions, per_mechanism))))


@dataclass(frozen=True)
class Look:
    """One mechanism at one look; differences in accuracy fractions.

    Attributes:
        seeds: paired seeds used (0..seeds − 1).
        delta, se, df: the paired difference over seeds × test images, its standard error
            and degrees of freedom (:func:`attn2d.stats.variance.crossed_mean`).
        low, high: the decision interval (repeated CI at 1 − α / m).
        equivalence_low, equivalence_high: the equivalence interval (1 − 2α / m).
        verdict: ``better``, ``worse``, ``equivalent``, ``open`` or, at the last look,
            ``no detectable difference``.
    """

    seeds: int
    delta: float
    se: float
    df: float
    low: float
    high: float
    equivalence_low: float
    equivalence_high: float
    verdict: str


@dataclass(frozen=True)
class SequentialResult:
    """Where a sequential comparison stands.

    Attributes:
        design: the plan.
        looks: each mechanism's looks so far, in order.
        baseline_seeds: seeds the baseline still needs for the open mechanisms' next look.
        mechanism_seeds: seeds each open mechanism still needs for its next look.
    """

    design: SequentialDesign
    looks: dict[str, tuple[Look, ...]]
    baseline_seeds: tuple[int, ...]
    mechanism_seeds: dict[str, tuple[int, ...]]

    @property
    def decisions(self) -> dict[str, str]:
        """Each mechanism's verdict: its last look's, ``open`` before its first."""
        return {name: (looks[-1].verdict if looks else OPEN) for name, looks in
                self.looks.items()}

    @property
    def finished(self) -> bool:
        return all(v != OPEN for v in self.decisions.values())

    def state(self) -> dict[str, Any]:
        """JSON-ready: the plan, its boundaries and α spent, and every look."""
        return {"version": STATE_VERSION, "design": self.design.to_json(),
                "looks": {name: [asdict(look) for look in looks]
                          for name, looks in self.looks.items()}}


VERDICTS = (OPEN, BETTER, WORSE, EQUIVALENT, NO_DIFFERENCE)  # codes 0..4 of :func:`decide`


def decide(design: SequentialDesign, index: int, mean: np.ndarray, se: np.ndarray,
           df: np.ndarray) -> tuple[np.ndarray, ...]:
    """Look ``index``'s verdict codes (into ``VERDICTS``) and its two intervals, vectorised
    over any number of mechanisms or simulated comparisons."""
    mean, se, df = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (mean, se, df)))
    decide_c = t_bounds(np.full(df.shape, design.bounds[index]), df)
    equal_c = t_bounds(np.full(df.shape, design.equivalence_bounds[index]), df)
    low, high = mean - decide_c * se, mean + decide_c * se
    eq_low, eq_high = mean - equal_c * se, mean + equal_c * se
    last = index == len(design.looks) - 1
    code = np.select([low > 0, high < 0, (eq_low > -design.margin) & (eq_high < design.margin)],
                     [1, 2, 3], default=4 if last else 0)
    return code, low, high, eq_low, eq_high


def simulate(design: SequentialDesign, differences: np.ndarray,
             image_var: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Verdict codes and seeds used of many comparisons at once, from per-seed differences
    (…, max_seeds) (simulations and the A/A benchmark; the same rules as
    :func:`sequential_update`, conditional on the test set unless ``image_var`` is given)."""
    differences = np.asarray(differences, dtype=float)
    code = np.zeros(differences.shape[:-1], dtype=np.int8)
    used = np.zeros(differences.shape[:-1], dtype=np.int16)
    for index, seeds in enumerate(design.looks):
        mean, se, df = studentised(differences[..., :seeds], image_var)
        now = decide(design, index, mean, se, df)[0]
        is_open = code == 0
        code = np.where(is_open, now, code)
        used = np.where(is_open, seeds, used)
    return code, used


def _look(design: SequentialDesign, index: int, differences: np.ndarray) -> Look:
    est = crossed_mean(differences)
    code, low, high, eq_low, eq_high = (float(a) for a in
                                        decide(design, index, est.mean, est.se, est.df))
    return Look(differences.shape[0], est.mean, est.se, est.df, low, high, eq_low, eq_high,
                VERDICTS[int(code)])


def _design_from(state: SequentialDesign | Mapping[str, Any]) -> tuple[SequentialDesign,
                                                                       Mapping | None]:
    """The plan itself, or the plan of a stored state with its stored boundaries."""
    if isinstance(state, SequentialDesign):
        return state, None
    if state.get("version") != STATE_VERSION or "design" not in state:
        raise Attn2dError(f"sequential_update: expected a state of version {STATE_VERSION} "
                          f"with its design, got keys {sorted(state)}")
    d = state["design"]
    names, plan = _plan(d["mechanisms"], d["looks"][-1], d["margin"], d["alpha"], d["looks"],
                        "sequential_update")
    bounds = {key: tuple(map(float, d[key]))
              for key in ("bounds", "equivalence_bounds", "alpha_spent")}
    if any(len(v) != len(plan) for v in bounds.values()):
        raise Attn2dError(f"sequential_update: expected one boundary per look ({len(plan)}), got "
                          f"{ {k: len(v) for k, v in bounds.items()} }")
    return SequentialDesign(names, plan, float(d["margin"]), float(d["alpha"]), **bounds), \
        state.get("looks", {})


def _check_replay(stored: Mapping, looks: dict[str, tuple[Look, ...]]) -> None:
    """A stored look must be what the outcomes give again: otherwise runs changed."""
    for name, records in stored.items():
        replayed = looks.get(name, ())
        for k, record in enumerate(records):
            if k >= len(replayed):
                raise Attn2dError(f"sequential_update: expected the outcomes behind look {k + 1} "
                                  f"of {name} ({record['seeds']} seeds), got fewer seeds")
            now = asdict(replayed[k])
            same = now["verdict"] == record["verdict"] and now["seeds"] == record["seeds"] and \
                math.isclose(now["delta"], record["delta"], rel_tol=1e-9, abs_tol=1e-12)
            if not same:
                raise Attn2dError(f"sequential_update: expected look {k + 1} of {name} to replay "
                                  f"as stored ({record['verdict']}, Δ = {record['delta']:.6g}), "
                                  f"got {now['verdict']}, Δ = {now['delta']:.6g}: the runs "
                                  "behind it changed")


def sequential_update(state: SequentialDesign | Mapping[str, Any], baseline: Outcomes | None,
                      mechanisms: Mapping[str, Outcomes | None]) -> SequentialResult:
    """Each mechanism's decision and the seeds to run next, from the plan (or a stored state)
    and every outcome so far. Pure and deterministic: the same inputs give the same result.

    Args:
        state: a :func:`sequential_design`, or a :meth:`SequentialResult.state` stored
            earlier (checked against the replay).
        baseline: the baseline's outcomes (see :mod:`attn2d.stats`), None before any run.
        mechanisms: outcomes per mechanism of the design (missing or None: no run yet).
    """
    design, stored = _design_from(state)
    unknown = sorted(set(mechanisms) - set(design.mechanisms))
    if unknown:
        raise Attn2dError(f"sequential_update: expected mechanisms of the plan "
                          f"{list(design.mechanisms)}, got {unknown}")
    owner = "sequential_update"
    base = {} if baseline is None else outcomes(baseline, f"{owner}: baseline")
    looks: dict[str, tuple[Look, ...]] = {}
    baseline_seeds: set[int] = set()
    mechanism_seeds: dict[str, tuple[int, ...]] = {}
    for name in design.mechanisms:
        given = mechanisms.get(name)
        mech = {} if given is None else outcomes(given, f"{owner}: {name}")
        if base and mech and images_of(mech) != images_of(base):
            raise Attn2dError(f"{owner}: expected the baseline's {images_of(base)} test images "
                              f"for {name}, got N = {images_of(mech)}")
        done: list[Look] = []
        for index, seeds in enumerate(design.looks):
            wanted = range(seeds)
            if not all(s in base and s in mech for s in wanted):
                missing = tuple(s for s in wanted if s not in mech)
                if missing:
                    mechanism_seeds[name] = missing
                baseline_seeds.update(s for s in wanted if s not in base)
                break
            differences = (np.stack([mech[s] for s in wanted]).astype(np.int8)
                           - np.stack([base[s] for s in wanted]).astype(np.int8))
            done.append(_look(design, index, differences))
            if done[-1].verdict != OPEN:
                break
        looks[name] = tuple(done)
    if stored is not None:
        _check_replay(stored, looks)
    return SequentialResult(design, looks, tuple(sorted(baseline_seeds)), mechanism_seeds)
