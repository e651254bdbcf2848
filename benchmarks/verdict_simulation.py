"""How often the verdict rule is wrong under no effect, and how often it finds a planted
one: the numbers behind README's "How verdicts are decided" table.

Runs the real rule (`stats.simulate_verdicts`: the declared family of five comparisons,
the test that fits the metric, Holm adjustment, intervals at the family level, a win only
when the interval's bound clears min_effect = 5 points) on simulated runs of four
pipelines scoring the same n items:

- 0/1 metric: each pipeline right on an item when a uniform draw, shared with the other
  pipelines half of the time (items have a difficulty), falls below its accuracy.
- continuous metric: scores in [0, 1] from an item effect plus noise (SD 0.25 around
  each pipeline's mean), like token F1.

Under no effect every pipeline has the same accuracy (40%) or mean (0.4); with a planted
effect of d points, rag and rag_finetuned are d points above base and finetuned, so the
right verdict is "RAG".

    python benchmarks/verdict_simulation.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness import stats

PIPES = ("base", "finetuned", "rag", "rag_finetuned")


def simulate(rng, *, kind: str, n: int, effect: float, runs: int) -> dict[str, np.ndarray]:
    rates = {"base": 0.4, "finetuned": 0.4, "rag": 0.4 + effect, "rag_finetuned": 0.4 + effect}
    if kind == "proportion":
        shared = rng.uniform(size=(runs, n))
        return {p: (np.where(rng.uniform(size=(runs, n)) < 0.5, shared, rng.uniform(size=(runs, n))) < r)
                .astype(float) for p, r in rates.items()}
    item = rng.normal(0, 0.2, size=(runs, n))
    return {p: np.clip(r + item + rng.normal(0, 0.25, size=(runs, n)), 0, 1) for p, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=2000, help="sign-flip patterns (Monte Carlo)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    rows = []
    for kind, label in (("proportion", "0/1 (McNemar)"), ("mean", "continuous (sign-flip)")):
        for n in (8, 20, 76, 300):
            v = stats.simulate_verdicts(simulate(rng, kind=kind, n=n, effect=0.0, runs=args.runs), kind=kind,
                                        samples=args.samples)
            wrong = np.isin(v, ["RAG", "fine-tuning", "both"]).mean()
            v0 = stats.simulate_verdicts(simulate(rng, kind=kind, n=n, effect=0.0, runs=args.runs), kind=kind,
                                         samples=args.samples, min_effect=0.0)
            rows.append((label, n, "none", wrong, (v == "no practical difference").mean(), (v == "inconclusive").mean(),
                         np.isin(v0, ["RAG", "fine-tuning", "both"]).mean()))
        for n in (76, 300):
            for effect in (0.05, 0.10, 0.20):
                values = simulate(rng, kind=kind, n=n, effect=effect, runs=args.runs)
                v = stats.simulate_verdicts(values, kind=kind, samples=args.samples)
                v0 = stats.simulate_verdicts(values, kind=kind, samples=args.samples, min_effect=0.0)
                rows.append((label, n, f"{100 * effect:.0f} points", (v == "RAG").mean(),
                             (v == "no practical difference").mean(), (v == "inconclusive").mean(), (v0 == "RAG").mean()))
    print(f"{args.runs} simulated runs per row; min_effect 5 points, alpha 0.05 per family "
          f"({time.perf_counter() - t0:.0f} s)\n")
    print("| metric | n | true effect | wrong verdict (no effect) or power (\"RAG\") | no practical difference "
          "| inconclusive | the same with min_effect 0 |")
    print("|---|---|---|---|---|---|---|")
    for label, n, effect, rate, equiv, inconc, rate0 in rows:
        print(f"| {label} | {n} | {effect} | {100 * rate:.1f}% | {100 * equiv:.1f}% | {100 * inconc:.1f}% "
              f"| {100 * rate0:.1f}% |")


if __name__ == "__main__":
    main()
