"""The bad-input matrix: what a new user gets wrong, through the real command line.

Every case in CASES is one row of the "Bad inputs" table in docs/reference.md (`python
tests/test_bad_inputs.py` prints the table). A case builds its files in a fresh folder,
runs `harness ...` (in process through `harness.cli.main`, or as a subprocess of the
installed console script where the case needs its own process: dropped privileges, a
file-size limit) and checks the contract:

- an input error exits 2 with exactly one line on stderr, `harness: error: ...`, that
  names the file, line or key (the case's pattern), and no traceback;
- an accepted input exits 0;
- the results folder holds exactly what it held before (nothing half-written);
- every cache entry there before is unchanged, and every entry there after verifies.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docfiles import corrupt_docx_member, replace_docx_member, write_deep_pdf  # noqa: E402  (the path above)

GOOD_Q = {
    "id": "q1",
    "question": "Who runs engineering at Halvard Station?",
    "answers": ["Mira Tolland"],
    "choices": ["Ilse Varga", "Mira Tolland", "Kestrel Ostrel", "Brannock Quell"],
    "answer_index": 1,
}
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")
# A progress bar (tqdm: "answer [base]:   0%|          | 0/28 [00:00<?, ?q/s]") is not a
# message; in process it is on (the console-script cases run with TQDM_DISABLE=1).
PROGRESS_LINE = re.compile(r"^[^|]*: +\d+%\|.*\| \d+/\d+ \[")


class Box:
    """One case's folder: a config, data files, a results folder and a cache."""

    def __init__(self, root: Path, model_dir: Path):
        self.root, self.model_dir = root, model_dir
        self.results = root / "results"
        self.cache = root / "cache"
        self.env: dict[str, str] = {"HARNESS_CACHE": str(self.cache)}

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def jsonl(self, name: str, rows: list, *, sep: str = "\n") -> Path:
        return self.file(name, "".join(json.dumps(r) + sep for r in rows))

    def raw(self, **overrides) -> dict:
        from conftest import tiny_config

        raw = tiny_config(self.model_dir, name="case")
        raw["output_dir"] = str(self.results)
        for path, value in overrides.items():
            node = raw
            keys = path.split("__")
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = value
        return raw

    def config(self, text: str | bytes | None = None, **overrides) -> str:
        """A config file: `text` as given, or the tiny config with `a__b=value` overrides."""
        return str(self.file("case.yaml", text if text is not None else yaml.safe_dump(self.raw(**overrides))))

    def own_data(
        self, *, questions: list | None = None, qfile: Path | None = None, docs: Path | None = None, **overrides
    ) -> str:
        """A config on the user's own files (good ones unless given)."""
        if docs is None:
            docs = self.root / "docs"
            self.file("docs/station.md", "Mira Tolland runs engineering at Halvard Station.")
        if qfile is None:
            qfile = self.jsonl("questions.jsonl", questions if questions is not None else [GOOD_Q])
        train = self.jsonl("train.jsonl", [{"question": "Who runs engineering?", "answers": ["Mira Tolland"]}])
        return self.config(
            data={"documents": str(docs), "questions": str(qfile), "train_questions": str(train)}, **overrides
        )

    def model_copy(self, name: str, drop: tuple[str, ...] = ()) -> Path:
        target = self.root / name
        shutil.copytree(self.model_dir, target)
        for f in drop:
            (target / f).unlink(missing_ok=True)
        return target

    def finished_run(self, name: str = "run") -> Path:
        """A results folder shaped like a finished run's: the smallest metrics.json the
        schema accepts (harness/store/schema.py), nothing measured."""
        folder = self.results / name
        folder.mkdir(parents=True)
        m = json.loads((ROOT / "tests" / "data" / "metrics_v1_minimal.json").read_text()) | {"experiment": name}
        (folder / "metrics.json").write_text(json.dumps(m))
        (folder / "predictions.jsonl").write_text("")
        return folder


@dataclass
class Case:
    id: str
    area: str
    what: str  # the input, as README's table says it
    setup: Callable[[Box], list[str]]  # builds the files, returns the harness arguments
    match: str | None = None  # regex the one stderr line must match; None: accepted (exit 0)
    process: bool = False  # run the installed console script in its own process
    unprivileged: bool = False  # that process without root's permission override (CAP_DAC_OVERRIDE)
    fsize: int | None = None  # that process under RLIMIT_FSIZE (bytes)
    quick: float | None = None  # must answer within this many seconds
    check: Callable[[Box, str], None] | None = None  # more to assert (stdout given)
    expect: str = field(default="")  # README: what the user sees, when not the pattern


def _deep(n: int) -> str:
    return "name: case\ngrid: {axes: {seed: " + "[" * n + "]" * n + "}}\n"


def _alias_bomb() -> str:
    lines = ["name: case", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\ngrid: {axes: {seed: *a8}}\n"


def _no_marker(box: Box, out: str) -> None:
    assert not (box.root / "pwned").exists()


def _plan_reruns_damaged_cell(box: Box, out: str) -> None:
    assert re.search(r"\| rank=4 \| \w+ \| to run \|", out), out


def _chat_template_gone(box: Box) -> Path:
    model = box.model_copy("no-template", drop=("chat_template.jinja",))
    tc = model / "tokenizer_config.json"
    cfg = json.loads(tc.read_text())
    cfg.pop("chat_template", None)
    tc.write_text(json.dumps(cfg))
    return model


def _locked(box: Box) -> list[str]:
    box.results.mkdir(parents=True)
    (box.results / ".case.lock").write_text("[1, 2]")
    return ["run", box.config()]


def _damaged_grid(box: Box) -> list[str]:
    cfg = box.config(grid={"axes": {"train.rank": [4]}})
    cell = box.results / "case" / "rank=4"
    cell.mkdir(parents=True)
    (cell / "metrics.json").write_text('{"experiment": "case", "status": "comp')
    return ["plan", cfg]


# ---- endpoint: a fake OpenAI-compatible server for the endpoint cases below ----
_FAKE: dict = {}


def _fake_server():
    """One fake OpenAI-compatible server for the endpoint cases (its fault is in the
    address), and a second origin that a redirect points at."""
    if not _FAKE:
        from test_endpoint import FakeServer

        _FAKE["thief"] = FakeServer()
        _FAKE["server"] = FakeServer(redirect_to=_FAKE["thief"].url("stolen"))
    return _FAKE["server"]


def _served_model(b: Box, url: str | None = None, fault: str = "ok", **extra) -> dict:
    return {
        "name": str(b.model_dir),
        "backend": "endpoint",
        "served_model": "smollm2",
        "retries": 0,
        "timeout": 10,
        "base_url": url if url is not None else _fake_server().url(fault),
        **extra,
    }


def _served(b: Box, *, url: str | None = None, fault: str = "ok", **extra) -> str:
    """A config of the base arm served by the fake server with `fault`, or at `url`."""
    return b.config(model=_served_model(b, url, fault, **extra), eval__pipelines=["base"])


def _no_secret(box: Box, out: str) -> None:
    assert "SECRET" not in out
    for path in box.root.rglob("*"):
        if path.is_file():
            assert b"SECRET" not in path.read_bytes(), path


def _nothing_stolen(box: Box, out: str) -> None:
    assert _FAKE["thief"].seen == []


def _served_run_recorded(box: Box, out: str) -> None:
    m = json.loads((box.results / "case" / "metrics.json").read_text())
    assert m["model"]["endpoint"]["mc_protocol"] == "loglikelihood"
    tokens = m["costs"]["pipelines"]["base"]["served_tokens"]
    assert tokens["prompt_tokens"] > 0 and tokens["completion_tokens"] > 0


def _passwd_nowhere(box: Box, out: str) -> None:
    """The link was skipped and listed, and nothing of /etc/passwd reached a result file
    (predictions hold the prompts' retrieved passages)."""
    run = box.results / "case"
    m = json.loads((run / "metrics.json").read_text())
    assert [s["file"] for s in m["data"]["skipped_documents"]] == ["passwd.txt"] and m["data"]["documents"] == 1
    lines = [line for line in Path("/etc/passwd").read_text().splitlines() if len(line) > 8]
    assert lines
    for f in [p for p in run.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".md", ".html")]:
        text = f.read_text(encoding="utf-8")
        assert not [line for line in lines if line in text], f


MARKDOWN_ITEM = "Who? ![x](http://127.0.0.1:9/x.png) <http://127.0.0.1:9/a> http://127.0.0.1:9/b www.example.com a | b"


def _markdown_items(b: Box) -> list[str]:
    run = b.finished_run()
    row = {
        "question_id": "q1",
        "pipeline": "base",
        "question": MARKDOWN_ITEM,
        "answers": ["[c](javascript:alert(1))"],
        "output": "x",
        "answerable": True,
        "scores": {"contains": 0.0},
        "retrieved": [],
    }
    (run / "predictions.jsonl").write_text(json.dumps(row) + "\n")
    return ["report", str(run)]


def _markdown_inert(box: Box, out: str) -> None:
    from test_security import render_markdown

    page = render_markdown((box.results / "run" / "report.md").read_text())
    assert f"{MARKDOWN_ITEM} — gold: [c](javascript:alert(1))" in page.text()
    assert not [t for t, _ in page.tags if t in ("a", "img", "script")]


Q = GOOD_Q
CASES = [
    # ---- config files -------------------------------------------------------------------
    Case(
        "duplicate-key",
        "config",
        "`train:` given twice (YAML keeps the last)",
        lambda b: ["validate", b.config("name: case\ntrain:\n  epochs: 50\ntrain:\n  lr: 0.5\n")],
        r"case\.yaml: line 4 .*duplicate key 'train'",
    ),
    Case(
        "duplicate-nested-key",
        "config",
        "`lr` twice inside `train:`",
        lambda b: ["validate", b.config("name: case\ntrain:\n  lr: 0.1\n  lr: 0.2\n")],
        r"case\.yaml: line 4 .*duplicate key 'lr'",
    ),
    Case(
        "not-utf8",
        "config",
        "config saved as Latin-1",
        lambda b: ["validate", b.config(b"name: case\n# caf\xe9\n")],
        r"case\.yaml: line 2: not UTF-8",
    ),
    Case(
        "bom",
        "config",
        "config with a UTF-8 byte-order mark",
        lambda b: ["validate", b.config("\ufeffname: case\n")],
        expect="accepted",
    ),
    Case(
        "tabs",
        "config",
        "tab indentation",
        lambda b: ["validate", b.config("name: case\ntrain:\n\tlr: 0.1\n")],
        r"case\.yaml: line 3 invalid YAML: .*'\\t'",
    ),
    Case(
        "wrong-type",
        "config",
        "`train.rank: eight`",
        lambda b: ["validate", b.config(train={"rank": "eight"})],
        r"case\.yaml: train\.rank: ",
    ),
    Case(
        "unknown-key",
        "config",
        "`retrieval.top_kk` (typo)",
        lambda b: ["validate", b.config(retrieval={"top_kk": 3})],
        r"retrieval\.top_kk: Extra inputs",
    ),
    Case(
        "unknown-section",
        "config",
        "`trian:` section (typo)",
        lambda b: ["validate", b.config(trian={})],
        r"case\.yaml: trian: Extra inputs",
    ),
    Case(
        "lr-huge",
        "config",
        "`train.lr: 1e9`",
        lambda b: ["validate", b.config("name: case\ntrain: {lr: 1e9}\n")],
        r"train\.lr: .*less than or equal to 1",
    ),
    Case(
        "alpha-inf",
        "config",
        "`train.alpha: .inf`",
        lambda b: ["validate", b.config("name: case\ntrain: {alpha: .inf}\n")],
        r"train\.alpha: .*finite",
    ),
    Case(
        "nan",
        "config",
        "`eval.min_effect: .nan`",
        lambda b: ["validate", b.config("name: case\neval: {min_effect: .nan}\n")],
        r"eval\.min_effect: .*finite",
    ),
    Case(
        "zero-epochs",
        "config",
        "`train.epochs: 0`",
        lambda b: ["validate", b.config(train={"epochs": 0})],
        r"train\.epochs: ",
    ),
    Case(
        "empty-pipelines",
        "config",
        "`eval.pipelines: []`",
        lambda b: ["validate", b.config(eval={"pipelines": []})],
        r"eval: .*at least one",
    ),
    Case(
        "judge-loglikelihood-over-chat",
        "config",
        "`eval.judge.verdicts: loglikelihood` for a chat endpoint judge",
        lambda b: [
            "validate",
            b.config(
                eval={
                    "judge": {
                        "model": {
                            "name": "smollm2",
                            "backend": "endpoint",
                            "base_url": "http://127.0.0.1:9/v1",
                            "served_model": "x",
                            "api": "chat",
                            "mc_protocol": "letter",
                        },
                        "verdicts": "loglikelihood",
                    }
                }
            ),
        ],
        r"eval\.judge\.verdicts: loglikelihood needs a judge that scores text",
    ),
    Case(
        "empty-target-modules",
        "config",
        "`train.target_modules: []`",
        lambda b: ["validate", b.config(train={"target_modules": []})],
        r"train\.target_modules: ",
    ),
    Case(
        "empty-grid-axis",
        "config",
        "a grid axis with no values",
        lambda b: ["validate", b.config(grid={"axes": {"train.rank": []}})],
        r"grid: .*at least one value",
    ),
    Case(
        "grid-missing-field",
        "config",
        "grid axis `train.rnak` (no such field)",
        lambda b: ["validate", b.config(grid={"axes": {"train.rnak": [4, 8]}})],
        r"grid: 'train\.rnak' is not a config field",
    ),
    Case(
        "grid-cell-collision",
        "config",
        "grid values `a/b` and `a-b` (same folder name once cleaned)",
        lambda b: ["validate", b.config(grid={"axes": {"data.world.seed": [1], "model.name": ["a/b", "a-b"]}})],
        r"both get the folder name",
    ),
    Case(
        "alias-bomb",
        "config",
        "YAML aliases nested 9 deep (a 600-byte file)",
        lambda b: ["validate", b.config(_alias_bomb())],
        r"expands to more than 100,000",
        quick=30,
    ),
    Case(
        "deep-nesting",
        "config",
        "lists nested 5,000 deep",
        lambda b: ["validate", b.config(_deep(5000))],
        r"line 2 invalid YAML: nested deeper than 64",
        quick=30,
    ),
    Case(
        "recursive-alias",
        "config",
        "an alias inside its own anchor",
        lambda b: ["validate", b.config("name: case\na: &a [*a]\n")],
        r"refers to a mapping or list that contains it",
    ),
    Case(
        "python-tag",
        "config",
        "`!!python/object/apply:os.system` (safe loader: no code runs)",
        lambda b: ["validate", b.config(f"name: !!python/object/apply:os.system ['touch {b.root}/pwned']\n")],
        r"line 1 invalid YAML: could not determine a constructor",
        check=_no_marker,
    ),
    Case(
        "not-a-mapping",
        "config",
        "a YAML list at the top",
        lambda b: ["validate", b.config("- a\n- b\n")],
        r"case\.yaml: expected a mapping",
    ),
    Case("empty-config", "config", "an empty file", lambda b: ["validate", b.config("")], r"expected a mapping"),
    Case(
        "missing-config",
        "config",
        "a config path that does not exist",
        lambda b: ["validate", str(b.root / "nope.yaml")],
        r"nope\.yaml: cannot read config",
    ),
    Case(
        "huge-config",
        "config",
        "a 2 MB config",
        lambda b: ["validate", b.config("name: case\n" + "#" * (2 << 20))],
        r"larger than 1024 KiB",
    ),
    Case(
        "long-name",
        "config",
        "a 300-character `name`",
        lambda b: ["validate", b.config(name="x" * 300)],
        r"case\.yaml: name: .*at most 100",
    ),
    Case(
        "name-escapes",
        "config",
        "`name: ../../outside` (escapes the results folder)",
        lambda b: ["run", b.config(name="../../outside")],
        r"case\.yaml: name: String should match pattern",
    ),
    Case(
        "overlap",
        "config",
        "`chunk_overlap` >= `chunk_size`",
        lambda b: ["validate", b.config(retrieval={"chunk_size": 16, "chunk_overlap": 16})],
        r"chunk_overlap",
    ),
    Case(
        "executor-bogus",
        "config",
        "`run --executor bogus` without a grid",
        lambda b: ["run", b.config(), "--executor", "bogus"],
        r"run: argument --executor: invalid choice: 'bogus'",
    ),
    # ---- data files ---------------------------------------------------------------------
    Case(
        "malformed-jsonl",
        "data",
        "questions line 2 is not JSON",
        lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", json.dumps(Q) + "\n{not json\n"))],
        r"q\.jsonl:2: invalid JSON",
    ),
    Case(
        "torn-jsonl",
        "data",
        "questions file cut mid-line",
        lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", json.dumps(Q) + "\n" + json.dumps(Q)[:30]))],
        r"q\.jsonl:2: invalid JSON",
    ),
    Case(
        "crlf",
        "data",
        "questions with Windows line ends (CRLF)",
        lambda b: ["validate", b.own_data(qfile=b.jsonl("q.jsonl", [Q, {**Q, "id": "q2"}], sep="\r\n"))],
        expect="accepted",
    ),
    Case(
        "bom-jsonl",
        "data",
        "questions with a byte-order mark",
        lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", "\ufeff" + json.dumps(Q) + "\n"))],
        expect="accepted",
    ),
    Case(
        "non-ascii",
        "data",
        "non-ASCII file names, ids, questions and answers (Zürich, 東京)",
        lambda b: [
            "validate",
            b.own_data(
                docs=_two_files(b, "docs-ü/Zürich.md", "docs-ü/東京.txt"),
                questions=[
                    {
                        **Q,
                        "id": "frage-ü",
                        "question": "Wer leitet 東京?",
                        "answers": ["Zoë Ñúñez"],
                        "choices": ["Zoë Ñúñez", "Ilse Varga"],
                        "answer_index": 0,
                    }
                ],
            ),
        ],
        expect="accepted",
    ),
    Case(
        "huge-line",
        "data",
        "a 9 MiB JSONL line",
        lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", json.dumps({**Q, "pad": "x" * (9 << 20)})))],
        r"q\.jsonl:1: line of 9 MiB is over the limit",
    ),
    Case(
        "empty-id",
        "data",
        '`"id": ""`',
        lambda b: ["validate", b.own_data(questions=[{**Q, "id": ""}])],
        r"questions\.jsonl:1: 'id' must be a non-empty string",
    ),
    Case(
        "duplicate-id",
        "data",
        "two questions with one id",
        lambda b: ["validate", b.own_data(questions=[Q, Q])],
        r"questions\.jsonl:2: duplicate id 'q1'",
    ),
    Case(
        "object-id",
        "data",
        "an object as id",
        lambda b: ["validate", b.own_data(questions=[{**Q, "id": {"a": 1}}])],
        r"questions\.jsonl:1: 'id' must be",
    ),
    Case(
        "answer-index-range",
        "data",
        "`answer_index: 7` with 4 choices",
        lambda b: ["validate", b.own_data(questions=[{**Q, "answer_index": 7}])],
        r"questions\.jsonl:1: 'answer_index' must be an integer index",
    ),
    Case(
        "answer-index-wrong",
        "data",
        "`answer_index` at a choice not among `answers`",
        lambda b: ["validate", b.own_data(questions=[{**Q, "answer_index": 0}])],
        r"questions\.jsonl:1: 'answer_index' points at 'Ilse Varga', which is not among 'answers'",
    ),
    Case(
        "duplicate-choices",
        "data",
        "four identical choices",
        lambda b: ["validate", b.own_data(questions=[{**Q, "choices": ["Mira Tolland"] * 4}])],
        r"questions\.jsonl:1: 'choices' has the same choice twice",
    ),
    Case(
        "non-string-answers",
        "data",
        "`answers: [1, 2]`",
        lambda b: ["validate", b.own_data(questions=[{**Q, "answers": [1, 2]}])],
        r"questions\.jsonl:1: 'answers' must be a list of non-empty strings",
    ),
    Case(
        "not-utf8-data",
        "data",
        "questions saved as Latin-1",
        lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", json.dumps(Q).encode() + b"\n\xe9\n"))],
        r"q\.jsonl:2: not UTF-8",
    ),
    Case(
        "empty-questions",
        "data",
        "an empty questions file",
        lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", ""))],
        r"q\.jsonl: no questions",
    ),
    Case(
        "md-and-txt",
        "data",
        "`x.md` and `x.txt` (two documents, one id)",
        lambda b: ["validate", b.own_data(docs=_two_files(b, "d/x.md", "d/x.txt"))],
        r"x\.txt: same document id 'x' as \S*x\.md",
    ),
    Case(
        "dev-zero",
        "data",
        "`documents: /dev/zero`",
        lambda b: ["validate", b.own_data(docs=Path("/dev/zero"))],
        r"/dev/zero: not a regular file",
        quick=30,
    ),
    Case(
        "huge-file",
        "data",
        "a 300 MiB questions file",
        lambda b: ["validate", b.own_data(qfile=_sparse(b.root / "big.jsonl", 300 << 20))],
        r"big\.jsonl: 300 MiB is over the limit of 256 MiB",
        quick=30,
    ),
    Case(
        "huge-documents-folder",
        "data",
        "a folder of documents over 256 MiB together",
        lambda b: ["validate", b.own_data(docs=_sparse_folder(b.root / "bigdocs", 300 << 20))],
        r"bigdocs: documents together are over the limit of 256 MiB",
        quick=30,
    ),
    Case(
        "missing-documents",
        "data",
        "`documents:` path that does not exist",
        lambda b: ["validate", b.own_data(docs=b.root / "nowhere")],
        r"nowhere: documents not found",
    ),
    Case(
        "tofu-without-facts",
        "data",
        "TOFU entity row without `facts`",
        lambda b: ["validate", b.config(data={"external": {"format": "tofu", "path": str(_tofu(b))}})],
        r"entities\.jsonl:1: needs 'entity_id' .* and 'facts'",
    ),
    # ---- models and embedders -----------------------------------------------------------
    Case(
        "model-missing-path",
        "model",
        "`model.name` a folder that does not exist",
        lambda b: ["validate", b.config(model={"name": str(b.root / "gone")})],
        r"model\.name: .*gone",
    ),
    Case(
        "garbage-gguf",
        "model",
        "a `.gguf` file of garbage",
        lambda b: ["run", b.config(model={"name": str(b.file("m.gguf", b"\x00garbage" * 100))})],
        r"model\.name: .*m\.gguf is not a GGUF file",
    ),
    Case(
        "model-typo",
        "model",
        "`model.name: smolm2`",
        lambda b: ["validate", b.config(model={"name": "smolm2"})],
        r"model\.name: unknown model 'smolm2'; did you mean 'smollm2'",
    ),
    Case(
        "model-not-local",
        "model",
        "a hub id not cached, hub offline",
        lambda b: ["validate", b.config(model={"name": "nobody/no-such-model"})],
        r"model\.name: 'nobody/no-such-model' .*hub is offline",
    ),
    Case(
        "model-no-config",
        "model",
        "a model folder without config.json",
        lambda b: ["validate", b.config(model={"name": str(b.model_copy("m", drop=("config.json",)))})],
        r"model\.name: .*has no config\.json",
    ),
    Case(
        "no-chat-template",
        "model",
        "a model without a chat template",
        lambda b: ["validate", b.config(model={"name": str(_chat_template_gone(b))})],
        expect="accepted: plain-text prompts (`system\\n\\nuser\\nAnswer:`)",
    ),
    Case(
        "target-modules",
        "model",
        "`train.target_modules: [q_proj, qkv]` (no `qkv` layer)",
        lambda b: ["validate", b.config(train={"target_modules": ["q_proj", "qkv"]})],
        r"train\.target_modules: 'qkv' match no module of",
    ),
    Case(
        "target-modules-all-linear",
        "model",
        "`train.target_modules: all-linear` (peft's selector, not a name)",
        lambda b: ["validate", b.config(train={"target_modules": "all-linear"})],
        expect="accepted",
    ),
    Case(
        "embedder-typo",
        "model",
        "`embedder.name: minlm` (caught before any training)",
        lambda b: ["run", b.config(embedder={"name": "minlm"})],
        r"embedder\.name: unknown embedder 'minlm'; did you mean 'minilm'",
    ),
    Case(
        "embedder-missing",
        "model",
        "`embedder.name: ./no-embedder`",
        lambda b: ["validate", b.config(embedder={"name": "./no-embedder"})],
        r"embedder\.name: './no-embedder'",
    ),
    # ---- places -------------------------------------------------------------------------
    Case(
        "results-dir-file",
        "places",
        "`--results-dir` naming a file",
        lambda b: ["run", b.config(), "--results-dir", str(b.file("afile", "x"))],
        r"--results-dir: .*afile is a file",
    ),
    Case(
        "output-dir-under-file",
        "places",
        "`output_dir` below a file",
        lambda b: ["run", b.config(output_dir=str(b.file("afile", "x") / "sub"))],
        r"output_dir: .*afile is a file",
    ),
    Case(
        "results-not-writable",
        "places",
        "results folder not writable",
        lambda b: (b.results.mkdir(), b.results.chmod(0o555), ["run", b.config()])[-1],
        r"(--results-dir|output_dir): .*not writable \(Permission denied\)",
        process=True,
        unprivileged=True,
    ),
    Case(
        "cache-is-file",
        "places",
        "`HARNESS_CACHE` naming a file (caught before model conversion)",
        lambda b: (b.env.update(HARNESS_CACHE=str(b.file("cachefile", "x"))), ["run", b.config()])[-1],
        r"\$HARNESS_CACHE: .*cachefile is a file",
    ),
    Case(
        "cache-read-only",
        "places",
        "cache folder read-only",
        lambda b: (b.cache.chmod(0o555), ["run", b.config()])[-1],
        r"\$HARNESS_CACHE: .*not writable \(Permission denied\)",
        process=True,
        unprivileged=True,
    ),
    Case(
        "disk-full",
        "places",
        "disk full (RLIMIT_FSIZE 64 KiB) mid-run",
        lambda b: [
            "run",
            b.config(
                eval={"pipelines": ["base", "rag"], "max_new_tokens": 4, "bootstrap_samples": 100},
                data={"max_questions": 4},
            ),
        ],
        r"harness: error: \S+: File too large .*unchanged",
        process=True,
        fsize=64 << 10,
    ),
    Case("lock-garbage", "places", "lock file holding `[1, 2]`", _locked, r"another run is writing it"),
    # ---- reading results ----------------------------------------------------------------
    Case(
        "report-truncated",
        "results",
        "`report` on a truncated metrics.json",
        lambda b: (
            b.finished_run(),
            (b.results / "run" / "metrics.json").write_text('{"experiment": "x", "st'),
            ["report", str(b.results / "run")],
        )[-1],
        r"metrics\.json: not readable as JSON",
    ),
    Case(
        "report-incomplete",
        "results",
        "`report` on a metrics.json missing fields",
        lambda b: (
            b.finished_run(),
            (b.results / "run" / "metrics.json").write_text('{"experiment": "x"}'),
            ["report", str(b.results / "run")],
        )[-1],
        r"metrics\.json: incomplete, no status",
    ),
    Case(
        "report-torn-predictions",
        "results",
        "`report` with predictions.jsonl cut mid-line",
        lambda b: (
            b.finished_run(),
            (b.results / "run" / "predictions.jsonl").write_text('{"pipeline": "ba'),
            ["report", str(b.results / "run")],
        )[-1],
        r"predictions\.jsonl: truncated or damaged",
    ),
    Case(
        "report-unfinished",
        "results",
        "`report` on a run with status `running`",
        lambda b: (b.finished_run(), _set_status(b.results / "run", "running"), ["report", str(b.results / "run")])[-1],
        r"status 'running', not a finished run",
    ),
    Case(
        "compare-truncated",
        "results",
        "`compare` with one truncated metrics.json",
        lambda b: (
            b.finished_run("a"),
            b.finished_run("b"),
            (b.results / "b" / "metrics.json").write_text("{"),
            ["compare", str(b.results / "a"), str(b.results / "b")],
        )[-1],
        r"b/metrics\.json: not readable as JSON",
    ),
    Case(
        "plan-damaged-cell",
        "results",
        "`plan` with a cell's metrics.json truncated",
        _damaged_grid,
        expect="accepted: the cell is listed `to run` and recomputed",
        check=_plan_reruns_damaged_cell,
    ),
    # ---- endpoint (a fake OpenAI-compatible server on 127.0.0.1, tests/test_endpoint.py) ------
    Case(
        "endpoint-file-url",
        "endpoint",
        "`model.base_url: file:///etc/passwd`",
        lambda b: ["validate", _served(b, url="file:///etc/passwd")],
        r"model\.base_url: Value error, 'file:///etc/passwd' is not an http:// or https:// address",
    ),
    Case(
        "endpoint-ftp-url",
        "endpoint",
        "`model.base_url: ftp://127.0.0.1/v1`",
        lambda b: ["validate", _served(b, url="ftp://127.0.0.1/v1")],
        r"model\.base_url: Value error, 'ftp://127\.0\.0\.1/v1' is not an http:// or https:// address",
    ),
    Case(
        "endpoint-no-scheme",
        "endpoint",
        "`model.base_url: 127.0.0.1:8000/v1` (no scheme)",
        lambda b: ["validate", _served(b, url="127.0.0.1:8000/v1")],
        r"model\.base_url: Value error, '127\.0\.0\.1:8000/v1' is not an http:// or https:// address",
    ),
    Case(
        "endpoint-password-url",
        "endpoint",
        "a password in `model.base_url` (`http://me:pw@host/v1`)",
        lambda b: ["validate", _served(b, url="http://me:hunter2@127.0.0.1:8000/v1")],
        r"^(?!.*hunter2).*model\.base_url: Value error, the address holds a user name or password",
        expect="`model.base_url: … holds a user name or password; give the key through model.api_key_env` "
        "(the password not repeated)",
    ),
    Case(
        "endpoint-judge-file-url",
        "endpoint",
        "`eval.judge.model.base_url: file:///etc/passwd`",
        lambda b: ["validate", b.config(eval__judge={"model": {**_served_model(b, "file:///etc/passwd")}})],
        r"eval\.judge\.model\.base_url: Value error, 'file:///etc/passwd' is not an http",
    ),
    Case(
        "endpoint-retries-huge",
        "endpoint",
        "`model.retries: 1000000`",
        lambda b: ["validate", _served(b, retries=1_000_000)],
        r"model\.retries: .*less than or equal to 20",
    ),
    Case(
        "endpoint-timeout-huge",
        "endpoint",
        "`model.timeout: 1e9`",
        lambda b: ["validate", _served(b, timeout=1e9)],
        r"model\.timeout: .*less than or equal to 3600",
    ),
    Case(
        "endpoint-key-crlf",
        "endpoint",
        "API key `sk-SECRET\\r\\nX: y` (a line end in the variable)",
        lambda b: (
            b.env.update(HARNESS_CASE_KEY="sk-SECRET\r\nX: y"),
            ["run", _served(b, api_key_env="HARNESS_CASE_KEY")],
        )[-1],
        r"^(?!.*SECRET).*model\.api_key_env: the key in \$HARNESS_CASE_KEY has a carriage return \(CR\) at "
        r"character 10; .*it was not sent",
        check=_no_secret,
        expect="`model.api_key_env: the key in $HARNESS_CASE_KEY has a carriage return (CR) at character 10; … it "
        "was not sent` (the key nowhere in the output or results)",
    ),
    Case(
        "endpoint-key-unset",
        "endpoint",
        "`model.api_key_env` naming a variable that is not set",
        lambda b: ["validate", _served(b, api_key_env="HARNESS_CASE_UNSET_KEY")],
        r"model\.api_key_env: environment variable HARNESS_CASE_UNSET_KEY is not set",
    ),
    Case(
        "endpoint-redirect",
        "endpoint",
        "server answers `302` to another origin (the key would go along)",
        lambda b: (
            b.env.update(HARNESS_CASE_KEY="sk-redirected"),
            ["run", _served(b, fault="redirect", api_key_env="HARNESS_CASE_KEY")],
        )[-1],
        r"/redirect/v1/models failed after 1 attempt\(s\): HTTP 302 redirecting to "
        r"http://127\.0\.0\.1:\d+/stolen/v1/models; harness follows no redirect",
        check=_nothing_stolen,
        expect="`URL failed after 1 attempt(s): HTTP 302 redirecting to http://127.0.0.1:PORT/stolen/v1/models; "
        "harness follows no redirect, since the request carries the API key…` (nothing reaches the other "
        "origin)",
    ),
    Case(
        "endpoint-trickle",
        "endpoint",
        "server sends one byte a second (`timeout: 2`)",
        lambda b: ["run", _served(b, fault="trickle-head", timeout=2)],
        r"failed after 1 attempt\(s\): no complete reply within the timeout of 2 s",
        quick=15,
    ),
    Case(
        "endpoint-html",
        "endpoint",
        "server answers an HTML page (`retries: 1`)",
        lambda b: ["run", _served(b, fault="html", retries=1)],
        r"failed after 2 attempt\(s\): not JSON: b'<html>",
    ),
    Case(
        "endpoint-array",
        "endpoint",
        "server answers a JSON array",
        lambda b: ["run", _served(b, fault="array")],
        r"answered without choices\.0\.text \(not an OpenAI-compatible reply",
    ),
    Case(
        "endpoint-no-choices",
        "endpoint",
        "server answers without `choices`",
        lambda b: ["run", _served(b, fault="no-choices")],
        r"answered without choices\.0\.text",
    ),
    Case(
        "endpoint-text-number",
        "endpoint",
        "server answers `text: 42`",
        lambda b: ["run", _served(b, fault="text-number")],
        r"answered choices\.0\.text = 42, not text",
    ),
    Case(
        "endpoint-deep",
        "endpoint",
        "server answers JSON nested 200,000 deep",
        lambda b: ["run", _served(b, fault="deep")],
        r"the reply is nested too deep to be an API answer",
    ),
    Case(
        "endpoint-huge",
        "endpoint",
        "server announces a 1 GiB reply",
        lambda b: ["run", _served(b, fault="huge")],
        r"a reply of 1,024 MiB is over the limit of 64 MiB",
    ),
    Case(
        "endpoint-models-garbage",
        "endpoint",
        "`/v1/models` lists numbers, not models",
        lambda b: ["run", _served(b, fault="models-not-objects")],
        r"/models is not an OpenAI model list",
    ),
    Case(
        "endpoint-negative-tokens",
        "endpoint",
        "server reports `prompt_tokens: -7`",
        lambda b: ["run", _served(b, fault="usage-negative")],
        r"reported usage\.prompt_tokens = -7, not a count of tokens",
    ),
    Case(
        "endpoint-fraction-tokens",
        "endpoint",
        "server reports `completion_tokens: 2.5`",
        lambda b: ["run", _served(b, fault="usage-fraction")],
        r"reported usage\.completion_tokens = 2\.5, not a count of tokens",
    ),
    Case(
        "endpoint-nan-logprob",
        "endpoint",
        "server answers a log-probability `NaN`",
        lambda b: ["run", _served(b, fault="nan-logprob")],
        r"the reply holds NaN, which is not a number in JSON",
    ),
    Case(
        "endpoint-inf-logprob",
        "endpoint",
        "server answers a log-probability `-1e999` (-inf)",
        lambda b: ["run", _served(b, fault="overflow-logprob")],
        r"answered a log-probability of -Infinity, not a finite number",
    ),
    Case(
        "endpoint-short-logprobs",
        "endpoint",
        "server answers fewer log-probabilities than tokens",
        lambda b: ["run", _served(b, fault="short-logprobs")],
        r"logprobs\.token_logprobs that are not a list as long as logprobs\.tokens",
    ),
    Case(
        "endpoint-working",
        "endpoint",
        "the same fake server, working",
        lambda b: ["run", _served(b, fault="ok")],
        expect="accepted (the cases above differ from it in one thing each)",
        check=_served_run_recorded,
    ),
    # ---- documents and report (#22) -------------------------------------------------------
    Case(
        "docs-link-out",
        "documents",
        "`docs/passwd.txt -> /etc/passwd` (a link out of the documents folder)",
        lambda b: ["validate", b.own_data(docs=_docs(b, link=("passwd.txt", "/etc/passwd")))],
        r"docs/passwd\.txt: a link to /etc/passwd, outside the documents folder; refused",
    ),
    Case(
        "docs-link-out-skipped",
        "documents",
        "the same link with `data.skip_unreadable: true`, then a run",
        lambda b: [
            "run",
            b.own_data(
                docs=_docs(b, link=("passwd.txt", "/etc/passwd")),
                data__skip_unreadable=True,
                eval={"pipelines": ["base", "rag"], "max_new_tokens": 4, "bootstrap_samples": 100},
            ),
        ],
        expect="accepted: listed in `data.skipped_documents`; no line of /etc/passwd in any result file",
        check=_passwd_nowhere,
    ),
    Case(
        "docs-folder-link-out",
        "documents",
        "`docs/etc -> /etc` (a folder link out of the documents folder)",
        lambda b: ["validate", b.own_data(docs=_docs(b, link=("etc", "/etc")))],
        r"docs/etc: a link to /etc, outside the documents folder; refused",
    ),
    Case(
        "docs-fifo",
        "documents",
        "a FIFO in the documents folder",
        lambda b: ["validate", b.own_data(docs=_docs(b, fifo="pipe.txt"))],
        r"docs/pipe\.txt: a FIFO, not a document; refused",
        quick=30,
    ),
    Case(
        "docs-unreadable",
        "documents",
        "a document without read permission (mode 000)",
        lambda b: ["validate", b.own_data(docs=_docs(b, locked="locked.md"))],
        r"docs/locked\.md: cannot read \(Permission denied\)",
        process=True,
        unprivileged=True,
    ),
    Case(
        "docs-nested-html",
        "documents",
        "1.1 MB of nested `<div>` (took over 180 s before)",
        lambda b: ["validate", b.own_data(docs=_docs(b, files={"page.html": _nested_divs(100_000)}))],
        r"docs/page\.html: HTML nested deeper than 512 elements",
        quick=30,
    ),
    Case(
        "docs-nested-pdf",
        "documents",
        "a PDF nested 200,000 deep (a 3,001-line RecursionError before)",
        lambda b: ["validate", b.own_data(docs=_docs(b, make=lambda d: write_deep_pdf(d / "deep.pdf", depth=200_000)))],
        r"docs/deep\.pdf: not a readable PDF \(objects nested deeper than Python's recursion limit",
        quick=30,
    ),
    Case(
        "docs-docx-xml",
        "documents",
        "a .docx with broken XML (an lxml traceback before)",
        lambda b: [
            "validate",
            b.own_data(
                docs=_docs(
                    b,
                    make=lambda d: replace_docx_member(
                        d / "broken.docx", "word/document.xml", b"<w:document><unclosed"
                    ),
                )
            ),
        ],
        r"docs/broken\.docx: not a valid \.docx \(Namespace prefix w on document is not defined",
    ),
    Case(
        "docs-docx-inflate",
        "documents",
        "a .docx whose document member does not inflate",
        lambda b: ["validate", b.own_data(docs=_docs(b, make=lambda d: corrupt_docx_member(d / "bad.docx")))],
        r"docs/bad\.docx: not a valid \.docx \(Error -3 while decompressing data",
    ),
    Case(
        "report-markdown",
        "documents",
        "`report` on items holding `![x](http://…)`, `[c](javascript:…)`, `<http://…>`, a bare URL and a pipe",
        _markdown_items,
        expect="accepted: report.md renders them as text (no image, link or cell from an item)",
        check=_markdown_inert,
    ),
]


# ---- caches (#22): damaged, edited or planted entries in a cache a run has filled -------
# Each case fills its own cache (HARNESS_CACHE below the case's folder) with a first run,
# damages one entry, and runs again: the entry is rebuilt, and the case's check says how.
# The seeded cache of every other case is not touched, so its "unchanged" check stands.


class _Plant:
    """Unpickled by anything but a weights-only loader, it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@contextlib.contextmanager
def _environ(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _own_cache(b: Box) -> Path:
    b.env["HARNESS_CACHE"] = str(b.root / "run-cache")
    return b.root / "run-cache"


SMALL_EVAL = {"max_new_tokens": 4, "batch_size": 4, "bootstrap_samples": 100}
SMALL_TRAIN = {"objective": "sft", "rank": 4, "alpha": 8, "max_steps": 3, "batch_size": 4, "max_length": 96}


def _first_run(b: Box, cfg: str) -> None:
    """The run that fills the case's cache (its results go elsewhere)."""
    from harness.config import load_config
    from harness.run.runner import run_experiment

    with _environ(HARNESS_CACHE=b.env["HARNESS_CACHE"], TQDM_DISABLE="1"):
        run_experiment(load_config(cfg), results_root=b.root / "first")


def _memo_rows(cache: Path, edit) -> int:
    """Rewrite every generation memo line with `edit(row)`; returns how many there were."""
    n = 0
    for path in cache.glob("generations/*/*/*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps(edit(r), ensure_ascii=False) + "\n" for r in rows))
        n += len(rows)
    return n


def _memo_edited(b: Box) -> list[str]:
    _own_cache(b)
    cfg = b.config(eval={"pipelines": ["base"], **SMALL_EVAL}, data={"max_questions": 4, **b.raw()["data"]})
    _first_run(b, cfg)

    def edited(row: dict) -> dict:  # answers (and the closed-book answers of the knowledge tags) rewritten
        return {
            **row,
            "value": [
                {**v, "output": "EDITED BY HAND"} if isinstance(v, dict) else "EDITED BY HAND" for v in row["value"]
            ],
        }

    assert _memo_rows(Path(b.env["HARNESS_CACHE"]), edited) > 0
    return ["run", cfg]


def _checksum(key: str, value) -> str:
    """A memo line's checksum, as harness/store/memo.py defines it: sha256 of {key, value} as canonical JSON."""
    return hashlib.sha256(
        json.dumps({"key": key, "value": value}, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def _memo_wrong_type(b: Box) -> list[str]:
    _own_cache(b)
    cfg = b.config(eval={"pipelines": ["base"], **SMALL_EVAL}, data={"max_questions": 4, **b.raw()["data"]})
    _first_run(b, cfg)
    assert _memo_rows(Path(b.env["HARNESS_CACHE"]), lambda r: {**r, "value": 7, "sha256": _checksum(r["key"], 7)})
    return ["run", cfg]


def _model_answers(b: Box, out: str) -> None:
    """The second run answered with the model: no edited text, every batch computed again,
    and the same answers as the first run before the edit."""
    from harness.store.results import read_jsonl

    def answers(folder: Path) -> list:
        return [(r["question_id"], r["output"]) for r in read_jsonl(folder / "predictions.jsonl")]

    m = json.loads((b.results / "case" / "metrics.json").read_text())
    assert m["costs"]["pipelines"]["base"]["batches"]["reused"] == 0, m["costs"]["pipelines"]
    assert answers(b.results / "case") == answers(b.root / "first" / "case")
    assert "EDITED" not in (b.results / "case" / "predictions.jsonl").read_text()
    _assert_cache_sound(Path(b.env["HARNESS_CACHE"]))


def _adapter_zeroed(b: Box) -> list[str]:
    cache = _own_cache(b)
    cfg = b.config(
        eval={"pipelines": ["base", "finetuned"], **SMALL_EVAL},
        train=SMALL_TRAIN,
        data={"max_questions": 4, **b.raw()["data"]},
    )
    _first_run(b, cfg)
    (weights,) = cache.glob("adapters/*/adapter_model.safetensors")
    size = weights.stat().st_size
    with open(weights, "r+b") as f:  # zeros over the middle, the size unchanged
        f.seek(size // 2)
        f.write(bytes(min(4096, size // 4)))
    return ["run", cfg]


def _adapter_trained_again(b: Box, out: str) -> None:
    m = json.loads((b.results / "case" / "metrics.json").read_text())
    first = json.loads((b.root / "first" / "case" / "metrics.json").read_text())
    assert m["costs"]["training"]["from_cache"] is False
    assert m["pipelines"]["finetuned"] == first["pipelines"]["finetuned"]  # the same adapter, trained again
    _assert_cache_sound(Path(b.env["HARNESS_CACHE"]))


class _Stop(Exception):
    pass


def _checkpoint_planted(b: Box) -> list[str]:
    """A run killed after its first training checkpoint, then a pickle planted in it."""
    import torch
    import transformers

    cache = _own_cache(b)
    cfg = b.config(
        eval={"pipelines": ["base", "finetuned"], **SMALL_EVAL},
        train=SMALL_TRAIN,
        data={"max_questions": 4, **b.raw()["data"]},
    )
    real = transformers.Trainer._save_checkpoint

    def save_then_stop(self, *a, **kw):
        real(self, *a, **kw)
        raise _Stop

    transformers.Trainer._save_checkpoint = save_then_stop
    try:
        _first_run(b, cfg)
    except _Stop:
        pass
    finally:
        transformers.Trainer._save_checkpoint = real
    (optimizer,) = cache.glob("adapters/*.partial/trainer/checkpoint-1/optimizer.pt")
    torch.save({"state": {}, "param_groups": [], "hook": _Plant(b.root / "pwned")}, optimizer)
    return ["run", cfg]


def _checkpoint_discarded(b: Box, out: str) -> None:
    assert not (b.root / "pwned").exists()  # the planted pickle never ran
    training = json.loads((b.results / "case" / "metrics.json").read_text())["costs"]["training"]
    assert training["resumed_from_step"] == 0 and training["steps_run"] == training["steps"] == 3
    _assert_cache_sound(Path(b.env["HARNESS_CACHE"]))


CASES += [
    Case(
        "cache-memo-edited",
        "caches",
        "an answer in the generation memo edited by hand",
        _memo_edited,
        check=_model_answers,
        expect="accepted: the line fails its checksum; logged, skipped and answered by the model again",
    ),
    Case(
        "cache-memo-wrong-type",
        "caches",
        "a generation memo value of the wrong type (a number, checksum intact)",
        _memo_wrong_type,
        check=_model_answers,
        expect="accepted: logged, dropped and answered by the model again",
    ),
    Case(
        "cache-adapter-zeroed",
        "caches",
        "a cached adapter's weights zeroed in the middle, same size",
        _adapter_zeroed,
        check=_adapter_trained_again,
        expect="accepted: every cached file is hashed; the adapter is discarded and trained again",
    ),
    Case(
        "cache-checkpoint-pickle",
        "caches",
        "a pickle planted in a resumable training checkpoint",
        _checkpoint_planted,
        check=_checkpoint_discarded,
        expect="accepted: it fails `torch.load(weights_only=True)`, never runs; the checkpoint is discarded and "
        "training starts over",
    ),
]


def _two_files(b: Box, *names: str) -> Path:
    for name in names:
        path = b.file(name, f"The text of {name}.")
    return path.parent


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _sparse_folder(folder: Path, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _sparse(folder / "a.txt", size)
    return folder


def _tofu(b: Box) -> Path:
    b.jsonl("tofu/entities.jsonl", [{"entity_id": "e1", "name": "A"}])
    b.jsonl(
        "tofu/qa.jsonl",
        [{"entity_id": "e1", "qa_id": "1", "question": "Q?", "answer": "A", "paraphrased_question": "Q2?"}],
    )
    return b.root / "tofu"


def _set_status(folder: Path, status: str) -> None:
    m = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**m, "status": status}))


# ---- writing commands: nothing a user wrote is replaced, hostile text stays text (#22) ----

FACTS = (
    "The Vessin ferry line was founded in 1887 by the harbourmaster Ilse Varga. Each crossing takes 45 minutes. "
    "Halvard Station was opened in 2091 by the Ostrel Consortium. The chief engineer is Mira Tolland. "
    "The archive at Lund Harbour was built in 1923 by Petra Hollis. It holds 300 charts of the coast."
)


def _question_set(b: Box, *, name: str = "q", text: str = FACTS) -> Path:
    """A set written by `harness questions` into results/<name>, and its documents."""
    from harness.questions.build import make_questions

    b.file("docs/facts.txt", text)
    make_questions(b.root / "docs", out=b.results / name, seed=0, embedder=None)
    return b.results / name


def _edited_set(b: Box) -> list[str]:
    sheet = _question_set(b) / "review.csv"
    sheet.write_bytes(sheet.read_bytes().replace(b"Fill in the blank", b"Reviewed: fill in the blank"))
    return ["questions", str(b.root / "docs"), "--out", str(b.results / "q"), "--seed", "1", "--embedder", ""]


def _users_folder(b: Box) -> Path:
    b.file("results/mine/thesis.txt", "years of work")
    return b.results / "mine"


def _hand_run(b: Box, name: str = "run", n: int = 5, text: str = "") -> Path:
    """A finished run's folder as an older harness left it: n items answered by rag,
    finetuned and base."""
    folder = b.finished_run(name)  # the smallest metrics.json the schema accepts: `labels` writes the report
    rows = [
        {
            "question_id": f"q{i}",
            "pipeline": pipe,
            "question": f"{text}question {i}?",
            "answers": [f"gold {i}"],
            "answerable": True,
            "task": "qa",
            "output": f"{pipe} {text}answer {i}",
            "retrieved": [{"id": "d", "text": f"{text}evidence"}],
            "scores": {"contains": float(pipe == "rag")},
        }
        for i in range(n)
        for pipe in ("rag", "finetuned", "base")
    ]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _labels(b: Box, run: Path, seed: int, annotator: str) -> str:
    """A label file for a page of `run` drawn with `seed`, preferring rag on every item."""
    from harness.report.annotate import write_page

    key = json.loads(
        write_page(run, pipelines=["rag", "finetuned"], items=5, seed=seed).with_suffix(".json").read_text()
    )
    labels = {
        it["id"]: {
            "item_hash": it["hash"],
            "preference": "left" if it["left"] == "rag" else "right",
            "left": "correct" if it["left"] == "rag" else "wrong",
            "right": "wrong" if it["left"] == "rag" else "correct",
        }
        for it in key["items"]
    }
    path = b.root / f"labels-{annotator}.json"
    path.write_text(
        json.dumps(
            {
                "format": key["format"],
                "page_id": key["page_id"],
                "run_hash": key["run_hash"],
                "annotator": annotator,
                "labels": labels,
            }
        )
    )
    return str(path)


def _predictions_changed(b: Box) -> list[str]:
    run = _hand_run(b)
    labels = _labels(b, run, 0, "ann")
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    rows = [{**r, "output": "changed"} if r["pipeline"] == "base" else r for r in rows]  # not on the page
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["labels", str(run), labels]


def _two_seeds(b: Box) -> list[str]:
    run = _hand_run(b)
    return ["labels", str(run), _labels(b, run, 0, "ann"), _labels(b, run, 3, "bo")]


def _five_rag_wins(box: Box, out: str) -> None:
    h = json.loads((box.results / "run" / "human_labels.json").read_text())
    assert h["pairs"]["finetuned vs rag"]["wins_b"] == 5 and h["agreement"]["preference"]["value"] == 1.0


def _no_formula_cells(box: Box, out: str) -> None:
    import csv

    with open(box.results / "q" / "review.csv", encoding="utf-8-sig", newline="") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert any(c.startswith("'=") for c in cells) and any(c.startswith("'@") for c in cells)


def _page_script_intact(box: Box, out: str) -> None:
    page = next((box.results / "run" / "annotation").glob("page-*.html")).read_text()
    data = page.split("<script type='application/json' id='data'>", 1)[1].split("</script>", 1)[0]
    assert "<" not in data and page.count("<script") == 2 and "question 0?" in data


def _symlinked_out(b: Box) -> list[str]:
    b.file("docs/facts.txt", FACTS)
    (b.root / "elsewhere").mkdir()
    b.results.mkdir(parents=True)
    (b.results / "q").symlink_to(b.root / "elsewhere")
    return ["questions", str(b.root / "docs"), "--out", str(b.results / "q"), "--embedder", ""]


HOSTILE_TEXT = "<!--<script> </script><script>window.pwned=1</script> <!-- "
FORMULAS = (
    '=HYPERLINK("http://127.0.0.1:9/x") was the note Ilse Varga left in 1887 at Dorran. '
    "@Mira Tolland signed the log in 2091 at Halvard Station. "
)

CASES += [
    Case(
        "questions-over-edited-set",
        "writing",
        "`questions` again into a set whose review.csv was edited (README's loop, another `--seed`)",
        _edited_set,
        r"q/review\.csv: edited since harness wrote it; harness will not replace it .*--force",
    ),
    Case(
        "questions-over-users-folder",
        "writing",
        "`questions --out` a folder harness did not write, even with `--force`",
        lambda b: (
            _users_folder(b),
            b.file("docs/facts.txt", FACTS),
            ["questions", str(b.root / "docs"), "--out", str(b.results / "mine"), "--force"],
        )[-1],
        r"mine: exists and is not a question set harness wrote; .*even with --force",
    ),
    Case(
        "questions-out-symlink",
        "writing",
        "`questions --out` a symbolic link",
        _symlinked_out,
        r"q: is a symbolic link",
    ),
    Case(
        "apply-review-over-users-folder",
        "writing",
        "`--apply-review` into a folder holding someone's files",
        lambda b: (
            _question_set(b),
            _users_folder(b),
            ["questions", "--apply-review", str(b.results / "q" / "review.csv"), "--out", str(b.results / "mine")],
        )[-1],
        r"mine: exists and is not a question set harness wrote",
    ),
    Case(
        "review-formulas",
        "writing",
        "document sentences starting with `=` or `@` (spreadsheet formulas)",
        lambda b: (
            b.file("docs/facts.txt", FORMULAS + FACTS),
            ["questions", str(b.root / "docs"), "--out", str(b.results / "q"), "--embedder", ""],
        )[-1],
        expect="accepted: such review.csv cells start with `'`, and `--apply-review` reads them back as written",
        check=_no_formula_cells,
    ),
    Case(
        "annotate-users-folder",
        "writing",
        "`annotate` on a folder with someone's file beside metrics.json",
        lambda b: (_hand_run(b), b.file("results/run/thesis.txt", "mine"), ["annotate", str(b.results / "run")])[-1],
        r"run: not a run's results folder written by harness",
    ),
    Case(
        "annotate-hostile-text",
        "writing",
        "`<!--<script>`, `</script>`, `<!--` in item text (annotation page)",
        lambda b: (_hand_run(b, text=HOSTILE_TEXT), ["annotate", str(b.results / "run"), "--items", "5"])[-1],
        expect="accepted: the page's data has `<` `>` `&` escaped; its script runs",
        check=_page_script_intact,
    ),
    Case(
        "labels-predictions-changed",
        "writing",
        "`labels` after predictions.jsonl changed (off the page too)",
        _predictions_changed,
        r"labels-ann\.json: labels for another run",
    ),
    Case(
        "labels-two-seeds",
        "writing",
        "label files from pages drawn with different `--seed`s",
        _two_seeds,
        expect="accepted: merged by pipeline (5 of 5 rag wins, agreement 1.0), not by screen side",
        check=_five_rag_wins,
    ),
    Case(
        "export-lora-over-users-file",
        "writing",
        "`export-lora --out` a file harness did not export",
        lambda b: (
            b.file("results/mine.gguf", "GGUF mine"),
            ["export-lora", str(b.root / "adapter"), "--base", "x.gguf", "--out", str(b.results / "mine.gguf")],
        )[-1],
        r"--out: .*mine\.gguf exists and was not written by harness export-lora",
    ),
    Case(
        "init-over-config",
        "writing",
        "`init` over an existing config",
        lambda b: (
            b.file("docs/facts.txt", FACTS),
            b.file("results/harness.yaml", "name: mine\n"),
            ["init", str(b.root / "docs"), "--out", str(b.results / "harness.yaml")],
        )[-1],
        r"harness\.yaml: already exists; pass --force to replace it \(it is kept as",
    ),
]


def _docs(
    b: Box,
    *,
    link: tuple[str, str] | None = None,
    fifo: str | None = None,
    locked: str | None = None,
    files: dict[str, str] | None = None,
    make: Callable[[Path], Path] | None = None,
) -> Path:
    """A documents folder: one good document and the case's own entry."""
    docs = b.root / "docs"
    b.file("docs/station.md", "Mira Tolland runs engineering at Halvard Station.")
    if link:
        (docs / link[0]).symlink_to(link[1])
    if fifo:
        os.mkfifo(docs / fifo)
    if locked:
        b.file(f"docs/{locked}", "The vault code is 7731.").chmod(0)
    for name, text in (files or {}).items():
        b.file(f"docs/{name}", text)
    if make:
        make(docs)
    return docs


def _nested_divs(depth: int) -> str:
    return "<html><body>" + "<div>" * depth + "deep" + "</div>" * depth + "</body></html>"


def _snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def _seed_cache(cache: Path) -> None:
    from harness.store.cache import write_bytes, write_manifest

    write_bytes(cache / "indexes" / "seed.faiss", b"an index")
    (cache / "adapters" / "seed").mkdir(parents=True)
    (cache / "adapters" / "seed" / "adapter_model.safetensors").write_bytes(b"weights")
    write_manifest(cache / "adapters" / "seed")


def _assert_cache_sound(cache: Path) -> None:
    """Every entry with a manifest verifies; no temp file or unfinished entry is left."""
    from harness.store.cache import read_bytes, verify_dir

    for manifest in cache.rglob("harness-manifest.json"):
        assert verify_dir(manifest.parent), manifest.parent
    for sidecar in cache.rglob("*.manifest.json"):
        assert read_bytes(sidecar.with_name(sidecar.name[: -len(".manifest.json")])) is not None, sidecar
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp") or ".partial" in p.name]


def _harness_script() -> list[str]:
    """The installed console script (pip install -e . puts it beside the interpreter);
    its absence is a broken install, so it fails the process cases rather than skip them."""
    script = Path(sys.executable).parent / "harness"
    assert script.is_file(), f"{script} missing: the package's console script is not installed"
    return [str(script)]


def _cannot_run(reason: str) -> None:
    """A case that cannot test what it says here: a failure under HARNESS_STRICT=1 (CI
    must run it), a skip that says why otherwise; never a plain run that passes."""
    if os.environ.get("HARNESS_STRICT") == "1":
        pytest.fail(f"HARNESS_STRICT=1: {reason}", pytrace=False)
    pytest.skip(reason)


def _unprivileged_prefix() -> list[str]:
    """How an unprivileged case's process starts: as root, under setpriv with every
    capability dropped (the case's files stay root's own, so only their mode bits decide);
    as any other user, as is. Either way the premise is checked in that process: no
    capability that overrides file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            _cannot_run("running as root without setpriv (util-linux): root's permission override cannot be dropped")
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
    status = subprocess.run(prefix + ["cat", "/proc/self/status"], capture_output=True, text=True, check=True).stdout
    effective = int(re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    assert effective & 0b110 == 0, f"the case's process keeps a permission override (CapEff {effective:x})"
    return prefix


def _run_process(case: Case, box: Box, argv: list[str]) -> tuple[int, str, str]:
    env = {**os.environ, **box.env, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    prefix = _unprivileged_prefix() if case.unprivileged else []

    def limit():
        if case.fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, case.fsize))

    p = subprocess.run(
        prefix + _harness_script() + argv,
        capture_output=True,
        text=True,
        env=env,
        cwd=box.root,
        preexec_fn=limit,
        timeout=300,
    )
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tiny_model_dir, tmp_path, monkeypatch, capsys):
    from harness.cli import main

    assert not case.unprivileged or case.process, f"{case.id}: unprivileged needs a process of its own"
    box = Box(tmp_path, tiny_model_dir)
    _seed_cache(box.cache)
    monkeypatch.chdir(tmp_path)
    argv = case.setup(box)
    results_before, cache_before = _snapshot(box.results), _snapshot(box.cache)
    t0 = time.perf_counter()
    if case.process:
        rc, out, err = _run_process(case, box, argv)
    else:
        for k, v in box.env.items():
            monkeypatch.setenv(k, v)
        try:
            rc = main(argv)
        except SystemExit as stop:  # a command-line mistake: argparse exits, as the console script does
            rc = stop.code
        out, err = capsys.readouterr()
    seconds = time.perf_counter() - t0
    box.cache.chmod(0o755) if box.cache.is_dir() else None
    box.results.chmod(0o755) if box.results.is_dir() else None
    assert "Traceback" not in err, err
    lines = [
        line for line in err.splitlines() if line.strip() and not LOG_LINE.match(line) and not PROGRESS_LINE.match(line)
    ]
    if case.match is None:
        assert rc == 0, err
        assert not [line for line in lines if "error" in line.lower()], err
    else:
        assert rc == 2, (rc, err)
        assert len(lines) == 1, err
        assert lines[0].startswith("harness: error: ") and re.search(case.match, lines[0]), lines[0]
        assert _snapshot(box.results) == results_before  # nothing half-written
    if case.quick is not None:
        assert seconds < case.quick, f"took {seconds:.1f} s"
    assert {k: v for k, v in _snapshot(box.cache).items() if k in cache_before} == cache_before
    _assert_cache_sound(box.cache)
    if case.check is not None:
        case.check(box, out)


def test_the_matrix_is_large_and_in_the_reference():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.process for c in CASES) >= 1  # the installed console script, in its own process
    reference = (ROOT / "docs" / "reference.md").read_text()
    assert markdown_table() in reference, (
        "docs/reference.md's Bad inputs table is stale: python tests/test_bad_inputs.py"
    )


def markdown_table() -> str:
    """The reference's table, from CASES (so the docs cannot claim a case the tests do not run)."""
    rows = ["| area | input | what harness does |", "|---|---|---|"]
    for c in CASES:
        if c.match is None:
            said = c.expect
        else:
            said = "exit 2: " + (
                c.expect or "`" + re.sub(r"\\(.)", r"\1", c.match.replace(".*", "…")).replace("|", "\\|") + "`"
            )
        rows.append(f"| {c.area} | {c.what.replace('|', '/')} | {said} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
