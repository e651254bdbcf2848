"""Turning the user's files into documents and a dataset, one reader per file type.

    text = read_file(Path("docs/handbook.pdf"))            # DataError names the file
    docs, skipped = read_folder(Path("docs"), skip_unreadable=True)
    docs, skipped = read_documents("docs")                 # a folder, or a JSONL of {id, text}
    data = load_user_dataset(documents="docs", questions="q/questions.jsonl", train_questions=None)

Readers (`READERS`, by suffix), all offline:

- `.pdf`: pypdf's text layer, page by page. A PDF without one (a scan), an encrypted
  one or a damaged one is an error: harness does no OCR and guesses no passwords.
- `.docx`: python-docx, paragraphs and table rows in document order. The archive's
  uncompressed size is checked before anything is parsed (`MAX_UNPACKED_BYTES`), so a
  zip bomb costs a directory listing, not the memory of the machine.
- `.html`/`.htm`: BeautifulSoup with the standard library's parser; `script`, `style`,
  `noscript`, `template` and the head (except the title) are removed and block elements
  become line breaks. A plain extractor keeps every sentence of an exported company
  page; boilerplate removers such as trafilatura are tuned for news sites and drop short
  blocks and tables, which is where facts live in such pages.
- `.md`/`.txt`: UTF-8 text (a byte-order mark is dropped); anything else is an error
  naming the first bad byte.

A document's id is its path relative to the folder without the suffix
(`policies/leave.pdf` -> `policies/leave`), so two files differing only in their suffix
are an error. Hidden files (a name starting with a dot) are ignored.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path

from harness.data import (
    MAX_FILE_BYTES,
    DataError,
    Dataset,
    Document,
    check_id,
    load_questions,
    manifest_path,
    read_jsonl,
)

log = logging.getLogger(__name__)

MAX_UNPACKED_BYTES = 200 * 2**20  # a .docx whose members unpack to more is refused unread


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (invalid byte at offset {err.start}); save it as UTF-8") from None


def _read_pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        encrypted = reader.is_encrypted
        pages = [] if encrypted else [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as err:
        raise DataError(f"{path}: not a readable PDF ({str(err).splitlines()[0] or type(err).__name__})") from None
    if encrypted:
        raise DataError(f"{path}: encrypted PDF (password-protected); save an unprotected copy")
    text = "\n".join(pages)
    if not text.strip():
        raise DataError(f"{path}: PDF has no text layer ({len(pages)} page(s), a scan or images only); "
                        "run OCR on it first")
    return _tidy(text)


def _check_unpacked_size(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        raise DataError(f"{path}: not a valid .docx (not a zip archive)") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise DataError(f"{path}: .docx unpacks to {unpacked / 2**20:.0f} MiB, over the "
                        f"{MAX_UNPACKED_BYTES / 2**20:.0f} MiB limit (a zip bomb?); refused unread")


def _read_docx(path: Path) -> str:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    _check_unpacked_size(path)
    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a valid .docx ({str(err).splitlines()[0] or type(err).__name__})") from None
    lines = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells = list(dict.fromkeys(c.text.strip() for c in row.cells if c.text.strip()))
                if cells:
                    lines.append(" | ".join(cells))
        elif block.text.strip():
            lines.append(block.text.strip())
    return _tidy("\n\n".join(lines))  # paragraphs and rows end sentences (see retrieve.split_sentences)


_BLOCKS = ("p", "div", "li", "tr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table",
           "blockquote", "pre", "dd", "dt", "title")


def _read_html(path: Path) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "iframe"]):
        tag.decompose()
    if soup.head is not None:
        title = soup.head.title.get_text(" ", strip=True) if soup.head.title else ""
        soup.head.decompose()
        if title:
            soup.insert(0, soup.new_string(title + "\n"))
    for tag in soup.find_all(_BLOCKS):
        tag.insert_after("\n")
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
    return _tidy("\n\n".join(line for line in lines if line))  # blocks end sentences


def read_file(path: str | Path) -> str:
    """The text of one file, by its suffix (see `READERS`); DataError names the file."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown document type {path.suffix or '(no suffix)'!r}; harness reads "
                        f"{', '.join(READERS)} (or give data.documents a JSONL file)")
    try:
        return reader(path)
    except PermissionError:
        raise DataError(f"{path}: cannot read (permission denied)") from None


def _tidy(text: str) -> str:
    """Collapse runs of spaces within lines and of blank lines; keep line breaks."""
    text = re.sub(r"[ \t\f\v\u00a0]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def read_folder(folder: str | Path, *, skip_unreadable: bool = False) -> tuple[list[Document], list[dict]]:
    """Every file under `folder` as a Document (id: relative path without suffix), in path
    order. An unreadable file is an error, or with `skip_unreadable` left out and listed
    in the second return value as {"file", "reason"}. Empty files are left out silently."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    docs, skipped, seen, total = [], [], {}, 0
    for f in files:
        total += f.stat().st_size
        if total > MAX_FILE_BYTES:  # a runaway folder is an error, not hours of parsing
            raise DataError(f"{folder}: documents together are over the limit of {MAX_FILE_BYTES >> 20} MiB "
                            f"(at {f})")
        doc_id = f.relative_to(folder).with_suffix("").as_posix()
        if doc_id in seen:
            raise DataError(f"{f}: same document id {doc_id!r} as {seen[doc_id]}; rename one of them")
        seen[doc_id] = f
        try:
            text = read_file(f).strip()
        except DataError as err:
            if not skip_unreadable:
                raise
            log.warning("skipped: %s", err)
            skipped.append({"file": f.relative_to(folder).as_posix(), "reason": str(err)})
            continue
        if text:
            docs.append(Document(id=doc_id, text=text))
    return docs, skipped


def read_documents(path: str | Path, *, skip_unreadable: bool = False) -> tuple[list[Document], list[dict]]:
    """Documents from a folder of files (see harness/ingest.py for the types read) or from
    a JSONL file (`id`, `text`), and the files left out as unreadable (`skip_unreadable`;
    otherwise an unreadable file is an error)."""
    path = Path(path)
    if path.is_dir():
        docs, skipped = read_folder(path, skip_unreadable=skip_unreadable)
        if not docs:
            raise DataError(f"{path}: no non-empty documents found ({', '.join(READERS)})"
                            + (f"; {len(skipped)} unreadable file(s) skipped" if skipped else ""))
        return docs, skipped
    if not path.exists():
        raise DataError(f"{path}: documents not found (expected a folder of documents or a JSONL file)")
    docs, seen = [], set()
    for lineno, row in read_jsonl(path):
        doc_id, text = check_id(row.get("id"), f"{path}:{lineno}"), row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{lineno}: 'text' must be a non-empty string")
        if str(doc_id) in seen:
            raise DataError(f"{path}:{lineno}: duplicate id {doc_id!r}")
        seen.add(str(doc_id))
        docs.append(Document(id=str(doc_id), text=text.strip()))
    if not docs:
        raise DataError(f"{path}: no documents (the file is empty)")
    return docs, []


def load_documents(path: str | Path, *, skip_unreadable: bool = False) -> list[Document]:
    """Documents from a folder or a JSONL file (see `read_documents`)."""
    return read_documents(path, skip_unreadable=skip_unreadable)[0]


def load_user_dataset(*, documents: str, questions: str, train_questions: str | None,
                      skip_unreadable: bool = False) -> Dataset:
    """A Dataset from the user's files; training text is the documents themselves. Its
    provenance lists the documents skipped as unreadable and the question set's manifest,
    when `harness questions` wrote one."""
    docs, skipped = read_documents(documents, skip_unreadable=skip_unreadable)
    manifest = None
    if manifest_path(questions).is_file():
        try:
            manifest = json.loads(manifest_path(questions).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{manifest_path(questions)}: not a valid JSON manifest (delete it or rerun "
                            "harness questions)") from None
    return Dataset(
        documents=tuple(docs),
        questions=tuple(load_questions(questions)),
        train_texts=tuple(d.text for d in docs),
        train_questions=tuple(load_questions(train_questions)) if train_questions else (),
        provenance={"skipped_documents": skipped, "question_set": manifest},
    )


READERS = {
    ".pdf": _read_pdf,
    ".docx": _read_docx,
    ".html": _read_html,
    ".htm": _read_html,
    ".md": _read_text,
    ".txt": _read_text,
}
