"""The verdicts a run reports: declared families (finding 1), the deciding metric that
fits the answers (finding 9), and questions a model cannot decide (finding 10)."""

import numpy as np

from harness.config import parse_config
from harness.data.items import Question
from harness.evaluate import metrics, verdicts
from harness.run.runner import decide_verdicts

PIPES = ("base", "finetuned", "rag", "rag_finetuned")


def _questions(n, answer="Ostrow"):
    return [
        Question(id=f"q{i}", question="?", answers=(answer,), choices=("a", "b", "c", "d"), answer_index=0)
        for i in range(n)
    ]


def _per_item(arrays: dict[str, dict[str, np.ndarray]]) -> dict:
    return {p: {m: {f"q{i}": float(x) for i, x in enumerate(v)} for m, v in per.items()} for p, per in arrays.items()}


def _run(n=120, seed=0):
    """mc_accuracy: rag right on 40 items that finetuned misses and wrong on 2 it gets;
    base below both arms."""
    rng = np.random.default_rng(seed)
    common = (rng.uniform(size=n) < 0.3).astype(float)
    rag, ft = common.copy(), common.copy()
    idx = np.flatnonzero(common == 0)
    rag[idx[:40]] = 1
    ft[idx[40:42]] = 1
    base = np.zeros(n)
    return {p: {"mc_accuracy": a} for p, a in zip(PIPES, (base, ft, rag, rag))}


def test_adding_any_metric_changes_no_verdict():
    """Finding 1: the correction family was every pair x every metric, so one extra
    metric (even one identical across pipelines, like hallucination_new in the demo)
    turned "RAG" into "no clear winner". Each verdict now adjusts its own family only."""
    cfg = parse_config({"name": "x"})
    qs = _questions(120)
    arrays = _run()
    alone = decide_verdicts(_per_item(arrays), cfg, qs)
    for extra in (
        {"hallucination_new": np.ones(120)},
        {"token_f1": np.linspace(0, 1, 120)},
        {m: np.zeros(120) for m in ("exact_match", "json_valid", "stale_answer", "bleu")},
    ):
        more = _per_item({p: {**per, **extra} for p, per in arrays.items()})
        assert decide_verdicts(more, cfg, qs)["facts (multiple choice)"] == alone["facts (multiple choice)"]
    assert alone["facts (multiple choice)"]["verdict"] == "RAG"


def test_sentence_answers_are_decided_by_token_f1_and_contains_at_floor_is_uninformative():
    """Finding 9: on TOFU-style sentence answers "gold contained" sits at 0-2% for every
    pipeline, so its verdict said nothing while token F1 moved from 29 to 42."""
    sentence = "He was born in the quiet town of Ostrow in the north."
    qs = _questions(200, answer=sentence)
    assert metrics.default_answer_metric(qs) == "token_f1"
    assert metrics.default_answer_metric(_questions(10)) == "contains"
    rng = np.random.default_rng(1)
    f1 = {p: np.clip(rng.normal(mu, 0.15, size=200), 0, 1) for p, mu in zip(PIPES, (0.29, 0.33, 0.38, 0.42))}
    per = _per_item(
        {p: {"contains": np.r_[np.ones(k), np.zeros(200 - k)], "token_f1": f1[p]} for p, k in zip(PIPES, (0, 2, 3, 4))}
    )
    auto = decide_verdicts(per, parse_config({"name": "x"}), qs)["facts (generated answer)"]
    assert auto["metric"] == "token_f1" and auto["verdict"] != "uninformative"
    forced = decide_verdicts(per, parse_config({"name": "x", "eval": {"answer_metric": "contains"}}), qs)
    v = forced["facts (generated answer)"]
    assert v["verdict"] == "uninformative" and v["informative"] == "token_f1"


def test_hallucination_question_with_no_abstention_is_undecidable_with_this_model():
    """Finding 10: when no pipeline ever abstains on questions with no answer, the
    report says the model cannot decide the question instead of "no clear winner"."""
    per = _per_item({p: {"hallucination_unanswerable": np.ones(20)} for p in PIPES})
    v = decide_verdicts(per, parse_config({"name": "x"}), _questions(20))["hallucination on questions with no answer"]
    assert v["verdict"] == "undecidable with this model" and "I don't know" in v["note"]
    some = _per_item(
        {p: {"hallucination_unanswerable": np.r_[np.zeros(k), np.ones(20 - k)]} for p, k in zip(PIPES, (0, 0, 6, 6))}
    )
    v = decide_verdicts(some, parse_config({"name": "x"}), _questions(20))["hallucination on questions with no answer"]
    assert v["verdict"] in verdicts.VERDICTS and v["verdict"] != "undecidable with this model"


def test_multiple_choice_verdict_metric_is_a_config_field():
    arrays = _run()
    per = _per_item({p: {**a, "mc_accuracy_norm": np.zeros(120) + (p == "rag")} for p, a in arrays.items()})
    v = decide_verdicts(per, parse_config({"name": "x", "eval": {"mc_metric": "acc_norm"}}), _questions(120))
    assert v["facts (multiple choice)"]["metric"] == "mc_accuracy_norm"


def test_the_report_line_gives_the_outcome_its_numbers_and_what_would_settle_it():
    from harness.report import run as report

    cfg = parse_config({"name": "x"})
    arrays = _run(n=40)
    arrays["rag"] = arrays["finetuned"].copy()
    arrays["rag"]["mc_accuracy"] = arrays["finetuned"]["mc_accuracy"].copy()
    arrays["rag"]["mc_accuracy"][:3] = 1 - arrays["rag"]["mc_accuracy"][:3]
    arrays["rag_finetuned"] = {"mc_accuracy": arrays["rag"]["mc_accuracy"].copy()}
    v = decide_verdicts(_per_item(arrays), cfg, _questions(40))["facts (multiple choice)"]
    defs = {m: {"label": spec[0]} for m, spec in metrics.METRICS.items()}
    line = report._verdict_line("facts (multiple choice)", v, defs)
    assert v["verdict"] == "inconclusive" and v["plan"]["items_if_none"] > 40
    assert line.startswith("**facts (multiple choice): inconclusive**") and "92% interval" in line
    assert f"about {v['plan']['items_if_none']:,} paired items if there is none" in line
    assert "exact p = " in line and "n = 40" in line


def test_the_demos_hallucination_numbers_read_undecidable():
    """Finding 10, at the demo's numbers: 95, 100, 95 and 100% of 20 unanswerable
    questions answered anyway; no difference between pipelines can reach 5 points."""
    per = _per_item(
        {
            p: {"hallucination_unanswerable": np.r_[np.ones(k), np.zeros(20 - k)]}
            for p, k in zip(PIPES, (19, 20, 19, 20))
        }
    )
    v = decide_verdicts(per, parse_config({"name": "x"}), _questions(20))["hallucination on questions with no answer"]
    assert v["verdict"] == "undecidable with this model"
