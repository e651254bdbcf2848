"""The review sheet of a generated question set, and applying it.

`harness questions` writes `review.csv` beside `questions.jsonl`: one row per evaluation
item with its training twin, opened in any spreadsheet. The reviewer sets `keep` to `no`
to drop an item, or edits `question`, `train_question`, `answer`, `choices` (separated
by ` | `) or `evidence` in place. `harness questions --apply-review review.csv --out DIR`
then writes the reviewed set into DIR, with the manifest recording that it was reviewed
and how many items were kept, edited and dropped (a row deleted from the sheet counts as
dropped). An edited answer must still occur in its evidence, and be one of its choices.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from harness.data import DataError, manifest_path, read_jsonl
from harness.metrics import contains
from harness.results import atomic_write_bytes, atomic_write_json, atomic_write_jsonl

COLUMNS = ("id", "keep", "question", "train_question", "answer", "choices", "evidence", "doc_id")
KEEP = {"", "yes", "y", "keep", "1", "true", "x"}
DROP = {"no", "n", "drop", "0", "false"}
CHOICE_SEPARATOR = " | "


def _sheet_row(row: dict, twin: dict | None) -> dict:
    return {"id": row["id"], "keep": "yes", "question": row["question"],
            "train_question": twin["question"] if twin else "", "answer": (row["answers"] or [""])[0],
            "choices": CHOICE_SEPARATOR.join(row.get("choices") or []), "evidence": row.get("evidence") or "",
            "doc_id": row.get("doc_id") or ""}


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
            return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]
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
    if choices and original.get("choices") and answer != original["answers"][0] and \
            choices == list(original["choices"]):
        choices = [answer if c == original["answers"][0] else c for c in choices]  # the edit carries into choices
    if choices and answer not in choices:
        raise DataError(f"{where}: answer {answer!r} is not one of the choices {choices}")
    item = {**original, "question": row["question"] or original["question"], "answers": [answer],
            "evidence": evidence, "choices": choices, "answer_index": choices.index(answer) if choices else None}
    new_twin = None
    if twin is not None:
        new_twin = {**twin, "question": row.get("train_question") or twin["question"], "answers": [answer],
                    "evidence": evidence}
        if new_twin["question"] == item["question"]:
            raise DataError(f"{where}: 'train_question' is the same as 'question'; word the training question "
                            "differently")
    edited = (item["question"], item["answers"], item["evidence"], item["choices"]) != (
        original["question"], original["answers"], original.get("evidence"), list(original.get("choices") or [])) \
        or (twin is not None and new_twin["question"] != twin["question"])
    return item, new_twin, edited


def apply_review(sheet: str | Path, out: str | Path) -> dict:
    """Write the reviewed set into `out` from the sheet and the set beside it; returns
    the new manifest."""
    sheet = Path(sheet)
    folder = sheet.parent
    if Path(out).resolve() == folder.resolve():
        raise DataError(f"--out {out}: give a folder other than the sheet's; the sheet is read against the set "
                        "beside it, which stays as generated")
    originals = {r["id"]: r for _, r in read_jsonl(folder / "questions.jsonl")}
    train_path = folder / "train_questions.jsonl"
    twins = {t["id"].removesuffix("-train"): t for _, t in read_jsonl(train_path)} if train_path.is_file() else {}
    manifest_file = manifest_path(folder / "questions.jsonl")
    manifest = {}
    if manifest_file.is_file():
        import json

        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    rows, train, edited, dropped, seen = [], [], 0, 0, set()
    for line, row in _read_sheet(sheet):
        where = f"{sheet}:{line}"
        if row["id"] not in originals:
            raise DataError(f"{where}: id {row['id']!r} is not in {folder / 'questions.jsonl'}")
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
    dropped += len(set(originals) - seen)
    if not any(r["answers"] for r in rows):
        raise DataError(f"{sheet}: the review keeps no answerable question")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out / "questions.jsonl", rows)
    atomic_write_jsonl(out / "train_questions.jsonl", train)
    if out.resolve() != folder.resolve():
        write_review_sheet(rows, train, out / "review.csv")
    n_unanswerable = sum(not r["answers"] for r in rows)
    manifest = {**manifest, "items": {**manifest.get("items", {}), "eval": len(rows),
                                      "answerable": len(rows) - n_unanswerable, "unanswerable": n_unanswerable,
                                      "train": len(train)},
                "reviewed": True, "review": {"sheet": str(sheet), "rows": len(originals), "kept": len(rows),
                                             "edited": edited, "dropped": dropped}}
    atomic_write_json(manifest_path(out / "questions.jsonl"), manifest)
    return manifest
