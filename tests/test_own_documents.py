"""A folder of mixed real files to a finished run: init, questions, review, run."""

import csv
import json

import pytest
import yaml

from conftest import tiny_config
from docfiles import (
    write_docx,
    write_html,
    write_image_only_pdf,
    write_pdf,
    write_printed_pdf,
    write_saved_page,
)
from harness.cli import main
from harness.config import load_config
from harness.data.ingest import load_documents
from harness.questions.starter import GENERATE_TOKENS_PER_SECOND, TRAIN_TOKENS_PER_SECOND, estimate_run


def _mixed_folder(root):
    docs = root / "docs"
    (docs / "ops").mkdir(parents=True)
    write_pdf(
        docs / "station.pdf",
        [
            "Halvard Station is a research outpost on the far side of the moon Ceyra.",
            "It was opened in 2091 by the Ostrel Consortium.",
        ],
    )
    write_docx(
        docs / "ops" / "engineering.docx",
        ["The chief engineer is Mira Tolland.", "The reactor delivers 40 megawatts to the crew of 12 people."],
    )
    write_html(
        docs / "ferry.html",
        "<p>The Vessin ferry line was founded in 1887 by Ilse Varga.</p>"
        "<p>Each crossing takes 45 minutes in calm weather.</p>",
        title="Ferry",
    )
    (docs / "archive.md").write_text(
        "# Archive\n\nThe archive at Lund Harbour was built in 1923 by Petra Hollis. "
        "It holds 300 charts of the northern coast.\n",
        encoding="utf-8",
    )
    (docs / "brink.txt").write_text("The archivist Tomas Brink catalogued the charts in 1951.", encoding="utf-8")
    return docs


def test_estimate_follows_the_measured_rates():
    est = estimate_run(train_tokens=7000, epochs=3, n_questions=50, max_new_tokens=16)
    slow, fast = TRAIN_TOKENS_PER_SECOND
    assert est["train_seconds"] == [round(21000 / fast), round(21000 / slow)]
    assert est["answer_seconds"] == round(2 * 4 * 50 * 16 / GENERATE_TOKENS_PER_SECOND)
    assert est["total_seconds"][1] == 60 + round(21000 / slow) + est["answer_seconds"]


def test_init_writes_a_valid_config_and_prints_the_next_commands(tmp_path, capsys, monkeypatch):
    docs = _mixed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "docs", "--out", "harness.yaml", "--questions", "q"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == ["  harness questions docs --out q", "  harness run harness.yaml"]
    cfg = load_config(tmp_path / "harness.yaml")
    assert cfg.data.documents == "docs" and cfg.data.questions == "q/questions.jsonl"
    assert cfg.train.objective == "sft" and cfg.retrieval.chunk_size == 128
    header = (tmp_path / "harness.yaml").read_text().splitlines()[:3]
    assert "5 documents" in header[0] and "Estimated run time" in header[2]
    assert main(["init", "docs", "--out", "harness.yaml"]) == 2  # never overwrites silently
    assert "already exists" in capsys.readouterr().err
    assert docs.is_dir()


def test_mixed_folder_to_a_reviewed_run(tmp_path, tiny_model_dir, capsys, monkeypatch):
    write_image_only_pdf(_mixed_folder(tmp_path) / "scan.pdf")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "docs"]) == 0
    assert "1 unreadable file(s) skipped" in capsys.readouterr().out
    assert main(["questions", "docs", "--out", "q"]) == 2
    assert "scan.pdf: PDF has no text layer" in capsys.readouterr().err
    assert main(["questions", "docs", "--out", "q", "--seed", "1", "--skip-unreadable"]) == 0
    sheet = tmp_path / "q" / "review.csv"
    with open(sheet, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["keep"] = "no"
    rows[1]["question"] = rows[1]["question"].replace("Fill in the blank:", "Complete:")
    with open(sheet, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["questions", "--apply-review", "q/review.csv", "--out", "reviewed"]) == 0
    raw = yaml.safe_load((tmp_path / "harness.yaml").read_text())
    raw["data"].update(questions="reviewed/questions.jsonl", train_questions="reviewed/train_questions.jsonl")
    small = tiny_config(tiny_model_dir)  # the tiny model and the hashing embedder instead of SmolLM2 and MiniLM
    raw.update(
        model=small["model"],
        embedder=small["embedder"],
        eval=small["eval"],
        seed=0,
        train={**small["train"], "objective": "sft"},
        retrieval={"chunk_size": 24, "top_k": 2},
    )
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["run", "tiny.yaml", "--results-dir", "results"]) == 0
    report = capsys.readouterr().out.strip().removeprefix("report: ")
    m = json.loads((tmp_path / report).with_name("metrics.json").read_text())
    data = m["data"]
    assert data["source"] == "files" and data["documents"] == 5
    n_rows = len(rows)
    assert data["questions"] == n_rows - 1 and data["train_questions"] == n_rows - 2  # one unanswerable
    qs = data["question_set"]
    assert qs["generator"] == "cloze" and qs["seed"] == 1 and qs["reviewed"] is True
    assert {k: qs["review"][k] for k in ("kept", "edited", "dropped")} == {
        "kept": n_rows - 1,
        "edited": 1,
        "dropped": 1,
    }
    assert [f["file"] for f in data["skipped_documents"]] == ["scan.pdf"]  # init set data.skip_unreadable
    tokens = m["costs"]["index"]["chunk_tokens"]
    assert (tokens["unit"], tokens["limit"]) == ("words", 256) and 5 <= tokens["min"] <= tokens["max"] <= 24
    # 10 sentences ("# Archive" is one); one cloze item per sentence, one dropped in review
    assert data["document_sentences"] == {"objective": "sft", "trained": n_rows - 2, "of": 10}
    text = (tmp_path / report).read_text()
    assert f"(objective: sft) holds {n_rows - 2} of 10 document sentences" in text
    eliminated = qs["filters"]["elimination"]
    assert f"{eliminated['answered']} of {eliminated['items']} multiple-choice items" in text
    cap = raw["eval"]["max_new_tokens"]
    predictions = [json.loads(line) for line in (tmp_path / report).with_name("predictions.jsonl").open()]
    cut = {p: sum(r["new_tokens"] >= cap for r in predictions if r["pipeline"] == p) for p in m["costs"]["pipelines"]}
    assert {p: c["at_max_new_tokens"] for p, c in m["costs"]["pipelines"].items()} == cut
    assert sum(cut.values()) > 0 and "Answers cut at the generation cap" in text  # the tiny model rambles
    assert "Chunk lengths in the embedder's words" in text
    assert (
        f"Questions generated by `cloze` (seed 1) from 5 documents, reviewed: {n_rows - 1} kept, 1 edited, "
        f"1 dropped of {n_rows}" in text
    )
    assert "1 unreadable file(s) skipped: docs/scan.pdf: PDF has no text layer" in text


def test_init_force_keeps_the_config_it_replaces(tmp_path, capsys, monkeypatch):
    _mixed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "harness.yaml").write_text("# my own config, edited by hand\nname: mine\n")
    assert main(["init", "docs"]) == 2
    assert "harness.yaml: already exists; pass --force" in capsys.readouterr().err
    assert main(["init", "docs", "--force"]) == 0
    backups = sorted(tmp_path.glob("harness.yaml.backup-*"))
    assert [b.read_text() for b in backups] == ["# my own config, edited by hand\nname: mine\n"]
    assert load_config(tmp_path / "harness.yaml").data.documents == "docs"
    assert main(["init", "docs", "--force"]) == 0  # a second --force keeps a second backup, never overwrites one
    assert len(list(tmp_path.glob("harness.yaml.backup-*"))) == 2
    (tmp_path / "cfgdir").mkdir()
    assert main(["init", "docs", "--out", "cfgdir", "--force"]) == 2
    assert "cfgdir: is a folder" in capsys.readouterr().err


def _furniture_folder(root):
    """The issue's mixed folder, small: saved wiki pages with navigation, breadcrumbs,
    sidebar, footers and scripts, PDFs printed by a browser with its header and footer,
    a DOCX and Markdown."""
    docs = root / "furnished"
    docs.mkdir()
    pages = {
        "Astoria": "<p>Astoria is a port city founded in 1887 by Ilse Varga.</p><p>The harbour of Astoria has 12 "
        "piers and a lighthouse built by Tomas Brink.</p>",
        "Derby": "<p>Derby is a river town on the Vessin where Petra Hollis opened a mill in 1902.</p>",
        "Meridia": "<p>Meridia is an island whose ferry was launched in 1931 by Mira Tolland.</p>",
    }
    for title, body in pages.items():
        write_saved_page(docs / f"{title.lower()}.html", body, title=title)
    write_printed_pdf(
        docs / "halvard.pdf",
        [
            ["Halvard Station is a research outpost opened in 2091 by Kestrel Ostrel."],
            ["Its reactor delivers 40 megawatts to 12 people."],
        ],
        title="Halvard",
        url="file:///home/ana/wiki/halvard.html",
    )
    write_printed_pdf(
        docs / "lund.pdf",
        [["The archive at Lund Harbour was built in 1923 by Petra Hollis."]],
        title="Lund",
        url="file:///home/ana/wiki/lund.html",
    )
    write_docx(docs / "engineering.docx", ["The chief engineer Dorran Quell joined in 2087."])
    (docs / "notes.md").write_text("The archivist Tomas Brink catalogued 300 charts in 1951.", encoding="utf-8")
    return docs


FURNITURE_WORDS = (
    "Home",
    "Sign in",
    "Northwind",
    "Places",
    "Recent changes",
    "Random page",
    "©",
    "Privacy",
    "last edited",
    "11:15",
    "file:",
    "1/2",
    "2/2",
    "1/1",
    "track",
)


def test_no_question_chunk_or_training_example_holds_page_furniture(tmp_path):
    from harness.answer.retrieve import chunk_documents
    from harness.data.ingest import load_documents
    from harness.questions.build import make_questions

    docs = _furniture_folder(tmp_path)
    manifest = make_questions(docs, out=tmp_path / "q", cloze_style="blank")
    rows = [
        json.loads(line)
        for name in ("questions.jsonl", "train_questions.jsonl")
        for line in (tmp_path / "q" / name).read_text().splitlines()
    ]
    texts = [r["question"] for r in rows] + [r.get("evidence") or "" for r in rows]
    texts += [c.text for c in chunk_documents(load_documents(docs), chunk_size=24, chunk_overlap=0)]
    assert len(rows) > 10
    assert not [(word, t) for t in texts for word in FURNITURE_WORDS if word in t]
    assert manifest["furniture"] == {"repeated_lines": 1, "repeated_line_copies": 3}  # the articles' own footer


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_every_file_init_and_questions_write_has_the_umasks_mode(tmp_path, monkeypatch, umask, mode):
    import os

    _mixed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    old = os.umask(umask)
    try:
        assert main(["init", "docs"]) == 0
        assert main(["questions", "docs", "--out", "q"]) == 0
    finally:
        os.umask(old)
    written = [tmp_path / "harness.yaml", *sorted((tmp_path / "q").iterdir())]
    assert len(written) >= 5
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(mode) for p in written}


def test_a_replaced_file_keeps_the_mode_it_had(tmp_path):
    from harness.store.results import atomic_write_text

    path = tmp_path / "config.yaml"
    path.write_text("old")
    path.chmod(0o640)  # someone set it for their group
    atomic_write_text(path, "new")
    assert (path.read_text(), oct(path.stat().st_mode & 0o777)) == ("new", "0o640")


def test_apply_review_names_the_paths_it_looked_at(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "review.csv").write_text("id,keep,question,answer\nf0000,yes,Q,A\n")
    assert main(["questions", "--apply-review", "review.csv", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert f"looked for {tmp_path / 'questions.jsonl'}" in err and "keep review.csv in the folder" in err
    assert main(["questions", "--apply-review", "elsewhere/review.csv", "--out", "out"]) == 2
    assert f"no such file (looked for {tmp_path / 'elsewhere' / 'review.csv'})" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_init_prints_the_estimate_its_config_header_holds(tmp_path, capsys, monkeypatch):
    import re

    _mixed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "harness.questions.starter.estimate_run",
        lambda **kw: {
            "train_tokens": 3000,
            "train_seconds": [570, 1000],
            "answer_seconds": 30,
            "total_seconds": [630, 1090],
        },
    )
    assert main(["init", "docs"]) == 0  # 10.5-18.2 min: rounded 10-18, rounded up 11-19
    printed = re.search(r"estimated run (\S+ min)", capsys.readouterr().out).group(1)
    header = re.search(
        r"Estimated run time, rates assumed for a quiet 2-core CPU \(README, Performance\): (\S+ min)",
        (tmp_path / "harness.yaml").read_text(),
    ).group(1)
    assert printed == header == "11-19 min"


def test_the_starter_budget_lets_a_restated_sentence_reach_its_answer(tmp_path, capsys, monkeypatch):
    from harness.data.items import Document
    from harness.questions.starter import answer_budget

    filler = "the old harbour road that winds past the mill and the school was first paved and lit by"
    names = ["Ilse Varga", "Tomas Brink", "Petra Hollis", "Mira Tolland", "Dorran Quell", "Halvard Ostrel"]
    long = [Document(id=f"d{i}", text=f"In spring {filler} {name}.") for i, name in enumerate(names)]
    assert len(long[0].text.split()) == 22 and answer_budget(long) == 4 + 29  # ceil(1.3 * 22) + 4
    short = [Document(id=f"s{i}", text=f"The mill was built by {name}.") for i, name in enumerate(names)]
    assert answer_budget(short) == 16  # never under the old default
    docs = _mixed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "docs"]) == 0
    budget = load_config(tmp_path / "harness.yaml").eval.max_new_tokens
    assert budget == answer_budget(load_documents(docs)) and budget >= 16
    assert f"# eval.max_new_tokens: {budget}, room for 90%" in (tmp_path / "harness.yaml").read_text()


def test_init_measure_times_this_machine_and_the_estimate_follows_the_rates(
    tmp_path, tiny_model_dir, capsys, monkeypatch
):
    from harness.questions import starter
    from harness.run import probe

    rates = probe.measure_rates(str(tiny_model_dir), target_modules=["q_proj", "v_proj"], steps=1)
    assert rates["train_tokens_per_second"] > 0 and rates["generate_tokens_per_second"] > 0
    assert rates["seconds"] < 60
    _mixed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    fixed = {"train_tokens_per_second": 50.0, "generate_tokens_per_second": 20.0, "seconds": 3.0}
    monkeypatch.setattr(probe, "measure_rates", lambda model, **kw: fixed)
    assert main(["init", "docs", "--measure"]) == 0
    out = capsys.readouterr().out
    assert "measured in 3 s: training 50 tokens/s, generating 20 tokens/s" in out
    text = (tmp_path / "harness.yaml").read_text()
    assert "rates measured on this machine (harness init --measure)" in text and "at 40-62 tokens/s" in text
    _, assumed = starter.write_starter_config("docs", out="assumed.yaml")
    _, measured = starter.write_starter_config("docs", out="measured.yaml", rates=fixed)
    assert measured["train_seconds"] == [round(assumed["train_tokens"] / 62), round(assumed["train_tokens"] / 40)]
    assert measured["answer_seconds"] == round(assumed["answer_seconds"] * 100 / 20)  # 20 tokens/s, not 100


def test_warnings_a_user_cannot_act_on_are_not_printed(tmp_path, caplog, monkeypatch):
    import logging
    import warnings

    _mixed_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(logging.getLogger("bitsandbytes.backends.cpu.ops"), "level", logging.NOTSET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["init", "docs"]) == 0
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("a warning that matters", FutureWarning)
    assert [str(w.message) for w in caught if w.category is FutureWarning] == ["a warning that matters"]
    assert not [r for r in caplog.records if "gemm_4bit_forward" in r.getMessage()]
