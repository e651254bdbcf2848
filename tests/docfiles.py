"""Real document files for the tests, produced with the libraries that write them
(fpdf2 for PDF, python-docx for Word): no binary is committed."""

from __future__ import annotations

import zipfile
from pathlib import Path


def write_pdf(path: Path, paragraphs: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for text in paragraphs:
        pdf.multi_cell(0, 6, text)
        pdf.ln(3)
    pdf.output(str(path))
    return path


def write_image_only_pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 80, 40, style="F")  # a drawing, no text: what a scan looks like to a text extractor
    pdf.output(str(path))
    return path


def write_encrypted_pdf(path: Path, paragraphs: list[str]) -> Path:
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(path.with_name(f"plain-{path.name}"), paragraphs)
    writer = PdfWriter()
    writer.append(PdfReader(str(plain)))
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(str(path))
    plain.unlink()
    return path


def write_docx(path: Path, paragraphs: list[str], table: list[list[str]] | None = None) -> Path:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    document.save(str(path))
    return path


def write_zip_bomb_docx(path: Path, *, unpacked_mib: int) -> Path:
    """A real .docx with one extra member of `unpacked_mib` MiB of zeros (a few hundred kB
    compressed)."""
    write_docx(path, ["A harmless looking paragraph."])
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("word/media/padding.bin", "w") as member:
            block = bytes(2**20)
            for _ in range(unpacked_mib):
                member.write(block)
    return path


def write_html(path: Path, body: str, *, title: str = "") -> Path:
    path.write_text(f"<!doctype html><html><head><title>{title}</title>"
                    "<style>p { color: red; }</style><script>var secret = 'SCRIPT_TEXT';</script></head>"
                    f"<body><noscript>Enable NOSCRIPT_TEXT</noscript>{body}<template>TEMPLATE_TEXT</template>"
                    "<script>document.write('MORE_SCRIPT');</script></body></html>", encoding="utf-8")
    return path
