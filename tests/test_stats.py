"""Intervals and paired tests: known values, exact coverage (no Monte Carlo error where it
can be summed), order invariance, Monte Carlo error, and simulated levels asserted
against binomial bounds: an observed rate above `upper(alpha, runs)` would happen with
probability under 0.1% if the true rate were alpha. The verdict rule built on them is
tested in tests/test_rule.py."""

import numpy as np
import pytest
from scipy.stats import binom

from harness.evaluate import stats

PIPES = ("base", "finetuned", "rag", "rag_finetuned")
RUNS = 1000


def upper(rate: float, runs: int = RUNS) -> float:
    """The 99.9th percentile of an observed share when the true share is `rate`."""
    return binom.ppf(0.999, runs, rate) / runs


def test_wilson_known_values():
    # Reference values from the closed form (Wilson 1927), as in statsmodels' proportion_confint.
    lo, hi = stats.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = stats.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = stats.wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-3) and hi == pytest.approx(0.3662, abs=1e-3)


def test_benjamini_hochberg_matches_hand_computation():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted: 0.01*4/1=0.04, 0.03*4/2=0.06, 0.04*4/3=0.0533, 0.2 -> monotone: .04, .0533, .0533, .2
    assert stats.benjamini_hochberg(p) == pytest.approx([0.04, 0.05333, 0.05333, 0.2], abs=1e-4)
    assert stats.benjamini_hochberg([]) == []


def test_mcnemar_exact_counts_discordant_pairs():
    a = [1, 1, 1, 0, 0, 0, 1, 1]
    b = [1, 0, 0, 0, 1, 0, 1, 1]
    r = stats.mcnemar_exact(a, b)
    assert (r["only_a"], r["only_b"]) == (2, 1)
    assert r["p"] == pytest.approx(1.0)
    r = stats.mcnemar_exact([0] * 12, [1] * 12)
    assert r["p"] == pytest.approx(2 * 0.5**12)


def test_paired_difference_is_exact_mean_and_interval_contains_it():
    a = [0, 1, 0, 1, 0, 0, 1, 0]
    b = [1, 1, 1, 1, 0, 1, 1, 0]
    r = stats.paired_difference(a, b, samples=500)
    assert r["diff"] == pytest.approx(3 / 8)
    assert r["ci95"][0] <= r["diff"] <= r["ci95"][1]
    with pytest.raises(ValueError):
        stats.paired_difference([1], [1, 0])


def test_wilson_covers_true_value_about_95_percent():
    rng = np.random.default_rng(1)
    p, n, runs = 0.3, 200, 2000
    hits = sum(lo <= p <= hi for lo, hi in (stats.wilson(k, n) for k in rng.binomial(n, p, size=runs)))
    assert 0.93 <= hits / runs <= 0.97


def test_bootstrap_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(2)
    runs, hits = 300, 0
    for i in range(runs):
        x = rng.uniform(0, 1, size=100)
        lo, hi = stats.bootstrap_ci(x, samples=500, seed=i)
        hits += lo <= 0.5 <= hi
    assert 0.90 <= hits / runs <= 0.99


def test_secondary_comparisons_are_unadjusted_and_labelled():
    rng = np.random.default_rng(3)
    ids = [f"q{i}" for i in range(300)]
    base = rng.binomial(1, 0.3, size=300)
    better = np.where(rng.uniform(size=300) < 0.4, 1, base)  # strictly more right answers
    per = {
        p: {"contains": dict(zip(ids, map(float, v)))}
        for p, v in (("base", base), ("rag", better), ("finetuned", base))
    }
    rows = {(r["a"], r["b"]): r for r in stats.compare_all(per, {"contains": "proportion"})}
    assert rows[("base", "rag")]["significant"] and rows[("base", "rag")]["ci95"][0] > 0.1
    assert rows[("base", "finetuned")]["p"] == 1.0 and not rows[("base", "finetuned")]["significant"]
    assert all(r["adjusted"] is False and "p_adj" not in r for r in rows.values())


@pytest.mark.parametrize("n", [8, 20, 76, 300])
def test_sign_flip_test_holds_its_level_and_agrees_with_its_interval(n):
    """Finding 2: the old bootstrap p rejected a true null in 11% of runs at n=8; the
    sign-flip test rejects in at most alpha, and 0 is outside its interval exactly when
    it rejects."""
    rng = np.random.default_rng(100 + n)
    d = rng.beta(0.5, 2.0, size=(RUNS, n)) - rng.beta(0.5, 2.0, size=(RUNS, n))
    r = stats.sign_flip(d, confidence=0.95, samples=1000)
    rejected = r["p"] <= 0.05
    assert rejected.mean() <= upper(0.05)
    assert np.mean(rejected == ((r["lo"] > 0) | (r["hi"] < 0))) >= 0.998
    assert np.all(r["p"] > 0) and np.all((r["lo"] <= r["diff"]) & (r["diff"] <= r["hi"]))


def test_sign_flip_never_returns_zero_and_one_item_decides_nothing():
    """Finding 2: equal non-zero differences gave p = 0 under the bootstrap."""
    assert stats.sign_flip([0.2] * 8)["p"] == pytest.approx(2 / 2**8)
    assert 1 / 501 <= stats.sign_flip([0.2] * 40, samples=500)["p"] <= 3 / 501
    assert stats.sign_flip([0.0] * 7 + [1.0])["p"] == 1.0  # one item: every sign pattern is as far
    assert stats.paired_test([0.0] * 8, [0.2] * 8, kind="mean")["p"] > 0


def test_mcnemar_counts_p_is_the_exact_test_and_the_interval_is_newcombes():
    rng = np.random.default_rng(7)
    only_a, only_b = rng.integers(0, 30, size=2000), rng.integers(0, 30, size=2000)
    r = stats.mcnemar_counts(only_a, only_b, 120, both=20, confidence=0.99)
    assert np.all(
        r["p_up"] == binom.sf(only_b - 1, only_a + only_b, 0.5)[...] * (only_a + only_b > 0) + (only_a + only_b == 0)
    )
    ref = np.array(
        [stats.mcnemar_exact([1] * a + [0] * b, [0] * a + [1] * b)["p"] for a, b in zip(only_a[:200], only_b[:200])]
    )
    assert r["p"][:200] == pytest.approx(ref)
    # Newcombe's hybrid score interval (method 10) on the Cavo et al. (2012) table
    # [[59, 6], [16, 80]], as printed by Fagerland, Lydersen and Laake's contingencytables:
    # estimate -0.0621, 95% CI -0.1186 to -0.0046
    cavo = stats.mcnemar_counts(16, 6, 161, both=59, confidence=0.95)
    assert [float(cavo[k]) for k in ("diff", "lo", "hi")] == pytest.approx([-0.0621, -0.1186, -0.0046], abs=5e-5)
    # ... where the exact test does not reject (p 0.052): interval and test can disagree,
    # which is why a verdict asks for both
    assert cavo["p"] > 0.05
    none = stats.mcnemar_counts(0, 0, 8, both=8, confidence=0.99)  # nothing discordant in 8 items: not "equal"
    assert none["lo"] < -0.3 and none["hi"] > 0.3


def _exact_coverage(n: int, cells: tuple[float, float, float, float], confidence: float) -> tuple[float, float]:
    """Exact one-sided coverages (P(lo <= true), P(hi >= true)) of `mcnemar_counts`'
    interval when items fall in (both right, only a, only b, both wrong) with
    probabilities `cells`: a sum over every table of n items."""
    from scipy.stats import multinomial

    grid = np.array([(a, c, b) for a in range(n + 1) for c in range(n + 1 - a) for b in range(n + 1 - a - c)])
    prob = multinomial.pmf(np.c_[grid, n - grid.sum(axis=1)], n, cells)
    r = stats.mcnemar_counts(grid[:, 1], grid[:, 2], n, both=grid[:, 0], confidence=confidence)
    true = cells[2] - cells[1]
    return float(prob[r["lo"] <= true + 1e-12].sum()), float(prob[r["hi"] >= true - 1e-12].sum())


@pytest.mark.parametrize("n", [8, 20, 76])
def test_newcombe_interval_covers_at_its_level(n):
    """Exact coverage (no Monte Carlo error) of each one-sided bound at the winner
    branch's level (two-sided 92%, one-sided 96%) over a grid of discordance and effect:
    on average at least nominal, and never far below it (Newcombe's interval is
    approximate at small n)."""
    level = 0.92
    one_sided = (1 + level) / 2
    low = []
    for disc in (0.1, 0.3, 0.6):
        for effect in (0.0, 0.05, 0.1, 0.2):
            if effect >= disc:  # one discordant direction never happens: the rare-cell test below
                continue
            only_b, only_a = (disc + effect) / 2, (disc - effect) / 2
            both = (1 - disc) / 2
            cov_lo, cov_hi = _exact_coverage(n, (both, only_a, only_b, 1 - disc - both), level)
            low += [cov_lo, cov_hi]
    assert np.mean(low) >= one_sided - 0.003 and min(low) >= one_sided - 0.025, (np.mean(low), min(low))


@pytest.mark.parametrize("n", [20, 40, 76])
def test_a_bound_keeps_its_level_when_a_discordant_cell_is_empty_or_rare(n):
    """D3: where one pipeline is almost never right alone (a base that knows nothing),
    Newcombe's upper bound missed the true difference in 12.6% of runs where 4-5% is
    meant (exact sums: n = 40, 40% both right, 5 points only b, nothing only a). With
    the exact Clopper-Pearson floor at RARE_CELL items or fewer, each one-sided bound
    misses at most a hair over its level at every such point."""
    level = 0.92
    worst = 0.0
    for p_only_b in (0.02, 0.05, 0.1, 0.2):
        for p_only_a in (0.0, 1 / (2 * n), 1 / n, 2 / n):
            for both in (0.0, 0.4):
                rest = 1 - both - p_only_a - p_only_b
                cov_lo, cov_hi = _exact_coverage(n, (both, p_only_a, p_only_b, rest), level)
                worst = max(worst, 1 - cov_lo, 1 - cov_hi)
    assert worst <= (1 - level) / 2 + 0.012, worst


def test_the_rare_cell_floor_is_what_restores_the_level(monkeypatch):
    """The same point without the floor (RARE_CELL = -1) misses three times as often."""
    monkeypatch.setattr(stats, "RARE_CELL", -1)
    _, cov_hi = _exact_coverage(40, (0.4, 0.0, 0.05, 0.55), 0.92)
    assert 1 - cov_hi > 0.10


def test_holm_matches_hand_computation():
    # sorted 0.01*4, 0.03*3, 0.04*2 (-> 0.09, monotone), 0.2*1
    assert stats.holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert stats.holm([[0.5, 0.001]]).tolist() == [[0.5, 0.002]]


def test_sign_flip_is_a_function_of_the_multiset_of_differences():
    """D1: the Monte Carlo sign patterns were applied by position, so shuffling the same
    differences moved p and the bounds (and flipped 7% of verdicts at n = 76). They are
    applied to the sorted differences now: any order gives the same numbers, bit for bit."""
    rng = np.random.default_rng(31)
    d = rng.normal(0.05, 0.3, size=76)
    ref = stats.sign_flip(d, confidence=0.92, samples=2000)
    for _ in range(20):
        r = stats.sign_flip(rng.permutation(d), confidence=0.92, samples=2000)
        assert all(float(r[k]) == float(ref[k]) for k in ("p", "lo", "hi", "p_up"))


def test_sign_flip_reports_its_monte_carlo_error():
    """The standard error of a Monte Carlo p is sqrt(p(1-p)/m), and a bound's error
    shrinks as patterns are added; both are 0 on the exact path."""
    rng = np.random.default_rng(32)
    d = rng.normal(0.05, 0.3, size=60)
    small, big = (stats.sign_flip(d, confidence=0.92, samples=m) for m in (1000, 16000))
    assert float(small["p_se"]) == pytest.approx(np.sqrt(small["p"] * (1 - small["p"]) / 1000))
    assert float(big["lo_se"]) < float(small["lo_se"]) and float(big["p_se"]) < float(small["p_se"])
    exact = stats.sign_flip(d[:10], confidence=0.92)
    assert float(exact["p_se"]) == 0 and float(exact["lo_se"]) == 0


def test_sign_flip_one_sided_p_values_are_its_tails():
    """p_up is the share of sign patterns whose mean is at least the observed one (exact
    here): for 8 equal positive differences only the all-plus pattern reaches it."""
    r = stats.sign_flip([0.2] * 8)
    assert float(r["p_up"]) == pytest.approx(1 / 256) and float(r["p_down"]) == 1.0
    assert float(r["p"]) == pytest.approx(2 / 256)


def test_a_nan_item_is_not_a_score():
    """D5: a NaN difference gave p = 0 on the exact path and "significant" in the
    secondary table. sign_flip refuses it; paired_test leaves the item out and counts it."""
    with pytest.raises(ValueError, match="NaN"):
        stats.sign_flip([0.1, float("nan"), 0.2, 0.3])
    r = stats.paired_test([0.1, 0.2, float("nan"), 0.4], [0.3, 0.1, 0.9, 0.5], kind="mean")
    assert r["n"] == 3 and r["dropped"] == 1 and r["p"] > 0.2
    per = {p: {"token_f1": {"q0": 0.1, "q1": 0.2, "q2": float("nan"), "q3": 0.4}} for p in ("base", "rag")}
    rows = stats.compare_all(per, {"token_f1": "mean"})
    assert rows[0]["n"] == 3 and not rows[0]["significant"]


def test_the_forgetting_interval_is_the_one_of_its_test():
    """D6: the forgetting table printed a percentile-bootstrap interval beside the exact
    McNemar p ([+2, +16] next to p = 0.125). The change from base now carries Newcombe's
    interval of the same paired test: with 4 items right only after training and none
    right only before, p = 0.125 and the 95% interval reaches below 0."""
    items = {f"i{k}": {"acc": 0.0} for k in range(50)}
    after = {k: {"acc": 1.0 if j < 4 else 0.0} for j, k in enumerate(items)}
    scores = {"base": {"mmlu/x": {"items": items}}, "finetuned": {"mmlu/x": {"items": after}}}
    change = stats.benchmark_summary(scores)["change_from_base"]["mmlu/x"]["finetuned"]["acc"]
    assert change["p"] == pytest.approx(0.125) and change["ci95"][0] < 0 < change["ci95"][1]
    assert change["ci_method"] == "newcombe" and change["diff"] == pytest.approx(0.08)


def test_dev_test_split_is_seeded_and_sized():
    ids = [f"q{i}" for i in range(101)]
    a = stats.dev_test_split(ids, dev_fraction=0.5, seed=1)
    assert a == stats.dev_test_split(list(reversed(ids)), dev_fraction=0.5, seed=1)
    assert sum(v == "dev" for v in a.values()) == 50 and a != stats.dev_test_split(ids, dev_fraction=0.5, seed=2)
