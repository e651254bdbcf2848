"""The four pipelines are one function with two switches.

| pipeline | adapter | retrieval |
|---|---|---|
| base | off | off |
| finetuned | on | off |
| rag | off | on |
| rag_finetuned | on | on |

`answer(lm, questions, adapter=..., retriever=..., ...)` generates an answer for every
question (batched, greedy) and, for questions with choices, picks the choice with the
highest log-likelihood under the same prompt. One loaded model serves both adapter
settings: with the switch off, PEFT's `disable_adapter()` runs the untouched base.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from harness.models import LoadedModel, generate, loglikelihood
from harness.prompts import render, template_for


@dataclass(frozen=True)
class Pipeline:
    adapter: bool
    retrieval: bool


@contextlib.contextmanager
def adapter_switch(lm: LoadedModel, on: bool):
    """Run the body with the LoRA adapter on or off."""
    has_adapter = hasattr(lm.model, "disable_adapter") and hasattr(lm.model, "peft_config")
    if on and not has_adapter:
        raise RuntimeError("a fine-tuned pipeline was asked for, but no adapter is attached to the model")
    if has_adapter and not on:
        with lm.model.disable_adapter():
            yield
    else:
        yield


def answer(lm: LoadedModel, questions, *, adapter: bool, retriever, top_k: int, max_new_tokens: int,
           batch_size: int, multiple_choice: bool, progress=None) -> list[dict]:
    """Raw outputs per question: prompt, retrieved chunks, generation, choice scores."""
    template = template_for(retrieval=retriever is not None)
    hits = retriever.search([q.question for q in questions], top_k) if retriever is not None else [[] for _ in questions]
    prompts = [render(lm.tokenizer, template, question=q.question, passages=[h.chunk.text for h in hs])
               for q, hs in zip(questions, hits)]
    with adapter_switch(lm, adapter):
        generations = generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
        pairs, owners = [], []
        if multiple_choice:
            for i, q in enumerate(questions):
                if q.choices and q.answerable:
                    pairs += [(prompts[i], c) for c in q.choices]
                    owners += [i] * len(q.choices)
        logliks = loglikelihood(lm, pairs, batch_size=batch_size) if pairs else []
    choice_scores: dict[int, list[float]] = {}
    for i, ll in zip(owners, logliks):
        choice_scores.setdefault(i, []).append(ll)
    rows = []
    for i, (q, hs, g) in enumerate(zip(questions, hits, generations)):
        rows.append({
            "question_id": q.id, "template": template.id, "prompt": prompts[i],
            "retrieved": [{"id": h.chunk.id, "score": round(h.score, 6), "text": h.chunk.text} for h in hs],
            "output": g.text, "prompt_tokens": g.prompt_tokens, "new_tokens": g.new_tokens,
            "latency_s": g.seconds, "choice_logliks": choice_scores.get(i),
        })
    return rows


PIPELINES = {
    "base": Pipeline(adapter=False, retrieval=False),
    "finetuned": Pipeline(adapter=True, retrieval=False),
    "rag": Pipeline(adapter=False, retrieval=True),
    "rag_finetuned": Pipeline(adapter=True, retrieval=True),
}
