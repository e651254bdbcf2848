"""The verdict rule (verdicts.py): one deterministic fixture per outcome, fixtures that
flip when the level, the split of alpha, the margin, the p gate or a step's requirement
is changed, order and name invariance, simulated error rates against binomial bounds,
and the sample-size plan."""

import numpy as np
import pytest
from scipy.stats import binom, norm

from harness.evaluate import power, verdicts

PIPES = verdicts.PIPES
RUNS = 1000


def upper(rate: float, runs: int = RUNS) -> float:
    """The 99.9th percentile of an observed share when the true share is `rate`."""
    return binom.ppf(0.999, runs, rate) / runs


def table(rows: list[tuple[tuple[int, int, int, int], int]]) -> dict[str, dict[str, float]]:
    """0/1 scores from item patterns: ((base, finetuned, rag, rag_finetuned), count)."""
    arrays = {p: [] for p in PIPES}
    for pattern, count in rows:
        for p, v in zip(PIPES, pattern):
            arrays[p] += [float(v)] * count
    return {p: {f"q{i:04d}": v for i, v in enumerate(a)} for p, a in arrays.items()}


def decide(values, **kw) -> dict:
    return verdicts.decide(
        values, metric="m", kind=kw.pop("kind", "proportion"), direction=kw.pop("direction", "higher"), **kw
    )


# One fixture per outcome. n = 76 as in the demo unless the outcome needs more.
RAG = [((0, 0, 1, 1), 40), ((0, 0, 0, 0), 36)]
FINE_TUNING = [((0, 1, 0, 1), 40), ((0, 0, 0, 0), 36)]
BOTH = [((0, 0, 1, 1), 30), ((0, 0, 0, 1), 20), ((0, 0, 0, 0), 26)]
# arms within a point of each other on 2,000 items, rag_finetuned 18.5 points above both
BOTH_TIED = [((0, 1, 1, 1), 600), ((0, 1, 0, 0), 30), ((0, 0, 1, 0), 30), ((0, 0, 0, 1), 400), ((0, 0, 0, 0), 940)]
NO_DIFFERENCE = [((0, 1, 1, 1), 600), ((0, 1, 0, 0), 30), ((0, 0, 1, 1), 30), ((0, 0, 0, 0), 1340)]
NOT_ABOVE_BASE = [((1, 0, 1, 1), 40), ((0, 0, 0, 0), 36)]  # rag far above finetuned, but no better than base
# as BOTH_TIED, but base right wherever both arms are: no arm is min_effect above base
TIED_NOT_ABOVE_BASE = [
    ((1, 1, 1, 1), 600),
    ((0, 1, 0, 0), 30),
    ((0, 0, 1, 0), 30),
    ((0, 0, 0, 1), 400),
    ((0, 0, 0, 0), 940),
]


def test_rag():
    v = decide(table(RAG))
    assert v["verdict"] == "RAG" and v["comparison"] == "rag vs finetuned"
    assert v["ci"][0] >= 0.05 and v["effect"] == pytest.approx(40 / 76)
    steps = {(c["x"], c["y"]): (c["step"], c["showed"]) for c in v["family"]}
    assert steps[("rag", "finetuned")] == ("1", "rag better") and steps[("rag", "base")] == ("2", "better")
    assert steps[("rag_finetuned", "rag")] == ("3", "not shown better") and steps[("finetuned", "base")] == (None, None)


def test_fine_tuning():
    v = decide(table(FINE_TUNING))
    assert v["verdict"] == "fine-tuning" and v["comparison"] == "finetuned vs rag" and v["ci"][0] >= 0.05


def test_both_through_the_winner():
    v = decide(table(BOTH))
    assert v["verdict"] == "both" and v["comparison"] == "rag_finetuned vs rag" and v["ci"][0] >= 0.05


def test_both_with_tied_arms():
    """D2's case with a decision: the arms are tied, rag_finetuned is far above both:
    the tie branch says "both" (where the old rule fell back to arm-vs-arm equivalence)."""
    v = decide(table(BOTH_TIED))
    assert v["verdict"] == "both" and v["comparison"].startswith("rag_finetuned vs ")
    steps = {(c["x"], c["y"]): (c["step"], c["branch"]) for c in v["family"]}
    assert steps[("rag", "finetuned")] == ("1'", "tie") and steps[("rag", "base")] == ("3'", "tie")


def test_no_practical_difference():
    v = decide(table(NO_DIFFERENCE))
    assert v["verdict"] == "no practical difference" and v["comparison"] == "rag vs finetuned"
    assert -0.05 < v["ci"][0] and v["ci"][1] < 0.05 and v["confidence"] == pytest.approx(0.98)


def test_inconclusive_carries_the_plan_that_would_settle_it():
    rng = np.random.default_rng(3)
    values = {
        p: {f"q{i}": float(x) for i, x in enumerate(rng.uniform(size=30) < r)}
        for p, r in zip(PIPES, (0.3, 0.4, 0.5, 0.5))
    }
    v = decide(values)
    assert v["verdict"] == "inconclusive" and v["plan"]["items_if_none"] > 30
    assert v["plan"]["power"] == 0.8


def test_uninformative():
    arrays = {p: [1.0] * k + [0.0] * (100 - k) for p, k in zip(PIPES, (0, 1, 2, 2))}
    v = decide({p: {f"q{i}": x for i, x in enumerate(a)} for p, a in arrays.items()})
    assert v["verdict"] == "uninformative" and v["uninformative"] == "floor"


def test_continuous_scores_reach_rag_and_fine_tuning():
    rng = np.random.default_rng(4)
    base = rng.uniform(0, 0.3, size=76)
    for up, name in (("rag", "RAG"), ("finetuned", "fine-tuning")):
        arrays = {p: base + (0.4 if p in (up, "rag_finetuned") else 0.0) for p in PIPES}
        v = decide({p: {f"q{i}": float(x) for i, x in enumerate(a)} for p, a in arrays.items()}, kind="mean")
        assert v["verdict"] == name and v["test"].startswith("sign_flip")


# Fixtures at the edge of each requirement: each fails when that requirement moves.


def _edge(b: int) -> dict:
    """rag right alone on b of 76 items (finetuned and base never right alone; 10 both arms)."""
    return table([((0, 0, 1, 1), b), ((0, 1, 1, 1), 10), ((0, 0, 0, 0), 66 - b)])


def test_the_winner_level_is_one_sided_96_percent(monkeypatch):
    """b = 10: the bound clears 5 points at the winner branch's level (alpha 0.04) and not
    at 0.02; b = 9: it does not, and would at 0.05. A rule at any other level (Holm's 98%
    intervals, or the whole alpha without the tie branch's share) flips one of them."""
    assert decide(_edge(10))["verdict"] == "RAG" and decide(_edge(9))["verdict"] == "inconclusive"
    monkeypatch.setattr(verdicts, "TIE_SHARE", 0.0)
    assert decide(_edge(9))["verdict"] == "RAG"
    monkeypatch.setattr(verdicts, "TIE_SHARE", 0.6)
    assert decide(_edge(10))["verdict"] == "inconclusive"


def test_the_tie_branch_spends_only_its_share(monkeypatch):
    """The arms' interval on 600 items lies inside +-5 points at 90% but not at 98%: not
    "no practical difference" with the tie branch at alpha / 5 (it would be with the whole
    alpha); on 2,000 items it lies inside at 98%."""
    near = [((0, 1, 1, 1), 300), ((0, 1, 0, 0), 20), ((0, 0, 1, 1), 35), ((0, 0, 0, 0), 245)]
    assert decide(table(near))["verdict"] == "inconclusive"
    assert decide(table(NO_DIFFERENCE))["verdict"] == "no practical difference"
    monkeypatch.setattr(verdicts, "TIE_SHARE", 1.0)
    assert decide(table(near))["verdict"] == "no practical difference"


def test_the_bound_not_the_estimate_must_clear_min_effect():
    """Finding 3: a win on an estimate whose interval reaches below min_effect. Here rag
    is right alone on 9 of 76 items, finetuned never: +11.8 points, the exact p 0.004,
    the bound at 4.9 points: inconclusive; at a margin of 0 it is a win."""
    values = table([((0, 0, 1, 1), 9), ((0, 1, 1, 1), 20), ((0, 0, 0, 0), 47)])
    v = decide(values)
    assert v["effect"] == pytest.approx(9 / 76) and v["p"] < 0.01 and 0.045 < v["ci"][0] < 0.05
    assert v["verdict"] == "inconclusive"
    assert decide(values, min_effect=0.0)["verdict"] == "RAG"


def test_the_exact_p_gates_a_win_that_newcombes_bound_alone_would_give():
    """8 items, rag right alone on 7 and finetuned on 1: Newcombe's lower bound is +13.7
    points, but the exact two-sided McNemar p is 0.070: no winner."""
    v = decide(table([((0, 0, 1, 1), 7), ((0, 1, 0, 0), 1)]))
    row = v["family"][0]
    assert row["ci"][0] > 0.05 and row["p"] == pytest.approx(0.0703125) and v["verdict"] == "inconclusive"


def test_a_winner_must_beat_base():
    v = decide(table(NOT_ABOVE_BASE))
    assert v["verdict"] == "inconclusive" and v["comparison"] == "rag vs base"
    assert "not shown better than base" in v["note"] and v["beats_base"] == []


def test_both_with_tied_arms_needs_an_arm_above_base():
    v = decide(table(TIED_NOT_ABOVE_BASE))
    assert v["verdict"] == "inconclusive" and "no arm is shown better than base" in v["note"]


def test_both_through_the_winner_needs_rag_finetuned_above_the_winner():
    v = decide(table(RAG))  # rag_finetuned equals rag
    assert v["verdict"] == "RAG"


def test_lower_is_better_reads_the_interval_the_other_way():
    flipped = {p: {i: 1 - x for i, x in per.items()} for p, per in table(RAG).items()}
    v = decide(flipped, direction="lower")
    assert v["verdict"] == "RAG" and v["effect"] == pytest.approx(40 / 76)


def test_partition_alpha_makes_the_two_sided_winner_test_exact_at_the_edge():
    """alpha_1 solves Phi(-c) + Phi(-c - 2u) = alpha: alpha / 2 at a zero margin, alpha as
    the margin grows against the standard error, in between monotone."""
    u = np.array([0.0, 0.3, 0.63, 1.0, 3.0, np.inf])
    a1 = verdicts.partition_alpha(u, 0.04)
    c = norm.isf(a1[:-1])
    assert np.allclose(norm.sf(c) + norm.sf(c + 2 * u[:-1]), 0.04, atol=1e-9)
    assert a1[0] == pytest.approx(0.02) and a1[-1] == pytest.approx(0.04) and np.all(np.diff(a1) >= 0)


# Invariance: a verdict is a function of the scores, not of the items' order or names.


@pytest.mark.parametrize("kind", ["proportion", "mean"])
def test_shuffling_or_renaming_items_changes_no_verdict(kind):
    """D1: with the sign patterns applied by position and ids sorted as strings, the same
    scores gave another verdict in 7% of shuffles at n = 76. Over 12 runs, each shuffled
    and renamed three times, every number of the verdict is identical."""
    rng = np.random.default_rng(8)
    for run in range(12):
        n = int(rng.choice([20, 76]))
        lift = rng.uniform(0, 0.25, size=4)
        arrays = {p: np.clip(rng.uniform(size=n) * 0.7 + up, 0, 1) for p, up in zip(PIPES, lift)}
        if kind == "proportion":
            arrays = {p: (a > 0.5).astype(float) for p, a in arrays.items()}
        ref = decide(
            {p: {f"q{i}": float(x) for i, x in enumerate(a)} for p, a in arrays.items()}, kind=kind, samples=1000
        )
        for k in range(3):
            order, names = rng.permutation(n), rng.permutation(10**6)[:n]
            values = {p: {f"item-{names[j]}": float(a[order[j]]) for j in range(n)} for p, a in arrays.items()}
            v = decide(values, kind=kind, samples=1000)
            assert v == ref, (run, k)


# Simulated error rates: the real rule on many runs at once.


def _proportions(rng, n, rates, runs=RUNS, shared=0.5):
    u = rng.uniform(size=(runs, n))
    return {
        p: (np.where(rng.uniform(size=(runs, n)) < shared, u, rng.uniform(size=(runs, n))) < r).astype(float)
        for p, r in rates.items()
    }


@pytest.mark.parametrize("n", [8, 20, 76, 300])
def test_no_effect_gives_a_wrong_verdict_at_most_alpha(n):
    v = verdicts.simulate_verdicts(
        _proportions(np.random.default_rng(n), n, dict.fromkeys(PIPES, 0.4)), kind="proportion", min_effect=0.0
    )
    assert np.isin(v, ["RAG", "fine-tuning", "both"]).mean() <= upper(0.05)


@pytest.mark.parametrize("n", [20, 76])
def test_continuous_no_effect_with_skewed_shapes_gives_a_wrong_verdict_at_most_alpha(n):
    """Four differently shaped score distributions with one mean (skewed, like token F1)."""
    rng = np.random.default_rng(40 + n)
    runs = 300
    hit = (rng.uniform(size=(runs, n)) < 0.4).astype(float)
    values = {
        "base": hit,
        "finetuned": rng.beta(0.4, 0.6, size=(runs, n)),
        "rag": rng.beta(4.0, 6.0, size=(runs, n)),
        "rag_finetuned": rng.uniform(0, 0.8, size=(runs, n)),
    }
    v = verdicts.simulate_verdicts(values, kind="mean", samples=1000, min_effect=0.0)
    assert np.isin(v, ["RAG", "fine-tuning", "both"]).mean() <= upper(0.05, runs)


def test_a_better_rag_finetuned_is_never_no_practical_difference():
    """D2: arms tied, rag_finetuned 10 points above each: "no practical difference"
    (22.9% at 1,000 items under the old rule) at most alpha; at 3,000 items, where the
    tie branch can show the arms tied, "both" most of the time."""
    rates = {"base": 0.3, "finetuned": 0.4, "rag": 0.4, "rag_finetuned": 0.5}
    v = verdicts.simulate_verdicts(_proportions(np.random.default_rng(50), 1000, rates, runs=400), kind="proportion")
    assert (v == "no practical difference").mean() <= upper(0.05, 400)
    v = verdicts.simulate_verdicts(_proportions(np.random.default_rng(55), 3000, rates, runs=200), kind="proportion")
    assert (v == "no practical difference").mean() <= upper(0.05, 200) and (v == "both").mean() > 0.5


def test_rare_cells_give_no_false_no_practical_difference():
    """D3 at the verdict: base and finetuned know nothing, rag 5 points (exactly the margin)."""
    rng = np.random.default_rng(51)
    values = {
        "base": np.zeros((RUNS, 300)),
        "finetuned": np.zeros((RUNS, 300)),
        **_proportions(rng, 300, {"rag": 0.05, "rag_finetuned": 0.05}),
    }
    v = verdicts.simulate_verdicts(values, kind="proportion")
    assert np.isin(v, ["no practical difference", "fine-tuning", "both"]).mean() <= upper(0.05)


def test_mixed_choice_counts_with_equal_skill_give_a_wrong_verdict_at_most_alpha():
    rng = np.random.default_rng(52)
    k = rng.integers(2, 7, size=(RUNS, 76))
    rate = 1 / k + 0.3 * (1 - 1 / k)
    values = {p: (rng.uniform(size=(RUNS, 76)) < rate).astype(float) for p in PIPES}
    v = verdicts.simulate_verdicts(values, kind="proportion", min_effect=0.0)
    assert np.isin(v, ["RAG", "fine-tuning", "both"]).mean() <= upper(0.05)


def test_the_edge_where_two_verdicts_are_wrong_together_stays_at_alpha():
    """rag exactly 5 points above finetuned and 4.5 above base, rag_finetuned at base,
    1,500 items: "no practical difference" (the arms are not within 5) and "RAG" (rag is
    not 5 above base) are both wrong; each branch has its own share of alpha, so together
    they stay at most alpha (the whole alpha in each branch gave 5.5%)."""
    v = verdicts.simulate_verdicts(
        _proportions(
            np.random.default_rng(53),
            1500,
            {"base": 0.405, "finetuned": 0.40, "rag": 0.45, "rag_finetuned": 0.405},
            runs=600,
        ),
        kind="proportion",
    )
    assert np.isin(v, ["RAG", "fine-tuning", "both", "no practical difference"]).mean() <= upper(0.05, 600)


def test_twenty_points_at_76_items_is_found_at_least_40_percent_of_the_time():
    """D4: the old rule declared a 20-point effect at n = 76 in 23.5% of runs (0/1)."""
    v = verdicts.simulate_verdicts(
        _proportions(np.random.default_rng(54), 76, {"base": 0.4, "finetuned": 0.4, "rag": 0.6, "rag_finetuned": 0.6}),
        kind="proportion",
    )
    assert (v == "RAG").mean() >= 0.40 and not np.isin(v, ["fine-tuning", "no practical difference"]).any()


# The plan: at the planned n the deciding comparison resolves about as often as promised.


@pytest.mark.parametrize("effect", [0.0, 0.2])
def test_the_planned_items_resolve_at_the_promised_rate(effect):
    disc, alpha = 0.4, 0.01 if effect == 0 else 0.04
    n = power.items_for(effect=effect, kind="proportion", discordance=disc, min_effect=0.05, alpha=alpha)
    rng = np.random.default_rng(60)
    counts = rng.multinomial(n, [(disc + effect) / 2, (disc - effect) / 2, (1 - disc) / 2, (1 - disc) / 2], size=2000)
    r = verdicts.stats.mcnemar_counts(counts[:, 1], counts[:, 0], n, both=counts[:, 2], confidence=1 - 2 * alpha)
    ok = ((r["lo"] > -0.05) & (r["hi"] < 0.05)) if effect == 0 else ((r["lo"] >= 0.05) & (r["p"] < alpha))
    assert 0.77 <= ok.mean() <= 0.86, (n, ok.mean())


def test_the_continuous_plan_resolves_at_the_promised_rate():
    n = power.items_for(effect=0.15, kind="mean", sd=0.3, min_effect=0.05, alpha=0.04)
    rng = np.random.default_rng(61)
    r = verdicts.stats.sign_flip(rng.normal(0.15, 0.3, size=(400, n)), confidence=0.92, samples=1000)
    assert 0.75 <= np.mean(r["lo"] >= 0.05) <= 0.87, n


def test_an_effect_at_the_margin_cannot_be_planned():
    assert power.items_for(effect=0.05, kind="proportion", discordance=0.4, min_effect=0.05, alpha=0.04) is None
    rows = power.plan_table(kind="proportion", min_effect=0.05, alpha_win=0.04, alpha_tie=0.01)
    assert [r["effect"] for r in rows] == [0.0, 0.05, 0.10, 0.20] and rows[1]["items"] is None
    assert rows[0]["items"] > rows[2]["items"] > rows[3]["items"] and rows[0]["source"] == "assumed"


def test_a_pilots_discordance_sets_the_plan_of_each_question():
    """`harness plan --pilot`: the plan comes from the pilot's own deciding comparison;
    a pilot whose arms disagree on fewer items needs fewer items."""
    few = decide(table([((0, 0, 1, 1), 12), ((0, 1, 1, 1), 30), ((0, 0, 0, 0), 34)]))
    many = decide(table([((0, 0, 1, 1), 30), ((0, 1, 0, 0), 18), ((0, 1, 1, 1), 10), ((0, 0, 0, 0), 18)]))
    plans = [
        {
            r["effect"]: r["items"]
            for r in power.questions_plan(
                verdicts={"facts (multiple choice)": v}, min_effect=0.05, alpha_win=0.04, alpha_tie=0.01
            )
        }
        for v in (few, many)
    ]
    assert plans[0][0.2] < plans[1][0.2] and plans[0][0.0] < plans[1][0.0]
    assert all(p[0.05] is None for p in plans)


def test_harness_plan_prints_the_items_table_without_a_pilot(tmp_path, capsys):
    from harness.cli import _items_plan_lines
    from harness.config import parse_config

    lines = _items_plan_lines(parse_config({"name": "x"}), pilot=None, power=0.8)
    assert "assuming 50% of items discordant" in lines[0]
    assert any("| facts (multiple choice) | 20 points | a winner | 145 |" in line for line in lines), lines
