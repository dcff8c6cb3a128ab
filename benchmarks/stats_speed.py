"""How long the statistics of a large comparison take: 17 mechanisms (and the baseline) ×
20 seeds × 10,000 test images — every accuracy interval, the fixed-seed design's table and
one sequential update over the same outcomes (target: under 2 s on the 2-core machine).

    python benchmarks/stats_speed.py [--mechanisms 17] [--seeds 20] [--images 10000]

The outcomes are synthetic (random right/wrong at ~90 %); the statistics do not depend on
what the outcomes are, only on their shape. The sequential plan is made once beforehand
(its boundaries are calibrated once per plan, a few seconds, and stored by a comparison),
and timed separately; its margin keeps every mechanism open to the last look (worst case).
Each figure is the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from attn2d.stats import (
    accuracy_interval,
    compare_to_baseline,
    sequential_design,
    sequential_update,
)


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mechanisms", type=int, default=17)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.seeds, args.images)
    baseline = rng.random(shape) < 0.9
    mechanisms = {f"m{j}": rng.random(shape) < 0.9 for j in range(args.mechanisms)}

    def table() -> None:
        for outcomes in (baseline, *mechanisms.values()):
            accuracy_interval(outcomes)
        compare_to_baseline(baseline, mechanisms, margin=0.005)

    start = time.perf_counter()
    # a margin no mechanism can meet keeps every one open to the last look: the worst case
    design = sequential_design(list(mechanisms), max_seeds=args.seeds, margin=1e-6)
    plan_s = time.perf_counter() - start
    fixed_s = timed(table, args.repeats)
    update = sequential_update(design, baseline, mechanisms)
    assert all(len(looks) == len(design.looks) for looks in update.looks.values())
    sequential_s = timed(lambda: sequential_update(design, baseline, mechanisms), args.repeats)
    print(f"{args.mechanisms} mechanisms + baseline × {args.seeds} seeds × {args.images:,} "
          f"test images (median of {args.repeats}):")
    print(f"  fixed-seed table (accuracy intervals, Δ, Holm, equivalence): {fixed_s:.3f} s")
    print(f"  sequential update (every look replayed, {len(design.looks)} looks):    "
          f"{sequential_s:.3f} s")
    print(f"  together: {fixed_s + sequential_s:.3f} s (target < 2 s); the sequential plan, "
          f"made once: {plan_s:.2f} s")


if __name__ == "__main__":
    main()
