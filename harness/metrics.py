"""Pure scoring functions. Each works on one item and returns a number in [0, 1];
aggregation (mean with a confidence interval) lives in harness/stats.py.

| metric | level | normalisation | direction |
|---|---|---|---|
| exact_match | item | SQuAD: lower case, no punctuation, no articles, single spaces | higher is better |
| token_f1 | item | same, then whitespace tokens; max over gold answers | higher is better |
| contains | item | same; 1 if a normalised gold answer occurs in the normalised output | higher is better |
| abstained | item | the abstention rule below | (context) |
| hallucinated | item | answerable: wrong and not abstained; unanswerable: not abstained | lower is better |
| mc_correct | item | argmax of summed continuation log-likelihood over the choices | higher is better |
| retrieval_hit | item | the gold evidence sentence (else a gold answer) is in a top-k chunk | higher is better |

The abstention rule: an output abstains when it is empty or when its normalised text
contains one of `ABSTENTION_PHRASES` (e.g. "i dont know", "not mentioned"). The prompts
ask for "I don't know"; the other phrases catch the ways small models say the same.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "\u2018\u2019\u201c\u201d")

ABSTENTION_PHRASES = (
    "i dont know", "i do not know", "dont know", "do not know", "unknown", "not sure",
    "no information", "cannot answer", "cant answer", "unable to answer", "not mentioned",
    "not provided", "not specified", "no answer", "does not exist", "doesnt exist",
    "not in the passages", "do not contain", "does not contain", "dont contain", "no record",
)


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, strip punctuation and articles, collapse spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(output: str, answers) -> float:
    out = normalize(output)
    return float(any(out == normalize(a) for a in answers))


def _f1(pred: list[str], gold: list[str]) -> float:
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if not pred or not gold:
        return float(pred == gold)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(output: str, answers) -> float:
    pred = normalize(output).split()
    return max((_f1(pred, normalize(a).split()) for a in answers), default=0.0)


def contains(output: str, answers) -> float:
    """1 if some gold answer, normalised, appears as a whole-word span of the output."""
    out = f" {normalize(output)} "
    return float(any(f" {normalize(a)} " in out for a in answers if normalize(a)))


def abstained(output: str) -> float:
    out = normalize(output)
    return float(not out or any(p in out for p in ABSTENTION_PHRASES))


def hallucinated(output: str, answers, *, answerable: bool) -> float:
    """Answerable: a wrong answer given instead of an abstention. Unanswerable: any
    answer asserted at all."""
    if abstained(output):
        return 0.0
    return 0.0 if (answerable and contains(output, answers)) else 1.0


def mc_correct(logliks: list[float], answer_index: int) -> float:
    """1 if the gold choice has the highest log-likelihood (ties go to the first)."""
    best = max(range(len(logliks)), key=lambda i: (logliks[i], -i))
    return float(best == answer_index)


def retrieval_hit(chunk_texts: list[str], *, evidence: str | None, answers) -> float:
    """1 if a retrieved chunk holds the gold evidence sentence; without one, if a
    retrieved chunk contains a gold answer."""
    if evidence:
        needle = " ".join(evidence.split())
        return float(any(needle in " ".join(t.split()) for t in chunk_texts))
    return float(any(contains(t, answers) for t in chunk_texts))


def score_generation(output: str, *, answers, answerable: bool) -> dict[str, float]:
    """All generative per-item scores of one output. Recall metrics are only defined for
    answerable questions; for unanswerable ones only abstention and hallucination are."""
    scores = {"abstained": abstained(output), "hallucinated": hallucinated(output, answers, answerable=answerable)}
    if answerable:
        scores.update(exact_match=exact_match(output, answers), token_f1=token_f1(output, answers),
                      contains=contains(output, answers))
    return scores


# What each aggregate means, for the report: (label, direction, kind).
# kind "proportion" gets a Wilson interval; "mean" a bootstrap interval.
METRICS = {
    "contains": ("fact recall: gold answer contained (answerable)", "higher", "proportion"),
    "exact_match": ("exact match (answerable)", "higher", "proportion"),
    "token_f1": ("token F1 (answerable)", "higher", "mean"),
    "mc_accuracy": ("multiple-choice accuracy (answerable, 4-way)", "higher", "proportion"),
    "hallucination_answerable": ("hallucination: wrong answer instead of abstaining (answerable)", "lower", "proportion"),
    "hallucination_unanswerable": ("hallucination: answer asserted (unanswerable)", "lower", "proportion"),
    "hallucination_known": ("hallucination on facts the base model knew (regression)", "lower", "proportion"),
    "hallucination_new": ("hallucination on facts new to the base model (injected)", "lower", "proportion"),
    "abstention_answerable": ("abstention rate (answerable)", "context", "proportion"),
    "retrieval_recall": ("retrieval recall@k of the gold evidence", "higher", "proportion"),
}


def score_prediction(row: dict, question) -> dict[str, float]:
    """Every per-item score of one pipeline's raw output for one question."""
    scores = score_generation(row["output"], answers=question.answers, answerable=question.answerable)
    if row.get("choice_logliks") is not None:
        scores["mc_correct"] = mc_correct(row["choice_logliks"], question.answer_index)
    if row.get("retrieved") and question.answerable and question.in_corpus:
        scores["retrieval_hit"] = retrieval_hit([h["text"] for h in row["retrieved"]],
                                                evidence=question.evidence, answers=question.answers)
    return scores


def item_values(scored: list[tuple[dict, object]], *, known: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Per-item values of each aggregate metric, keyed by question id, over the subset of
    items where that metric is defined (see METRICS). `known` (question id -> category
    from knowledge.py) splits hallucination on answerable questions by what the base
    model knew: `hallucination_known` on facts it knew, `hallucination_new` on the rest."""
    out: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    for scores, q in scored:
        if q.answerable:
            for m in ("contains", "exact_match", "token_f1"):
                out[m][q.id] = scores[m]
            out["hallucination_answerable"][q.id] = scores["hallucinated"]
            if known and q.id in known:
                split = "hallucination_known" if known[q.id] == "known" else "hallucination_new"
                out[split][q.id] = scores["hallucinated"]
            out["abstention_answerable"][q.id] = scores["abstained"]
            if "mc_correct" in scores:
                out["mc_accuracy"][q.id] = scores["mc_correct"]
            if "retrieval_hit" in scores:
                out["retrieval_recall"][q.id] = scores["retrieval_hit"]
        else:
            out["hallucination_unanswerable"][q.id] = scores["hallucinated"]
    return {m: v for m, v in out.items() if v}


# The questions a report answers with a verdict, and the metric that decides each.
DECISIONS = {
    "facts (multiple choice)": "mc_accuracy",
    "facts (generated answer contains the gold)": "contains",
    "hallucination on questions with no answer": "hallucination_unanswerable",
}
