import json
from pathlib import Path

import pytest

from harness import metrics

GOLDEN = json.loads((Path(__file__).parent / "data" / "metrics_golden.json").read_text())


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
    from harness.data import Question

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
