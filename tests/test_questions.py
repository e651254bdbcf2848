"""Generating a question set from the user's documents (harness/questions/build.py), and the review
round trip (harness/questions/review.py): evidence-checked cloze items, unanswerable ghosts, leakage."""

import csv
import json
import random

import pytest

from harness.answer.retrieve import HashingEmbedder, split_sentences
from harness.data.ingest import load_user_dataset
from harness.data.items import DataError, Document, load_questions
from harness.evaluate.metrics import contains, normalize
from harness.questions.build import (
    _pools,
    build_question_set,
    choices_for,
    closed_book_leakage,
    find_spans,
    make_questions,
    mid_sentence_capitals,
    retrieval_round_trip,
)
from harness.questions.review import apply_review

DOCS = [
    Document(
        id="ferry",
        text="The Vessin ferry line links the islands of Dorran and Quell. The line was founded in "
        "1887 by the harbourmaster Ilse Varga. Its oldest boat, the Margit, still sails every "
        "Sunday. Each crossing takes 45 minutes in calm weather.",
    ),
    Document(
        id="station",
        text="Halvard Station is a research outpost on the far side of the moon Ceyra. It was "
        "opened in 2091 by the Ostrel Consortium. The chief engineer is Mira Tolland. "
        "Halvard Station draws its power from a reactor called Kestrel. The reactor "
        "delivers 40 megawatts to the crew of 12 people.",
    ),
    Document(
        id="archive",
        text="The archive at Lund Harbour was built in 1923 by Petra Hollis. It holds 300 "
        "charts of the northern coast. The archivist Tomas Brink catalogued them in 1951.",
    ),
]


def test_spans_find_names_numbers_and_dates():
    spans = find_spans("On 12 March 1887 Ilse Varga paid 45 crowns to the XR-7 office in Dorran.")
    assert [(s.kind, s.text) for s in spans] == [
        ("date", "12 March 1887"),
        ("name", "Ilse Varga"),
        ("number", "45"),
        ("code", "XR-7"),
        ("name", "Dorran"),
    ]
    assert find_spans("The boat sails every Sunday.") == []  # weekdays and sentence-initial words are no names


def test_cloze_items_carry_checked_evidence_and_four_choices():
    qset = build_question_set(DOCS, generator="cloze", seed=0)
    answerable = [r for r in qset.eval if r["answers"]]
    assert len(answerable) == 12
    texts = {d.id: d.text for d in DOCS}
    for r in answerable:
        assert r["evidence"] in texts[r["doc_id"]]  # the sentence is the document's own
        assert contains(r["evidence"], r["answers"]) and r["answers"][0] not in r["question"]
        assert len(r["choices"]) == 4 and r["choices"][r["answer_index"]] == r["answers"][0]
        assert len({normalize(c) for c in r["choices"]}) == 4
        others = [c for c in r["choices"] if c != r["answers"][0]]
        corpus = " ".join(texts.values())
        assert all(c in corpus for c in others) or r["kind"] in ("year", "number")  # spans from elsewhere
    year = next(r for r in answerable if r["answers"] == ["1887"])
    assert year["question"] == "Fill in the blank: The line was founded in ____ by the harbourmaster Ilse Varga."


def test_complete_style_asks_like_the_probes_up_to_a_span_that_ends_its_sentence():
    qset = build_question_set(DOCS, generator="cloze", seed=0, cloze_style="complete")
    answerable = [r for r in qset.eval if r["answers"]]
    by_answer = {r["answers"][0]: r for r in answerable}
    assert by_answer["Mira Tolland"]["question"] == "Complete the sentence: The chief engineer is ..."
    for r in answerable:  # the span ends its sentence: nothing after the blank to copy the answer by
        prefix = r["question"].removeprefix("Complete the sentence: ").removesuffix(" ...")
        assert r["evidence"].startswith(prefix) and r["evidence"][len(prefix) :].strip().rstrip(".") == r["answers"][0]
    # "The line was founded in 1887 by the harbourmaster Ilse Varga." asks for Ilse Varga, never 1887
    assert "1887" not in by_answer and "Ilse Varga" in by_answer
    twins = {t["id"].removesuffix("-train"): t["question"] for t in qset.train}
    assert all(twins[r["id"]] != r["question"] for r in answerable)
    with pytest.raises(DataError, match="--cloze-style"):
        build_question_set(DOCS, generator="cloze", cloze_style="middle")


def test_train_and_eval_ask_the_same_facts_in_different_words():
    qset = build_question_set(DOCS, generator="cloze", seed=0)
    answerable = {r["id"]: r for r in qset.eval if r["answers"]}
    assert len(qset.train) == len(answerable)
    for t in qset.train:
        twin = answerable[t["id"].removesuffix("-train")]
        assert t["answers"] == twin["answers"] and t["evidence"] == twin["evidence"]
        assert t["question"] != twin["question"]
    assert not {t["question"] for t in qset.train} & {r["question"] for r in qset.eval}


def test_unanswerable_questions_name_entities_absent_from_the_corpus():
    qset = build_question_set(DOCS, generator="cloze", seed=0, unanswerable_share=0.25)
    ghosts = [r for r in qset.eval if not r["answers"]]
    assert len(ghosts) == 3
    corpus = normalize(" ".join(d.text for d in DOCS))
    for g in ghosts:
        assert f" {normalize(g['entity'])} " not in f" {corpus} " and g["entity"] in g["question"]


def test_a_ghost_is_never_a_name_of_the_corpus():
    docs = [
        Document(id="a", text="The harbour was built in 1887 by Ilse Varga."),
        Document(id="b", text="The ferry office opened in 1902 in Dorran."),
    ]
    qset = build_question_set(docs, generator="cloze", seed=0, unanswerable_share=1.0)
    ghosts = [r["entity"] for r in qset.eval if not r["answers"]]
    assert len(ghosts) == 2 and "Ilse Varga" not in ghosts  # the only recombination of the corpus' names


def test_a_seed_makes_the_set_reproducible():
    a = build_question_set(DOCS, generator="cloze", seed=3)
    assert a.eval == build_question_set(DOCS, generator="cloze", seed=3).eval
    assert a.eval != build_question_set(DOCS, generator="cloze", seed=4).eval  # other distractors


def test_near_duplicates_are_dropped_and_counted():
    copy = Document(id="copy", text=DOCS[0].text)  # the same page exported twice
    qset = build_question_set(DOCS + [copy], generator="cloze", seed=0)
    assert qset.counts["rejected"]["near_duplicate"] == 4
    assert len([r for r in qset.eval if r["answers"]]) == 12


def test_retrieval_round_trip_is_reported_per_item():
    qset = build_question_set(DOCS, generator="cloze", seed=0)
    rt = retrieval_round_trip(qset, DOCS, embedder=HashingEmbedder(), chunk_size=12, top_k=1)
    assert rt["of"] == 12 and rt["retrieved"] == 12  # lexical search finds each masked sentence's chunk
    rt = retrieval_round_trip(qset, DOCS[:1], embedder=HashingEmbedder(), chunk_size=12, top_k=1)
    flags = {r["id"]: r["retrieved"] for r in qset.eval if r["answers"]}
    assert rt["retrieved"] == 4 == sum(flags.values())  # only the ferry document's four are in that index
    assert all(flags[r["id"]] == (r["doc_id"] == "ferry") for r in qset.eval if r["answers"])
    assert len([r for r in qset.eval if r["answers"]]) == 12  # reported, nothing dropped


def test_closed_book_leakage_sets_known_items_aside(monkeypatch):
    import harness.answer.pipelines as pipelines

    qset = build_question_set(DOCS, generator="cloze", seed=0)
    known_ids = {"f0001", "f0005"}

    def fake_answer(lm, questions, **kwargs):  # the base model "knows" two of the facts
        return [{"output": q.answers[0] if q.id in known_ids else "no idea"} for q in questions]

    monkeypatch.setattr(pipelines, "answer", fake_answer)
    lm = type("LM", (), {"name": "base"})()
    result = closed_book_leakage(qset, lm)
    assert result == {"model": "base", "known": 2, "of": 12}
    assert {r["id"] for r in qset.known} == known_ids and all(r["known"] for r in qset.known)
    assert not known_ids & {r["id"] for r in qset.eval}
    assert not {f"{i}-train" for i in known_ids} & {t["id"] for t in qset.train}


class _Scripted:
    """Stands in for models.generate: replies in order, one list per call."""

    def __init__(self, *replies):
        self.replies = list(replies)

    def __call__(self, lm, prompts, **kwargs):
        from harness.models.local import Generation

        texts = self.replies.pop(0)
        assert len(texts) == len(prompts)
        return [Generation(text=t, prompt_tokens=1, new_tokens=1, seconds=0.0) for t in texts]


def test_model_generator_keeps_only_answers_found_in_the_evidence(monkeypatch):
    import harness.models.local as models

    docs = [
        Document(id="a", text="The archive at Lund Harbour was built in 1923 by Petra Hollis."),
        Document(id="b", text="Halvard Station draws its power from a reactor called Kestrel."),
        Document(id="c", text="The chief engineer is Mira Tolland."),
        Document(id="d", text="It was opened in 2091 by the Ostrel Consortium."),
        Document(id="e", text="The station opened its doors in 2091."),
    ]
    monkeypatch.setattr(
        models,
        "generate",
        _Scripted(
            [
                "Q: Who built the archive at Lund Harbour?\nA: Petra Hollis.",
                "Q: What powers Halvard Station?\nA: a fusion core",  # not in the passage
                "the engineer the engineer the",  # garbage
                "Q: Who is the chief engineer, Mira Tolland?\nA: Mira Tolland",  # gives its answer away
                "Q: When was it opened by the Ostrel Consortium?\nA: 2091",
            ],
            ["By whom was the Lund Harbour archive built?", "When was it opened by the Ostrel Consortium?"],
        ),
    )  # not reworded
    lm = type("LM", (), {"tokenizer": object(), "name": "scripted"})()
    qset = build_question_set(docs, generator="model", lm=lm, seed=0, unanswerable_share=0)
    assert qset.counts["candidates"] == 5
    rejected = {k: v for k, v in qset.counts["rejected"].items() if v}
    assert rejected == {"answer_not_in_evidence": 1, "unparseable": 1, "answer_in_question": 1, "no_rewording": 1}
    [row] = qset.eval
    assert row["answers"] == ["Petra Hollis"] and row["evidence"] == docs[0].text and row["doc_id"] == "a"
    assert qset.train[0]["question"] == "By whom was the Lund Harbour archive built?"


def test_model_generator_on_the_tiny_model_rejects_its_garbage(tiny_lm):
    qset = build_question_set(DOCS, generator="model", lm=tiny_lm, seed=0)
    counts = qset.counts
    kept = len([r for r in qset.eval if r["answers"]])
    assert counts["candidates"] == 3  # one passage per document
    assert kept + sum(counts["rejected"].values()) == counts["candidates"]
    for r in qset.eval:
        if r["answers"]:
            assert contains(r["evidence"], r["answers"])


def _docs_folder(tmp_path):
    """DOCS as a folder of .txt files."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for d in DOCS:
        (docs / f"{d.id}.txt").write_text(d.text)
    return docs


def test_make_questions_writes_the_set_the_runner_reads(tmp_path):
    docs = _docs_folder(tmp_path)
    out = tmp_path / "q"
    manifest = make_questions(docs, out=out, seed=0)
    assert manifest["items"] == {"eval": 13, "answerable": 12, "unanswerable": 1, "train": 12, "known": 0}
    assert manifest["retrieval_round_trip"]["of"] == 12 and manifest["reviewed"] is False
    data = load_user_dataset(
        documents=str(docs), questions=str(out / "questions.jsonl"), train_questions=str(out / "train_questions.jsonl")
    )
    assert len(data.questions) == 13 and len(data.train_questions) == 12
    assert data.questions[0].evidence and data.questions[0].doc_id
    assert data.provenance["question_set"]["generator"] == "cloze"


def _edit_sheet(sheet, edit):
    with open(sheet, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    edit(rows)
    with open(sheet, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_review_round_trip_counts_kept_edited_dropped(tmp_path):
    make_questions(_docs_folder(tmp_path), out=tmp_path / "q", seed=0, embedder=None)
    sheet = tmp_path / "q" / "review.csv"

    def edit(rows):
        rows[0]["keep"] = "no"
        rows[3]["question"] = rows[3]["question"].replace("Fill in the blank", "Complete")
        year = next(r for r in rows if r["answer"] == "1887")
        year["answer"], year["evidence"] = "1888", year["evidence"].replace("1887", "1888")
        del rows[2]

    _edit_sheet(sheet, edit)
    manifest = apply_review(sheet, tmp_path / "reviewed")
    assert manifest["reviewed"] is True
    assert {k: manifest["review"][k] for k in ("rows", "kept", "edited", "dropped")} == {
        "rows": 13,
        "kept": 11,
        "edited": 2,
        "dropped": 2,
    }
    qs = load_questions(tmp_path / "reviewed" / "questions.jsonl")
    year = next(q for q in qs if "founded" in q.question)
    assert year.answers == ("1888",) and year.choices[year.answer_index] == "1888" and "1887" not in year.choices
    assert [q.id for q in qs if q.question.startswith("Complete:")] == ["f0003"]
    train = [json.loads(line) for line in (tmp_path / "reviewed" / "train_questions.jsonl").read_text().splitlines()]
    assert len(train) == 10 and any(t["answers"] == ["1888"] for t in train)


def test_review_refuses_an_answer_outside_its_evidence(tmp_path):
    make_questions(_docs_folder(tmp_path), out=tmp_path / "q", seed=0, embedder=None)
    sheet = tmp_path / "q" / "review.csv"
    _edit_sheet(sheet, lambda rows: rows[3].update(answer="Atlantis"))
    with pytest.raises(DataError, match=r"review\.csv:5: answer 'Atlantis' does not occur in the evidence"):
        apply_review(sheet, tmp_path / "reviewed")


def test_questions_command_input_errors_exit_2(tmp_path, capsys):
    from harness.cli import main

    assert main(["questions", "--out", str(tmp_path / "q")]) == 2
    assert "give DOCS" in capsys.readouterr().err
    assert main(["questions", str(tmp_path / "missing"), "--out", str(tmp_path / "q")]) == 2
    assert "documents not found" in capsys.readouterr().err
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(DOCS[0].text)
    assert main(["questions", str(docs), "--out", str(tmp_path / "q"), "--generator", "model"]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert (
        main(
            [
                "questions",
                str(docs),
                "--out",
                str(tmp_path / "q"),
                "--generator",
                "model",
                "--model",
                "x",
                "--cloze-style",
                "complete",
            ]
        )
        == 2
    )
    assert "--cloze-style complete: applies to --generator cloze only" in capsys.readouterr().err


# --- nothing a user wrote is replaced; a set is written whole (#22) ----------------------


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harness: error: ")]
    assert len(err) == 1, err
    return err[0]


def test_a_second_questions_run_never_erases_the_reviewers_edits(tmp_path, capsys):
    """README's loop: generate, edit review.csv, generate again with another --seed."""
    from harness.cli import main

    docs, q = _docs_folder(tmp_path), tmp_path / "q"
    assert main(["questions", str(docs), "--out", str(q), "--embedder", ""]) == 0
    _edit_sheet(q / "review.csv", lambda rows: rows[0].update(question="My reworded question?"))
    edited = _snapshot(q)
    assert main(["questions", str(docs), "--out", str(q), "--embedder", "", "--seed", "1"]) == 2
    err = _one_line(capsys)
    assert f"{q / 'review.csv'}: edited since harness wrote it" in err and "--force" in err
    assert _snapshot(q) == edited and sorted(p.name for p in tmp_path.iterdir()) == ["docs", "q"]
    assert main(["questions", str(docs), "--out", str(q), "--embedder", "", "--seed", "1", "--force"]) == 0
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("q.backup-")]
    assert len(backups) == 1 and _snapshot(backups[0]) == edited  # the reviewer's work, kept byte for byte
    assert json.loads((q / "questions.manifest.json").read_text())["seed"] == 1
    assert "My reworded question?" not in (q / "review.csv").read_text(encoding="utf-8-sig")


def test_an_unedited_set_is_replaced_whole_and_nothing_of_the_old_one_stays(tmp_path):
    from harness.questions.build import write_question_set

    first = build_question_set(DOCS, seed=0)
    first.known = [first.eval.pop(0)]
    write_question_set(first, tmp_path / "q", manifest={"seed": 0})
    assert (tmp_path / "q" / "known_questions.jsonl").is_file()
    second = build_question_set(DOCS, seed=1)
    paths = write_question_set(second, tmp_path / "q", manifest={"seed": 1})  # nothing edited: no --force needed
    assert not (tmp_path / "q" / "known_questions.jsonl").exists()  # no file of the first set beside the second
    manifest = json.loads(paths["manifest"].read_text())
    import hashlib

    for name, digest in manifest["set"]["files"].items():
        assert hashlib.sha256((tmp_path / "q" / name).read_bytes()).hexdigest() == digest
    assert sorted(manifest["set"]["files"]) == ["questions.jsonl", "train_questions.jsonl"]
    assert (
        manifest["set"]["id"]
        != json.loads(write_question_set(first, tmp_path / "q2", manifest={"seed": 0})["manifest"].read_text())["set"][
            "id"
        ]
    )


def test_questions_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    from harness.cli import main

    docs = _docs_folder(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    (mine / "questions.jsonl").write_text('{"question": "mine?", "answers": ["x"]}\n')
    before = _snapshot(mine)
    for extra in ([], ["--force"]):
        assert main(["questions", str(docs), "--out", str(mine), "--embedder", "", *extra]) == 2
        assert "not a question set harness wrote" in _one_line(capsys)
        assert _snapshot(mine) == before
    sheet_folder = tmp_path / "q"
    assert main(["questions", str(docs), "--out", str(sheet_folder), "--embedder", ""]) == 0
    for extra in ([], ["--force"]):
        assert main(["questions", "--apply-review", str(sheet_folder / "review.csv"), "--out", str(mine), *extra]) == 2
        assert "not a question set harness wrote" in _one_line(capsys)
        assert _snapshot(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "mine", "q"]


def test_applying_a_review_again_replaces_its_own_unedited_set_but_not_edits(tmp_path, capsys):
    from harness.cli import main

    make_questions(_docs_folder(tmp_path), out=tmp_path / "q", seed=0, embedder=None)
    sheet, reviewed = tmp_path / "q" / "review.csv", tmp_path / "reviewed"
    assert main(["questions", "--apply-review", str(sheet), "--out", str(reviewed)]) == 0
    _edit_sheet(sheet, lambda rows: rows[1].update(keep="no"))
    assert main(["questions", "--apply-review", str(sheet), "--out", str(reviewed)]) == 0  # its own, unedited
    assert json.loads((reviewed / "questions.manifest.json").read_text())["review"]["dropped"] == 1
    _edit_sheet(reviewed / "review.csv", lambda rows: rows[0].update(question="A second round of review?"))
    edited = _snapshot(reviewed)
    assert main(["questions", "--apply-review", str(sheet), "--out", str(reviewed)]) == 2
    assert "review.csv: edited since harness wrote it" in _one_line(capsys)
    assert _snapshot(reviewed) == edited
    assert main(["questions", "--apply-review", str(sheet), "--out", str(reviewed), "--force"]) == 0
    assert [_snapshot(p) for p in tmp_path.iterdir() if p.name.startswith("reviewed.backup-")] == [edited]


KILL = r"""
import os, pathlib, signal, sys
from harness.questions import review
from harness.cli import main

point, final = sys.argv[1], sys.argv[2]
real_rename, real_sheet = pathlib.Path.rename, review.write_review_sheet

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def rename(self, target):
    target = pathlib.Path(target)
    if point == "between-renames" and target.name == pathlib.Path(final).name:
        die()  # the old set moved aside, the new one not yet in its place
    if point == "before-backup" and target.name.startswith(pathlib.Path(final).name + ".backup-"):
        die()  # the new set in place, the old one not yet under its backup name
    return real_rename(self, target)

def sheet(*args, **kwargs):
    if point == "mid-write":
        die()  # questions.jsonl and train_questions.jsonl written, review.csv and the manifest not
    return real_sheet(*args, **kwargs)

pathlib.Path.rename, review.write_review_sheet = rename, sheet
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("point", ["mid-write", "between-renames", "before-backup"])
def test_a_killed_questions_run_leaves_the_old_set_or_the_new_one_never_a_mix(point, tmp_path, capsys):
    """SIGKILL while a second `questions` replaces a set (an unedited one; with --force an
    edited one, which must then survive as the backup), then what the next command sees."""
    import subprocess
    import sys

    from harness.cli import main
    from harness.store.results import recover_folder

    docs, q = _docs_folder(tmp_path), tmp_path / "q"
    assert main(["questions", str(docs), "--out", str(q), "--embedder", ""]) == 0
    force = ["--force"] if point == "before-backup" else []
    if force:
        _edit_sheet(q / "review.csv", lambda rows: rows[0].update(question="My reworded question?"))
    old = _snapshot(q)
    argv = ["questions", str(docs), "--out", str(q), "--embedder", "", "--seed", "1", *force]
    p = subprocess.run([sys.executable, "-c", KILL, point, str(q), *argv], capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr  # killed where it was meant to be
    recover_folder(q)  # what the next writer of q does first, under its lock
    backups = [_snapshot(p) for p in tmp_path.iterdir() if p.name.startswith("q.backup-")]
    if point == "before-backup":  # the new set had replaced the old one, which is kept as the backup
        assert backups == [old]
        assert json.loads((q / "questions.manifest.json").read_text())["seed"] == 1
    else:
        assert _snapshot(q) == old and backups == []
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("q.backup-"))
    assert left == [".q.lock", "docs", "q"]  # the killed writer's lock, stale: the next one takes it over
    assert main(["questions", str(docs), "--out", str(q), "--embedder", "", "--seed", "2"]) == 0
    capsys.readouterr()
    assert json.loads((q / "questions.manifest.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("q.backup-")) == ["docs", "q"]


def test_review_sheet_cells_never_run_as_formulas_and_read_back_as_written(tmp_path):
    """OWASP's CSV-injection starts (=, +, -, @, tab, CR) from document sentences and file
    names: quoted in review.csv, and --apply-review of the untouched sheet changes nothing."""
    docs = _docs_folder(tmp_path)
    (docs / "@team.txt").write_text(
        '=HYPERLINK("http://127.0.0.1:9/x") was the note Ilse Varga left in 1887 at Dorran. '
        "+1 was the count Petra Hollis wrote in 1923 at Lund Harbour. "
        "-2 was the score Tomas Brink gave in 1951 to the charts. "
        "@Mira Tolland signed the log in 2091 at Halvard Station. "
        "'Quoted text was what Ilse Varga wrote in 1888 for the ferry."
    )
    make_questions(docs, out=tmp_path / "q", seed=0, embedder=None)
    sheet = tmp_path / "q" / "review.csv"
    with open(sheet, encoding="utf-8-sig", newline="") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    quoted = {c[:2] for c in cells if c.startswith("'")}
    assert {"'=", "'+", "'-", "'@", "''"} <= quoted, quoted
    manifest = apply_review(sheet, tmp_path / "reviewed")
    assert (manifest["review"]["edited"], manifest["review"]["dropped"]) == (0, 0)
    original = [json.loads(line) for line in (tmp_path / "q" / "questions.jsonl").read_text().splitlines()]
    reviewed = [json.loads(line) for line in (tmp_path / "reviewed" / "questions.jsonl").read_text().splitlines()]
    assert reviewed == original
    assert {r["doc_id"] for r in reviewed if r.get("doc_id")} >= {"@team"}
    assert any(r["evidence"].startswith("=HYPERLINK") for r in reviewed if r.get("evidence"))
    # a reviewer's edit of a quoted cell keeps its text, quote removed
    _edit_sheet(
        sheet,
        lambda rows: next(r for r in rows if r["evidence"].startswith("'-2")).update(
            evidence="'-2 was the score Tomas Brink gave in 1951 to all charts."
        ),
    )
    edited = apply_review(sheet, tmp_path / "reviewed2")
    rows = [json.loads(line) for line in (tmp_path / "reviewed2" / "questions.jsonl").read_text().splitlines()]
    assert edited["review"]["edited"] == 1
    assert any(r.get("evidence") == "-2 was the score Tomas Brink gave in 1951 to all charts." for r in rows)


def test_every_formula_start_is_quoted_and_every_cell_reads_back():
    from harness.questions.review import read_cell, sheet_cell

    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'x", "''x", "'=x", "plain", "", "a=b"):
        cell = sheet_cell(text)
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) and read_cell(cell) == text
    assert sheet_cell("plain") == "plain" and sheet_cell("=1") == "'=1"


MERIDIA = [
    Document(
        id="meridia",
        text="Meridia\n\nThe island of Meridia lies in the Vessin Sea. The ferry to Meridia leaves from Astoria Harbour. "
        "The governor of Meridia is Petra Hollis. Wool from Meridia is sold in Derby Town. Each summer Meridia hosts "
        "the Lantern Fair. The school of Meridia was opened by Tomas Brink. A storm hit Meridia and Quell Point.",
    ),
    Document(
        id="astoria",
        text="The port of Astoria Harbour was built by Ilse Varga. Its lighthouse faces Halvard Rock. Traders from "
        "Lund Bay and Kestrel Point meet there.",
    ),
    Document(id="rivers", text="The rivers Ostrel, Vanta and Quill meet at Corran before the sea."),
    Document(id="sailors", text="Sailors from Brannock visit Tellis and Morrow every spring."),
    Document(
        id="varga",
        text="The harbour of Lund Bay is old. Boats were repaired by Ilse Varga in spring. The old mill was sold "
        "to Ilse Varga last year. The boats are painted by Ilse Varga each winter.",
    ),
]


def test_one_answer_is_asked_at_most_twice_per_document_and_its_title_once():
    qset = build_question_set(MERIDIA, seed=0, unanswerable_share=0)
    answers = [(r["doc_id"], normalize(r["answers"][0])) for r in qset.eval]
    assert answers.count(("meridia", "meridia")) == 1  # the document's title entity, once
    assert answers.count(("varga", "ilse varga")) == 2 and qset.counts["rejected"]["answer_repeated"] == 1
    assert sum(d == "meridia" for d, _ in answers) == 7  # a capped sentence asks about another of its names


def test_distractors_have_the_answers_shape_and_context():
    qset = build_question_set(MERIDIA, seed=0, unanswerable_share=0)
    shapes = [{len(c.split()) for c in row["choices"]} for row in qset.eval]
    assert {1} in shapes and {2} in shapes  # one-word names against one-word names, two against two
    assert all(len(s) == 1 for s in shapes), [r["choices"] for r in qset.eval]
    sentences = [
        ("d", "It was built by Ana Lund."),
        ("d", "It was opened by Bo Kerr."),
        ("d", "Made by Cy Dunn."),
        ("d", "Made by Di Holm."),
        ("d", "It lies in Vessin Bay."),
        ("d", "A port in Quell Sound."),
        ("d", "A town in Derby Vale."),
    ]
    pools = _pools(sentences)
    for seed in range(5):  # "by ____": the people found after "by", never the places found after "in"
        choices, _ = choices_for(
            "Ana Lund", "name", pools, evidence="It was built by Ana Lund.", rng=random.Random(seed), before="by"
        )
        assert sorted(choices) == ["Ana Lund", "Bo Kerr", "Cy Dunn", "Di Holm"]


def test_a_sentences_first_word_is_not_glued_to_the_name_after_it():
    docs = [
        Document(
            id="v",
            text="Following Victoria the river turns north. The bridge at Victoria is old. "
            "Ilse Varga built it in 1887. The mayor thanked Ilse Varga.",
        )
    ]
    capitals = mid_sentence_capitals([("v", s) for s in split_sentences(docs[0].text)])
    assert [s.text for s in find_spans("Following Victoria the river turns north.", capitals=capitals)] == ["Victoria"]
    assert [s.text for s in find_spans("Ilse Varga built it in 1887.", capitals=capitals)] == ["Ilse Varga", "1887"]
    assert [s.text for s in find_spans("Following Victoria the river turns north.")] == ["Following Victoria"]


def test_the_review_sheet_shows_what_an_unanswerable_item_was_checked_against(tmp_path):
    make_questions(_docs_folder(tmp_path), out=tmp_path / "q", seed=0, embedder=None)
    with open(tmp_path / "q" / "review.csv", encoding="utf-8-sig", newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    ghosts = [r for r in rows.values() if not r["answer"]]
    assert ghosts
    for row in ghosts:
        item = json.loads(
            next(
                line
                for line in (tmp_path / "q" / "questions.jsonl").read_text().splitlines()
                if json.loads(line)["id"] == row["id"]
            )
        )
        assert row["evidence"].startswith(f"No document names {item['entity']!r} (checked); made from f")
        source = rows[row["evidence"].split("made from ")[1].split(",")[0]]
        assert row["evidence"].endswith(f": {source['evidence']}")  # the sentence the ghost question came from
    manifest = apply_review(tmp_path / "q" / "review.csv", tmp_path / "reviewed")  # the cell reads back as no edit
    assert manifest["review"]["edited"] == 0


def test_the_elimination_rate_counts_items_a_closed_book_rule_answers_from_the_choices():
    from harness.questions.build import elimination

    rows = [
        {
            "question": "Fill in the blank: She moved to ____.",
            "answers": ["USA"],
            "answer_index": 0,
            "choices": ["USA", "Ilse Varga", "Lund Bay", "Derby Town"],
        },  # the odd shape out
        {
            "question": "Fill in the blank: Thalia Volcano stands above ____.",
            "answers": ["Thalia Bay"],
            "answer_index": 1,
            "choices": ["Lund Bay", "Thalia Bay", "Derby Town", "Quell Point"],
        },  # shares "Thalia"
        {
            "question": "Fill in the blank: The mill was sold to ____.",
            "answers": ["Tomas Brink"],
            "answer_index": 2,
            "choices": ["Lund Bay", "Derby Town", "Tomas Brink", "Quell Point"],
        },  # nothing to eliminate by
        {
            "question": "Fill in the blank: It opened in ____.",
            "answers": ["DJ"],
            "answer_index": 0,
            "choices": ["DJ", "Petra Hollis", "AM", "UN"],
        },  # the odd one out is a distractor: no credit
        {"question": "What do the documents say about Kaven Dor?", "answers": [], "kind": "unanswerable"},
    ]
    assert elimination(rows) == {
        "rule": "odd shape out, else the one choice sharing a word with the question",
        "items": 4,
        "answered": 2,
        "rate": 0.5,
    }
    qset = build_question_set(MERIDIA, seed=0)
    assert qset.counts["elimination"]["items"] == sum(bool(r.get("choices")) for r in qset.eval)


def test_eval_sample_evaluates_a_sample_and_trains_on_every_fact(tmp_path, capsys):
    from harness.cli import main

    folder = _docs_folder(tmp_path)
    full = make_questions(folder, out=tmp_path / "all", seed=0, embedder=None)
    assert main(["questions", str(folder), "--out", str(tmp_path / "q"), "--eval-sample", "4", "--embedder", ""]) == 0
    rows = [json.loads(line) for line in (tmp_path / "q" / "questions.jsonl").read_text().splitlines()]
    train = [json.loads(line) for line in (tmp_path / "q" / "train_questions.jsonl").read_text().splitlines()]
    assert sum(bool(r["answers"]) for r in rows) == 4
    assert len(train) == full["items"]["train"] > 4  # every fact still trained
    assert {r["id"] + "-train" for r in rows if r["answers"]} < {t["id"] for t in train}
    manifest = apply_review(tmp_path / "q" / "review.csv", tmp_path / "reviewed")
    assert manifest["items"]["train"] == len(train)  # the review keeps the training-only questions
