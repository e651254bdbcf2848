import numpy as np
import pytest

from harness import stats


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
    assert r["p"] == pytest.approx(2 * 0.5 ** 12)


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


def test_compare_all_adjusts_and_flags_only_real_differences():
    rng = np.random.default_rng(3)
    ids = [f"q{i}" for i in range(300)]
    base = rng.binomial(1, 0.3, size=300)
    better = np.where(rng.uniform(size=300) < 0.4, 1, base)  # strictly more right answers
    same = base.copy()
    per = {p: {"contains": dict(zip(ids, map(float, v)))} for p, v in
           (("base", base), ("rag", better), ("finetuned", same))}
    rows = stats.compare_all(per, {"contains": "proportion"}, samples=300)
    by_pair = {(r["a"], r["b"]): r for r in rows}
    assert by_pair[("base", "rag")]["significant"] and by_pair[("base", "rag")]["diff"] > 0.2
    assert not by_pair[("base", "finetuned")]["significant"] and by_pair[("base", "finetuned")]["diff"] == 0
    assert all(r["p_adj"] >= r["p"] for r in rows)


def test_summarize_picks_interval_by_kind():
    assert stats.summarize([1, 0, 1, 1], kind="proportion")["ci_method"] == "wilson"
    s = stats.summarize([0.5, 0.25], kind="mean", samples=200)
    assert s["ci_method"] == "bootstrap" and s["mean"] == pytest.approx(0.375) and s["n"] == 2


def _simulated_run(rng, n, rates):
    """Paired 0/1 outcomes with exactly the given accuracy per pipeline, correlated
    through a shared item difficulty: each pipeline's latent draw is the item's shared
    draw half of the time and its own otherwise (still uniform), correct when below its rate."""
    shared = rng.uniform(size=n)
    ids = [f"q{i}" for i in range(n)]
    per = {}
    for name, rate in rates.items():
        latent = np.where(rng.uniform(size=n) < 0.5, shared, rng.uniform(size=n))
        per[name] = {"mc_accuracy": dict(zip(ids, (latent < rate).astype(float)))}
    return per


def _verdict_share(seed, runs, rates, verdict):
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(runs):
        comps = stats.compare_all(_simulated_run(rng, 300, rates), {"mc_accuracy": "proportion"}, samples=100)
        hits += stats.decide(comps, metric="mc_accuracy", direction="higher")["verdict"] == verdict
    return hits / runs


def test_decision_rule_says_no_clear_winner_when_nothing_differs():
    rates = {"base": 0.5, "finetuned": 0.5, "rag": 0.5, "rag_finetuned": 0.5}
    assert _verdict_share(10, 150, rates, "no clear winner") >= 0.95


def test_decision_rule_finds_a_planted_ten_point_difference():
    """RAG 10 points above fine-tuning, 300 paired items: found in most runs (the exact
    McNemar test with BH over the run's 6 comparisons finds it in 55 of these 100)."""
    rates = {"base": 0.4, "finetuned": 0.4, "rag": 0.5, "rag_finetuned": 0.5}
    assert _verdict_share(11, 100, rates, "RAG") > 0.5


def test_decision_rule_both_and_lower_is_better():
    rng = np.random.default_rng(12)
    per = _simulated_run(rng, 400, {"base": 0.2, "finetuned": 0.45, "rag": 0.45, "rag_finetuned": 0.8})
    comps = stats.compare_all(per, {"mc_accuracy": "proportion"}, samples=200)
    d = stats.decide(comps, metric="mc_accuracy", direction="higher")
    assert d["verdict"] == "both" and d["effect"] > 0.2 and d["comparison"].startswith("rag_finetuned vs")
    # the same numbers read as a lower-is-better metric favour the pipelines that score least
    d = stats.decide(comps, metric="mc_accuracy", direction="lower")
    assert d["verdict"] == "no clear winner"
    per = _simulated_run(rng, 400, {"base": 0.6, "finetuned": 0.6, "rag": 0.3, "rag_finetuned": 0.45})
    comps = stats.compare_all(per, {"mc_accuracy": "proportion"}, samples=200)
    assert stats.decide(comps, metric="mc_accuracy", direction="lower")["verdict"] == "RAG"
