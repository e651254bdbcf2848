"""What the base model already knows, in a light version of Gekhman et al. (EMNLP 2024).

Gekhman et al. found that fine-tuning on facts a model did not know raises its
hallucination on facts it did know, that early stopping limits the harm, and that
relabelling unknown facts as "I don't know" keeps accuracy on answered questions high.
To split results that way, each question is tagged by the base model's own closed-book
answers sampled `samples` times at `temperature`.

| category | the base model |
|---|---|
| known | gives the gold answer in more than half of the samples |
| weakly_known | gives it in some samples, at most half |
| unknown | never gives it |

The tags never read the greedy answer that the base pipeline is scored on. Tagging by
that answer made base's hallucination on "known" facts 0 by construction, and any other
pipeline (even one that answers exactly like base, item by item in distribution) showed a
"significant regression" there through regression to the mean. Samples are independent
draws of what the model knows, so base and an identical adapter score alike on each tag.

Sampling is seeded, so the tags are reproducible; each batch of samples is stored in the
generation memo like any other generation. With `samples=0` nothing is tagged.

    tags = tag_questions(lm, questions, samples=4, temperature=0.7, ...)
"""

from __future__ import annotations

from tqdm.auto import tqdm

from harness.answer.prompts import render, template_for
from harness.evaluate import metrics
from harness.models.local import LoadedModel, generate
from harness.store.memo import compute_in_batches, content_key

CATEGORIES = ("known", "weakly_known", "unknown")


def categorize(*, sample_hits: int, samples: int) -> str:
    """The category of a question the base model answered right in `sample_hits` of
    `samples` sampled answers."""
    if 2 * sample_hits > samples:
        return "known"
    return "weakly_known" if sample_hits > 0 else "unknown"


def _closed_book(
    lm: LoadedModel,
    questions,
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float | None,
    seed: int,
    memo=None,
    progress=None,
) -> list[str]:
    """Closed-book outputs of the base model (adapter off is the caller's business)."""
    template = template_for(retrieval=False)
    prompts = [render(lm.tokenizer, template, question=q.question) for q in questions]

    def key(unit: list[int]) -> str:
        return content_key(
            {
                "closed_book": [prompts[i] for i in unit],
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "seed": seed,
            }
        )

    def compute(unit: list[int]) -> list[str]:
        return [
            g.text
            for g in generate(
                lm,
                [prompts[i] for i in unit],
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                temperature=temperature,
                seed=seed,
            )
        ]

    return compute_in_batches(
        [len(p) for p in prompts], batch_size=batch_size, key=key, compute=compute, memo=memo, progress=progress
    )


def tag_questions(
    lm: LoadedModel,
    questions,
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    memo=None,
) -> dict[str, str]:
    """A category for each answerable factual question (task qa), from the base model's
    sampled closed-book answers only (never its greedy answer); {} when `samples` is 0."""
    questions = [q for q in questions if q.answerable and q.answers and q.task == "qa"]
    if samples == 0:
        return {}
    hits = {q.id: 0 for q in questions}
    with tqdm(total=samples * len(questions), desc=f"tag known/unknown ({samples} samples)", unit="q") as bar:
        for j in range(samples):
            outputs = _closed_book(
                lm,
                questions,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                temperature=temperature,
                seed=seed + 7919 * (j + 1),
                memo=memo,
                progress=bar.update,
            )
            for q, o in zip(questions, outputs):
                hits[q.id] += int(metrics.contains(o, q.answers))
    return {q.id: categorize(sample_hits=hits[q.id], samples=samples) for q in questions}
