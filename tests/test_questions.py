"""Generating a question set from the user's documents (harness/questions.py), and the review
round trip (harness/review.py): evidence-checked cloze items, unanswerable ghosts, leakage."""

import csv
import json

import pytest

from harness.data import DataError, Document, load_questions
from harness.ingest import load_user_dataset
from harness.metrics import contains, normalize
from harness.questions import build_question_set, closed_book_leakage, find_spans, make_questions, retrieval_round_trip
from harness.retrieve import HashingEmbedder
from harness.review import apply_review

DOCS = [
    Document(id="ferry", text="The Vessin ferry line links the islands of Dorran and Quell. The line was founded in "
                              "1887 by the harbourmaster Ilse Varga. Its oldest boat, the Margit, still sails every "
                              "Sunday. Each crossing takes 45 minutes in calm weather."),
    Document(id="station", text="Halvard Station is a research outpost on the far side of the moon Ceyra. It was "
                                "opened in 2091 by the Ostrel Consortium. The chief engineer is Mira Tolland. "
                                "Halvard Station draws its power from a reactor called Kestrel. The reactor "
                                "delivers 40 megawatts to the crew of 12 people."),
    Document(id="archive", text="The archive at Lund Harbour was built in 1923 by Petra Hollis. It holds 300 "
                                "charts of the northern coast. The archivist Tomas Brink catalogued them in 1951."),
]


def test_spans_find_names_numbers_and_dates():
    spans = find_spans("On 12 March 1887 Ilse Varga paid 45 crowns to the XR-7 office in Dorran.")
    assert [(s.kind, s.text) for s in spans] == [("date", "12 March 1887"), ("name", "Ilse Varga"),
                                                 ("number", "45"), ("code", "XR-7"), ("name", "Dorran")]
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
        assert r["evidence"].startswith(prefix) and r["evidence"][len(prefix):].strip().rstrip(".") == r["answers"][0]
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
    docs = [Document(id="a", text="The harbour was built in 1887 by Ilse Varga."),
            Document(id="b", text="The ferry office opened in 1902 in Dorran.")]
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
    import harness.pipelines as pipelines

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
        from harness.models import Generation

        texts = self.replies.pop(0)
        assert len(texts) == len(prompts)
        return [Generation(text=t, prompt_tokens=1, new_tokens=1, seconds=0.0) for t in texts]


def test_model_generator_keeps_only_answers_found_in_the_evidence(monkeypatch):
    import harness.models as models

    docs = [Document(id="a", text="The archive at Lund Harbour was built in 1923 by Petra Hollis."),
            Document(id="b", text="Halvard Station draws its power from a reactor called Kestrel."),
            Document(id="c", text="The chief engineer is Mira Tolland."),
            Document(id="d", text="It was opened in 2091 by the Ostrel Consortium."),
            Document(id="e", text="The station opened its doors in 2091.")]
    monkeypatch.setattr(models, "generate", _Scripted(
        ["Q: Who built the archive at Lund Harbour?\nA: Petra Hollis.",
         "Q: What powers Halvard Station?\nA: a fusion core",  # not in the passage
         "the engineer the engineer the",  # garbage
         "Q: Who is the chief engineer, Mira Tolland?\nA: Mira Tolland",  # gives its answer away
         "Q: When was it opened by the Ostrel Consortium?\nA: 2091"],
        ["By whom was the Lund Harbour archive built?",
         "When was it opened by the Ostrel Consortium?"]))  # not reworded
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
    data = load_user_dataset(documents=str(docs), questions=str(out / "questions.jsonl"),
                             train_questions=str(out / "train_questions.jsonl"))
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
    assert {k: manifest["review"][k] for k in ("rows", "kept", "edited", "dropped")} == \
        {"rows": 13, "kept": 11, "edited": 2, "dropped": 2}
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
    assert main(["questions", str(docs), "--out", str(tmp_path / "q"), "--generator", "model", "--model", "x",
                 "--cloze-style", "complete"]) == 2
    assert "--cloze-style complete: applies to --generator cloze only" in capsys.readouterr().err
