"""The files of a generated question set, its review sheet, and applying the review.

`harness questions` writes a set into a folder: `questions.jsonl`, `train_questions.jsonl`,
`known_questions.jsonl` (when the leakage filter set any aside), `review.csv` and
`questions.manifest.json` (`write_set`). The folder is written whole: staged beside its
place and renamed in as one set (results.staged_folder), so a kill leaves the old set
or the new one, never a mix; the manifest's `set` names the set (an id, and each JSONL
file's SHA-256) so a reader can tell its files apart from another set's. A folder is
replaced only when harness wrote it as a question set and nothing in it changed since
(results.check_own_folder); an edited `review.csv` is never replaced without `--force`,
and then the old folder is kept as `<folder>.backup-<date>-<time>`.

`review.csv` holds one row per evaluation item with its training twin, opened in any
spreadsheet. The reviewer sets `keep` to `no` to drop an item, or edits `question`,
`train_question`, `answer`, `choices` (separated by ` | `) or `evidence` in place. An
unanswerable item's evidence cell says what it was checked against (its `check`: the
ghost name found in no document, and the item and sentence it was made from).
`harness questions --apply-review review.csv --out DIR` then writes the reviewed set into
DIR, with the manifest recording that it was reviewed and how many items were kept,
edited and dropped (a row deleted from the sheet counts as dropped). An edited answer
must still occur in its evidence, and be one of its choices.

A cell that a spreadsheet would run as a formula (text starting with `=`, `+`, `-`, `@`,
a tab or a carriage return: OWASP's CSV-injection list) is written with a single quote
in front, and so is text that starts with a quote itself; reading the sheet removes one
leading quote, so every cell reads back as the text it was written from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from harness.data.items import DataError, manifest_path, read_jsonl
from harness.evaluate.metrics import contains
from harness.store.results import (
    FolderRule,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    own_folder,
    staged_folder,
)

COLUMNS = ("id", "keep", "question", "train_question", "answer", "choices", "evidence", "doc_id")
KEEP = {"", "yes", "y", "keep", "1", "true", "x"}
DROP = {"no", "n", "drop", "0", "false"}
CHOICE_SEPARATOR = " | "
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP: what makes a spreadsheet evaluate a cell
QUOTE = "'"
SET_FILES = ("questions.jsonl", "train_questions.jsonl", "known_questions.jsonl")
QUESTION_SET = FolderRule(
    kind="questions", what="a question set", legacy=(*SET_FILES, "review.csv", "questions.manifest.json")
)


def sheet_cell(text: str) -> str:
    """`text` as a sheet cell no spreadsheet runs: a formula start gets a quote in front
    (and so does a leading quote, so that `read_cell` can always remove one)."""
    return QUOTE + text if text.startswith((*FORMULA_STARTS, QUOTE)) else text


def read_cell(cell: str) -> str:
    """The text a sheet cell was written from (`sheet_cell` undone)."""
    return cell[1:] if cell.startswith(QUOTE) else cell


def _sheet_row(row: dict, twin: dict | None) -> dict:
    cells = {
        "id": row["id"],
        "keep": "yes",
        "question": row["question"],
        "train_question": twin["question"] if twin else "",
        "answer": (row["answers"] or [""])[0],
        "choices": CHOICE_SEPARATOR.join(row.get("choices") or []),
        "evidence": row.get("evidence") or row.get("check") or "",
        "doc_id": row.get("doc_id") or "",
    }
    return {k: sheet_cell(v) for k, v in cells.items()}


def write_review_sheet(rows: list[dict], train: list[dict], path: str | Path) -> None:
    """The sheet for `rows` and their training twins, written atomically (UTF-8 with a
    byte-order mark, so spreadsheet programs read it as UTF-8)."""
    path = Path(path)
    twins = {t["id"].removesuffix("-train"): t for t in train}
    sheet = io.StringIO(newline="")
    writer = csv.DictWriter(sheet, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(_sheet_row(row, twins.get(row["id"])))
    atomic_write_bytes(path, sheet.getvalue().encode("utf-8-sig"))


def _read_sheet(sheet: Path) -> list[tuple[int, dict]]:
    try:
        with open(sheet, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("id", "keep", "question", "answer") if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{sheet}: not a review sheet (no column {', '.join(missing)})")
            return [(reader.line_num, {k: read_cell((v or "").strip()) for k, v in row.items() if k}) for row in reader]
    except OSError as err:
        raise DataError(f"{sheet}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{sheet}: not UTF-8 text (save the sheet as CSV UTF-8)") from None


def _reviewed(original: dict, twin: dict | None, row: dict, where: str) -> tuple[dict, dict | None, bool]:
    """The item and its twin as the sheet row leaves them, and whether anything changed."""
    answer = row.get("answer", "")
    if not original["answers"]:
        if answer:
            raise DataError(f"{where}: an unanswerable item cannot get an answer; drop it instead (keep: no)")
        item = {**original, "question": row["question"] or original["question"]}
        return item, None, item["question"] != original["question"]
    if not answer:
        raise DataError(f"{where}: 'answer' is empty; drop the item instead (keep: no)")
    evidence = row.get("evidence", original.get("evidence") or "") or original.get("evidence") or ""
    if not contains(evidence, [answer]):
        raise DataError(f"{where}: answer {answer!r} does not occur in the evidence; edit the evidence too")
    choices = [c.strip() for c in row["choices"].split(CHOICE_SEPARATOR.strip())] if row.get("choices") else []
    if (
        choices
        and original.get("choices")
        and answer != original["answers"][0]
        and choices == list(original["choices"])
    ):
        choices = [answer if c == original["answers"][0] else c for c in choices]  # the edit carries into choices
    if choices and answer not in choices:
        raise DataError(f"{where}: answer {answer!r} is not one of the choices {choices}")
    item = {
        **original,
        "question": row["question"] or original["question"],
        "answers": [answer],
        "evidence": evidence,
        "choices": choices,
        "answer_index": choices.index(answer) if choices else None,
    }
    new_twin = None
    if twin is not None:
        new_twin = {
            **twin,
            "question": row.get("train_question") or twin["question"],
            "answers": [answer],
            "evidence": evidence,
        }
        if new_twin["question"] == item["question"]:
            raise DataError(
                f"{where}: 'train_question' is the same as 'question'; word the training question differently"
            )
    edited = (item["question"], item["answers"], item["evidence"], item["choices"]) != (
        original["question"],
        original["answers"],
        original.get("evidence"),
        list(original.get("choices") or []),
    ) or (twin is not None and new_twin["question"] != twin["question"])
    return item, new_twin, edited


def write_set(folder: str | Path, *, rows: list[dict], train: list[dict], known: list[dict], manifest: dict) -> dict:
    """Write a set's files into `folder` (a staging folder: see the module docstring) and
    return its manifest, with `set` (the id and each JSONL file's SHA-256) and the counts."""
    folder = Path(folder)
    files = {"questions.jsonl": rows, "train_questions.jsonl": train, "known_questions.jsonl": known}
    digests = {}
    for name, items in files.items():
        if items or name != "known_questions.jsonl":
            atomic_write_jsonl(folder / name, items)
            digests[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    write_review_sheet(rows, train, folder / "review.csv")
    set_id = hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:16]
    n_unanswerable = sum(not r["answers"] for r in rows)
    manifest = {
        **manifest,
        "set": {"id": set_id, "files": digests},
        "items": {
            "eval": len(rows),
            "answerable": len(rows) - n_unanswerable,
            "unanswerable": n_unanswerable,
            "train": len(train),
            "known": len(known),
        },
    }
    atomic_write_json(manifest_path(folder / "questions.jsonl"), manifest)
    return manifest


def _read_set(folder: Path) -> tuple[dict, dict, list[dict], dict]:
    """The generated set beside a sheet: items and training twins by id, the items set
    aside as known, and the manifest ({} when there is none)."""
    originals = {r["id"]: r for _, r in read_jsonl(folder / "questions.jsonl")}
    train_path, known_path = folder / "train_questions.jsonl", folder / "known_questions.jsonl"
    twins = {t["id"].removesuffix("-train"): t for _, t in read_jsonl(train_path)} if train_path.is_file() else {}
    known = [r for _, r in read_jsonl(known_path)] if known_path.is_file() else []
    manifest_file = manifest_path(folder / "questions.jsonl")
    manifest = {}
    if manifest_file.is_file():
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DataError(f"{manifest_file}: not a valid JSON manifest") from None
    return originals, twins, known, manifest


def _apply_rows(sheet: Path, originals: dict, twins: dict) -> tuple[list[dict], list[dict], int, int]:
    """The kept items and their twins as the sheet leaves them, and how many were edited
    and dropped."""
    rows, train, edited, dropped, seen = [], [], 0, 0, set()
    for line, row in _read_sheet(sheet):
        where = f"{sheet}:{line}"
        if row["id"] not in originals:
            raise DataError(f"{where}: id {row['id']!r} is not in {sheet.parent / 'questions.jsonl'}")
        if row["id"] in seen:
            raise DataError(f"{where}: id {row['id']!r} appears twice")
        seen.add(row["id"])
        keep = row["keep"].lower()
        if keep not in KEEP | DROP:
            raise DataError(f"{where}: keep must be yes or no, not {row['keep']!r}")
        if keep in DROP:
            dropped += 1
            continue
        item, twin, changed = _reviewed(originals[row["id"]], twins.get(row["id"]), row, where)
        edited += changed
        rows.append(item)
        if twin is not None:
            train.append(twin)
    train += [t for key, t in twins.items() if key not in originals]  # training only (--eval-sample): kept as is
    return rows, train, edited, dropped + len(set(originals) - seen)


def apply_review(sheet: str | Path, out: str | Path, *, force: bool = False) -> dict:
    """Write the reviewed set into `out` from the sheet and the set beside it, as one set
    (see the module docstring; `force` replaces an edited set, keeping a backup);
    returns the new manifest."""
    sheet, out = Path(sheet), Path(out)
    folder = sheet.parent
    if out.resolve() == folder.resolve():
        raise DataError(
            f"--out {out}: give a folder other than the sheet's; the sheet is read against the set "
            "beside it, which stays as generated"
        )
    if not sheet.is_file():
        raise DataError(f"--apply-review {sheet}: no such file (looked for {sheet.resolve()})")
    if not (folder / "questions.jsonl").is_file():
        raise DataError(
            f"--apply-review {sheet}: the question set it reviews is not beside it (looked for "
            f"{(folder / 'questions.jsonl').resolve()}); keep review.csv in the folder harness questions wrote"
        )
    with own_folder(out, QUESTION_SET, force=force):
        originals, twins, known, manifest = _read_set(folder)
        rows, train, edited, dropped = _apply_rows(sheet, originals, twins)
        if not any(r["answers"] for r in rows):
            raise DataError(f"{sheet}: the review keeps no answerable question")
        review = {
            "sheet": str(sheet),
            "of_set": (manifest.get("set") or {}).get("id"),
            "rows": len(originals),
            "kept": len(rows),
            "edited": edited,
            "dropped": dropped,
        }
        with staged_folder(out, QUESTION_SET, force=force) as stage:
            manifest = write_set(
                stage, rows=rows, train=train, known=known, manifest={**manifest, "reviewed": True, "review": review}
            )
    return manifest
