"""The judge's numbers: agreement with exact labels (accuracy, Cohen's kappa, bootstrap
intervals) and position-swap consistency, on fixtures with hand-computed answers; and
the parsing of judge replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.evaluate.judge import _kappas, agreement, pairwise_summary, parse_choice, parse_claims, parse_verdict

FIXTURE = json.loads((Path(__file__).parent / "data" / "judge_agreement.json").read_text())


def test_agreement_on_known_labels():
    got = agreement(FIXTURE["judge"], FIXTURE["exact"], samples=500, seed=0)
    want = FIXTURE["expected"]
    assert got["n"] == want["n"]  # items labelled by one side only are left out
    assert got["accuracy"]["value"] == pytest.approx(want["accuracy"])
    assert got["kappa"]["value"] == pytest.approx(want["kappa"])
    lo, hi = got["kappa"]["ci95"]
    assert lo < want["kappa"] < hi and hi - lo > 0.1  # ten items: a wide interval
    lo, hi = got["accuracy"]["ci95"]
    assert lo < want["accuracy"] <= hi
    assert got == agreement(FIXTURE["judge"], FIXTURE["exact"], samples=500, seed=0)  # seeded


def test_bootstrap_kappa_matches_scikit_learn():
    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, size=(5, 30)), rng.integers(0, 2, size=(5, 30))
    assert _kappas(a, b) == pytest.approx([cohen_kappa_score(x, y) for x, y in zip(a, b)])


def test_kappa_is_zero_for_a_judge_that_always_says_correct():
    exact = {f"q{i}": i % 2 for i in range(20)}
    got = agreement({q: 1 for q in exact}, exact, samples=200)
    assert got["accuracy"]["value"] == pytest.approx(0.5)
    assert got["kappa"]["value"] == pytest.approx(0.0)


def test_pairwise_position_swap():
    got = pairwise_summary(FIXTURE["pairwise_first"], FIXTURE["pairwise_swapped"])
    want = FIXTURE["pairwise_expected"]
    assert got["n"] == want["n"] and got["consistent"] == want["consistent"]
    assert got["disagreement"]["mean"] == pytest.approx(want["disagreement"])
    assert got["b_win_rate"]["mean"] == pytest.approx(want["b_win_rate"])
    assert got["first_position_preferred"] == pytest.approx(want["first_position_preferred"])


def test_parsing_judge_replies():
    assert parse_verdict("Correct.") == 1 and parse_verdict("incorrect") == 0
    assert parse_verdict("No, the passages say otherwise") == 0 and parse_verdict("Yes") == 1
    assert parse_verdict("The answer is Paris") is None
    assert parse_claims("1. Ada lives in Oslo.\n- She works at Acme.\n\n") == [
        "Ada lives in Oslo.",
        "She works at Acme.",
    ]
    assert parse_choice("Answer 2 is better") == 2 and parse_choice("neither") is None


def test_loglikelihood_verdicts_take_the_likelier_reply_word_and_are_memoised(tiny_lm, monkeypatch):
    """Every item gets a verdict: the reply word with the higher log-likelihood after the
    prompt (here a stand-in scorer that prefers "yes" and "1" when the answer says RIGHT)."""
    from harness.evaluate import judge
    from harness.store.memo import Memo

    calls = []

    def scorer(lm, pairs, *, batch_size):
        calls.append(len(pairs))
        return [float((word.strip() in ("yes", "1")) == ("RIGHT" in prompt)) for prompt, word in pairs]

    monkeypatch.setattr(judge, "loglikelihood", scorer)
    memo = Memo("judgements-test", namespace={"t": 1})
    fields = [{"question": f"Answer to grade: {w} {i}"} for i, w in enumerate(["RIGHT", "WRONG", "RIGHT", "WRONG"])]
    kw = {"max_new_tokens": 4, "batch_size": 2}
    assert judge._verdicts(tiny_lm, memo, "correctness", fields, protocol="loglikelihood", kw=kw) == [1, 0, 1, 0]
    assert judge._verdicts(tiny_lm, memo, "pairwise", fields, protocol="loglikelihood", kw=kw) == [0, 1, 0, 1]
    assert calls == [8, 8]  # two words per item
    assert judge._verdicts(tiny_lm, memo, "correctness", fields, protocol="loglikelihood", kw=kw) == [1, 0, 1, 0]
    assert calls == [8, 8]  # the second time from the memo


def test_reply_words_follow_the_prompt_as_lm_eval_places_a_choice():
    from harness.evaluate.judge import reply_continuation

    assert reply_continuation("<|im_start|>assistant\n", "yes") == "yes"  # a chat turn ends in a newline
    assert reply_continuation("Question: ...\nAnswer:", "yes") == " yes"  # a plain prompt: after a space


def test_verdict_protocol_is_loglikelihood_wherever_the_judge_can_score():
    from types import SimpleNamespace

    from harness.evaluate.judge import verdict_protocol

    def cfg(verdicts="auto", **model):
        return SimpleNamespace(verdicts=verdicts, model=SimpleNamespace(**{"backend": "hf", **model}))

    assert verdict_protocol(cfg()) == "loglikelihood"
    assert verdict_protocol(cfg(backend="endpoint", api="completions", mc_protocol="loglikelihood")) == "loglikelihood"
    assert verdict_protocol(cfg(backend="endpoint", api="chat", mc_protocol="letter")) == "generate"
    assert verdict_protocol(cfg("generate")) == "generate"


@pytest.mark.parametrize("verdicts", ["loglikelihood", "generate"])
def test_a_judged_run_reports_beside_its_agreement(tmp_path, tiny_model_dir, monkeypatch, verdicts):
    from harness.config import parse_config
    from harness.evaluate import judge
    from harness.run.runner import run_experiment
    from tests.conftest import tiny_config

    model = {"name": str(tiny_model_dir), "dtype": "float32", "device": "cpu"}
    raw = tiny_config(
        tiny_model_dir,
        output_dir=str(tmp_path / "results"),
        eval={
            "pipelines": ["base", "rag", "rag_finetuned"],
            "max_new_tokens": 4,
            "batch_size": 8,
            "bootstrap_samples": 200,
            "judge": {"model": model, "max_new_tokens": 4, "pairwise": [["base", "rag"]], "verdicts": verdicts},
        },
    )
    # the tiny model's replies are not words: read its verdict from the reply's length,
    # so that the plumbing below has verdicts to carry (parsing is tested above)
    monkeypatch.setattr(judge, "parse_verdict", lambda text: len(text) % 2)
    out = run_experiment(parse_config(raw))
    m = json.loads((out / "metrics.json").read_text())
    j = m["judged"]
    n_qa = m["pipelines"]["base"]["contains"]["n"]
    arms = ("base", "rag", "rag_finetuned")
    for p in arms:  # every answerable item judged; unreadable replies counted, not dropped silently
        assert j["correctness"][p]["n"] + j["correctness"][p]["unparsed"] == n_qa
    assert j["agreement"]["n"] == sum(j["correctness"][p]["n"] for p in arms)
    assert set(j["faithfulness"]) == {"rag", "rag_finetuned"} and j["pairwise"][0]["a"] == "base"
    assert j["prompts"]["correctness"] == "judge_correctness@v2" and j["verdicts"] == verdicts
    assert all("judge" not in q for q in m["verdicts"])  # judged numbers stay out of the verdicts
    report = (out / "report.md").read_text()
    assert "Judged (secondary, not in the verdicts)" in report and "Cohen's kappa" in report
    assert "have not been checked against human labels" in report
    # each judged answer carries the verdict as a score, so human labels measure the judge
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    judged = {
        (p["pipeline"], p["question_id"]): p["scores"]["judge_correct"] for p in preds if "judge_correct" in p["scores"]
    }
    assert judged == {(p, q): v for p in arms for q, v in j["correctness"][p]["per_item"].items()}
    _labels_check_the_judge(out, tmp_path, judged)


def _labels_check_the_judge(out, tmp_path, judged):
    """One annotator who calls every rag answer right and every base answer wrong: the
    report gives the judge's agreement with them, computed here by hand."""
    from harness.cli import main
    from harness.report.annotate import write_page

    key = json.loads(write_page(out, pipelines=["rag", "base"], items=12, seed=0).with_suffix(".json").read_text())
    labels, truth = {}, {}
    for it in key["items"]:
        sides = {side: "correct" if it[side] == "rag" else "wrong" for side in ("left", "right")}
        labels[it["id"]] = {"item_hash": it["hash"], "preference": "left" if it["left"] == "rag" else "right", **sides}
        for side in ("left", "right"):
            if (it[side], it["id"]) in judged:
                truth[(it[side], it["id"])] = int(sides[side] == "correct")
    (tmp_path / "ann.json").write_text(
        json.dumps(
            {
                "format": key["format"],
                "page_id": key["page_id"],
                "run_hash": key["run_hash"],
                "annotator": "ann",
                "labels": labels,
            }
        )
    )
    assert main(["labels", str(out), str(tmp_path / "ann.json")]) == 0
    accuracy = sum(judged[k] == v for k, v in truth.items()) / len(truth)
    report = (out / "report.md").read_text()
    assert f"Checked against human labels of this run: on {len(truth)} answers" in report
    assert f"right/wrong on {100 * accuracy:.1f} [" in report
