"""What the base model already knows, in a light version of Gekhman et al. (EMNLP 2024).

Gekhman et al. found that fine-tuning on facts a model did not know raises its
hallucination on facts it did know, that early stopping limits the harm, and that
relabelling unknown facts as "I don't know" keeps accuracy on answered questions high.
To split results that way, each question is tagged by the base model's own closed-book
answers: one greedy answer and `samples` answers sampled at `temperature`.

| category | the base model |
|---|---|
| known | gives the gold answer greedily |
| weakly_known | misses it greedily, but gives it in at least one sample |
| unknown | never gives it |

Sampling is seeded, so the tags are reproducible; each batch of samples is stored in the
generation memo like any other generation.

    tags = tag_questions(lm, questions, greedy={qid: output}, samples=4, temperature=0.7, ...)
"""

from __future__ import annotations

from harness import metrics
from harness.models import LoadedModel, generate
from harness.prompts import render, template_for

CATEGORIES = ("known", "weakly_known", "unknown")


def categorize(*, greedy_correct: bool, sample_hits: int) -> str:
    if greedy_correct:
        return "known"
    return "weakly_known" if sample_hits > 0 else "unknown"


def _closed_book(lm: LoadedModel, questions, *, max_new_tokens: int, batch_size: int, temperature: float | None,
                 seed: int, memo=None) -> list[str]:
    """Closed-book outputs of the base model (adapter off is the caller's business)."""
    from harness.memo import content_key
    from harness.pipelines import _units

    template = template_for(retrieval=False)
    prompts = [render(lm.tokenizer, template, question=q.question) for q in questions]
    out: list[str] = [""] * len(prompts)
    for unit in _units([len(p) for p in prompts], batch_size):
        key = content_key({"closed_book": [prompts[i] for i in unit], "max_new_tokens": max_new_tokens,
                           "temperature": temperature, "seed": seed})
        texts = memo.get(key) if memo is not None else None
        if texts is None:
            texts = [g.text for g in generate(lm, [prompts[i] for i in unit], max_new_tokens=max_new_tokens,
                                               batch_size=batch_size, temperature=temperature, seed=seed)]
            if memo is not None:
                memo.put(key, texts)
        for i, t in zip(unit, texts):
            out[i] = t
    return out


def tag_questions(lm: LoadedModel, questions, *, greedy: dict[str, str] | None = None, samples: int,
                  temperature: float, max_new_tokens: int, batch_size: int, seed: int, memo=None) -> dict[str, str]:
    """A category for each answerable factual question (task qa), from the base model's answers. `greedy`
    holds closed-book greedy outputs already computed (the base pipeline's), by id."""
    questions = [q for q in questions if q.answerable and q.answers and q.task == "qa"]
    if greedy is None or any(q.id not in greedy for q in questions):
        outputs = _closed_book(lm, questions, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               temperature=None, seed=seed, memo=memo)
        greedy = {**(greedy or {}), **{q.id: o for q, o in zip(questions, outputs)}}
    hits = {q.id: 0 for q in questions}
    for j in range(samples):
        outputs = _closed_book(lm, questions, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               temperature=temperature, seed=seed + 7919 * (j + 1), memo=memo)
        for q, o in zip(questions, outputs):
            hits[q.id] += int(metrics.contains(o, q.answers))
    return {q.id: categorize(greedy_correct=bool(metrics.contains(greedy[q.id], q.answers)), sample_hits=hits[q.id])
            for q in questions}
