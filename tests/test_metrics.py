"""The scoring functions (harness/evaluate/metrics.py) against golden cases kept as data, and the
rules behind them: normalisation, multiple-choice ties, acc_norm, chance rates."""

import json
from pathlib import Path

import pytest

from harness.evaluate import metrics

GOLDEN = json.loads((Path(__file__).parent / "data" / "metrics_golden.json").read_text())
# published values from sacrebleu's and rouge-score's own tests, and hand computations:
# never numbers produced by the library calls under test
REFERENCE = json.loads((Path(__file__).parent / "data" / "text_similarity_reference.json").read_text())


@pytest.mark.parametrize("case", GOLDEN, ids=[c["output"] or "<empty>" for c in GOLDEN])
def test_golden_cases(case):
    out, answers = case["output"], case["answers"]
    assert metrics.exact_match(out, answers) == case["exact_match"]
    assert metrics.token_f1(out, answers) == pytest.approx(case["token_f1"])
    assert metrics.contains(out, answers) == case["contains"]
    assert metrics.abstained(out) == case["abstained"]
    assert metrics.hallucinated(out, answers, answerable=True) == case["hallucinated"]


def test_unanswerable_hallucination_is_any_assertion():
    assert metrics.hallucinated("It was founded in 1847.", [], answerable=False) == 1.0
    assert metrics.hallucinated("I don't know", [], answerable=False) == 0.0
    assert metrics.hallucinated("I do not know who that is.", [], answerable=False) == 0.0


def test_normalize_is_squad_style():
    assert metrics.normalize("  The  Bell-Founder's, an 'Art'! ") == "bellfounders art"


def test_mc_correct_ties_go_to_first_choice():
    assert metrics.mc_correct([-1.0, -0.5, -2.0], 1) == 1.0
    assert metrics.mc_correct([-1.0, -1.0], 1) == 0.0
    assert metrics.mc_correct([-1.0, -1.0], 0) == 1.0


def test_retrieval_hit_prefers_evidence_sentence():
    chunks = ["Ana was born in Ostrow. Ana plays the harp.", "Bo works in Ostrow."]
    assert metrics.retrieval_hit(chunks, evidence="Ana   plays the harp.", answers=["the harp"]) == 1.0
    assert metrics.retrieval_hit(chunks[1:], evidence="Ana was born in Ostrow.", answers=["Ostrow"]) == 0.0
    assert metrics.retrieval_hit(chunks[1:], evidence=None, answers=["Ostrow"]) == 1.0


def test_item_values_splits_answerable_and_unanswerable():
    from harness.data.items import Question

    qa = Question(id="a", question="?", answers=("x",), choices=("x", "y"), answer_index=0)
    qu = Question(id="u", question="?", answers=(), answerable=False)
    row_a = {"output": "x", "choice_logliks": [-1.0, -2.0], "retrieved": [{"text": "x is here"}]}
    row_u = {"output": "y", "choice_logliks": None, "retrieved": []}
    values = metrics.item_values([(metrics.score_prediction(row_a, qa), qa), (metrics.score_prediction(row_u, qu), qu)])
    assert values["contains"] == {"a": 1.0}
    assert values["mc_accuracy"] == {"a": 1.0}
    assert values["retrieval_recall"] == {"a": 1.0}
    assert values["hallucination_unanswerable"] == {"u": 1.0}
    assert values["hallucination_answerable"] == {"a": 0.0}


def test_acc_norm_divides_by_choice_length_in_characters_as_lm_eval_does():
    """Finding 6: lm-eval's acc_norm is argmax of loglikelihood / len(choice)."""
    logliks, choices = [-6.0, -9.0], ["Ostrow", "the city of Ostrow-Wielk"]
    assert metrics.mc_correct(logliks, 1) == 0.0  # the long choice loses on the summed log-likelihood
    assert metrics.mc_correct_norm(logliks, choices, 1) == 1.0  # -6/6 = -1.0 < -9/24 = -0.375
    assert metrics.mc_correct_norm([-3.0, -3.0], ["ab", "abc"], 1) == 1.0


def test_chance_comes_from_each_items_number_of_choices():
    from harness.data.items import Question

    three = Question(id="a", question="?", answers=("x",), choices=("x", "yy", "zzzzz"), answer_index=0)
    five = Question(id="b", question="?", answers=("x",), choices=("x", "y", "z", "v", "w"), answer_index=0)
    assert metrics.chance(three) == 1 / 3 and metrics.chance(five) == 1 / 5
    row = {"output": "x", "choice_logliks": [-1.0, -2.0, -4.0], "retrieved": []}
    values = metrics.item_values([(metrics.score_prediction(row, three), three)])
    # acc: x has the highest sum; acc_norm: -1/1, -2/2, -4/5 = -0.8 picks "zzzzz"
    assert values["mc_accuracy"] == {"a": 1.0} and values["mc_accuracy_norm"] == {"a": 0.0}
    assert "4-way" not in metrics.METRICS["mc_accuracy"][0]


def test_sentence_answers_get_rouge_l_and_chrf():
    s = metrics.score_generation(
        "He was born in Ostrow.", answers=["He was born in the town of Ostrow."], answerable=True
    )
    assert 0.5 < s["answer_rouge_l"] < 1 and 0.3 < s["answer_chrf"] < 1 and s["contains"] == 0.0
    from harness.data.items import Question

    q = Question(id="a", question="?", answers=("He was born in the town of Ostrow.",))
    values = metrics.item_values([(s, q)])
    assert values["answer_rouge_l"] == {"a": s["answer_rouge_l"]} and "rouge_l" not in values  # not the rewrite metric


@pytest.mark.parametrize(
    "metric, case",
    [(m, c) for m in ("bleu", "chrf", "rouge_l") for c in REFERENCE[m]],
    ids=lambda v: v if isinstance(v, str) else (v["output"] or "<empty>")[:24],
)
def test_text_similarity_matches_published_and_hand_computed_values(metric, case):
    value = getattr(metrics, metric)(case["output"], case["reference"])
    assert value == pytest.approx(case["value"], abs=case["tolerance"]), case["source"]
