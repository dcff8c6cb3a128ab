"""A/A test of the comparison's statistical designs: how often does each call a difference
that is not there?

The baseline is trained under K seeds once, through the real CLI, at the demo's settings
(``attn2d compare --attention none --seeds K``, 2 epochs, 3,000 training images, all 10,000
test images, small CNN, batch 64) into a folder that later calls reuse. Then every design is
evaluated on the stored ``predictions.npz``: some seeds' runs play the baseline, other seeds'
runs play "mechanisms". Nothing differs between them, so every ``better``/``worse`` is false.
Roles are drawn at random without overlap within one comparison (``--draws`` times, seed 0);
the draws share the same K runs, so the rates carry more uncertainty than their count says.

    python benchmarks/aa_test.py                     # K = 20, ~5 min the first time
    python benchmarks/aa_test.py --ab runs/ab-demo   # + the demo's mechanisms × 10 seeds

``--ab DIR`` also trains the demo's mechanisms with ``--ab-seeds`` seeds (default 10) and
prints how much each mechanism's Δ moves between seeds, Bartlett's test of equal spread,
the covariance the tests use (tests/stats/test_design.py) and, simulated from it, the
false-verdict rate of the default design and of the pooled two-way + Dunnett candidate.
``--timing`` prints the per-run wall times of both folders' logs and the demo estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from attn2d.tables import Table
from scipy import stats as sps

from attn2d.stats import (
    compare_to_baseline,
    holm,
    mcnemar_p,
    sequential_design,
    sequential_update,
)
from attn2d.stats.design import paired_verdicts, pooled_dunnett_verdicts
from attn2d.stats.quantiles import detectable_shift
from attn2d.stats.variance import studentised

DEMO = ["--dataset", "fashion-mnist", "--model", "small_cnn", "--subset", "3000", "--epochs", "2",
        "--batch-size", "64", "--jobs", "2", "--no-costs", "--no-html", "--no-progress"]
MECHANISMS = "none,se,eca,cbam,nonlocal,danet,criss-cross"


def train(out: Path, attention: str, seeds: int) -> None:
    """Run (or finish: finished runs are skipped) the comparison through the CLI; its
    output is shown and appended to ``OUT/compare.log`` (the per-run wall times)."""
    command = [sys.executable, "-m", "attn2d", "compare", "--attention", attention,
               "--seeds", str(seeds), *DEMO, "--out", str(out)]
    print("$", " ".join(command[2:]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process, open(out / "compare.log", "a") as log:
        for line in process.stdout:
            print(line, end="", flush=True)
            log.write(line)
    if process.returncode:
        raise SystemExit(f"aa_test: attn2d compare failed with exit code {process.returncode}")


def load(out: Path) -> dict[str, dict[int, np.ndarray]]:
    """``{mechanism: {seed: (N,) right/wrong}}`` of the finished runs under ``out``."""
    found: dict[str, dict[int, np.ndarray]] = {}
    for result_path in sorted((out / "runs").glob("*/result.json")):
        result = json.loads(result_path.read_text())
        if result.get("status") != "finished":
            continue
        with np.load(result_path.parent / "predictions.npz") as saved:
            correct = saved["predictions"] == saved["targets"]
        name = result["config"].get("attention") or "none"
        found.setdefault(name, {})[int(result["config"]["seed"])] = correct
    return found


# -- the designs, each given (baseline rows, [mechanism rows …]) of distinct runs -----------
def mcnemar_verdicts(base: np.ndarray, mechs: list[np.ndarray]) -> np.ndarray:
    """Today's design below 3 seeds: McNemar pooled over seeds, Holm over the mechanisms."""
    p = [mcnemar_p(int((m & ~base).sum()), int((base & ~m).sum())) for m in mechs]
    return holm(p) < 0.05


def t_test_verdicts(base: np.ndarray, mechs: list[np.ndarray]) -> np.ndarray:
    """Today's design from 3 seeds: t-test of the per-seed differences, Holm."""
    p = [sps.ttest_1samp(m.mean(axis=1) - base.mean(axis=1), 0).pvalue for m in mechs]
    return holm(p) < 0.05


def default_verdicts(base: np.ndarray, mechs: list[np.ndarray]) -> np.ndarray:
    """The new default: attn2d.stats.compare_to_baseline (untested below 3 seeds)."""
    result = compare_to_baseline(base, {str(j): m for j, m in enumerate(mechs)})
    return np.array([v.verdict in ("better", "worse") for v in result.values()])


def pooled_verdicts(base: np.ndarray, mechs: list[np.ndarray]) -> np.ndarray:
    codes = pooled_dunnett_verdicts(base.mean(axis=1), np.stack([m.mean(axis=1) for m in mechs]))
    return (codes == 1) | (codes == 2)


DESIGNS = [  # name, verdict function, seeds per role, mechanisms per table
    ("1 vs 1 seed, pooled McNemar (the old demo)", mcnemar_verdicts, 1, 1),
    ("1 baseline + 6 mechanisms, 1 seed, McNemar + Holm", mcnemar_verdicts, 1, 6),
    ("2 vs 2 seeds, pooled McNemar", mcnemar_verdicts, 2, 1),
    ("2 vs 2 seeds, new default (untested)", default_verdicts, 2, 1),
    ("3 vs 3 seeds, t-test on per-seed Δ", t_test_verdicts, 3, 1),
    ("3 vs 3 seeds, new default", default_verdicts, 3, 1),
    ("1 + 5 mechanisms, 3 seeds, new default (Holm)", default_verdicts, 3, 5),
    ("1 + 5 mechanisms, 3 seeds, pooled two-way + Dunnett", pooled_verdicts, 3, 5),
    ("5 vs 5 seeds, t-test on per-seed Δ", t_test_verdicts, 5, 1),
    ("1 + 3 mechanisms, 5 seeds, new default (Holm)", default_verdicts, 5, 3),
]


def false_rate(runs: np.ndarray, verdicts, seeds: int, mechanisms: int, draws: int,
               rng: np.random.Generator) -> float | None:
    """Share of drawn A/A comparisons with at least one better/worse."""
    needed = seeds * (mechanisms + 1)
    if needed > len(runs):
        return None
    hits = 0
    for _ in range(draws):
        order = rng.permutation(len(runs))[:needed].reshape(mechanisms + 1, seeds)
        hits += bool(verdicts(runs[order[0]], [runs[row] for row in order[1:]]).any())
    return hits / draws


def sequential_rate(runs: list[np.ndarray], draws: int, rng: np.random.Generator
                    ) -> tuple[float, float, float] | None:
    """``--seeds auto`` with one mechanism and at most 10 seeds, through the controller on
    the stored outcomes: shares of false better/worse and of equivalent, mean seeds."""
    if len(runs) < 20:
        return None
    design = sequential_design(["m"], max_seeds=10)
    verdicts, seeds = [], []
    for _ in range(draws):
        order = rng.permutation(len(runs))[:20]
        result = sequential_update(design, {i: runs[k] for i, k in enumerate(order[:10])},
                                   {"m": {i: runs[k] for i, k in enumerate(order[10:])}})
        verdicts.append(result.decisions["m"])
        seeds.append(result.looks["m"][-1].seeds)
    verdicts = np.array(verdicts)
    return (float(np.isin(verdicts, ("better", "worse")).mean()),
            float((verdicts == "equivalent").mean()), float(np.mean(seeds)))


def spread(runs: np.ndarray) -> dict[str, float]:
    """Seed spread of Δ, and the spread McNemar assumes, both in pp."""
    acc = runs.mean(axis=1)
    pairs = [(j, k) for j in range(len(runs)) for k in range(j + 1, len(runs))]
    discordant = np.mean([(runs[j] != runs[k]).mean() for j, k in pairs])
    return {"acc_sd": 100 * float(acc.std(ddof=1)),
            "delta_sd": 100 * float(np.std([acc[j] - acc[k] for j, k in pairs], ddof=1)),
            "mcnemar_sd": 100 * math.sqrt(discordant / runs.shape[1]),
            "share_over_052": float(np.mean([abs(acc[j] - acc[k]) > 0.0052 for j, k in pairs]))}


def detectable_table(delta_sd: float) -> Table:
    """Smallest detectable Δ (80 % power) of the default design at the measured spread."""
    rows = []
    for seeds in (3, 5, 10):
        se, df = delta_sd / math.sqrt(seeds), seeds - 1
        row = {"seeds": seeds}
        for key, level in (("alone", 0.05), ("holm6", 0.05 / 6)):
            row[key] = detectable_shift(float(sps.t.isf(level / 2, df)), df) * se
        rows.append(row)
    return Table([("seeds", "seeds"), ("alone", "detectable Δ, one mechanism (pp)"),
                  ("holm6", "… among 6, Bonferroni (pp)")], rows,
                 {"alone": "{:.2f}".format, "holm6": "{:.2f}".format})


def ab_report(found: dict[str, dict[int, np.ndarray]], order: list[str], draws: int) -> None:
    """How each mechanism's Δ moves between seeds, and what that does to pooled designs."""
    seeds = sorted(set.intersection(*(set(found[m]) for m in order)))
    acc = np.array([[found[m][s].mean() for s in seeds] for m in order])  # (models, seeds)
    delta = acc[1:] - acc[0]
    rows = [{"mechanism": m, "delta": 100 * d.mean(), "sd": 100 * d.std(ddof=1),
             "corr": float(np.corrcoef(acc[0], acc[j + 1])[0, 1])}
            for j, (m, d) in enumerate(zip(order[1:], delta, strict=True))]
    print(f"\nThe demo's mechanisms over {len(seeds)} seeds (Δ = mechanism − baseline, pp):")
    print(Table([("mechanism", "mechanism"), ("delta", "mean Δ"), ("sd", "seed sd of Δ"),
                 ("corr", "corr. with baseline")], rows,
                {"delta": "{:+.2f}".format, "sd": "{:.3f}".format, "corr": "{:+.2f}".format},
                align_left=("mechanism",)).to_markdown())
    print(f"Bartlett's test of equal seed sd of Δ: p = {sps.bartlett(*delta).pvalue:.1e}")
    cov = np.cov(100 * acc)
    print("Covariance of per-seed accuracy (pp², order " + ", ".join(order) + "):")
    print(np.array2string(np.round(cov, 4), separator=", "))
    rng = np.random.default_rng(0)
    chol = np.linalg.cholesky(np.cov(acc))
    table = []
    for s in (3, 5, 10):
        y = chol @ rng.standard_normal((draws, len(order), s))
        mean, se, df = studentised(y[:, 1:] - y[:, :1])
        default = paired_verdicts(mean, se, df)[2]
        pooled = pooled_dunnett_verdicts(y[:, 0], y[:, 1:])
        table.append({"seeds": s, "default": np.isin(default, (1, 2)).any(axis=1).mean(),
                      "pooled": np.isin(pooled, (1, 2)).any(axis=1).mean()})
    print(f"\nFalse-verdict rate with that covariance and no true difference ({draws:,} "
          "simulated tables):")
    print(Table([("seeds", "seeds"), ("default", "default (own seed noise, Holm)"),
                 ("pooled", "pooled two-way + Dunnett")], table,
                {"default": "{:.1%}".format, "pooled": "{:.1%}".format}).to_markdown())


def timing(folders: list[Path]) -> None:
    """Per-run wall time by mechanism, from the ``compare.log`` of each folder."""
    per: dict[str, list[float]] = {}
    for folder in folders:
        log = folder / "compare.log"
        for line in log.read_text().splitlines() if log.is_file() else []:
            if ": test acc " in line and line.endswith(" s"):
                name = line.split("]", 1)[1].split(" seed ")[0].strip()
                per.setdefault(name, []).append(float(line.rsplit(" in ", 1)[1][:-2]))
    if not per:
        print("\n(no compare.log with run times for --timing)")
        return
    rows = [{"mechanism": k, "runs": len(v), "median_s": float(np.median(v)),
             "max_s": float(np.max(v))} for k, v in per.items()]
    print("\nWall time of one run (process start to predictions):")
    print(Table([("mechanism", "mechanism"), ("runs", "runs"), ("median_s", "median (s)"),
                 ("max_s", "max (s)")], rows,
                {"median_s": "{:.1f}".format, "max_s": "{:.1f}".format},
                align_left=("mechanism",)).to_markdown())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="K baseline seeds (default 20)")
    parser.add_argument("--out", type=Path, default=Path("runs/aa-fmnist"))
    parser.add_argument("--draws", type=int, default=2000, help="A/A comparisons per design")
    parser.add_argument("--ab", type=Path, default=None, help="also train the demo's mechanisms")
    parser.add_argument("--ab-seeds", type=int, default=10)
    parser.add_argument("--no-train", action="store_true", help="use the runs already there")
    parser.add_argument("--timing", action="store_true")
    args = parser.parse_args()

    if not args.no_train:
        train(args.out, "none", args.seeds)
    runs_by_seed = load(args.out).get("none", {})
    runs = np.stack([runs_by_seed[s] for s in sorted(runs_by_seed)])
    print(f"\nA/A: {len(runs)} baseline runs × {runs.shape[1]:,} test images "
          f"(accuracy {100 * runs.mean():.2f} %)")
    rng = np.random.default_rng(0)
    rows = []
    for name, verdicts, seeds, mechanisms in DESIGNS:
        rate = false_rate(runs, verdicts, seeds, mechanisms, args.draws, rng)
        rows.append({"design": name, "rate": rate})
    seq = sequential_rate(list(runs), args.draws // 4, rng)
    if seq is not None:
        rows.append({"design": f"--seeds auto, 1 mechanism, ≤ 10 seeds (equivalent within "
                               f"±0.5 pp: {seq[1]:.0%}, mean seeds {seq[2]:.1f})",
                     "rate": seq[0]})
    print(Table([("design", "design"), ("rate", "false better/worse")], rows,
                {"rate": "{:.1%}".format}, align_left=("design",)).to_markdown())
    s = spread(runs)
    print(f"\nSeed sd of accuracy {s['acc_sd']:.3f} pp; between seeds Δ spreads "
          f"{s['delta_sd']:.3f} pp, McNemar assumes {s['mcnemar_sd']:.3f} pp (variance × "
          f"{(s['delta_sd'] / s['mcnemar_sd']) ** 2:.1f}); {s['share_over_052']:.0%} of A/A "
          "pairs differ by more than 0.52 pp.")
    print("\nSmallest detectable difference of the default design at that spread:")
    print(detectable_table(s["delta_sd"]).to_markdown())

    if args.ab is not None:
        if not args.no_train:
            train(args.ab, MECHANISMS, args.ab_seeds)
        ab_report(load(args.ab), MECHANISMS.split(","), args.draws * 10)
    if args.timing:
        timing([args.out] + ([args.ab] if args.ab else []))


if __name__ == "__main__":
    main()
