"""The report: two renderings from one source, the notebook, and the page in Chromium."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import tiny_config
from harness.config import parse_config
from harness.report.run import ReportError, compare_runs, write_report
from harness.run.runner import run_experiment
from harness.store.schema import load_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    cfg = parse_config(tiny_config(tiny_model_dir, name="report-fixture"))
    return run_experiment(cfg, results_root=tmp_path_factory.mktemp("report"))


def test_markdown_and_html_come_from_the_same_numbers(run_dir):
    md = (run_dir / "report.md").read_text()
    page = (run_dir / "report.html").read_text()
    m = json.loads((run_dir / "metrics.json").read_text())
    cell = m["pipelines"]["rag"]["mc_accuracy"]
    text = f"{100 * cell['mean']:.1f} [{100 * cell['ci95'][0]:.1f}, {100 * cell['ci95'][1]:.1f}]"
    assert text in md and text in page
    assert md.index("## Verdicts") < md.index("## Results by pipeline")
    for v in m["verdicts"].values():
        from harness.evaluate.verdicts import VERDICTS

        assert v["verdict"] in VERDICTS
        assert v["verdict"] in md
    assert "http://" not in page and "https://" not in page  # self-contained
    assert page.count("data:image/png;base64,") >= 3
    assert len(re.findall(r"<tr data-pipeline=", page)) == 4 * m["data"]["questions"]
    for fig in ("pipelines", "cost", "loss", "retrieval"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000


def test_report_regenerates_identically_from_files(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for name in ("report.md", "report.html"):
        (copy / name).unlink()
    write_report(copy)
    assert (copy / "report.md").read_text() == (run_dir / "report.md").read_text()
    assert (copy / "report.html").read_text() == (run_dir / "report.html").read_text()


def test_what_a_run_writes_is_the_schema_and_survives_its_round_trip(run_dir):
    """The report renders schema.Metrics.raw(): for today's runner that must be the file
    itself, every key and value (json.dumps tells 0 from 0.0)."""
    raw = json.loads((run_dir / "metrics.json").read_text())
    assert json.dumps(load_metrics(run_dir / "metrics.json").raw(), sort_keys=True) == json.dumps(raw, sort_keys=True)


def _no_constant(name: str):
    raise AssertionError(f"{name} is not JSON")


def test_every_json_file_a_run_writes_is_standard_json(run_dir):
    files = [*run_dir.rglob("*.json"), *run_dir.rglob("*.jsonl")]
    assert {"metrics.json", "predictions.jsonl", "loss_curve.json"} <= {f.name for f in files}
    for f in files:
        for line in f.read_text().splitlines() if f.suffix == ".jsonl" else [f.read_text()]:
            json.loads(line, parse_constant=_no_constant)


def test_an_undefined_number_is_null_on_disk_and_n_a_in_the_report(run_dir, tmp_path):
    """NaN (a mean over no items, an interval of nothing) is written as null, which any
    JSON reader takes; the schema loads it and the report shows n/a."""
    from harness.store.results import atomic_write_json

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    nan = float("nan")
    m = json.loads((copy / "metrics.json").read_text())
    m["pipelines"]["rag"]["mc_accuracy"].update(mean=nan, ci95=[nan, nan])
    for c in m["comparisons"]:
        c.update(diff=nan, ci95=[nan, float("inf")], p=nan)
    m["chance"] = {k: nan for k in m["chance"]}
    atomic_write_json(copy / "metrics.json", m)
    again = json.loads((copy / "metrics.json").read_text(), parse_constant=_no_constant)
    assert again["pipelines"]["rag"]["mc_accuracy"] | {"n": 0} == {
        "mean": None,
        "ci95": [None, None],
        "n": 0,
        "ci_method": "wilson",
    }
    assert {(c["diff"], *c["ci95"], c["p"]) for c in again["comparisons"]} == {(None, None, None, None)}
    assert load_metrics(copy / "metrics.json").pipelines["rag"]["mc_accuracy"].mean is None
    write_report(copy)
    md = (copy / "report.md").read_text().splitlines()
    row = next(line for line in md if line.startswith("| multiple-choice accuracy, acc (answerable)"))
    assert row.split(" | ")[4] == "n/a [n/a, n/a]"  # columns: metric, n, base, finetuned, rag, rag_finetuned
    assert "| rag − base | n/a | [n/a, n/a] | n/a |  |" in md


def test_the_report_reads_through_the_schema_and_names_a_foreign_version(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    m = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**m, "schema_version": 2}))
    with pytest.raises(ReportError, match=r"metrics\.json: schema version 2; this harness reads version 1"):
        write_report(copy)
    with pytest.raises(ReportError, match=r"schema version 2; this harness reads version 1"):
        compare_runs(run_dir, copy)


def test_a_damaged_loss_curve_is_named_not_a_traceback(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "loss_curve.json").write_text('{"epochs": [')
    with pytest.raises(ReportError, match=r"loss_curve\.json: not readable as JSON, truncated or damaged"):
        write_report(copy)


def _shifted(agg: dict, by: float) -> dict:
    return {**agg, "mean": agg["mean"] + by, "ci95": [agg["ci95"][0] + by, agg["ci95"][1] + by]}


def test_compare_two_runs_shows_each_runs_values_and_their_difference(run_dir, tmp_path):
    """B is the fixture's run with known changes: rag's multiple-choice accuracy 20
    points away, base's fact recall 10 points away, rag_finetuned's recall missing."""
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    m = json.loads((other / "metrics.json").read_text())
    a = json.loads((run_dir / "metrics.json").read_text())
    mc, contains = a["pipelines"]["rag"]["mc_accuracy"], a["pipelines"]["base"]["contains"]
    mc_by, contains_by = (0.2 if mc["mean"] <= 0.5 else -0.2), (0.1 if contains["mean"] <= 0.5 else -0.1)
    m["pipelines"]["rag"]["mc_accuracy"] = _shifted(mc, mc_by)
    m["pipelines"]["base"]["contains"] = _shifted(contains, contains_by)
    del m["pipelines"]["rag_finetuned"]["contains"]
    m.update(experiment="other-run", config_hash="f" * 64)
    (other / "metrics.json").write_text(json.dumps(m))
    text = compare_runs(run_dir, other)
    assert text.startswith(
        f"# report-fixture vs other-run\n\nA = `{run_dir}` (config `{a['config_hash'][:12]}`), "
        f"B = `{other}` (config `ffffffffffff`)"
    )
    rows = {
        tuple(r.split(" | ")[:2]): r.split(" | ")[2:]
        for r in (line.strip("| ") for line in text.splitlines())
        if r.count(" | ") == 4
    }
    defs = a["metric_definitions"]

    def cell(agg):
        return f"{100 * agg['mean']:.1f} [{100 * agg['ci95'][0]:.1f}, {100 * agg['ci95'][1]:.1f}]"

    assert rows[(defs["mc_accuracy"]["label"], "rag")] == [cell(mc), cell(_shifted(mc, mc_by)), f"{100 * mc_by:+.1f}"]
    assert rows[(defs["contains"]["label"], "base")] == [
        cell(contains),
        cell(_shifted(contains, contains_by)),
        f"{100 * contains_by:+.1f}",
    ]
    assert rows[(defs["contains"]["label"], "rag")][2] == "+0.0"  # unchanged
    assert (defs["contains"]["label"], "rag_finetuned") not in rows  # measured in A only


def test_notebook_runs_top_to_bottom(run_dir, monkeypatch):
    """Executes every code cell in order, in one namespace, as a kernel would."""
    nb = json.loads((ROOT / "notebooks" / "explore_results.ipynb").read_text())
    monkeypatch.setenv("HARNESS_RESULTS", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {}
    ran = 0
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"cell{ran}", "exec"), namespace)
            ran += 1
    assert (
        ran >= 5
        and len(namespace["preds"]) == 4 * json.loads((run_dir / "metrics.json").read_text())["data"]["questions"]
    )


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium); .ci/run installs it")
def test_html_report_renders_in_headless_chromium(run_dir, tmp_path):
    """Loads the page offline, with no outside connections, and checks the console and
    that the plots and the filterable drill-down table are on the page."""
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
    ]
    url = (run_dir / "report.html").as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if re.search(r"error|uncaught", line, re.I)], console
    assert 'data-ready="1"' in dom.stdout  # the filter script ran to the end
    assert dom.stdout.count('class="plot"') >= 3 and 'id="items"' in dom.stdout
    shot = Path(os.environ.get("HARNESS_ARTIFACTS", tmp_path)) / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2400", url], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


NASTY = [
    "a | b",
    "![x](http://127.0.0.1:9/x.png)",
    "[c](javascript:alert(1))",
    "<http://127.0.0.1:9/auto>",
    "see http://127.0.0.1:9/bare.",
    "www.example.com, then",
    "ops@example.com",
    "**b** _i_ `c` ~~s~~ $m$",
    "``` fence",
    "back\\slash \\* \\",
    "&amp; &#60; &lt;b&gt;",
    "<!-- c --> <b>bold</b>",
    "# not a heading",
    "- not a list",
    "1. not a list",
    "> not a quote",
    "[ref]: http://127.0.0.1:9/r",
    "two\nlines\r\nhere",
    "<br> is text here",
    "x\x02y\x03z",
    "|",
    "trailing backslash \\",
    "x\n# heading",
    "x\n- item\n- item",
    "x\n\n| a | b |\n|---|---|",
    "x\n[r]: http://127.0.0.1:9/r\n[r]",
    "x\n\n    indented code",
    "x\n***\ny",
]


@pytest.mark.parametrize("text", NASTY)
def test_item_text_renders_as_itself_in_paragraphs_and_table_cells(text):
    """report.md through a CommonMark renderer: item text (report.item_text) comes out
    character for character, with no link, image or cell split of its own, while the
    report's own markup around it (bold, code, line breaks, a `|` in its own cell)
    still renders, and item text never combines with the text after it (`[r]` + `(own)`
    is no link)."""
    from harness.report.run import item_text, to_markdown
    from test_security import render_markdown

    md = to_markdown(
        [
            ("p", f"**{item_text(text)}** own `code`<br>next line"),
            ("table", ["item", "own"], [[item_text(text), "own | cell"], [item_text(text) + "(own)", "c"]]),
        ]
    )
    page = render_markdown(md)
    shown = " ".join(text.replace("\x02", "").replace("\x03", "").split())
    assert page.text().startswith(f"{shown} own code next line")
    tags = [tag for tag, _ in page.tags]
    assert (tags.count("strong"), tags.count("br")) == (1, 1) and "code" in tags  # the report's markup renders
    assert set(tags) <= {"p", "strong", "code", "br", "table", "thead", "tbody", "tr", "th", "td"}, tags  # no a, img
    assert [[" ".join(c.split()) for c in row] for row in page.rows] == [
        ["item", "own"],
        [shown, "own | cell"],
        [f"{shown}(own)", "c"],
    ]


def test_emphasis_renders_in_html_and_item_text_stays_text():
    """#23: the HTML showed literal asterisks around the question names (`*facts*`);
    report markup's emphasis is <em> now, while an item's asterisks stay asterisks."""
    from harness.report.run import _md_inline, item_text

    assert (
        _md_inline("*facts (multiple choice)*: the comparisons") == "<em>facts (multiple choice)</em>: the comparisons"
    )
    assert _md_inline("**RAG** and 2 * 3 * 4") == "<strong>RAG</strong> and 2 * 3 * 4"
    assert "<em>" not in _md_inline(f"asked: {item_text('*not markup*')}")


def test_from_python_dict_to_config_to_metrics_to_pandas(run_dir, tiny_model_dir, tmp_path):
    """README's "From Python": the re-exported functions, and metrics into a DataFrame."""
    import pandas as pd

    import harness

    cfg = harness.parse_config(tiny_config(tiny_model_dir, name="report-fixture"))
    assert cfg.name == run_dir.name  # the config the fixture ran (harness.run_experiment)
    m = harness.load_metrics(run_dir / "metrics.json")
    df = pd.DataFrame(
        [
            {"pipeline": p, "metric": k, "mean": a.mean, "n": a.n}
            for p, per in m.pipelines.items()
            for k, a in per.items()
        ]
    )
    raw = json.loads((run_dir / "metrics.json").read_text())
    row = df[(df.pipeline == "rag") & (df.metric == "mc_accuracy")].iloc[0]
    assert (row["mean"], row["n"]) == (
        raw["pipelines"]["rag"]["mc_accuracy"]["mean"],
        raw["pipelines"]["rag"]["mc_accuracy"]["n"],
    )
    assert set(df.pipeline) == {"base", "finetuned", "rag", "rag_finetuned"}
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "report.md").unlink()
    assert harness.write_report(copy) == copy / "report.md" and (copy / "report.md").is_file()


def test_the_lm_eval_shaped_results_match_metrics_json_and_lm_evals_own_stderr(run_dir):
    """lm_eval_results.json beside metrics.json: a task per pipeline, `metric,none` keys
    equal to metrics.json's means, and the standard error lm-eval's own mean_stderr gives
    on the per-item scores of predictions.jsonl."""
    from lm_eval.api.metrics import mean_stderr

    from harness.store.results import read_jsonl

    doc = json.loads((run_dir / "lm_eval_results.json").read_text(), parse_constant=_no_constant)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert set(doc["results"]) == {f"facts@{p}" for p in m["pipelines"]}
    assert {"configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"} <= set(doc)
    rows = read_jsonl(run_dir / "predictions.jsonl")
    for p in m["pipelines"]:
        task, agg = doc["results"][f"facts@{p}"], m["pipelines"][p]["mc_accuracy"]
        assert task["mc_accuracy,none"] == agg["mean"] and doc["n-samples"][f"facts@{p}"]["original"] >= agg["n"]
        items = [r["scores"]["mc_correct"] for r in rows if r["pipeline"] == p and r["answerable"] and r["choices"]]
        assert len(items) == agg["n"]
        assert task["mc_accuracy_stderr,none"] == pytest.approx(mean_stderr(items), rel=1e-12)
        assert doc["higher_is_better"][f"facts@{p}"]["mc_accuracy"] is True
        assert doc["higher_is_better"][f"facts@{p}"]["hallucination_unanswerable"] is False
    assert doc["config"]["config_hash"] == m["config_hash"]
