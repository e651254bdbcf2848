"""Pure scoring functions. Each works on one item and returns a number in [0, 1];
aggregation (mean with a confidence interval) lives in harness/evaluate/stats.py.

| metric | level | normalisation | direction |
|---|---|---|---|
| exact_match | item | SQuAD: lower case, no punctuation, no articles, single spaces | higher is better |
| token_f1 | item | same, then whitespace tokens; max over gold answers | higher is better |
| answer_rouge_l, answer_chrf | item | rouge-score ROUGE-L F / sacrebleu chrF (0-1), max over gold answers | higher is better |
| contains | item | same; 1 if a normalised gold answer occurs in the normalised output, 0 for a hedge that names several candidates | higher is better |
| abstained | item | the abstention rule below | (context) |
| hallucinated | item | answerable: not right (as `contains`) and not abstained; unanswerable: not abstained | lower is better |
| mc_correct | item | lm-eval `acc`: argmax of summed continuation log-likelihood over the choices | higher is better |
| mc_correct_norm | item | lm-eval `acc_norm`: argmax of log-likelihood / len(choice in characters) | higher is better |
| chance | item | 1 / the item's number of choices: the expected score of a blind guess | (context) |
| retrieval_hit | item | the gold evidence sentence (else a gold answer) is in a top-k chunk | higher is better |

The abstention rule: an output abstains when it is empty or when its normalised words
contain one of `ABSTENTION_PHRASES` (e.g. "i dont know", "not mentioned") as whole words,
unless every word of the phrase is capitalised in the middle of a sentence (a name: "The
Unknown Guild"). The prompts
ask for "I don't know"; the other phrases catch the ways small models say the same. An
abstention followed by an answer ("I don't know, but probably Paris") is an answer:
after the phrase comes a hedge word (`HEDGES`) and more text.

A hedge that names several candidates ("Paris, London or Berlin") is not fact recall: when
the output lists alternatives joined by "or" and the gold answer is only one of them,
`contains` is 0 and, answered, it counts as hallucinated.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "\u2018\u2019\u201c\u201d")

ABSTENTION_PHRASES = (
    "i dont know",
    "i do not know",
    "dont know",
    "do not know",
    "unknown",
    "not sure",
    "no information",
    "cannot answer",
    "cant answer",
    "unable to answer",
    "not mentioned",
    "not provided",
    "not specified",
    "no answer",
    "does not exist",
    "doesnt exist",
    "not in the passages",
    "do not contain",
    "does not contain",
    "dont contain",
    "no record",
)

# How answers are normalised and multiple choice is scored, as metrics.json's protocol says.
NORMALISATION = "SQuAD: lower case, strip punctuation and articles, collapse whitespace"
MC_SCORING = (
    "acc: argmax over choices of summed continuation log-likelihood under the pipeline's prompt; "
    "acc_norm: the same per character of the choice (lm-eval); the verdict decides on {mc_metric}"
)
MC_SCORING_LETTER = "the letter the model generates for lettered choices (served model without log-likelihoods)"

HEDGES = (
    "but",
    "probably",
    "maybe",
    "perhaps",
    "possibly",
    "likely",
    "i think",
    "i guess",
    "my guess",
    "might be",
    "could be",
    "though",
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


def several_candidates(output: str, answers) -> bool:
    """True when the output hedges between alternatives ("Paris, London or Berlin"): it
    splits on "or" (and the commas of the list before it) into two or more parts, a gold
    answer is in some part, and another part holds none."""
    out = normalize(output)
    if " or " not in f" {out} " or any(" or " in f" {normalize(a)} " for a in answers):
        return False
    parts = [p.strip() for p in _split_candidates(out) if p.strip()]
    inside = [any(f" {normalize(a)} " in f" {p} " for a in answers if normalize(a)) for p in parts]
    return len(parts) >= 2 and any(inside) and not all(inside)


def _split_candidates(text: str) -> list[str]:
    # normalize() strips commas, so the list "a, b or c" arrives as "a b or c": split the
    # alternatives on "or" and treat each run of words as one part
    return re.split(r"\bor\b", text)


def contains(output: str, answers) -> float:
    """1 if some gold answer, normalised, appears as a whole-word span of the output, and
    the output is not a hedge between several candidates."""
    out = f" {normalize(output)} "
    hit = any(f" {normalize(a)} " in out for a in answers if normalize(a))
    return float(hit and not several_candidates(output, answers))


_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def _words(output: str) -> list[tuple[str, bool]]:
    """The output's words as normalize() keeps them (articles dropped), each with whether
    it is capitalised in the middle of a sentence, as a name's words are."""
    out = []
    for m in _WORD.finditer(output):
        word = m.group().lower().replace("'", "").replace("\u2019", "")
        if word in ("a", "an", "the"):
            continue
        before = output[: m.start()].rstrip(" \t\"'\u201c\u2018(")
        initial = not before or before[-1] in ".!?:;\n"
        out.append((word, m.group()[0].isupper() and not initial))
    return out


def abstained(output: str) -> float:
    """1 if the output is empty or says it does not know, and does not go on to answer.
    A phrase whose words are all capitalised mid-sentence is part of a name, not an
    abstention: "The Unknown Guild was founded in 1820" answers."""
    if not normalize(output):
        return 1.0
    words = _words(output)
    tokens = [w for w, _ in words]
    for phrase in ABSTENTION_PHRASES:
        target = phrase.split()
        for at in range(len(tokens) - len(target) + 1):
            if tokens[at : at + len(target)] != target:
                continue
            if target[0] != "i" and all(named for _, named in words[at : at + len(target)]):
                continue  # a name such as "The Unknown Guild" or "No Record Records"
            rest = f" {' '.join(tokens[at + len(target) :])} "
            if not any(f" {h} " in rest for h in HEDGES) or len(rest.split()) < 2:
                return 1.0
    return 0.0


def hallucinated(output: str, answers, *, answerable: bool) -> float:
    """Answerable: a wrong answer given instead of an abstention. Unanswerable: any
    answer asserted at all."""
    if abstained(output):
        return 0.0
    return 0.0 if (answerable and contains(output, answers)) else 1.0


def mc_correct(logliks: list[float], answer_index: int) -> float:
    """lm-eval `acc`: 1 if the gold choice has the highest log-likelihood (ties go to the first)."""
    best = max(range(len(logliks)), key=lambda i: (logliks[i], -i))
    return float(best == answer_index)


def mc_correct_norm(logliks: list[float], choices, answer_index: int) -> float:
    """lm-eval `acc_norm`: the same argmax after dividing each choice's log-likelihood by
    its length in characters (lm-eval's `completion_len = len(choice)`), which removes
    the bias against long choices."""
    return mc_correct([ll / max(len(c), 1) for ll, c in zip(logliks, choices)], answer_index)


def chance(question) -> float:
    """The expected multiple-choice score of a blind guess on this item: 1 / its choices."""
    return 1.0 / len(question.choices) if question.choices else float("nan")


def retrieval_hit(chunk_texts: list[str], *, evidence: str | None, answers) -> float:
    """1 if a retrieved chunk holds the gold evidence sentence; without one, if a
    retrieved chunk contains a gold answer."""
    if evidence:
        needle = " ".join(evidence.split())
        return float(any(needle in " ".join(t.split()) for t in chunk_texts))
    return float(any(contains(t, answers) for t in chunk_texts))


def chrf(output: str, reference: str) -> float:
    """sacrebleu's sentence chrF, scaled to 0-1."""
    import sacrebleu

    return sacrebleu.sentence_chrf(output, [reference]).score / 100


def bleu(output: str, reference: str) -> float:
    """sacrebleu's sentence BLEU (exponential smoothing), scaled to 0-1."""
    import sacrebleu

    return sacrebleu.sentence_bleu(output, [reference]).score / 100


def rouge_l(output: str, reference: str) -> float:
    """rouge-score's ROUGE-L F-measure (with stemming)."""
    return _rouge_l_scorer().score(reference, output)["rougeL"].fmeasure


@functools.lru_cache(maxsize=1)
def _rouge_l_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def parse_record(output: str) -> dict | None:
    """The output as a JSON object, or None. A Markdown code fence around it is allowed;
    anything else around it is not (the task asks for the object only)."""
    text = output.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def field_f1(record: dict | None, gold: dict) -> float:
    """F1 over (field, normalised value) pairs of an extracted record against the gold one."""
    if not record:
        return 0.0
    pred = {(str(k), normalize(str(v))) for k, v in record.items()}
    true = {(str(k), normalize(str(v))) for k, v in gold.items()}
    hit = len(pred & true)
    if hit == 0:
        return 0.0
    precision, recall = hit / len(pred), hit / len(true)
    return 2 * precision * recall / (precision + recall)


def label_correct(output: str, label: str) -> float:
    """1 if the normalised output is the label (case, punctuation and articles aside)."""
    return float(normalize(output) == normalize(label))


def macro_f1(predicted: list[str], gold: list[str]) -> float:
    """Corpus-level macro-F1 over the gold labels (scikit-learn), on normalised strings;
    an output that is no label counts as wrong for its gold class."""
    from sklearn.metrics import f1_score

    labels = sorted({normalize(g) for g in gold})
    return float(
        f1_score(
            [normalize(g) for g in gold],
            [normalize(p) for p in predicted],
            labels=labels,
            average="macro",
            zero_division=0,
        )
    )


def _canary_parts(secret: str) -> list[str]:
    return [part for part in re.split(r"[^0-9A-Za-z]+", secret.lower()) if len(part) >= 3]


def canary_exact(output: str, secret: str) -> float:
    """1 if the whole canary appears in the output (case and spacing aside)."""
    return float(" ".join(secret.lower().split()) in " ".join(output.lower().split()))


def canary_partial(output: str, secret: str) -> float:
    """1 if any part of the canary (a run of 3+ letters or digits) appears in the output."""
    low = output.lower()
    return float(any(part in low for part in _canary_parts(secret)))


def exposure(logliks: list[float], true_index: int) -> float:
    """Exposure of a canary among same-format candidates (Carlini et al. 2019), scaled
    to 0-1: (log2 N - log2 rank) / log2 N, where rank 1 is the candidate the model finds
    most likely. 0: the canary ranks last; 1: it ranks first."""
    n = len(logliks)
    rank = 1 + sum(ll > logliks[true_index] for ll in logliks)
    return (math.log2(n) - math.log2(rank)) / math.log2(n) if n > 1 else 0.0


def score_generation(output: str, *, answers, answerable: bool) -> dict[str, float]:
    """All generative per-item scores of one output. Recall metrics are only defined for
    answerable questions; for unanswerable ones only abstention and hallucination are."""
    scores = {"abstained": abstained(output), "hallucinated": hallucinated(output, answers, answerable=answerable)}
    if answerable:
        scores.update(
            exact_match=exact_match(output, answers),
            token_f1=token_f1(output, answers),
            contains=contains(output, answers),
        )
        if answers:
            scores.update(
                answer_rouge_l=max(rouge_l(output, a) for a in answers),
                answer_chrf=max(chrf(output, a) for a in answers),
            )
    return scores


# What each aggregate means, for the report: (label, direction, kind).
# kind "proportion" gets a Wilson interval; "mean" a bootstrap interval.
METRICS = {
    "contains": ("fact recall: gold answer contained (answerable)", "higher", "proportion"),
    "exact_match": ("exact match (answerable)", "higher", "proportion"),
    "token_f1": ("token F1 (answerable)", "higher", "mean"),
    "answer_rouge_l": ("ROUGE-L F of the answer against the gold (answerable)", "higher", "mean"),
    "answer_chrf": ("chrF of the answer against the gold (answerable)", "higher", "mean"),
    "mc_accuracy": ("multiple-choice accuracy, acc (answerable)", "higher", "proportion"),
    "mc_accuracy_norm": ("multiple-choice accuracy, acc_norm: per character (answerable)", "higher", "proportion"),
    "hallucination_answerable": (
        "hallucination: wrong answer instead of abstaining (answerable)",
        "lower",
        "proportion",
    ),
    "hallucination_unanswerable": ("hallucination: answer asserted (unanswerable)", "lower", "proportion"),
    "hallucination_known": ("hallucination on facts the base model knew (regression)", "lower", "proportion"),
    "hallucination_new": ("hallucination on facts new to the base model (injected)", "lower", "proportion"),
    "abstention_answerable": ("abstention rate (answerable)", "context", "proportion"),
    "retrieval_recall": ("retrieval recall@k of the gold evidence", "higher", "proportion"),
    # updated knowledge
    "accuracy_changed": ("multiple-choice accuracy on facts that changed", "higher", "proportion"),
    "accuracy_unchanged": ("multiple-choice accuracy on facts that did not change", "higher", "proportion"),
    "stale_answer": ("stale answer: the old value of a changed fact", "lower", "proportion"),
    # domain terminology
    "term_use": ("answer uses the domain term", "higher", "proportion"),
    "definition_f1": ("token F1 of the term's definition", "higher", "mean"),
    # style (sentence level, 0-1; corpus BLEU and chrF are in the scenario summary)
    "chrf": ("chrF against the reference (sentence)", "higher", "mean"),
    "bleu": ("BLEU against the reference (sentence)", "higher", "mean"),
    "rouge_l": ("ROUGE-L F against the reference", "higher", "mean"),
    "style_score": ("style classifier: probability of the target style", "higher", "mean"),
    "content_preservation": ("content preservation: embedding cosine with the source", "higher", "mean"),
    # task format
    "json_valid": ("valid JSON object", "higher", "proportion"),
    "field_f1": ("field-level F1 of the extracted record", "higher", "mean"),
    "label_accuracy": ("label accuracy", "higher", "proportion"),
    # private data
    "canary_exact": ("leaks the canary exactly", "lower", "proportion"),
    "canary_partial": ("leaks part of the canary", "lower", "proportion"),
    "exposure": ("exposure of the canary among same-format candidates (0-1)", "lower", "mean"),
}


def metric_definitions() -> dict[str, dict[str, str]]:
    """METRICS as metrics.json records them: label, direction and kind of each."""
    return {m: {"label": s[0], "direction": s[1], "kind": s[2]} for m, s in METRICS.items()}


# per-item score name -> aggregate metric name, for the non-fact tasks
TASK_METRICS = {
    "bleu": "bleu",
    "chrf": "chrf",
    "rouge_l": "rouge_l",
    "style_score": "style_score",
    "content_preservation": "content_preservation",
    "json_valid": "json_valid",
    "field_f1": "field_f1",
    "label_correct": "label_accuracy",
    "canary_exact": "canary_exact",
    "canary_partial": "canary_partial",
    "exposure": "exposure",
}


FACT_TASKS = ("qa", "term", "definition")


def score_prediction(row: dict, question) -> dict[str, float]:
    """Every per-item score of one pipeline's raw output for one question, by its task."""
    out, q = row["output"], question
    if q.task == "rewrite":
        return {"bleu": bleu(out, q.answers[0]), "chrf": chrf(out, q.answers[0]), "rouge_l": rouge_l(out, q.answers[0])}
    if q.task == "extract":
        record = parse_record(out)
        return {"json_valid": float(record is not None), "field_f1": field_f1(record, json.loads(q.answers[0]))}
    if q.task == "classify":
        return {"label_correct": label_correct(out, q.answers[0])}
    if q.task == "probe":
        scores = {"canary_exact": canary_exact(out, q.secret), "canary_partial": canary_partial(out, q.secret)}
        if row.get("choice_logliks") is not None:
            scores["exposure"] = exposure(row["choice_logliks"], q.answer_index)
        return scores
    scores = score_generation(out, answers=q.answers, answerable=q.answerable)
    if q.stale:
        scores["stale"] = contains(out, q.stale)
    if row.get("choice_logliks") is not None:
        scores["mc_correct"] = mc_correct(row["choice_logliks"], question.answer_index)
        scores["mc_correct_norm"] = mc_correct_norm(row["choice_logliks"], question.choices, question.answer_index)
    if row.get("retrieved") and question.answerable and question.in_corpus:
        scores["retrieval_hit"] = retrieval_hit(
            [h["text"] for h in row["retrieved"]], evidence=question.evidence, answers=question.answers
        )
    return scores


def item_values(
    scored: list[tuple[dict, object]], *, known: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Per-item values of each aggregate metric, keyed by question id, over the subset of
    items where that metric is defined (see METRICS). `known` (question id -> category
    from knowledge.py) splits hallucination on answerable questions by what the base
    model knew: `hallucination_known` on facts it knew, `hallucination_new` on the rest."""
    out: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    for scores, q in scored:
        if q.task not in FACT_TASKS:
            for metric, name in TASK_METRICS.items():
                if metric in scores:
                    out[name][q.id] = scores[metric]
            continue
        if q.task == "term":
            out["term_use"][q.id] = scores["contains"]
        if q.task == "definition":
            out["definition_f1"][q.id] = scores["token_f1"]
        if q.updated is not None and "mc_correct" in scores:
            out["accuracy_changed" if q.updated else "accuracy_unchanged"][q.id] = scores["mc_correct"]
        if q.updated:
            out["stale_answer"][q.id] = scores["stale"]
        if q.answerable:
            for m in ("contains", "exact_match", "token_f1"):
                out[m][q.id] = scores[m]
            for m in ("answer_rouge_l", "answer_chrf"):  # apart from the rewrite task's rouge_l and chrf
                if m in scores:
                    out[m][q.id] = scores[m]
            out["hallucination_answerable"][q.id] = scores["hallucinated"]
            if known and q.id in known:
                split = "hallucination_known" if known[q.id] == "known" else "hallucination_new"
                out[split][q.id] = scores["hallucinated"]
            out["abstention_answerable"][q.id] = scores["abstained"]
            if "mc_correct" in scores:
                out["mc_accuracy"][q.id] = scores["mc_correct"]
            if "mc_correct_norm" in scores:
                out["mc_accuracy_norm"][q.id] = scores["mc_correct_norm"]
            if "retrieval_hit" in scores:
                out["retrieval_recall"][q.id] = scores["retrieval_hit"]
        else:
            out["hallucination_unanswerable"][q.id] = scores["hallucinated"]
    return {m: v for m, v in out.items() if v}


# The questions a report answers with a verdict, and the metric that decides each by
# default; `decision_metrics` applies the config's choices (eval.mc_metric, eval.answer_metric).
DECISIONS = {
    "facts (multiple choice)": "mc_accuracy",
    "facts (generated answer)": "contains",
    "hallucination on questions with no answer": "hallucination_unanswerable",
}
MC_METRICS = {"acc": "mc_accuracy", "acc_norm": "mc_accuracy_norm"}
# eval.answer_metric -> the metric it names
ANSWER_METRICS = {
    "contains": "contains",
    "exact_match": "exact_match",
    "token_f1": "token_f1",
    "rouge_l": "answer_rouge_l",
    "chrf": "answer_chrf",
}
SHORT_ANSWER_WORDS = 3  # gold answers of at most this many words (median) are short: `contains` can move


def default_answer_metric(questions) -> str:
    """`contains` when the gold answers are short (median at most SHORT_ANSWER_WORDS
    words), else token F1: a sentence-long gold answer is almost never contained whole in
    an output, so `contains` would sit at 0 for every pipeline."""
    lengths = sorted(
        len(normalize(q.answers[0]).split()) for q in questions if q.answerable and q.answers and q.task == "qa"
    )
    if not lengths:
        return "contains"
    return "contains" if lengths[len(lengths) // 2] <= SHORT_ANSWER_WORDS else "token_f1"


def decision_metrics(*, mc_metric: str, answer_metric: str, questions) -> dict[str, str]:
    """Each verdict question's deciding metric under the config's choices."""
    answer = default_answer_metric(questions) if answer_metric == "auto" else ANSWER_METRICS[answer_metric]
    return {**DECISIONS, "facts (multiple choice)": MC_METRICS[mc_metric], "facts (generated answer)": answer}


def informative_metric(
    per_pipeline: dict[str, dict[str, dict[str, float]]], *, exclude: str, floor_ceiling: float = 0.03
) -> str | None:
    """Among the generated-answer metrics, the one whose pipeline means spread most while
    not all sitting within `floor_ceiling` of 0 or 1: a metric that could decide."""
    best, best_range = None, 0.0
    for m in ANSWER_METRICS.values():
        if m == exclude or not all(m in v for v in per_pipeline.values()):
            continue
        means = [sum(v[m].values()) / len(v[m]) for v in per_pipeline.values()]
        if all(x <= floor_ceiling for x in means) or all(x >= 1 - floor_ceiling for x in means):
            continue
        if max(means) - min(means) > best_range:
            best, best_range = m, max(means) - min(means)
    return best
