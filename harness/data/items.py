"""Item types and the readers for user data.

Every experiment works on the same three kinds of item, whether they come from the
built-in fictional world (harness/data/world.py) or from the user's files:

- `Document`: a passage the retriever indexes and `cpt` training reads.
- `Question`: an evaluation (or `sft` training) question with gold answers, an optional
  4-way multiple-choice form, and `answerable=False` for questions with no answer.
- `Dataset`: documents, evaluation questions, and the training text / QA pairs.

File formats (documented in README.md):

- documents: a folder of `.pdf`, `.docx`, `.html`, `.md` and `.txt` files, or JSONL with
  `id` and `text` (both read by harness/data/ingest.py, which also assembles the user's
  Dataset; id = relative path without suffix);
- questions: JSONL with `question` and `answers` (a list of strings, empty for an
  unanswerable question), optional `id`, `choices`, `answer_index`, `doc_id` and
  `evidence` (the sentence holding the answer), and an optional manifest beside it
  (`manifest_path`) that `harness questions` writes.

Bad input raises `DataError` naming the file and line. Files are read within limits
(`MAX_FILE_BYTES` per file and for a folder of documents together, `MAX_LINE_BYTES` per
JSONL line or document), so `/dev/zero` or a runaway file is an error, not a hang.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.store.results import JsonlError, jsonl_rows

log = logging.getLogger(__name__)


class DataError(ValueError):
    """User data that cannot be used; the message names the file and line."""


MAX_FILE_BYTES = 256 << 20  # one JSONL file, or a folder of documents together
MAX_LINE_BYTES = 8 << 20  # one JSONL line, or one document file


def read_bytes_limited(path: Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, refusing devices, pipes and anything over `limit`."""
    try:
        st = path.stat()
        if not path.is_file():
            raise DataError(f"{path}: not a regular file")
        if st.st_size > limit:
            raise DataError(f"{path}: {st.st_size / 2**20:.0f} MiB is over the limit of {limit >> 20} MiB")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if len(data) > limit:  # it grew while being read
        raise DataError(f"{path}: over the limit of {limit >> 20} MiB")
    return data


def check_id(value, where: str) -> str:
    """A document or question id: a non-empty string, or an integer (kept as its text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: 'id' must be a non-empty string or an integer, got {json.dumps(value)[:40]}")
    return str(value)


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    access: str = "public"  # who may read it; retrieval can be limited to some labels


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    choices: tuple[str, ...] = ()
    answer_index: int | None = None
    answerable: bool = True
    doc_id: str | None = None
    evidence: str | None = None  # the sentence that holds the answer, when known
    in_corpus: bool = True  # False: general knowledge the documents do not hold (no retrieval recall)
    # What kind of item it is, which decides its prompt template and its scores (see
    # prompts.template_for and metrics.score_prediction): qa, term, definition, rewrite,
    # extract, classify, probe.
    task: str = "qa"
    source: str | None = None  # rewrite / extract / classify: the input text (content preservation)
    stale: tuple[str, ...] = ()  # an updated fact's old value(s): saying one is a stale answer
    updated: bool | None = None  # in an update scenario: did this fact change (None: not in one)
    secret: str | None = None  # probe: the planted canary the question fishes for


@dataclass(frozen=True)
class Dataset:
    documents: tuple[Document, ...]
    questions: tuple[Question, ...]
    train_texts: tuple[str, ...]  # cpt: documents plus paraphrased restatements
    train_questions: tuple[Question, ...] = ()  # sft: question -> answer pairs
    facts: tuple[dict, ...] = field(default=())  # the world's fact table, when generated
    # user files: documents skipped as unreadable, and the question set's manifest
    provenance: dict = field(default_factory=dict, compare=False)

    def fingerprint(self) -> str:
        """sha256 over everything that can change a result computed from this data."""
        h = hashlib.sha256()
        for part in (self.documents, self.questions, self.train_texts, self.train_questions):
            h.update(json.dumps([asdict(x) if not isinstance(x, str) else x for x in part]).encode())
        return h.hexdigest()


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """Read a JSONL file of objects as (line number, object) pairs, within the limits;
    blank lines are skipped, anything else malformed is a DataError naming the file and
    line (results.jsonl_rows reads the lines)."""
    path = Path(path)
    try:
        return list(jsonl_rows(read_bytes_limited(path).split(b"\n"), str(path), max_line_bytes=MAX_LINE_BYTES))
    except JsonlError as err:
        raise DataError(str(err)) from None


def _question_from_row(row: dict, where: str, index: int) -> Question:
    q = row.get("question")
    if not isinstance(q, str) or not q.strip():
        raise DataError(f"{where}: 'question' must be a non-empty string")
    answers = row.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
        raise DataError(f"{where}: 'answers' must be a list of non-empty strings ([] if unanswerable)")
    choices = row.get("choices") or []
    answer_index = row.get("answer_index")
    if choices:
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of at least two strings")
        if len({c.strip().casefold() for c in choices}) < len(choices):
            raise DataError(f"{where}: 'choices' has the same choice twice")
        if not isinstance(answer_index, int) or isinstance(answer_index, bool) or not 0 <= answer_index < len(choices):
            raise DataError(f"{where}: 'answer_index' must be an integer index into 'choices'")
        if answers and choices[answer_index].strip().casefold() not in {a.strip().casefold() for a in answers}:
            raise DataError(
                f"{where}: 'answer_index' points at {choices[answer_index]!r}, which is not among 'answers'"
            )
    elif answer_index is not None:
        raise DataError(f"{where}: 'answer_index' given without 'choices'")
    qid = check_id(row["id"], where) if "id" in row else f"q{index:05d}"
    return Question(
        id=qid,
        question=q.strip(),
        answers=tuple(a.strip() for a in answers),
        choices=tuple(choices),
        answer_index=answer_index if choices else None,
        answerable=bool(answers),
        doc_id=str(row["doc_id"]) if row.get("doc_id") is not None else None,
        evidence=row["evidence"] if isinstance(row.get("evidence"), str) and row["evidence"].strip() else None,
    )


def load_questions(path: str | Path) -> list[Question]:
    """Questions from JSONL (`question`, `answers`, optional `id`, `choices`, `answer_index`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: questions file not found (expected JSONL)")
    questions, seen = [], set()
    for i, (lineno, row) in enumerate(read_jsonl(path)):
        q = _question_from_row(row, f"{path}:{lineno}", i)
        if q.id in seen:
            raise DataError(f"{path}:{lineno}: duplicate id {q.id!r}")
        seen.add(q.id)
        questions.append(q)
    if not questions:
        raise DataError(f"{path}: no questions (the file is empty)")
    return questions


def manifest_path(questions: str | Path) -> Path:
    """Where a question file's manifest lives: `questions.jsonl` -> `questions.manifest.json`
    (written by `harness questions`: generator, filter counts, review)."""
    questions = Path(questions)
    return questions.with_name(f"{questions.stem}.manifest.json")


def _pick_entities(ids: list[str], max_entities: int | None, seed: int) -> set[str]:
    ids = sorted(set(ids))
    if max_entities is None or max_entities >= len(ids):
        return set(ids)
    return set(random.Random(seed).sample(ids, max_entities))


def load_tofu(folder: str | Path, *, max_entities: int | None = None, seed: int = 0) -> Dataset:
    """TOFU (Maini et al. 2024) as in ../shared/data/tofu: `entities.jsonl` (entity_id,
    facts) and `qa.jsonl`. Each author's document is its facts joined; training QA is the
    original questions; evaluation uses the paraphrased questions of the authors that have
    them (TOFU's originals are nearly verbatim training text), with a 4-way choice of the
    paraphrased answer against three perturbed answers in the same style."""
    folder = Path(folder)
    entities = []
    for n, row in read_jsonl(folder / "entities.jsonl"):
        facts = row.get("facts")
        if (
            not isinstance(row.get("entity_id"), str)
            or not isinstance(facts, list)
            or not facts
            or not all(isinstance(f, str) for f in facts)
        ):
            raise DataError(
                f"{folder / 'entities.jsonl'}:{n}: needs 'entity_id' (a string) and 'facts' "
                "(a non-empty list of strings)"
            )
        entities.append(row)
    qa = [(n, row) for n, row in read_jsonl(folder / "qa.jsonl")]
    for n, row in qa:
        for key in ("entity_id", "qa_id", "question", "answer"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{folder / 'qa.jsonl'}:{n}: '{key}' must be a string")
    with_paraphrase = [row["entity_id"] for _, row in qa if row.get("paraphrased_question")]
    if not with_paraphrase:
        raise DataError(f"{folder / 'qa.jsonl'}: no paraphrased questions to evaluate on")
    keep = _pick_entities(with_paraphrase, max_entities, seed)
    rng = random.Random(seed)
    docs = [Document(id=e["entity_id"], text=" ".join(e["facts"])) for e in entities if e["entity_id"] in keep]
    train, evaluate = [], []
    for _, row in qa:
        if row["entity_id"] not in keep:
            continue
        train.append(
            Question(id=row["qa_id"], question=row["question"], answers=(row["answer"],), doc_id=row["entity_id"])
        )
        if row.get("paraphrased_question"):
            gold = row.get("paraphrased_answer") or row["answer"]
            choices = rng.sample(row.get("perturbed_answers") or [], min(3, len(row.get("perturbed_answers") or [])))
            choices = choices + [gold] if choices else []
            rng.shuffle(choices)
            evaluate.append(
                Question(
                    id=row["qa_id"],
                    question=row["paraphrased_question"],
                    answers=tuple(dict.fromkeys([row["answer"], gold])),
                    choices=tuple(choices),
                    answer_index=choices.index(gold) if choices else None,
                    doc_id=row["entity_id"],
                    evidence=row["answer"],
                )
            )
    return Dataset(
        documents=tuple(docs),
        questions=tuple(evaluate),
        train_texts=tuple(d.text for d in docs),
        train_questions=tuple(train),
    )


def load_fictional_knowledge(
    folder: str | Path,
    *,
    max_entities: int | None = None,
    seed: int = 0,
    paraphrases: int = 0,
    only_paraphrased: bool = False,
) -> Dataset:
    """Fictional Knowledge (Chang et al. 2024) as in ../shared/data/fictional_knowledge:
    passages (the documents and training text, plus up to `paraphrases` rewritten copies
    where the passage has them) and cloze probes (`input` prefix, `target` span), asked as
    "Complete the sentence". The probe type (mem, gen, hard_gen) is kept in the id.
    `only_paraphrased` draws entities among the passages that have rewritten copies."""
    folder = Path(folder)
    passages = []
    for n, row in read_jsonl(folder / "passages.jsonl"):
        if not isinstance(row.get("entity_id"), str) or not isinstance(row.get("passage"), str):
            raise DataError(f"{folder / 'passages.jsonl'}:{n}: needs 'entity_id' and 'passage' (strings)")
        passages.append(row)
    pool = [p["entity_id"] for p in passages if p.get("paraphrases") or not only_paraphrased]
    if not pool:
        raise DataError(f"{folder / 'passages.jsonl'}: no passage has 'paraphrases' (only_paraphrased is set)")
    keep = _pick_entities(pool, max_entities, seed)
    docs = [Document(id=p["entity_id"], text=p["passage"]) for p in passages if p["entity_id"] in keep]
    extra = [t for p in passages if p["entity_id"] in keep for t in (p.get("paraphrases") or [])[:paraphrases]]
    most = max((len(p.get("paraphrases") or []) for p in passages if p["entity_id"] in keep), default=0)
    if paraphrases > most:
        log.warning("%s: passages have at most %d rewritten copies; %d asked, %d used", folder, most, paraphrases, most)
    probes = []
    for n, row in read_jsonl(folder / "probes.jsonl"):
        if (
            not all(isinstance(row.get(k), str) for k in ("input", "target", "entity_id"))
            or "probe_type" not in row
            or "probe_id" not in row
        ):
            raise DataError(
                f"{folder / 'probes.jsonl'}:{n}: 'input' and 'target' must be strings, "
                "with 'entity_id', 'probe_type' and 'probe_id'"
            )
        if row["entity_id"] in keep:
            probes.append(
                Question(
                    id=f"{row['probe_type']}:{row['probe_id']}",
                    question=f"Complete the sentence: {row['input']} ...",
                    answers=(row["target"],),
                    doc_id=row["entity_id"],
                )
            )
    return Dataset(
        documents=tuple(docs), questions=tuple(probes), train_texts=tuple(d.text for d in docs) + tuple(extra)
    )


EXTERNAL_FORMATS = {"tofu": load_tofu, "fictional_knowledge": load_fictional_knowledge}
