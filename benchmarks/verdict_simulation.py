"""How often the verdict rule is wrong when nothing it could claim is true, and how
often it finds what is planted: the numbers behind README's "How verdicts are decided".

Runs the real rule (`verdicts.simulate_verdicts`: the fixed sequence, the test that
fits the metric, min_effect 5 points, alpha 0.05) on simulated runs of four pipelines
scoring the same n items. A verdict is wrong when any claim it makes is false for the
configuration that generated the run ("RAG" claims rag at least min_effect above
finetuned and above base; "no practical difference" claims the arms within min_effect
and rag_finetuned not min_effect above both; ...). `truth` below says, per
configuration, which verdicts are wrong.

- 0/1 metric: each pipeline right on an item when a uniform draw, shared with the other
  pipelines half of the time (items have a difficulty), falls below its accuracy.
- continuous metric: scores in [0, 1] from an item effect plus noise (SD 0.25 around
  each pipeline's mean), like token F1; "skewed" runs give each pipeline a differently
  shaped distribution with the same mean (bimodal 0/1-like, beta, uniform).
- mixed choice counts: 2 to 6 choices per item, the chance of a right pick 1 / choices
  plus the same skill for every pipeline.

    python benchmarks/verdict_simulation.py [--runs 2000] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness.evaluate import verdicts

PIPES = verdicts.PIPES
WINNERS = ("RAG", "fine-tuning", "both")


def proportions(rng, *, n: int, runs: int, rates: dict[str, float], shared: float = 0.5) -> dict[str, np.ndarray]:
    u = rng.uniform(size=(runs, n))
    return {
        p: (np.where(rng.uniform(size=(runs, n)) < shared, u, rng.uniform(size=(runs, n))) < r).astype(float)
        for p, r in rates.items()
    }


def continuous(rng, *, n: int, runs: int, means: dict[str, float]) -> dict[str, np.ndarray]:
    item = rng.normal(0, 0.2, size=(runs, n))
    return {p: np.clip(r + item + rng.normal(0, 0.25, size=(runs, n)), 0, 1) for p, r in means.items()}


def skewed(rng, *, n: int, runs: int) -> dict[str, np.ndarray]:
    """Four shapes with mean 0.4: nearly 0/1 (token F1 of a right or wrong name), two
    betas skewed opposite ways, and a uniform on [0, 0.8]."""
    hit = (rng.uniform(size=(runs, n)) < 0.4).astype(float)
    return {
        "base": np.clip(hit + rng.normal(0, 0.03, size=(runs, n)), 0, 1),
        "finetuned": rng.beta(0.4, 0.6, size=(runs, n)),
        "rag": rng.beta(4.0, 6.0, size=(runs, n)),
        "rag_finetuned": rng.uniform(0, 0.8, size=(runs, n)),
    }


def mixed_choices(rng, *, n: int, runs: int) -> dict[str, np.ndarray]:
    k = rng.integers(2, 7, size=(runs, n))
    rate = 1 / k + 0.3 * (1 - 1 / k)
    return {p: (rng.uniform(size=(runs, n)) < rate).astype(float) for p in PIPES}


def one(v: np.ndarray, verdict: str) -> float:
    return float((v == verdict).mean())


def rows_for(args, rng) -> list[tuple]:
    runs, out = args.runs, []

    def add(kind, label, n, config, wrong, values, *, min_effect=0.05, show=None):
        v = verdicts.simulate_verdicts(values, kind=kind, samples=args.samples, min_effect=min_effect)
        rate = float(np.isin(v, wrong).mean()) if wrong else None
        out.append((label, n, config, rate, {s: one(v, s) for s in (show or ())}, runs))

    ns = (20, 76) if args.quick else (8, 20, 76, 300)
    for kind, label in (("proportion", "0/1"), ("mean", "continuous")):
        make = (
            (lambda n, r: proportions(rng, n=n, runs=runs, rates=r))
            if kind == "proportion"
            else (lambda n, r: continuous(rng, n=n, runs=runs, means=r))
        )
        for n in ns:
            add(kind, label, n, "all equal", WINNERS, make(n, dict.fromkeys(PIPES, 0.4)))
            add(kind, label, n, "all equal, min_effect 0", WINNERS, make(n, dict.fromkeys(PIPES, 0.4)), min_effect=0)
        for n in (20, 300):
            r = {"base": 0.1, "finetuned": 0.4, "rag": 0.4, "rag_finetuned": 0.4}
            add(kind, label, n, "arms equal, both far above base, min_effect 0", WINNERS, make(n, r), min_effect=0)
        big = 400 if args.quick else 1000
        r = {"base": 0.3, "finetuned": 0.4, "rag": 0.4, "rag_finetuned": 0.5}
        add(
            kind,
            label,
            big,
            "arms equal, rag_finetuned 10 points above both",
            ("RAG", "fine-tuning", "no practical difference"),
            make(big, r),
            show=("both", "no practical difference"),
        )
        add(
            kind,
            label,
            big,
            "all equal (power for no practical difference)",
            WINNERS,
            make(big, dict.fromkeys(PIPES, 0.4)),
            show=("no practical difference",),
        )
        for n in ns[-2:]:
            for effect in (0.05, 0.10, 0.20):
                r = {"base": 0.4, "finetuned": 0.4, "rag": 0.4 + effect, "rag_finetuned": 0.4 + effect}
                wrong = ("fine-tuning", "both", "no practical difference") if effect >= 0.05 else WINNERS
                add(
                    kind,
                    label,
                    n,
                    f"RAG {100 * effect:.0f} points above the rest (power)",
                    wrong,
                    make(n, r),
                    show=("RAG",),
                )
    for n in (76, 300) if not args.quick else (76,):
        zero = {"base": 0.0, "finetuned": 0.0}
        add(
            "proportion",
            "0/1",
            n,
            "rare cells: base and finetuned never right, rag 5 points",
            ("fine-tuning", "both", "no practical difference"),
            {
                **{p: np.zeros((runs, n)) for p in zero},
                **proportions(rng, n=n, runs=runs, rates={"rag": 0.05, "rag_finetuned": 0.05}),
            },
        )
        add(
            "proportion",
            "0/1",
            n,
            "rare cells: base and finetuned never right, rag 3 points",
            WINNERS,
            {
                **{p: np.zeros((runs, n)) for p in zero},
                **proportions(rng, n=n, runs=runs, rates={"rag": 0.03, "rag_finetuned": 0.03}),
            },
        )
        add("mean", "continuous", n, "skewed: four shapes, one mean", WINNERS, skewed(rng, n=n, runs=runs))
        add(
            "proportion",
            "0/1",
            n,
            "mixed choice counts (2-6), equal skill",
            WINNERS,
            mixed_choices(rng, n=n, runs=runs),
        )
    n = 500 if args.quick else 1500
    add(
        "proportion",
        "0/1",
        n,
        "edge: rag exactly 5 points above finetuned, 4.5 above base",
        ("RAG", "fine-tuning", "both", "no practical difference"),
        proportions(rng, n=n, runs=runs, rates={"base": 0.405, "finetuned": 0.40, "rag": 0.45, "rag_finetuned": 0.405}),
        show=("RAG", "no practical difference"),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=2000, help="sign-flip patterns to start from (Monte Carlo)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes (for CI)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = rows_for(args, np.random.default_rng(0))
    print(
        f"{args.runs} simulated runs per row; min_effect 5 points unless stated, alpha 0.05 "
        f"(winner branch {100 * (1 - verdicts.TIE_SHARE) * 0.05:.0f}%, tie branch "
        f"{100 * verdicts.TIE_SHARE * 0.05:.0f}%); {time.perf_counter() - t0:.0f} s\n"
    )
    print("| metric | n | configuration | wrong verdict | verdicts of interest |")
    print("|---|---|---|---|---|")
    for label, n, config, rate, shown, _ in rows:
        interest = ", ".join(f"{k} {100 * v:.1f}%" for k, v in shown.items())
        print(f"| {label} | {n} | {config} | {'' if rate is None else f'{100 * rate:.1f}%'} | {interest} |")


if __name__ == "__main__":
    main()
