"""What a results folder or a config can do to whoever opens or runs it: no code from
YAML, no remote code unless asked, no secret from the environment in results, and a
report that renders item text as text (report.md through a real CommonMark renderer: no
image, link or script from a question or a model output)."""

import html
import json
import re
from html.parser import HTMLParser

import pytest
import yaml

from conftest import tiny_config
from harness.config import ConfigError, load_config, parse_config
from harness.report.run import write_report
from harness.run.runner import run_experiment

SCRIPT = "</td></tr><script>alert('q')</script>"
IMG = "<img src=x onerror=alert('a')>"
SECRET = "sk-test-0123456789abcdefSECRET"
# Markdown a viewer would render as a fetching image, a script link, links and bold
MD_IMAGE = "![x](http://127.0.0.1:9/pixel.png)"
MD_LINK = "[c](javascript:alert(1))"
MD_FILE = "![f](pixel.png) [g](page.html)"  # a file name (no slash)
AUTOLINKS = "<http://127.0.0.1:9/auto> http://127.0.0.1:9/bare www.example.com ops@example.com"
QUESTION = f"Who runs engineering? {SCRIPT} {MD_IMAGE} {AUTOLINKS} a | b"
OUTPUT = f"{SCRIPT} {IMG} {MD_LINK} **loud** `tick` {AUTOLINKS}"


def test_config_yaml_runs_no_python_tags(tmp_path):
    import harness.config as config

    assert issubclass(config._StrictLoader, yaml.SafeLoader)
    for tag in ("!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!python/object:object {}"):
        path = tmp_path / "c.yaml"
        path.write_text(f"name: x\nseed: {tag}\n")
        with pytest.raises(ConfigError, match=r"c\.yaml: line 2 invalid YAML: could not determine a constructor"):
            load_config(path)


def test_remote_code_is_off_unless_the_config_asks(tiny_model_dir, monkeypatch):
    import transformers

    from harness.models.local import load_generator

    assert parse_config({"name": "x"}).model.trust_remote_code is False
    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*a, **kw):
        seen.append(kw.get("trust_remote_code"))
        return real(*a, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    load_generator(str(tiny_model_dir), dtype="float32", device="cpu", trust_remote_code=True)
    assert seen == [False, True]


@pytest.fixture(scope="module")
def hostile_run(tiny_model_dir, tmp_path_factory):
    """A run on user data with HTML and Markdown payloads in a question, its answer, a
    document id and an unreadable file's name, and a secret in the environment; then a
    model output with payloads, re-reported."""
    root = tmp_path_factory.mktemp("hostile")
    docs = root / "docs"
    docs.mkdir()
    (docs / f"doc{IMG}.md").write_text(f"Mira Tolland runs engineering at Halvard Station. {IMG}")
    (docs / f"{MD_FILE}.pdf").write_bytes(b"")  # unreadable: its name is in the report's list of skipped files
    q = {"id": f"q{SCRIPT}", "question": QUESTION, "answers": [f"Mira {IMG}"]}
    (root / "q.jsonl").write_text(json.dumps(q) + "\n")
    raw = tiny_config(
        tiny_model_dir,
        name="hostile",
        data={"documents": str(docs), "questions": str(root / "q.jsonl"), "skip_unreadable": True},
        train={"objective": "cpt", "max_steps": 1, "batch_size": 4, "max_length": 64},
        eval={"pipelines": ["base", "rag"], "max_new_tokens": 4, "bootstrap_samples": 100, "multiple_choice": False},
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("OPENAI_API_KEY", SECRET)
    mp.setenv("HF_TOKEN", SECRET + "hf")
    try:
        out = run_experiment(parse_config(raw), results_root=root / "results")
    finally:
        mp.undo()
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for p in preds:
        p["output"] = OUTPUT
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    write_report(out)
    return out


def test_no_environment_secret_reaches_any_result_file(hostile_run):
    files = [p for p in hostile_run.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p


class _Text(HTMLParser):
    """The text a browser shows for rendered HTML, the tags it builds, and its tables'
    rows as lists of cell texts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.tags, self.rows, self.in_cell = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag):
        self.in_cell = self.in_cell and tag not in ("td", "th")

    def handle_data(self, data):
        self.parts.append(data)
        if self.in_cell:
            self.rows[-1][-1] += data

    def text(self) -> str:
        return " ".join("".join(self.parts).split())


def render_markdown(md: str) -> _Text:
    """report.md through a CommonMark renderer with GFM tables and strikethrough, and
    linkify (bare URLs and www. names become links, as GitHub's viewer makes them). It
    accepts every link target, `javascript:` too, as the viewer in issue #22 did
    (markdown-it itself drops those, which would hide an unescaped one)."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"linkify": True}).enable(["table", "strikethrough", "linkify"])
    renderer.validateLink = lambda url: True
    page = _Text()
    page.feed(renderer.render(md))
    return page


def test_report_md_shows_payloads_as_text(hostile_run):
    md = (hostile_run / "report.md").read_text()
    assert not re.search(r"<\s*(script|img|/td)", md, re.I), [line for line in md.splitlines() if "<" in line]
    page = render_markdown(md)
    text = page.text()
    assert f"{QUESTION} — gold: Mira {IMG}" in text  # the worked example, every character as written
    assert f"“{OUTPUT}”" in text
    assert f"1 unreadable file(s) skipped: {hostile_run.parent.parent}/docs/{MD_FILE}.pdf: not a readable PDF" in text
    images = [a["src"] for tag, a in page.tags if tag == "img"]
    assert images and all(src.startswith("figures/") for src in images), images  # the report's own figures only
    assert [a for tag, a in page.tags if tag in ("a", "script")] == []  # no link, autolink or script from item text
    assert "strong" in [tag for tag, _ in page.tags]  # the report's own bold still renders
    assert "<strong>loud</strong>" not in md and "**loud**" not in md


def test_report_html_escapes_payloads_and_forbids_network(hostile_run):
    page = (hostile_run / "report.html").read_text()
    assert page.count("<script>") == 1  # the page's own filter script, nothing injected
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(&#x27;a&#x27;)&gt;" in page  # the document id, question, answer, output
    assert html.escape(QUESTION) in page and html.escape(OUTPUT) in page
    assert "<strong>loud</strong>" not in page and "<code>tick</code>" not in page  # item text is not markup
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;script&gt;" in page
    csp = re.search(r"<meta http-equiv='Content-Security-Policy' content=\"([^\"]+)\">", page)
    assert csp and "default-src 'none'" in csp.group(1) and "script-src 'sha256-" in csp.group(1)
    assert "img-src data:" in csp.group(1) and "http" not in csp.group(1)
    assert page.index("Content-Security-Policy") < page.index("<body>")


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "verbose"])
def test_an_api_key_with_a_line_end_is_never_printed(tmp_path, tiny_model_dir, verbose):
    """`harness run` (the console script, in its own process) with the key
    "sk-SECRET\\r\\nX: y" in the variable the config names, against a fake server on
    127.0.0.1: one line naming the variable, exit 2, and the key nowhere: not on stdout
    or stderr (no traceback), not in any file written, not sent."""
    import subprocess
    import sys
    from pathlib import Path

    from test_endpoint import FakeServer

    server = FakeServer()
    raw = tiny_config(tiny_model_dir, name="keyed", eval={"pipelines": ["base"], "max_new_tokens": 4})
    raw["output_dir"] = str(tmp_path / "results")
    raw["model"] = {
        "name": str(tiny_model_dir),
        "backend": "endpoint",
        "base_url": server.url(),
        "served_model": "smollm2",
        "api_key_env": "HARNESS_CASE_KEY",
        "retries": 0,
        "timeout": 10,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HARNESS_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "HARNESS_CASE_KEY": "sk-SECRET\r\nX: y",
    }
    try:
        p = subprocess.run(
            [str(Path(sys.executable).parent / "harness"), *verbose, "run", str(tmp_path / "c.yaml")],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
    finally:
        server.close()
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "harness: error: model.api_key_env: the key in $HARNESS_CASE_KEY has a carriage return (CR) "
        "at character 10; an API key is visible ASCII (a line end copied from a file?); it was not sent"
    ]
    assert "Traceback" not in p.stderr
    assert "SECRET" not in p.stdout + p.stderr
    written = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert not [f for f in written if b"SECRET" in f.read_bytes()]
    assert server.seen == []  # refused before any request
