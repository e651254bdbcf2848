"""Question sets built from the user's documents (`harness questions DOCS --out DIR`).

    qset = build_question_set(docs, generator="cloze", seed=0)
    retrieval_round_trip(qset, docs, embedder=HashingEmbedder(), chunk_size=64, top_k=3)
    write_question_set(qset, "q/", manifest={})   # questions.jsonl, train_questions.jsonl, review.csv, manifest

Every answerable item carries its evidence, the document id and the sentence it came
from, and its gold answer is checked to occur in that sentence (whole words, SQuAD
normalisation). Two generators (`GENERATORS`):

- `cloze` (no model, deterministic for a seed): a sentence with a specific span, a date,
  year, number, code or name, masked, as Fictional Knowledge's probes are built (Chang et
  al. 2024), with a 4-way choice from spans of the same kind elsewhere in the corpus,
  of the answer's shape and found after the same word when there are enough (`choices_for`;
  numbers and years get nearby values when the corpus has too few). One document asks
  one answer at most `MAX_SAME_ANSWER` times and its title entity (`title_entity`) at
  most `MAX_TITLE_ITEMS` times; a capped sentence asks about another of its spans, or is
  counted as `answer_repeated` or `title_entity`. The evaluation item
  asks "Fill in the blank: ... ____ ..."; its training twin asks the same fact as "Which
  <kind> is missing ...?" with the span bracketed, so the two strings always differ.
  `cloze_style="complete"` asks as Fictional Knowledge's probes do instead: only spans
  that end their sentence, and the item is the sentence up to the span ("Complete the
  sentence: ... ..."), with nothing after the blank to find or copy the answer by.
- `model`: a generator model (any name `models.load_generator` takes) writes a question
  and answer for each passage and then rewords the question for training; an answer
  that is not in a sentence of the passage, a question that gives its answer away or
  that could not be parsed is rejected and counted.

Unanswerable items name entities that do not occur in the corpus: an answerable
question with its name swapped for one recombined from the corpus' names (or made up),
checked absent from every document.

Filters, each logged and counted in the manifest: answer in evidence, near duplicates
(token Jaccard >= `NEAR_DUPLICATE`), and, optionally, the retrieval round trip (is the
evidence in the top k chunks for the question? reported per item, never a reason to
drop one: retrieval is an arm under test) and closed-book leakage (does the base model
already answer it without context? those items are tagged `known` and written to
`known_questions.jsonl` instead of the new-facts set).

The set is written whole into `--out` and never over what a person wrote there: see
review.py (`write_set`) and results.check_own_folder; `make_questions` checks `--out`
before reading a document.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.items import DataError, Document, manifest_path
from harness.evaluate.metrics import contains, normalize

log = logging.getLogger(__name__)

BLANK = "____"
NEAR_DUPLICATE = 0.8  # token Jaccard of two questions at or above which the later one is dropped
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
# Span kinds: the first pattern to claim characters keeps them; a sentence's masked span is
# the first kind in this order that has three distractors.
SPAN_PATTERNS = (
    (
        "date",
        re.compile(
            rf"\b(?:\d{{1,2}} (?:{_MONTHS})(?: \d{{4}})?|(?:{_MONTHS}) \d{{1,2}}(?:, \d{{4}})?|"
            rf"(?:{_MONTHS}) \d{{4}})\b"
        ),
    ),
    ("code", re.compile(r"\b[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\b|\b[A-Z]{2,}\d*\b")),
    ("year", re.compile(r"\b(?:1[5-9]\d\d|20\d\d)\b(?![.,]\d)")),
    ("number", re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:\s?%)?(?![\w])")),
    ("name", re.compile(r"\b[A-Z][a-z]+(?:(?: (?:of|de|van|von|la|del))? [A-Z][a-z]+)*\b")),
)
KIND_WORDS = {"date": "date", "year": "year", "number": "number", "code": "code or term", "name": "name"}
# Capitalised words that start sentences without naming anything.
_NOT_NAMES = (
    set(
        """A An And As At But By During Each Every For From He Her His How If In Into It Its Most No Not
Of On Once One Or Our She Since So Some That The Their Then There These They This Those To Under Until We What When
Where Which While Who Why With You Your After Before Also All Both Many Several""".split()
    )
    | set(_MONTHS.split("|"))
    | {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
)


@dataclass(frozen=True)
class Span:
    text: str
    kind: str
    start: int
    end: int


@dataclass
class QuestionSet:
    """Evaluation rows, their training twins, rows set aside as known to the base model,
    and the counts behind them (what the manifest records)."""

    eval: list[dict]
    train: list[dict]
    known: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def find_spans(sentence: str, *, capitals: set[str] | None = None) -> list[Span]:
    """The maskable spans of a sentence, without overlaps, in text order. With `capitals`
    (the words the corpus capitalises inside sentences, `mid_sentence_capitals`), a name
    that starts the sentence loses a first word glued to it (`_glued`: "Following
    Victoria" is "Victoria" when the corpus says "Victoria" elsewhere)."""
    taken = [False] * len(sentence)
    spans = []
    for kind, pattern in SPAN_PATTERNS:
        for m in pattern.finditer(sentence):
            start, end, text = m.start(), m.end(), m.group()
            if kind == "name":
                words = text.split()
                while words and (words[0] in _NOT_NAMES or _glued(words, start == 0, capitals)):
                    start += len(words[0]) + 1
                    words = words[1:]
                text = " ".join(words)
                end = start + len(text)
                if not words or (start == 0 and len(words) == 1):  # one capitalised first word: not a name
                    continue
            if any(taken[start:end]) or not text:
                continue
            taken[start:end] = [True] * (end - start)
            spans.append(Span(text=text, kind=kind, start=start, end=end))
    return sorted(spans, key=lambda s: s.start)


def _glued(words: list[str], first: bool, capitals: set[str] | None) -> bool:
    """Whether a name's first word is a sentence's capitalised first word glued to it:
    the corpus never capitalises that word inside a sentence, and does the rest."""
    return first and capitals is not None and words[0] not in capitals and all(w in capitals for w in words[1:])


def _sentences(docs: list[Document]) -> list[tuple[str, str]]:
    from harness.answer.retrieve import split_sentences

    return [(d.id, " ".join(s.split())) for d in docs for s in split_sentences(d.text)]


def mid_sentence_capitals(sentences: list[tuple[str, str]]) -> set[str]:
    """Every capitalised word found after the first word of a sentence."""
    return {w.strip(",;:()\"'.") for _, s in sentences for w in s.split()[1:] if w[:1].isupper()}


def _pools(sentences: list[tuple[str, str]], capitals: set[str] | None = None) -> dict[str, dict[str, set[str]]]:
    """The corpus' spans by kind, each with the words found just before it (its
    context: "in", "by", "of" ...), which `choices_for` matches distractors on."""
    pools: dict[str, dict[str, set[str]]] = {}
    for _, s in sentences:
        for span in find_spans(s, capitals=capitals):
            pools.setdefault(span.kind, {}).setdefault(span.text, set()).add(_word_before(s, span.start))
    return pools


def _word_before(sentence: str, start: int) -> str:
    words = sentence[:start].split()
    return words[-1].lower().strip(",;:()\"'") if words else ""


def _shape(text: str) -> tuple:
    """A span's shape, for distractors of the same kind as the answer: its number of
    words (1, 2, 3 or more), whether it is all capitals and whether it holds a digit or %."""
    return (min(len(text.split()), 3), text.isupper(), any(c.isdigit() for c in text), "%" in text)


def _nearby_values(value: str, kind: str, rng: random.Random) -> list[str]:
    """Numbers and years near `value` when the corpus has too few of that kind."""
    digits = value.rstrip("%").strip().replace(",", "")
    try:
        n = float(digits)
    except ValueError:
        return []
    suffix = value[len(value.rstrip("%").rstrip()) :]
    if kind == "year":
        offsets = rng.sample([d for d in range(-20, 21) if d], 6)
        return [str(int(n) + d) for d in offsets]
    if n != int(n):
        return [f"{n * f:.{len(digits.split('.')[-1])}f}{suffix}" for f in (0.5, 1.5, 2, 3)]
    return [f"{int(v)}{suffix}" for v in (n + 1, n * 2, max(n - 1, 0) or n + 2, n * 3, n + 10) if int(v) != int(n)]


def choices_for(
    answer: str,
    kind: str | None,
    pools: dict[str, dict[str, set[str]]],
    *,
    evidence: str,
    rng: random.Random,
    before: str = "",
) -> tuple[list[str], int | None]:
    """A 4-way choice: the answer and three spans of the same kind from elsewhere in the
    corpus (not in the evidence sentence), of its shape (`_shape`: a two-word name
    against two-word names) when there are three, and of those first the ones found after
    the same word `before` ("in ____": places against places); ([], None) when there
    are not three. Numbers and years get nearby values when the corpus has too few."""
    if kind is None:
        return [], None
    seen, pool = {normalize(answer)}, []
    for v in pools.get(kind, {}):
        if normalize(v) not in seen and not contains(evidence, [v]):
            seen.add(normalize(v))
            pool.append(v)
    if len(pool) < 3 and kind in ("year", "number"):
        pool += [
            v for v in _nearby_values(answer, kind, rng) if normalize(v) not in seen and not seen.add(normalize(v))
        ]
    if len(pool) < 3:
        return [], None
    shaped = [v for v in pool if _shape(v) == _shape(answer)]
    pool = shaped if len(shaped) >= 3 else pool
    near = [v for v in pool if before and before in pools.get(kind, {}).get(v, ())]
    picked = (
        rng.sample(near, 3) if len(near) >= 3 else near + rng.sample([v for v in pool if v not in near], 3 - len(near))
    )
    choices = picked + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _span_kind(text: str) -> str | None:
    """The kind of a whole answer string, if it is one span."""
    spans = find_spans(text)
    return spans[0].kind if len(spans) == 1 and spans[0].text == text.strip() else None


CLOZE_STYLES = ("blank", "complete")
_SENTENCE_END = re.compile(r"""[.!?]?["']?""")  # what may follow a span that ends its sentence: . ! ? ." or nothing


def _cloze_texts(style: str, kind: str, before: str, after: str) -> tuple[str, str]:
    """The evaluation question and its training twin for a span between `before` and
    `after`, in `style` (see the module docstring); the two never coincide."""
    if style == "complete":
        return (
            f"Complete the sentence: {before.rstrip()} ...",
            f"Which {KIND_WORDS[kind]} ends this sentence? {before}[...]{after}",
        )
    return (
        f"Fill in the blank: {before}{BLANK}{after}",
        f"Which {KIND_WORDS[kind]} is missing from this sentence? {before}[...]{after}",
    )


MAX_SAME_ANSWER = 2  # items of one document with one answer ("Meridia" x7 is one fact asked seven times)
MAX_TITLE_ITEMS = 1  # items of one document whose answer is what the document is about (`title_entity`)


def title_entity(doc: Document) -> str | None:
    """What a document is about, normalised: its first line when that is a title (at most
    8 words without final punctuation), else the first name of its first sentence."""
    from harness.answer.retrieve import split_sentences

    first = next(iter(split_sentences(doc.text)), "")
    if first and len(first.split()) <= 8 and not re.search(r"[.!?:;,]$", first):
        return normalize(first) or None
    names = [s for s in find_spans(first) if s.kind == "name"]
    return normalize(names[0].text) if names else None


def _pick_span(order: list[Span], sentence: str, pools: dict, rng: random.Random, *, taken, title: str | None):
    """The first span of `order` with three distractors whose answer is not over its caps
    (`MAX_SAME_ANSWER` for its document, `MAX_TITLE_ITEMS` for the title entity), with
    its choices; or the reason none was: no_distractors, answer_repeated, title_entity.
    `taken` counts the document's items by normalised answer, and under None its title
    entity items."""
    reason = "no_distractors"
    for span in order:
        answer = normalize(span.text)
        if taken[answer] >= MAX_SAME_ANSWER:
            reason = "answer_repeated" if reason == "no_distractors" else reason
            continue
        if title and f" {answer} " in f" {title} " and taken[None] >= MAX_TITLE_ITEMS:
            reason = "title_entity"
            continue
        before = _word_before(sentence, span.start)
        choices, index = choices_for(span.text, span.kind, pools, evidence=sentence, rng=rng, before=before)
        if choices:
            taken[answer] += 1
            taken[None] += bool(title and f" {answer} " in f" {title} ")
            return span, choices, index
    return reason


def cloze_items(docs: list[Document], *, seed: int, counts: dict, style: str = "blank") -> list[tuple[dict, dict]]:
    """(evaluation row, training row) pairs, at most one per fact-bearing sentence, within
    the caps on one answer per document (`_pick_span`)."""
    if style not in CLOZE_STYLES:
        raise DataError(f"--cloze-style: {style!r} is not one of {', '.join(CLOZE_STYLES)}")
    rng = random.Random(seed)
    sentences = _sentences(docs)
    capitals = mid_sentence_capitals(sentences)
    pools = _pools(sentences, capitals)
    titles = {d.id: title_entity(d) for d in docs}
    taken: dict[str, Counter] = {d.id: Counter() for d in docs}
    pairs = []
    for doc_id, sentence in sentences:
        words = len(sentence.split())
        spans = [s for s in find_spans(sentence, capitals=capitals) if s.end - s.start < len(sentence) - 8]
        if style == "complete":
            spans = [s for s in spans if _SENTENCE_END.fullmatch(sentence[s.end :])]
        if words < 5 or words > 60 or not spans:
            continue
        counts["candidates"] += 1
        order = sorted(spans, key=lambda s: [k for k, _ in SPAN_PATTERNS].index(s.kind))
        picked = _pick_span(order, sentence, pools, rng, taken=taken[doc_id], title=titles[doc_id])
        if isinstance(picked, str):
            counts["rejected"][picked] += 1
            continue
        span, choices, index = picked
        question, twin = _cloze_texts(style, span.kind, sentence[: span.start], sentence[span.end :])
        row = {
            "question": question,
            "answers": [span.text],
            "choices": choices,
            "answer_index": index,
            "doc_id": doc_id,
            "evidence": sentence,
            "kind": span.kind,
        }
        train = {"question": twin, "answers": [span.text], "doc_id": doc_id, "evidence": sentence, "kind": span.kind}
        pairs.append((row, train))
    return pairs


_QA = re.compile(r"Q:\s*(?P<q>[^\n]+?)\s*\n+\s*A:\s*(?P<a>[^\n]+)")


def _chat(lm, text: str) -> str:
    tok = lm.tokenizer
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return text + "\n"


def _draft(passage, out, counts: dict) -> tuple | None:
    """(doc id, question, answer, evidence) from the model's reply about one passage, or
    None, counted under the check it failed."""
    from harness.answer.retrieve import split_sentences

    counts["candidates"] += 1
    m = _QA.search(out.text if "Q:" in out.text else "Q: " + out.text)
    if m is None:
        counts["rejected"]["unparseable"] += 1
        return None
    question, answer = m.group("q").strip(), m.group("a").strip().rstrip(".").strip()
    if not normalize(answer) or not question.endswith("?"):
        counts["rejected"]["unparseable"] += 1
        return None
    if len(answer.split()) > 12:
        counts["rejected"]["answer_too_long"] += 1
        return None
    if contains(question, [answer]):
        counts["rejected"]["answer_in_question"] += 1
        return None
    evidence = next((" ".join(s.split()) for s in split_sentences(passage.text) if contains(s, [answer])), None)
    if evidence is None:
        counts["rejected"]["answer_not_in_evidence"] += 1
        return None
    return passage.doc_id, question, answer, evidence


def model_items(
    docs: list[Document], *, lm, seed: int, counts: dict, batch_size: int = 8, max_new_tokens: int = 48
) -> list[tuple[dict, dict]]:
    """(evaluation row, training row) pairs written by `lm`: one question per passage,
    then a rewording of it for training. Whatever fails a check is counted and dropped."""
    from harness.answer.retrieve import chunk_documents
    from harness.models.local import generate

    rng = random.Random(seed)
    pools = _pools(_sentences(docs))
    passages = chunk_documents(docs, chunk_size=80, chunk_overlap=0)
    asks = [
        _chat(
            lm,
            "Write one question about this passage that the passage answers, and its answer copied "
            f"word for word from the passage.\n\nPassage: {p.text}\n\nReply as:\nQ: <question>\nA: <answer>",
        )
        for p in passages
    ]
    outputs = generate(lm, asks, max_new_tokens=max_new_tokens, batch_size=batch_size)
    drafts = [d for d in (_draft(p, out, counts) for p, out in zip(passages, outputs)) if d is not None]
    rewrites = (
        generate(
            lm,
            [
                _chat(
                    lm,
                    f"Rewrite this question in different words, same meaning.\n\n{q}\n\n"
                    "Reply with the new question only.",
                )
                for _, q, _, _ in drafts
            ],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        if drafts
        else []
    )
    pairs = []
    for (doc_id, question, answer, evidence), out in zip(drafts, rewrites):
        reworded = out.text.strip().splitlines()[0].strip() if out.text.strip() else ""
        if not reworded.endswith("?") or normalize(reworded) == normalize(question) or contains(reworded, [answer]):
            counts["rejected"]["no_rewording"] += 1
            continue
        kind = _span_kind(answer)
        choices, index = choices_for(answer, kind, pools, evidence=evidence, rng=rng)
        row = {
            "question": question,
            "answers": [answer],
            "choices": choices,
            "answer_index": index,
            "doc_id": doc_id,
            "evidence": evidence,
            "kind": kind or "free",
        }
        pairs.append(
            (
                row,
                {
                    "question": reworded,
                    "answers": [answer],
                    "doc_id": doc_id,
                    "evidence": evidence,
                    "kind": kind or "free",
                },
            )
        )
    return pairs


def _tokens(text: str) -> set[str]:
    return set(normalize(text.replace(BLANK, " ")).split())


def drop_near_duplicates(pairs: list[tuple[dict, dict]], counts: dict) -> list[tuple[dict, dict]]:
    """Keep the first of questions whose token sets overlap by `NEAR_DUPLICATE` or more
    (Jaccard), or that ask about the same evidence with the same answer."""
    kept, seen, facts = [], [], set()
    for row, train in pairs:
        toks = _tokens(row["question"])
        fact = (normalize(row["evidence"]), normalize(row["answers"][0]))
        if fact in facts or any(len(toks & t) / max(len(toks | t), 1) >= NEAR_DUPLICATE for t in seen):
            counts["rejected"]["near_duplicate"] += 1
            continue
        kept.append((row, train))
        seen.append(toks)
        facts.add(fact)
    return kept


def _made_up_name(rng: random.Random) -> str:
    syllables = ["ka", "vel", "dor", "ish", "tam", "ren", "os", "lu", "mar", "zen", "bri", "quo"]
    return " ".join("".join(rng.sample(syllables, 2)).capitalize() for _ in range(2))


def unanswerable_items(rows: list[dict], docs: list[Document], *, n: int, seed: int) -> list[dict]:
    """`n` questions about entities absent from every document: an answerable question
    with a name in it, the name swapped for a recombined or made-up one. Each row's
    `check` says what was checked and what it was made from (the review sheet shows it as
    the evidence)."""
    rng = random.Random(seed + 1)
    corpus = " ".join(normalize(d.text) for d in docs)
    names = sorted(
        {s.text for r in rows for s in find_spans(r["evidence"]) if s.kind == "name" and len(s.text.split()) > 1}
    )
    firsts = sorted({n.split()[0] for n in names})
    lasts = sorted({n.split()[-1] for n in names})
    out, tries = [], 0
    while len(out) < n and tries < 50 * max(n, 1):
        tries += 1
        ghost = f"{rng.choice(firsts)} {rng.choice(lasts)}" if names and tries % 3 else _made_up_name(rng)
        if f" {normalize(ghost)} " in f" {corpus} " or any(normalize(ghost) in normalize(r["question"]) for r in out):
            continue
        # a name outside the blank (the blank's answer stays unknown, now about a ghost)
        with_name = [
            (r, s)
            for r in rows
            for s in find_spans(r["question"])
            if s.kind == "name" and s.text != "Fill" and normalize(s.text) not in normalize(r["answers"][0])
        ]
        check = f"No document names {ghost!r} (checked)"
        if with_name:
            source, span = rng.choice(with_name)
            question = source["question"][: span.start] + ghost + source["question"][span.end :]
            check += f"; made from {source['id']}, {span.text!r} swapped out: {source['evidence']}"
        else:
            question = f"What do the documents say about {ghost}?"
        out.append({"question": question, "answers": [], "kind": "unanswerable", "entity": ghost, "check": check})
    return out


def build_question_set(
    docs: list[Document],
    *,
    generator: str = "cloze",
    seed: int = 0,
    lm=None,
    max_questions: int | None = None,
    unanswerable_share: float = 0.1,
    cloze_style: str = "blank",
    eval_sample: int | None = None,
) -> QuestionSet:
    """Evaluation and training questions for `docs` (see the module docstring).
    `max_questions` samples the facts (evaluation items and their twins together);
    `eval_sample` samples only the evaluation items and keeps every fact's training
    question, so the adapter still learns them all (ids `fNNNN-train` without an `fNNNN`
    item are training only)."""
    if generator not in GENERATORS:
        raise DataError(f"--generator: {generator!r} is not one of {', '.join(GENERATORS)}")
    counts = {
        "candidates": 0,
        "rejected": {
            "no_distractors": 0,
            "answer_repeated": 0,
            "title_entity": 0,
            "unparseable": 0,
            "answer_too_long": 0,
            "answer_in_question": 0,
            "answer_not_in_evidence": 0,
            "no_rewording": 0,
            "near_duplicate": 0,
        },
    }
    if generator == "model":
        if lm is None:
            raise DataError("--generator model needs a generator model (--model NAME)")
        pairs = model_items(docs, lm=lm, seed=seed, counts=counts)
    else:
        pairs = cloze_items(docs, seed=seed, counts=counts, style=cloze_style)
    checked = []
    for row, train in pairs:  # the evidence check every item passes, whatever wrote it
        if not contains(row["evidence"], row["answers"]):
            counts["rejected"]["answer_not_in_evidence"] += 1
            continue
        checked.append((row, train))
    pairs = drop_near_duplicates(checked, counts)
    if max_questions is not None and len(pairs) > max_questions:
        keep = sorted(random.Random(seed).sample(range(len(pairs)), max_questions))
        counts["over_max_questions"] = len(pairs) - max_questions
        pairs = [pairs[i] for i in keep]
    asked = set(range(len(pairs)))
    if eval_sample is not None and len(pairs) > eval_sample:
        asked = set(random.Random(seed + 2).sample(range(len(pairs)), eval_sample))
        counts["training_only"] = len(pairs) - eval_sample
    rows, train = [], []
    for i, (row, twin) in enumerate(pairs):
        if i in asked:
            rows.append({"id": f"f{i:04d}", **row})
        train.append({"id": f"f{i:04d}-train", **twin})
    n_unanswerable = round(unanswerable_share * len(rows)) if rows else 0
    rows += [
        {"id": f"u{i:04d}", **u} for i, u in enumerate(unanswerable_items(rows, docs, n=n_unanswerable, seed=seed))
    ]
    for name, n in counts["rejected"].items():
        if n:
            log.info("questions: %d rejected (%s)", n, name.replace("_", " "))
    counts["elimination"] = elimination(rows)
    return QuestionSet(eval=rows, train=train, counts=counts)


def _eliminated(row: dict) -> str | None:
    """The choice a reader without the documents would pick by elimination alone, or
    None: the one choice of another shape than the other three (`_shape`: "USA" among
    "Ilse Varga", "Lund Bay", "Derby Town"), else the one choice sharing a word with the
    question (a name the question already holds)."""
    shapes = [_shape(c) for c in row["choices"]]
    odd = [c for c, sh in zip(row["choices"], shapes) if shapes.count(sh) == 1]
    if len(odd) == 1 and len(set(shapes)) == 2:
        return odd[0]
    words = set(normalize(row["question"]).split())
    sharing = [c for c in row["choices"] if set(normalize(c).split()) & words]
    return sharing[0] if len(sharing) == 1 else None


def elimination(rows: list[dict]) -> dict:
    """How many multiple-choice items a closed-book rule (`_eliminated`) answers from the
    choices and the question alone: items, those it answers right, and the rate. Chance is
    25% for a guess; the rule guesses only when elimination points at one choice."""
    asked = [r for r in rows if r.get("choices") and r["answers"]]
    right = sum(_eliminated(r) == r["choices"][r["answer_index"]] for r in asked)
    return {
        "rule": "odd shape out, else the one choice sharing a word with the question",
        "items": len(asked),
        "answered": right,
        "rate": round(right / len(asked), 3) if asked else None,
    }


def retrieval_round_trip(
    qset: QuestionSet, docs: list[Document], *, embedder, chunk_size: int, top_k: int, method: str = "dense"
) -> dict:
    """Tag each answerable item with `retrieved`: is its evidence sentence in the top k
    chunks for its question? Reported, never used to drop an item."""
    from harness.answer.retrieve import build_retriever
    from harness.evaluate.metrics import retrieval_hit

    answerable = [r for r in qset.eval if r["answers"]]
    if not answerable:
        return {"retrieved": 0, "of": 0, "top_k": top_k}
    retriever = build_retriever(docs, embedder=embedder, method=method, chunk_size=chunk_size, chunk_overlap=0)
    hits = retriever.search([r["question"] for r in answerable], top_k)
    for row, hs in zip(answerable, hits):
        row["retrieved"] = bool(
            retrieval_hit([h.chunk.text for h in hs], evidence=row["evidence"], answers=row["answers"])
        )
    found = sum(r["retrieved"] for r in answerable)
    log.info("questions: retrieval round trip, evidence in the top %d for %d of %d", top_k, found, len(answerable))
    return {"retrieved": found, "of": len(answerable), "top_k": top_k, "method": method}


def closed_book_leakage(qset: QuestionSet, lm, *, max_new_tokens: int = 16, batch_size: int = 8) -> dict:
    """Ask the base model each answerable question without context; the ones it answers
    (a gold answer in its greedy output) are tagged `known` and moved, with their training
    twins, out of the new-facts set into `qset.known`."""
    from harness.answer.pipelines import answer
    from harness.data.items import Question

    answerable = [r for r in qset.eval if r["answers"]]
    questions = [Question(id=r["id"], question=r["question"], answers=tuple(r["answers"])) for r in answerable]
    rows = (
        answer(
            lm,
            questions,
            adapter=False,
            retriever=None,
            top_k=0,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            multiple_choice=False,
        )
        if questions
        else []
    )
    known = {r["id"] for r, out in zip(answerable, rows) if contains(out["output"], r["answers"])}
    for r in qset.eval:
        if r["id"] in known:
            r["known"] = True
    qset.known = [r for r in qset.eval if r["id"] in known]
    qset.eval = [r for r in qset.eval if r["id"] not in known]
    qset.train = [t for t in qset.train if t["id"].removesuffix("-train") not in known]
    log.info(
        "questions: closed-book leakage, the base model answers %d of %d without context", len(known), len(answerable)
    )
    return {"model": lm.name, "known": len(known), "of": len(answerable)}


def write_question_set(qset: QuestionSet, out: str | Path, *, manifest: dict, force: bool = False) -> dict[str, Path]:
    """questions.jsonl, train_questions.jsonl, known_questions.jsonl (when any), the review
    sheet and the manifest, written into `out` as one set (review.write_set): `out` must
    be new, empty, or a question set harness wrote and nobody changed since; with `force`
    an edited one is replaced and kept as a backup (results.check_own_folder)."""
    from harness.questions.review import QUESTION_SET
    from harness.store.results import own_folder

    with own_folder(out, QUESTION_SET, force=force):
        return _stage_question_set(qset, Path(out), manifest=manifest, force=force)


def _stage_question_set(qset: QuestionSet, out: Path, *, manifest: dict, force: bool) -> dict[str, Path]:
    """Write the set staged and rename it into `out` (inside `own_folder(out)`)."""
    from harness.questions.review import QUESTION_SET, write_set
    from harness.store.results import staged_folder

    with staged_folder(out, QUESTION_SET, force=force) as stage:
        write_set(
            stage,
            rows=qset.eval,
            train=qset.train,
            known=qset.known,
            manifest={**manifest, "filters": qset.counts, "reviewed": False, "review": None},
        )
    paths = {
        "questions": out / "questions.jsonl",
        "train_questions": out / "train_questions.jsonl",
        "review": out / "review.csv",
        "manifest": manifest_path(out / "questions.jsonl"),
    }
    if qset.known:
        paths["known_questions"] = out / "known_questions.jsonl"
    return paths


def make_questions(
    documents: str | Path,
    *,
    out: str | Path,
    generator: str = "cloze",
    seed: int = 0,
    model: str | None = None,
    max_questions: int | None = None,
    embedder: str | None = "hashing",
    top_k: int = 3,
    chunk_size: int = 64,
    leakage_model: str | None = None,
    skip_unreadable: bool = False,
    cloze_style: str = "blank",
    force: bool = False,
    eval_sample: int | None = None,
) -> dict:
    """Read `documents`, build the set, run the optional filters, write it into `out`
    (checked before any work: see write_question_set); returns the manifest (what
    `harness questions` prints)."""
    from harness.questions.review import QUESTION_SET
    from harness.store.results import own_folder

    if generator != "cloze" and cloze_style != "blank":
        raise DataError(f"--cloze-style {cloze_style}: applies to --generator cloze only (not {generator})")
    with own_folder(out, QUESTION_SET, force=force):
        return _make_questions(
            documents,
            out=Path(out),
            generator=generator,
            seed=seed,
            model=model,
            max_questions=max_questions,
            embedder=embedder,
            top_k=top_k,
            chunk_size=chunk_size,
            leakage_model=leakage_model,
            skip_unreadable=skip_unreadable,
            cloze_style=cloze_style,
            force=force,
            eval_sample=eval_sample,
        )


def _make_questions(
    documents: str | Path,
    *,
    out: Path,
    generator: str,
    seed: int,
    model: str | None,
    max_questions: int | None,
    embedder: str | None,
    top_k: int,
    chunk_size: int,
    leakage_model: str | None,
    skip_unreadable: bool,
    cloze_style: str,
    force: bool,
    eval_sample: int | None,
) -> dict:
    from harness.data.ingest import read_documents

    furniture: dict = {}
    docs, skipped = read_documents(documents, skip_unreadable=skip_unreadable, counts=furniture)
    lm = None
    if generator == "model":
        from harness.models.local import load_generator

        if not model:
            raise DataError("--generator model needs --model NAME (a model harness can load)")
        lm = load_generator(model)
    qset = build_question_set(
        docs,
        generator=generator,
        seed=seed,
        lm=lm,
        max_questions=max_questions,
        cloze_style=cloze_style,
        eval_sample=eval_sample,
    )
    if not any(r["answers"] for r in qset.eval):
        raise DataError(
            f"{documents}: no question could be built ({qset.counts['candidates']} candidate(s), "
            f"rejected: {json.dumps({k: v for k, v in qset.counts['rejected'].items() if v})})"
        )
    round_trip = None
    if embedder:
        from harness.answer.retrieve import load_embedder

        round_trip = {
            "embedder": embedder,
            **retrieval_round_trip(qset, docs, embedder=load_embedder(embedder), chunk_size=chunk_size, top_k=top_k),
        }
    leakage = None
    if leakage_model:
        from harness.models.local import load_generator

        base = lm if lm is not None and lm.name == leakage_model else load_generator(leakage_model)
        leakage = closed_book_leakage(qset, base)
    manifest = {
        "generator": generator,
        "cloze_style": cloze_style if generator == "cloze" else None,
        "model": model,
        "seed": seed,
        "documents": str(documents),
        "n_documents": len(docs),
        "skipped_documents": skipped,
        "furniture": furniture or None,
        "retrieval_round_trip": round_trip,
        "closed_book_leakage": leakage,
    }
    paths = _stage_question_set(qset, out, manifest=manifest, force=force)
    return json.loads(paths["manifest"].read_text(encoding="utf-8"))


GENERATORS = {"cloze": cloze_items, "model": model_items}
