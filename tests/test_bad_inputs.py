"""The bad-input matrix: what a new user gets wrong, through the real command line.

Every case in CASES is one row of README's "Bad inputs" table (`python
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

GOOD_Q = {"id": "q1", "question": "Who runs engineering at Halvard Station?", "answers": ["Mira Tolland"],
          "choices": ["Ilse Varga", "Mira Tolland", "Kestrel Ostrel", "Brannock Quell"], "answer_index": 1}
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


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

    def own_data(self, *, questions: list | None = None, qfile: Path | None = None, docs: Path | None = None,
                 **overrides) -> str:
        """A config on the user's own files (good ones unless given)."""
        if docs is None:
            docs = self.root / "docs"
            self.file("docs/station.md", "Mira Tolland runs engineering at Halvard Station.")
        if qfile is None:
            qfile = self.jsonl("questions.jsonl", questions if questions is not None else [GOOD_Q])
        train = self.jsonl("train.jsonl", [{"question": "Who runs engineering?", "answers": ["Mira Tolland"]}])
        return self.config(data={"documents": str(docs), "questions": str(qfile), "train_questions": str(train)},
                           **overrides)

    def model_copy(self, name: str, drop: tuple[str, ...] = ()) -> Path:
        target = self.root / name
        shutil.copytree(self.model_dir, target)
        for f in drop:
            (target / f).unlink(missing_ok=True)
        return target

    def finished_run(self, name: str = "run") -> Path:
        """A results folder shaped like a finished run's: the smallest metrics.json the
        schema accepts (harness/schema.py), nothing measured."""
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
    row = {"question_id": "q1", "pipeline": "base", "question": MARKDOWN_ITEM, "answers": ["[c](javascript:alert(1))"],
           "output": "x", "answerable": True, "scores": {"contains": 0.0}, "retrieved": []}
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
    Case("duplicate-key", "config", "`train:` given twice (YAML keeps the last)",
         lambda b: ["validate", b.config("name: case\ntrain:\n  epochs: 50\ntrain:\n  lr: 0.5\n")],
         r"case\.yaml: line 4 .*duplicate key 'train'"),
    Case("duplicate-nested-key", "config", "`lr` twice inside `train:`",
         lambda b: ["validate", b.config("name: case\ntrain:\n  lr: 0.1\n  lr: 0.2\n")],
         r"case\.yaml: line 4 .*duplicate key 'lr'"),
    Case("not-utf8", "config", "config saved as Latin-1",
         lambda b: ["validate", b.config(b"name: case\n# caf\xe9\n")], r"case\.yaml: line 2: not UTF-8"),
    Case("bom", "config", "config with a UTF-8 byte-order mark", lambda b: ["validate", b.config("\ufeffname: case\n")],
         expect="accepted"),
    Case("tabs", "config", "tab indentation",
         lambda b: ["validate", b.config("name: case\ntrain:\n\tlr: 0.1\n")], r"case\.yaml: line 3 invalid YAML: .*'\\t'"),
    Case("wrong-type", "config", "`train.rank: eight`", lambda b: ["validate", b.config(train={"rank": "eight"})],
         r"case\.yaml: train\.rank: "),
    Case("unknown-key", "config", "`retrieval.top_kk` (typo)",
         lambda b: ["validate", b.config(retrieval={"top_kk": 3})], r"retrieval\.top_kk: Extra inputs"),
    Case("unknown-section", "config", "`trian:` section (typo)", lambda b: ["validate", b.config(trian={})],
         r"case\.yaml: trian: Extra inputs"),
    Case("lr-huge", "config", "`train.lr: 1e9`", lambda b: ["validate", b.config("name: case\ntrain: {lr: 1e9}\n")],
         r"train\.lr: .*less than or equal to 1"),
    Case("alpha-inf", "config", "`train.alpha: .inf`",
         lambda b: ["validate", b.config("name: case\ntrain: {alpha: .inf}\n")], r"train\.alpha: .*finite"),
    Case("nan", "config", "`eval.min_effect: .nan`",
         lambda b: ["validate", b.config("name: case\neval: {min_effect: .nan}\n")], r"eval\.min_effect: .*finite"),
    Case("zero-epochs", "config", "`train.epochs: 0`", lambda b: ["validate", b.config(train={"epochs": 0})],
         r"train\.epochs: "),
    Case("empty-pipelines", "config", "`eval.pipelines: []`", lambda b: ["validate", b.config(eval={"pipelines": []})],
         r"eval: .*at least one"),
    Case("judge-loglikelihood-over-chat", "config", "`eval.judge.verdicts: loglikelihood` for a chat endpoint judge",
         lambda b: ["validate", b.config(eval={"judge": {
             "model": {"name": "smollm2", "backend": "endpoint", "base_url": "http://127.0.0.1:9/v1",
                       "served_model": "x", "api": "chat", "mc_protocol": "letter"},
             "verdicts": "loglikelihood"}})],
         r"eval\.judge\.verdicts: loglikelihood needs a judge that scores text"),
    Case("empty-target-modules", "config", "`train.target_modules: []`",
         lambda b: ["validate", b.config(train={"target_modules": []})], r"train\.target_modules: "),
    Case("empty-grid-axis", "config", "a grid axis with no values",
         lambda b: ["validate", b.config(grid={"axes": {"train.rank": []}})], r"grid: .*at least one value"),
    Case("grid-missing-field", "config", "grid axis `train.rnak` (no such field)",
         lambda b: ["validate", b.config(grid={"axes": {"train.rnak": [4, 8]}})],
         r"grid: 'train\.rnak' is not a config field"),
    Case("grid-cell-collision", "config", "grid values `a/b` and `a-b` (same folder name once cleaned)",
         lambda b: ["validate", b.config(grid={"axes": {"data.world.seed": [1], "model.name": ["a/b", "a-b"]}})],
         r"both get the folder name"),
    Case("alias-bomb", "config", "YAML aliases nested 9 deep (a 600-byte file)",
         lambda b: ["validate", b.config(_alias_bomb())], r"expands to more than 100,000", quick=30),
    Case("deep-nesting", "config", "lists nested 5,000 deep",
         lambda b: ["validate", b.config(_deep(5000))], r"line 2 invalid YAML: nested deeper than 64", quick=30),
    Case("recursive-alias", "config", "an alias inside its own anchor",
         lambda b: ["validate", b.config("name: case\na: &a [*a]\n")], r"refers to a mapping or list that contains it"),
    Case("python-tag", "config", "`!!python/object/apply:os.system` (safe loader: no code runs)",
         lambda b: ["validate", b.config(f"name: !!python/object/apply:os.system ['touch {b.root}/pwned']\n")],
         r"line 1 invalid YAML: could not determine a constructor", check=_no_marker),
    Case("not-a-mapping", "config", "a YAML list at the top", lambda b: ["validate", b.config("- a\n- b\n")],
         r"case\.yaml: expected a mapping"),
    Case("empty-config", "config", "an empty file", lambda b: ["validate", b.config("")], r"expected a mapping"),
    Case("missing-config", "config", "a config path that does not exist",
         lambda b: ["validate", str(b.root / "nope.yaml")], r"nope\.yaml: cannot read config"),
    Case("huge-config", "config", "a 2 MB config", lambda b: ["validate", b.config("name: case\n" + "#" * (2 << 20))],
         r"larger than 1024 KiB"),
    Case("long-name", "config", "a 300-character `name`", lambda b: ["validate", b.config(name="x" * 300)],
         r"case\.yaml: name: .*at most 100"),
    Case("name-escapes", "config", "`name: ../../outside` (escapes the results folder)",
         lambda b: ["run", b.config(name="../../outside")], r"case\.yaml: name: String should match pattern"),
    Case("overlap", "config", "`chunk_overlap` >= `chunk_size`",
         lambda b: ["validate", b.config(retrieval={"chunk_size": 16, "chunk_overlap": 16})], r"chunk_overlap"),
    Case("executor-bogus", "config", "`run --executor bogus` without a grid",
         lambda b: ["run", b.config(), "--executor", "bogus"], r"--executor: 'bogus' is not one of"),
    # ---- data files ---------------------------------------------------------------------
    Case("malformed-jsonl", "data", "questions line 2 is not JSON",
         lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", json.dumps(Q) + "\n{not json\n"))],
         r"q\.jsonl:2: invalid JSON"),
    Case("torn-jsonl", "data", "questions file cut mid-line",
         lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", json.dumps(Q) + "\n" + json.dumps(Q)[:30]))],
         r"q\.jsonl:2: invalid JSON"),
    Case("crlf", "data", "questions with Windows line ends (CRLF)",
         lambda b: ["validate", b.own_data(qfile=b.jsonl("q.jsonl", [Q, {**Q, "id": "q2"}], sep="\r\n"))],
         expect="accepted"),
    Case("bom-jsonl", "data", "questions with a byte-order mark",
         lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", "\ufeff" + json.dumps(Q) + "\n"))],
         expect="accepted"),
    Case("non-ascii", "data", "non-ASCII file names, ids, questions and answers (Zürich, 東京)",
         lambda b: ["validate", b.own_data(docs=_two_files(b, "docs-ü/Zürich.md", "docs-ü/東京.txt"),
                                           questions=[{**Q, "id": "frage-ü", "question": "Wer leitet 東京?",
                                                       "answers": ["Zoë Ñúñez"],
                                                       "choices": ["Zoë Ñúñez", "Ilse Varga"], "answer_index": 0}])],
         expect="accepted"),
    Case("huge-line", "data", "a 9 MiB JSONL line",
         lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", json.dumps({**Q, "pad": "x" * (9 << 20)})))],
         r"q\.jsonl:1: line of 9 MiB is over the limit"),
    Case("empty-id", "data", "`\"id\": \"\"`", lambda b: ["validate", b.own_data(questions=[{**Q, "id": ""}])],
         r"questions\.jsonl:1: 'id' must be a non-empty string"),
    Case("duplicate-id", "data", "two questions with one id", lambda b: ["validate", b.own_data(questions=[Q, Q])],
         r"questions\.jsonl:2: duplicate id 'q1'"),
    Case("object-id", "data", "an object as id", lambda b: ["validate", b.own_data(questions=[{**Q, "id": {"a": 1}}])],
         r"questions\.jsonl:1: 'id' must be"),
    Case("answer-index-range", "data", "`answer_index: 7` with 4 choices",
         lambda b: ["validate", b.own_data(questions=[{**Q, "answer_index": 7}])],
         r"questions\.jsonl:1: 'answer_index' must be an integer index"),
    Case("answer-index-wrong", "data", "`answer_index` at a choice not among `answers`",
         lambda b: ["validate", b.own_data(questions=[{**Q, "answer_index": 0}])],
         r"questions\.jsonl:1: 'answer_index' points at 'Ilse Varga', which is not among 'answers'"),
    Case("duplicate-choices", "data", "four identical choices",
         lambda b: ["validate", b.own_data(questions=[{**Q, "choices": ["Mira Tolland"] * 4}])],
         r"questions\.jsonl:1: 'choices' has the same choice twice"),
    Case("non-string-answers", "data", "`answers: [1, 2]`",
         lambda b: ["validate", b.own_data(questions=[{**Q, "answers": [1, 2]}])],
         r"questions\.jsonl:1: 'answers' must be a list of non-empty strings"),
    Case("not-utf8-data", "data", "questions saved as Latin-1",
         lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", json.dumps(Q).encode() + b"\n\xe9\n"))],
         r"q\.jsonl:2: not UTF-8"),
    Case("empty-questions", "data", "an empty questions file",
         lambda b: ["validate", b.own_data(qfile=b.file("q.jsonl", ""))], r"q\.jsonl: no questions"),
    Case("md-and-txt", "data", "`x.md` and `x.txt` (two documents, one id)",
         lambda b: ["validate", b.own_data(docs=_two_files(b, "d/x.md", "d/x.txt"))],
         r"x\.txt: same document id 'x' as \S*x\.md"),
    Case("dev-zero", "data", "`documents: /dev/zero`", lambda b: ["validate", b.own_data(docs=Path("/dev/zero"))],
         r"/dev/zero: not a regular file", quick=30),
    Case("huge-file", "data", "a 300 MiB questions file",
         lambda b: ["validate", b.own_data(qfile=_sparse(b.root / "big.jsonl", 300 << 20))],
         r"big\.jsonl: 300 MiB is over the limit of 256 MiB", quick=30),
    Case("huge-documents-folder", "data", "a folder of documents over 256 MiB together",
         lambda b: ["validate", b.own_data(docs=_sparse_folder(b.root / "bigdocs", 300 << 20))],
         r"bigdocs: documents together are over the limit of 256 MiB", quick=30),
    Case("missing-documents", "data", "`documents:` path that does not exist",
         lambda b: ["validate", b.own_data(docs=b.root / "nowhere")], r"nowhere: documents not found"),
    Case("tofu-without-facts", "data", "TOFU entity row without `facts`",
         lambda b: ["validate", b.config(data={"external": {"format": "tofu", "path": str(_tofu(b))}})],
         r"entities\.jsonl:1: needs 'entity_id' .* and 'facts'"),
    # ---- models and embedders -----------------------------------------------------------
    Case("model-missing-path", "model", "`model.name` a folder that does not exist",
         lambda b: ["validate", b.config(model={"name": str(b.root / "gone")})], r"model\.name: .*gone"),
    Case("garbage-gguf", "model", "a `.gguf` file of garbage",
         lambda b: ["run", b.config(model={"name": str(b.file("m.gguf", b"\x00garbage" * 100))})],
         r"model\.name: .*m\.gguf is not a GGUF file"),
    Case("model-typo", "model", "`model.name: smolm2`", lambda b: ["validate", b.config(model={"name": "smolm2"})],
         r"model\.name: unknown model 'smolm2'; did you mean 'smollm2'"),
    Case("model-not-local", "model", "a hub id not cached, hub offline",
         lambda b: ["validate", b.config(model={"name": "nobody/no-such-model"})],
         r"model\.name: 'nobody/no-such-model' .*hub is offline"),
    Case("model-no-config", "model", "a model folder without config.json",
         lambda b: ["validate", b.config(model={"name": str(b.model_copy("m", drop=("config.json",)))})],
         r"model\.name: .*has no config\.json"),
    Case("no-chat-template", "model", "a model without a chat template",
         lambda b: ["validate", b.config(model={"name": str(_chat_template_gone(b))})],
         expect="accepted: plain-text prompts (`system\\n\\nuser\\nAnswer:`)"),
    Case("target-modules", "model", "`train.target_modules: [q_proj, qkv]` (no `qkv` layer)",
         lambda b: ["validate", b.config(train={"target_modules": ["q_proj", "qkv"]})],
         r"train\.target_modules: 'qkv' match no module of"),
    Case("target-modules-all-linear", "model", "`train.target_modules: all-linear` (peft's selector, not a name)",
         lambda b: ["validate", b.config(train={"target_modules": "all-linear"})], expect="accepted"),
    Case("embedder-typo", "model", "`embedder.name: minlm` (caught before any training)",
         lambda b: ["run", b.config(embedder={"name": "minlm"})],
         r"embedder\.name: unknown embedder 'minlm'; did you mean 'minilm'"),
    Case("embedder-missing", "model", "`embedder.name: ./no-embedder`",
         lambda b: ["validate", b.config(embedder={"name": "./no-embedder"})], r"embedder\.name: './no-embedder'"),
    # ---- places -------------------------------------------------------------------------
    Case("results-dir-file", "places", "`--results-dir` naming a file",
         lambda b: ["run", b.config(), "--results-dir", str(b.file("afile", "x"))], r"--results-dir: .*afile is a file"),
    Case("output-dir-under-file", "places", "`output_dir` below a file",
         lambda b: ["run", b.config(output_dir=str(b.file("afile", "x") / "sub"))], r"output_dir: .*afile is a file"),
    Case("results-not-writable", "places", "results folder not writable",
         lambda b: (b.results.mkdir(), b.results.chmod(0o555), ["run", b.config()])[-1],
         r"(--results-dir|output_dir): .*not writable \(Permission denied\)", process=True, unprivileged=True),
    Case("cache-is-file", "places", "`HARNESS_CACHE` naming a file (caught before model conversion)",
         lambda b: (b.env.update(HARNESS_CACHE=str(b.file("cachefile", "x"))), ["run", b.config()])[-1],
         r"\$HARNESS_CACHE: .*cachefile is a file"),
    Case("cache-read-only", "places", "cache folder read-only",
         lambda b: (b.cache.chmod(0o555), ["run", b.config()])[-1],
         r"\$HARNESS_CACHE: .*not writable \(Permission denied\)", process=True, unprivileged=True),
    Case("disk-full", "places", "disk full (RLIMIT_FSIZE 64 KiB) mid-run",
         lambda b: ["run", b.config(eval={"pipelines": ["base", "rag"], "max_new_tokens": 4,
                                          "bootstrap_samples": 100}, data={"max_questions": 4})],
         r"harness: error: \S+: File too large .*unchanged", process=True, fsize=64 << 10),
    Case("lock-garbage", "places", "lock file holding `[1, 2]`", _locked, r"another run is writing it"),
    # ---- reading results ----------------------------------------------------------------
    Case("report-truncated", "results", "`report` on a truncated metrics.json",
         lambda b: (b.finished_run(), (b.results / "run" / "metrics.json").write_text('{"experiment": "x", "st'),
                    ["report", str(b.results / "run")])[-1], r"metrics\.json: not readable as JSON"),
    Case("report-incomplete", "results", "`report` on a metrics.json missing fields",
         lambda b: (b.finished_run(), (b.results / "run" / "metrics.json").write_text('{"experiment": "x"}'),
                    ["report", str(b.results / "run")])[-1], r"metrics\.json: incomplete, no status"),
    Case("report-torn-predictions", "results", "`report` with predictions.jsonl cut mid-line",
         lambda b: (b.finished_run(), (b.results / "run" / "predictions.jsonl").write_text('{"pipeline": "ba'),
                    ["report", str(b.results / "run")])[-1], r"predictions\.jsonl: truncated or damaged"),
    Case("report-unfinished", "results", "`report` on a run with status `running`",
         lambda b: (b.finished_run(), _set_status(b.results / "run", "running"),
                    ["report", str(b.results / "run")])[-1], r"status 'running', not a finished run"),
    Case("compare-truncated", "results", "`compare` with one truncated metrics.json",
         lambda b: (b.finished_run("a"), b.finished_run("b"), (b.results / "b" / "metrics.json").write_text("{"),
                    ["compare", str(b.results / "a"), str(b.results / "b")])[-1],
         r"b/metrics\.json: not readable as JSON"),
    Case("plan-damaged-cell", "results", "`plan` with a cell's metrics.json truncated", _damaged_grid,
         expect="accepted: the cell is listed `to run` and recomputed", check=_plan_reruns_damaged_cell),
    # ---- documents and report (#22) -------------------------------------------------------
    Case("docs-link-out", "documents", "`docs/passwd.txt -> /etc/passwd` (a link out of the documents folder)",
         lambda b: ["validate", b.own_data(docs=_docs(b, link=("passwd.txt", "/etc/passwd")))],
         r"docs/passwd\.txt: a link to /etc/passwd, outside the documents folder; refused"),
    Case("docs-link-out-skipped", "documents", "the same link with `data.skip_unreadable: true`, then a run",
         lambda b: ["run", b.own_data(docs=_docs(b, link=("passwd.txt", "/etc/passwd")), data__skip_unreadable=True,
                                      eval={"pipelines": ["base", "rag"], "max_new_tokens": 4,
                                            "bootstrap_samples": 100})],
         expect="accepted: listed in `data.skipped_documents`; no line of /etc/passwd in any result file",
         check=_passwd_nowhere),
    Case("docs-folder-link-out", "documents", "`docs/etc -> /etc` (a folder link out of the documents folder)",
         lambda b: ["validate", b.own_data(docs=_docs(b, link=("etc", "/etc")))],
         r"docs/etc: a link to /etc, outside the documents folder; refused"),
    Case("docs-fifo", "documents", "a FIFO in the documents folder",
         lambda b: ["validate", b.own_data(docs=_docs(b, fifo="pipe.txt"))],
         r"docs/pipe\.txt: a FIFO, not a document; refused", quick=30),
    Case("docs-unreadable", "documents", "a document without read permission (mode 000)",
         lambda b: ["validate", b.own_data(docs=_docs(b, locked="locked.md"))],
         r"docs/locked\.md: cannot read \(Permission denied\)", process=True, unprivileged=True),
    Case("docs-nested-html", "documents", "1.1 MB of nested `<div>` (took over 180 s before)",
         lambda b: ["validate", b.own_data(docs=_docs(b, files={"page.html": _nested_divs(100_000)}))],
         r"docs/page\.html: HTML nested deeper than 512 elements", quick=30),
    Case("docs-nested-pdf", "documents", "a PDF nested 200,000 deep (a 3,001-line RecursionError before)",
         lambda b: ["validate", b.own_data(docs=_docs(b, make=lambda d: write_deep_pdf(d / "deep.pdf", depth=200_000)))],
         r"docs/deep\.pdf: not a readable PDF \(objects nested deeper than Python's recursion limit", quick=30),
    Case("docs-docx-xml", "documents", "a .docx with broken XML (an lxml traceback before)",
         lambda b: ["validate", b.own_data(docs=_docs(b, make=lambda d: replace_docx_member(
             d / "broken.docx", "word/document.xml", b"<w:document><unclosed")))],
         r"docs/broken\.docx: not a valid \.docx \(Namespace prefix w on document is not defined"),
    Case("docs-docx-inflate", "documents", "a .docx whose document member does not inflate",
         lambda b: ["validate", b.own_data(docs=_docs(b, make=lambda d: corrupt_docx_member(d / "bad.docx")))],
         r"docs/bad\.docx: not a valid \.docx \(Error -3 while decompressing data"),
    Case("report-markdown", "documents", "`report` on items holding `![x](http://…)`, `[c](javascript:…)`, "
         "`<http://…>`, a bare URL and a pipe", _markdown_items,
         expect="accepted: report.md renders them as text (no image, link or cell from an item)",
         check=_markdown_inert),
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
    b.jsonl("tofu/qa.jsonl", [{"entity_id": "e1", "qa_id": "1", "question": "Q?", "answer": "A",
                               "paraphrased_question": "Q2?"}])
    return b.root / "tofu"


def _set_status(folder: Path, status: str) -> None:
    m = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**m, "status": status}))


def _docs(b: Box, *, link: tuple[str, str] | None = None, fifo: str | None = None, locked: str | None = None,
          files: dict[str, str] | None = None, make: Callable[[Path], Path] | None = None) -> Path:
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
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _seed_cache(cache: Path) -> None:
    from harness.cache import write_bytes, write_manifest

    write_bytes(cache / "indexes" / "seed.faiss", b"an index")
    (cache / "adapters" / "seed").mkdir(parents=True)
    (cache / "adapters" / "seed" / "adapter_model.safetensors").write_bytes(b"weights")
    write_manifest(cache / "adapters" / "seed")


def _assert_cache_sound(cache: Path) -> None:
    """Every entry with a manifest verifies; no temp file or unfinished entry is left."""
    from harness.cache import read_bytes, verify_dir

    for manifest in cache.rglob("harness-manifest.json"):
        assert verify_dir(manifest.parent), manifest.parent
    for sidecar in cache.rglob("*.manifest.json"):
        assert read_bytes(sidecar.with_name(sidecar.name[:-len(".manifest.json")])) is not None, sidecar
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

    p = subprocess.run(prefix + _harness_script() + argv, capture_output=True, text=True, env=env, cwd=box.root,
                       preexec_fn=limit, timeout=300)
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
        rc = main(argv)
        out, err = capsys.readouterr()
    seconds = time.perf_counter() - t0
    box.cache.chmod(0o755) if box.cache.is_dir() else None
    box.results.chmod(0o755) if box.results.is_dir() else None
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not LOG_LINE.match(line)]
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


def test_the_matrix_is_large_and_in_the_readme():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.process for c in CASES) >= 1  # the installed console script, in its own process
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's Bad inputs table is stale: python tests/test_bad_inputs.py"


def markdown_table() -> str:
    """README's table, from CASES (so README cannot claim a case the tests do not run)."""
    rows = ["| area | input | what harness does |", "|---|---|---|"]
    for c in CASES:
        if c.match is None:
            said = c.expect
        else:
            said = "exit 2: " + (c.expect or "`" + re.sub(r"\\(.)", r"\1", c.match.replace(".*", "…")).replace("|", "\\|") + "`")
        rows.append(f"| {c.area} | {c.what.replace('|', '/')} | {said} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
