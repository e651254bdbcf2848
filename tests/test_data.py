"""The readers for user data and public datasets (harness/data/items.py): documents and questions
from JSONL or a folder, TOFU and fictional-knowledge layouts, and errors naming file and line."""

import json

import pytest

from harness.data.ingest import load_documents, load_user_dataset
from harness.data.items import DataError, load_questions


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_documents_from_folder_and_jsonl(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Alpha text.")
    (folder / "sub" / "b.md").write_text("Beta text.")
    (folder / ".DS_Store").write_text("x")  # hidden files are ignored
    docs = load_documents(folder)
    assert [(d.id, d.text) for d in docs] == [("a", "Alpha text."), ("sub/b", "Beta text.")]
    j = _write(tmp_path / "d.jsonl", [{"id": 1, "text": "One."}, "", {"id": "two", "text": "Two."}])
    assert [d.id for d in load_documents(j)] == ["1", "two"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    j = _write(tmp_path / "d.jsonl", [{"id": "a", "text": "ok"}, "{not json"])
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        load_documents(j)
    j = _write(tmp_path / "e.jsonl", [{"id": "a", "text": ""}])
    with pytest.raises(DataError, match=r"e\.jsonl:1: 'text' must be a non-empty string"):
        load_documents(j)
    j = _write(tmp_path / "f.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(DataError, match=r"f\.jsonl:2: duplicate id"):
        load_documents(j)


def test_empty_inputs_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no non-empty"):
        load_documents(tmp_path / "empty")
    with pytest.raises(DataError, match="empty"):
        load_questions(_write(tmp_path / "q.jsonl", []))
    with pytest.raises(DataError, match="not found"):
        load_documents(tmp_path / "missing.jsonl")


def test_questions_validate_fields(tmp_path):
    good = {"question": "Where?", "answers": ["Ostrow"], "choices": ["A", "Ostrow"], "answer_index": 1}
    qs = load_questions(_write(tmp_path / "q.jsonl", [good, {"question": "Who?", "answers": []}]))
    assert qs[0].answerable and qs[0].choices == ("A", "Ostrow") and qs[0].answer_index == 1
    assert not qs[1].answerable and qs[1].id == "q00001"
    cases = [
        ({"answers": ["x"]}, "'question' must be"),
        ({"question": "q", "answers": [1]}, "'answers' must be"),
        ({"question": "q", "answers": ["x"], "choices": ["a", "b"], "answer_index": 2}, "answer_index"),
        ({"question": "q", "answers": ["x"], "answer_index": 0}, "without 'choices'"),
    ]
    for i, (row, message) in enumerate(cases):
        with pytest.raises(DataError, match=rf"bad{i}\.jsonl:1: .*{message}"):
            load_questions(_write(tmp_path / f"bad{i}.jsonl", [row]))


def test_user_dataset_trains_on_documents(tmp_path):
    docs = _write(tmp_path / "d.jsonl", [{"id": "a", "text": "Ana was born in Ostrow."}])
    qs = _write(tmp_path / "q.jsonl", [{"question": "Where was Ana born?", "answers": ["Ostrow"]}])
    data = load_user_dataset(documents=str(docs), questions=str(qs), train_questions=None)
    assert data.train_texts == ("Ana was born in Ostrow.",)
    assert len(data.fingerprint()) == 64


def test_the_shipped_example_data_loads():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples" / "facts"
    data = load_user_dataset(
        documents=str(root / "docs"), questions=str(root / "questions.jsonl"), train_questions=None
    )
    assert len(data.documents) == 2 and len(data.questions) == 5
    assert sum(q.answerable for q in data.questions) == 4
    corpus = " ".join(d.text for d in data.documents)
    assert all(any(a in corpus for a in q.answers) for q in data.questions if q.answerable)


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "tofu").is_dir(), reason="../shared/data not present")


@needs_shared
def test_tofu_evaluates_paraphrases_and_trains_on_originals():
    from harness.data.items import load_tofu

    data = load_tofu(SHARED / "tofu", max_entities=3, seed=0)
    assert len(data.documents) == 3 and len(data.questions) == 60 and len(data.train_questions) == 60
    train_wordings = {q.question for q in data.train_questions}
    for q in data.questions:
        assert q.question not in train_wordings
        assert len(q.choices) == 4 and q.choices[q.answer_index] in q.answers
        assert q.evidence in next(d.text for d in data.documents if d.id == q.doc_id)
    assert load_tofu(SHARED / "tofu", max_entities=3, seed=0) == data


@needs_shared
def test_fictional_knowledge_probes_become_cloze_questions():
    from harness.data.items import load_fictional_knowledge

    data = load_fictional_knowledge(SHARED / "fictional_knowledge", max_entities=4, seed=1, paraphrases=9)
    assert len(data.documents) == 4 and len(data.questions) == 4 * 15
    assert {q.id.split(":")[0] for q in data.questions} == {"mem", "gen", "hard_gen"}
    assert all(q.question.startswith("Complete the sentence:") and q.answers for q in data.questions)
    assert len(data.train_texts) >= 4


def test_external_loader_names_the_bad_line(tmp_path):
    from harness.data.items import load_fictional_knowledge

    (tmp_path / "passages.jsonl").write_text('{"entity_id": "e1", "passage": "A. B."}\n')
    (tmp_path / "probes.jsonl").write_text('{"entity_id": "e1", "probe_id": "p", "probe_type": "mem", "input": 3}\n')
    with pytest.raises(DataError, match=r"probes\.jsonl:1: 'input' and 'target' must be strings"):
        load_fictional_knowledge(tmp_path)
