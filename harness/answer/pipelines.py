"""The four pipelines are one function with two switches.

| pipeline | adapter | retrieval |
|---|---|---|
| base | off | off |
| finetuned | on | off |
| rag | off | on |
| rag_finetuned | on | on |
| raft | on (the RAFT adapter) | on |

`answer(lm, questions, adapter=..., retriever=..., ...)` generates an answer for every
question (batched, greedy) and, for questions with choices, picks the choice with the
highest log-likelihood under the same prompt. One loaded model serves both adapter
settings: with the switch off, PEFT's `disable_adapter()` runs the untouched base.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.answer.prompts import continuation, render, template_for
from harness.models.generator import adapter_switch, generate, loglikelihood, mc_protocol
from harness.models.local import LoadedModel
from harness.store.memo import compute_in_batches, content_key

# Part of every generation's cache key; bump it when stored generations may be wrong.
# 2: before it, `train.repeats` re-runs answered with the first seed's adapter and stored
# those outputs under the other seeds' keys.
GENERATION_FORMAT = 2


@dataclass(frozen=True)
class Pipeline:
    adapter: bool
    retrieval: bool
    adapter_name: str = "default"  # which attached adapter, when `adapter` is on


def _letter_choices(lm: LoadedModel, prompts: list[str], questions, *, batch_size: int) -> dict[int, list[float]]:
    """Multiple choice by the generated letter (a served model without log-likelihoods):
    the chosen choice scores 0 and the others -1. An output naming no letter is scored as
    a wrong answer: 0 goes to a choice other than the gold one."""
    from harness.models.endpoint import parse_letter

    asked = [i for i, q in enumerate(questions) if q.choices and q.answerable]
    outs = generate(lm, [prompts[i] for i in asked], max_new_tokens=4, batch_size=batch_size)
    scores = {}
    for i, g in zip(asked, outs):
        n, gold = len(questions[i].choices), questions[i].answer_index
        pick = parse_letter(g.text, n)
        pick = pick if pick is not None else (gold + 1) % n
        scores[i] = [0.0 if c == pick else -1.0 for c in range(n)]
    return scores


def _compute_unit(
    lm: LoadedModel,
    prompts: list[str],
    questions,
    *,
    max_new_tokens: int,
    multiple_choice: bool,
    batch_size: int,
    letter_prompts: list[str] | None = None,
) -> list[dict]:
    generations = generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    pairs, owners = [], []
    if multiple_choice and letter_prompts is not None:
        choice_scores = _letter_choices(lm, letter_prompts, questions, batch_size=batch_size)
        return [
            {
                "output": g.text,
                "prompt_tokens": g.prompt_tokens,
                "new_tokens": g.new_tokens,
                "latency_s": g.seconds,
                "choice_logliks": choice_scores.get(i),
            }
            for i, g in enumerate(generations)
        ]
    if multiple_choice:
        for i, q in enumerate(questions):
            if q.choices and q.answerable:
                pairs += [(prompts[i], continuation(prompts[i], c)) for c in q.choices]
                owners += [i] * len(q.choices)
    logliks = loglikelihood(lm, pairs, batch_size=batch_size) if pairs else []
    choice_scores: dict[int, list[float]] = {}
    for i, ll in zip(owners, logliks):
        choice_scores.setdefault(i, []).append(ll)
    return [
        {
            "output": g.text,
            "prompt_tokens": g.prompt_tokens,
            "new_tokens": g.new_tokens,
            "latency_s": g.seconds,
            "choice_logliks": choice_scores.get(i),
        }
        for i, g in enumerate(generations)
    ]


def render_prompts(lm: LoadedModel, questions, templates, hits) -> tuple[list[str], list[str] | None]:
    """Each question's prompt (its template, its retrieved passages), and for an endpoint
    that answers multiple choice by letter the lettered prompts too (else None)."""
    prompts = [
        render(lm.tokenizer, t, question=q.question, passages=[h.chunk.text for h in hs])
        for q, t, hs in zip(questions, templates, hits)
    ]
    if mc_protocol(lm) != "letter":
        return prompts, None
    from harness.models.endpoint import letter_question

    letter_prompts = [
        render(
            lm.tokenizer,
            t,
            question=letter_question(q.question, q.choices) if q.choices else q.question,
            passages=[h.chunk.text for h in hs],
        )
        for q, t, hs in zip(questions, templates, hits)
    ]
    return prompts, letter_prompts


def answer(
    lm: LoadedModel,
    questions,
    *,
    adapter: bool,
    retriever,
    top_k: int,
    max_new_tokens: int,
    batch_size: int,
    multiple_choice: bool,
    adapter_name: str = "default",
    memo=None,
    progress=None,
) -> list[dict]:
    """Raw outputs per question: prompt, retrieved chunks, generation, choice scores.

    With a `memo` (see memo.py; its namespace must name the model and adapter), each
    batch is looked up first and stored as soon as it is computed, so a killed run loses
    at most the batch in flight."""
    templates = [template_for(retrieval=retriever is not None, task=q.task) for q in questions]
    # An item with an input text (a sentence to rewrite, a passage to extract from) is
    # searched by that text, so retrieval brings the nearest worked examples.
    hits = (
        retriever.search([q.source or q.question for q in questions], top_k)
        if retriever is not None
        else [[] for _ in questions]
    )
    prompts, letter_prompts = render_prompts(lm, questions, templates, hits)
    letter = letter_prompts is not None

    def key(unit: list[int]) -> str:
        return content_key(
            {
                "format": GENERATION_FORMAT,
                "max_new_tokens": max_new_tokens,
                "multiple_choice": multiple_choice,
                "items": [[prompts[i], list(questions[i].choices) if questions[i].answerable else []] for i in unit],
                **({"mc_protocol": "letter"} if letter else {}),
            }
        )

    def compute(unit: list[int]) -> list[dict]:
        return _compute_unit(
            lm,
            [prompts[i] for i in unit],
            [questions[i] for i in unit],
            max_new_tokens=max_new_tokens,
            multiple_choice=multiple_choice,
            batch_size=batch_size,
            letter_prompts=[letter_prompts[i] for i in unit] if letter else None,
        )

    with adapter_switch(lm, adapter, adapter_name):
        computed = compute_in_batches(
            [len(p) for p in prompts], batch_size=batch_size, key=key, compute=compute, memo=memo, progress=progress
        )
    rows = []
    for i, (q, hs) in enumerate(zip(questions, hits)):
        rows.append(
            {
                "question_id": q.id,
                "template": templates[i].id,
                "prompt": prompts[i],
                "retrieved": [{"id": h.chunk.id, "score": round(h.score, 6), "text": h.chunk.text} for h in hs],
                **computed[i],
            }
        )
    return rows


PIPELINES = {
    "base": Pipeline(adapter=False, retrieval=False),
    "finetuned": Pipeline(adapter=True, retrieval=False),
    "rag": Pipeline(adapter=False, retrieval=True),
    "rag_finetuned": Pipeline(adapter=True, retrieval=True),
    "raft": Pipeline(adapter=True, retrieval=True, adapter_name="raft"),
}
