"""Training material: what a fine-tuning run learns from, as token windows.

`build_examples(...)` turns training material into (prompt, completion) pairs:
`cpt` has an empty prompt and a training text (a document, a restatement) as completion;
`sft` renders each training question with the same closed-book template the pipelines use
and puts the loss on the answer only; `mixed` is both in one list.

`prepare_material(tokenizer, examples, *, max_length, ...)` tokenizes them for training:
every document is split into windows of `max_length` tokens that together cover all of
it (no token is cut off), a question/answer pair longer than `max_length` loses the start
of its prompt, and an over-long answer its end (counted and logged, never silently), and
the dev split comes from separate material, from held-out training pairs, or from the
held-out end of every document (counted as not trained). `split_by_fact` makes the
separate material of `sft` and RAFT: second wordings of facts whose other wordings train. Its `stats` are what the adapter's record and the report show: corpus tokens,
tokens trained per epoch, examples truncated and dropped.

The training loop itself is in trainer.py.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field

from harness.answer.prompts import answer_suffix, render, template_for

log = logging.getLogger(__name__)


class TrainError(ValueError):
    """Training that cannot start; the message names the config key."""


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str


def build_examples(tokenizer, *, objective: str, texts=(), questions=()) -> list[Example]:
    """Training pairs for `cpt` (texts), `sft` (questions with answers) or `mixed` (both:
    the texts first, then the pairs)."""
    docs = [Example("", t + answer_suffix(tokenizer)) for t in texts if t.strip()]
    pairs = [
        Example(
            render(tokenizer, template_for(retrieval=False, task=q.task), question=q.question),
            q.answers[0] + answer_suffix(tokenizer),
        )
        for q in questions
        if q.answers
    ]
    return {"cpt": docs, "sft": pairs, "mixed": docs + pairs}[objective]


def _holds(chunk_text: str, q) -> bool:
    text = " ".join(chunk_text.split())
    if q.evidence:
        return " ".join(q.evidence.split()) in text
    return any(a and a in text for a in q.answers)


def build_raft_examples(tokenizer, *, questions, chunks, passages: int, gold_share: float, seed: int) -> list[Example]:
    """RAFT training pairs (Zhang et al. 2024): each training question with `passages`
    chunks in the retrieval prompt. With probability `gold_share` the chunk holding the
    answer (its evidence sentence, else an answer string from the same document) is one
    of them, at a random place; otherwise every chunk is a distractor, so the model also
    learns to answer when retrieval misses. Distractors are drawn at random from chunks
    that do not hold the answer. The completion is the short gold answer (the paper's
    chain-of-thought answers need a teacher model). Questions whose gold chunk cannot be
    found are left out."""
    rng = random.Random(seed)
    template = template_for(retrieval=True)
    out = []
    for q in questions:
        if not q.answers:
            continue
        gold = [c for c in chunks if (q.doc_id is None or c.doc_id == q.doc_id) and _holds(c.text, q)]
        others = [c for c in chunks if not _holds(c.text, q)]
        if not gold or not others:
            continue
        with_gold = rng.random() < gold_share
        picked = rng.sample(others, min(len(others), passages - int(with_gold)))
        if with_gold:
            picked.insert(rng.randrange(len(picked) + 1), gold[0])
        out.append(
            Example(
                render(tokenizer, template, question=q.question, passages=[c.text for c in picked]),
                q.answers[0] + answer_suffix(tokenizer),
            )
        )
    return out


Tokens = tuple[list[int], list[int]]  # (input ids, labels with -100 where no loss)


@dataclass
class Material:
    """Tokenized training and dev items, and what they cover."""

    train: list[Tokens]
    dev: list[Tokens]
    stats: dict = field(default_factory=dict)


_TWIN_ID = re.compile(r"^(?P<fact>.+)-t\d+$")  # the world's training questions: <fact id>-t0, -t1, ...


def fact_of(question) -> str:
    """The fact a training question asks about: its id without a `-tN` wording suffix
    (the demo world's wordings of one fact); otherwise its own id."""
    m = _TWIN_ID.match(question.id)
    return m.group("fact") if m else question.id


def split_by_fact(questions: list, *, dev_fraction: float, seed: int) -> tuple[list, list]:
    """(train, dev) training questions for an `sft` dev loss that takes no fact out of
    training: a dev question is a second wording of a fact whose other wordings train,
    at most one per fact and `dev_fraction` of all at most. A fact asked only one way is
    never held out, so with one question per fact there is no dev split at all (it
    would remove those facts from training)."""
    groups: dict[str, list] = {}
    for q in questions:
        if q.answers:
            groups.setdefault(fact_of(q), []).append(q)
    spare = [g[-1] for g in groups.values() if len(g) >= 2]
    n_dev = min(split_sizes(len(questions), dev_fraction)[1], len(spare))
    dev_ids = {q.id for q in random.Random(seed).sample(spare, n_dev)}
    return [q for q in questions if q.id not in dev_ids], [q for q in questions if q.id in dev_ids]


def split_sizes(n_examples: int, dev_fraction: float) -> tuple[int, int]:
    """(train, dev) sizes of a split of question/answer pairs: none below 10 pairs."""
    n_dev = int(round(n_examples * dev_fraction)) if n_examples >= 10 else 0
    return n_examples - n_dev, n_dev


def windows(stream: list[int], max_length: int) -> list[Tokens]:
    """Windows of at most `max_length` tokens over `stream`, each starting on the last
    token of the one before: every token after the first is a next-token target in
    exactly one window, with its window's earlier tokens as context."""
    out, start = [], 0
    while True:
        ids = stream[start : start + max_length]
        if len(ids) >= 2:
            out.append((ids, [-100] + ids[1:]))
        if start + max_length >= len(stream):
            return out
        start += max_length - 1


def _pair_tokens(tokenizer, ex: Example, max_length: int) -> tuple[Tokens | None, bool, bool]:
    """(ids, labels) of a prompt/completion pair, whether it was cut, and whether its
    answer was. A pair longer than `max_length` loses the start of its prompt; an answer
    longer than what is left after half the window of prompt loses its end."""
    prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    completion = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
    if not completion:
        return None, False, False
    cut = len(prompt) + len(completion) > max_length
    answer_cut = False
    if cut:
        room = max_length - min(len(prompt), max_length // 2)
        answer_cut = len(completion) > room
        completion = completion[:room]
        prompt = prompt[len(prompt) - (max_length - len(completion)) :] if max_length > len(completion) else []
    return (prompt + completion, [-100] * len(prompt) + completion), cut, answer_cut


def _trained(items: list[Tokens]) -> int:
    """Tokens that get a loss: labelled positions after the first (a model's loss
    predicts position i from the positions before it)."""
    return sum(sum(lab != -100 for lab in labels[1:]) for _, labels in items)


def _dev_split(tokenizer, pairs, docs, *, dev_examples, dev_fraction: float, max_length: int, seed: int):
    """(dev items, where they came from, training pairs, document streams, tokens held
    out): the separate dev material, else held-out pairs, else held-out document ends."""
    dev, dev_source, held_out = [], "none", 0
    if dev_examples:
        for e in dev_examples:
            item, _, _ = _pair_tokens(tokenizer, e, max_length)
            if item is not None:
                dev.append(item)
        dev_source = "separate"
    elif pairs and split_sizes(len(pairs), dev_fraction)[1]:
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        n_dev = split_sizes(len(pairs), dev_fraction)[1]
        dev = [pairs[i] for i in order[:n_dev]]
        pairs = [pairs[i] for i in order[n_dev:]]
        dev_source = "held-out pairs"
    elif docs and dev_fraction > 0:
        kept = []
        for stream in docs:
            k = min(int(round((len(stream) - 1) * dev_fraction)), max_length - 1, len(stream) - 2)
            if k < 1:
                kept.append(stream)
                continue
            context = stream[max(0, len(stream) - max_length) :]
            dev.append((context, [-100] * (len(context) - k) + context[-k:]))
            kept.append(stream[:-k])
            held_out += k
        docs, dev_source = kept, "held-out document ends"
    return dev, dev_source, pairs, docs, held_out


def prepare_material(
    tokenizer,
    examples: list[Example],
    *,
    max_length: int,
    dev_fraction: float,
    seed: int,
    packing: bool = False,
    dev_examples: list[Example] | None = None,
) -> Material:
    """Tokenize `examples` for training (see the module docstring).

    Documents (examples with an empty prompt) start with a boundary token (BOS, else
    EOS) so that their first token is trained too, and are split into `windows`; with
    `packing`, all documents are joined into one stream first (each still between
    boundary tokens) and windowed together, so short documents fill whole windows.

    The dev split, in this order: `dev_examples` when given (separate material, e.g.
    the training questions of a `cpt` run); else `dev_fraction` of the question/answer
    pairs (at least 10 pairs); else the last `dev_fraction` of every document's tokens,
    which are then not trained on (`stats["dev_tokens_held_out"]`)."""
    if not examples:
        raise TrainError("train: no training examples (is the training data empty?)")
    boundary = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    docs = [
        [boundary] + tokenizer(e.completion, add_special_tokens=False)["input_ids"] for e in examples if not e.prompt
    ]
    pairs, truncated, answers_cut, dropped = [], 0, 0, 0
    for e in (ex for ex in examples if ex.prompt):
        item, cut, answer_cut = _pair_tokens(tokenizer, e, max_length)
        truncated, answers_cut = truncated + cut, answers_cut + answer_cut
        if item is None:
            dropped += 1
        else:
            pairs.append(item)

    dev, dev_source, pairs, docs, held_out = _dev_split(
        tokenizer, pairs, docs, dev_examples=dev_examples, dev_fraction=dev_fraction, max_length=max_length, seed=seed
    )

    streams = [[t for s in docs for t in s]] if packing and docs else docs
    train = [w for s in streams for w in windows(s, max_length)] + pairs
    if truncated:
        log.warning(
            "train.max_length %d: %d question/answer pair(s) cut to fit: the start of the prompt, and for "
            "%d of them the end of the answer too",
            max_length,
            truncated,
            answers_cut,
        )
    stats = {
        "documents": len(docs),
        "corpus_tokens": sum(len(s) - 1 for s in docs) + held_out,
        "windows": len(train) - len(pairs),
        "pairs": len(pairs),
        "packing": packing,
        "tokens_trained_per_epoch": _trained(train),
        "examples_truncated": truncated,
        "answers_truncated": answers_cut,
        "examples_dropped": dropped,
        "dev_source": dev_source,
        "dev_items": len(dev),
        "dev_tokens": _trained(dev),
        "dev_tokens_held_out": held_out,
    }
    if not train:
        raise TrainError("train: no training tokens left (are the training texts and answers empty?)")
    return Material(train=train, dev=dev, stats=stats)
