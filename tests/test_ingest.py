"""Reading the user's document files (harness/ingest.py): PDF, DOCX, HTML, Markdown and text
to plain text, one-line errors for bad files, and a zip bomb refused before parsing."""

import pytest

from docfiles import write_docx, write_encrypted_pdf, write_html, write_image_only_pdf, write_pdf, write_zip_bomb_docx
from harness import ingest
from harness.data import DataError
from harness.ingest import load_documents, read_documents


def test_every_type_reads_to_its_text(tmp_path):
    write_pdf(tmp_path / "station.pdf", ["Halvard Station opened in 2091.", "Mira Tolland runs engineering."])
    write_docx(tmp_path / "ferry.docx", ["The Vessin ferry line started in 1887."],
               table=[["Captain", "Ilse Varga"], ["Boats", "4"]])
    write_html(tmp_path / "page.html", "<h1>Reactor</h1><p>The reactor is called <b>Kestrel</b>.</p>"
                                       "<ul><li>Output: 40 MW</li></ul>", title="Power")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("# Notes\n\nDorran is the archivist.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\ufeffCeyra keeps the logbook.", encoding="utf-8")
    docs = {d.id: d.text for d in load_documents(tmp_path)}
    assert sorted(docs) == ["b", "ferry", "notes/a", "page", "station"]
    assert "Halvard Station opened in 2091." in docs["station"] and "Mira Tolland runs engineering." in docs["station"]
    assert docs["ferry"] == "The Vessin ferry line started in 1887.\n\nCaptain | Ilse Varga\n\nBoats | 4"
    assert docs["page"] == "Power\n\nReactor\n\nThe reactor is called Kestrel.\n\nOutput: 40 MW"
    assert "SCRIPT" not in docs["page"] and "TEMPLATE" not in docs["page"] and "color" not in docs["page"]
    assert docs["notes/a"] == "# Notes\n\nDorran is the archivist."
    assert docs["b"] == "Ceyra keeps the logbook."  # the byte-order mark is dropped


@pytest.mark.parametrize("make, message", [
    (lambda p: (p / "empty.pdf").write_bytes(b""), r"empty\.pdf: not a readable PDF"),
    (lambda p: write_image_only_pdf(p / "scan.pdf"), r"scan\.pdf: PDF has no text layer"),
    (lambda p: write_encrypted_pdf(p / "locked.pdf", ["Secret."]), r"locked\.pdf: encrypted PDF"),
    (lambda p: write_zip_bomb_docx(p / "bomb.docx", unpacked_mib=210), r"bomb\.docx: \.docx unpacks to 21\d MiB"),
    (lambda p: (p / "fake.docx").write_text("not a zip"), r"fake\.docx: not a valid \.docx"),
    (lambda p: (p / "latin.txt").write_bytes("Caf\xe9 Tolland.".encode("latin-1")),
     r"latin\.txt: not UTF-8 text \(invalid byte at offset 3\)"),
    (lambda p: (p / "sheet.xlsx").write_bytes(b"PK"), r"sheet\.xlsx: unknown document type '\.xlsx'"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, make, message):
    (tmp_path / "ok.txt").write_text("A fine document.")
    make(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        load_documents(tmp_path)
    assert "\n" not in str(err.value)


def test_zip_bomb_is_refused_before_parsing(tmp_path, monkeypatch):
    bomb = write_zip_bomb_docx(tmp_path / "bomb.docx", unpacked_mib=3)
    monkeypatch.setattr(ingest, "MAX_UNPACKED_BYTES", 2 * 2**20)
    import docx

    def never(*args, **kwargs):
        raise AssertionError("parsed a zip bomb")

    monkeypatch.setattr(docx, "Document", never)
    with pytest.raises(DataError, match=r"unpacks to \d MiB, over the 2 MiB limit"):
        ingest.read_file(bomb)


def test_skip_unreadable_counts_what_it_left_out(tmp_path):
    (tmp_path / "ok.txt").write_text("A fine document.")
    write_image_only_pdf(tmp_path / "scan.pdf")
    (tmp_path / "data.csv").write_text("a,b")
    (tmp_path / ".hidden").write_text("ignored")
    docs, skipped = read_documents(tmp_path, skip_unreadable=True)
    assert [d.id for d in docs] == ["ok"]
    assert [s["file"] for s in skipped] == ["data.csv", "scan.pdf"]
    assert "no text layer" in skipped[1]["reason"]


def test_two_files_with_one_id_are_an_error(tmp_path):
    (tmp_path / "policy.txt").write_text("One.")
    write_docx(tmp_path / "policy.docx", ["Two."])
    with pytest.raises(DataError, match=r"policy\.txt: same document id 'policy' as .*policy\.docx"):
        load_documents(tmp_path)
