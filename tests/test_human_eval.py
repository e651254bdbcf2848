"""Human evaluation: the blind annotation page (driven by a scripted annotator in headless
Chromium through Playwright), label files checked and merged, and the statistics on
fixtures whose answers are known (perfect and chance agreement, a planted preference)."""

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from conftest import tiny_config
from harness.cli import main
from harness.config import parse_config
from harness.report.annotate import PREFERENCES, build_page, sample_items, write_page
from harness.report.labels import LabelsError, _kappa_or_alpha, merge_labels, pair_statistics
from harness.run.runner import run_experiment
from harness.store.results import read_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    cfg = parse_config(tiny_config(tiny_model_dir, name="human-fixture"))
    return run_experiment(cfg, results_root=tmp_path_factory.mktemp("human"))


def _page_data(page: str) -> dict:
    start = page.index("<script type='application/json' id='data'>") + len("<script type='application/json' id='data'>")
    return json.loads(page[start : page.index("</script>", start)])


def _labels_file(path, key, *, annotator, choose, run_hash=None):
    """A label file as the page exports it, with labels picked by `choose(item)`."""
    labels = {}
    for it in key["items"]:
        pref, left, right = choose(it)
        labels[it["id"]] = {"item_hash": it["hash"], "preference": pref, "left": left, "right": right}
    path.write_text(
        json.dumps(
            {
                "format": key["format"],
                "page_id": key["page_id"],
                "run_hash": run_hash or key["run_hash"],
                "annotator": annotator,
                "labels": labels,
            }
        )
    )
    return path


# --- statistics on fixtures with known answers -------------------------------------------


def test_perfect_agreement_is_one_and_chance_agreement_is_near_zero():
    rng = random.Random(0)
    same = [[v, v] for v in (rng.choice(PREFERENCES) for _ in range(60))]
    assert _kappa_or_alpha(same, seed=0)["value"] == pytest.approx(1.0)
    chance = [[rng.choice(PREFERENCES), rng.choice(PREFERENCES)] for _ in range(400)]
    k = _kappa_or_alpha(chance, seed=0)
    assert abs(k["value"]) < 0.08 and k["ci95"][0] < 0 < k["ci95"][1]
    assert k["statistic"] == "Cohen's kappa"
    three = [[v, v, v] for v, _ in same]
    assert _kappa_or_alpha(three, seed=0)["statistic"].startswith("Krippendorff")
    assert _kappa_or_alpha(three, seed=0)["value"] == pytest.approx(1.0)
    noisy = [[rng.choice(PREFERENCES) for _ in range(3)] for _ in range(300)]
    assert abs(_kappa_or_alpha(noisy, seed=0)["value"]) < 0.08


def test_a_planted_preference_is_found_and_no_preference_is_not():
    rng = random.Random(1)
    planted = ["a" if rng.random() < 0.75 else "b" for _ in range(80)]
    s = pair_statistics(planted, min_effect=0.05, alpha=0.05, names=("rag", "finetuned"), seed=0)
    assert s["verdict"] == "rag better" and s["p"] < 1e-4 and s["net_ci95"][0] > 0
    assert s["wins_a"] + s["wins_b"] == 80 and s["win_rate_a"] == pytest.approx(planted.count("a") / 80)
    even = ["a", "b"] * 30 + ["tie"] * 10
    s = pair_statistics(even, min_effect=0.05, alpha=0.05, names=("rag", "finetuned"), seed=0)
    assert s["verdict"] == "no clear winner" and s["p"] == pytest.approx(1.0) and s["ties"] == 10


# --- the page ----------------------------------------------------------------------------


def test_the_page_is_blind_stratified_and_randomised(run_dir):
    page, key = build_page(run_dir, pipelines=["rag", "finetuned"], items=12, seed=3)
    data = _page_data(page)
    assert len(data["items"]) == len(key["items"]) == 12
    assert "finetuned" not in page  # no pipeline name anywhere on the page
    assert all(set(it) >= {"question", "gold", "left", "right", "evidence"} for it in data["items"])
    sides = [it["left"] for it in key["items"]]
    assert {"rag", "finetuned"} == set(sides)  # both orders drawn
    preds = read_jsonl(run_dir / "predictions.jsonl")
    out = {(r["question_id"], r["pipeline"]): r["output"] for r in preds}
    for shown, k in zip(data["items"], key["items"]):
        assert shown["left"] == out[(k["id"], k["left"])] and shown["right"] == out[(k["id"], k["right"])]


def _row(task, right):
    return {"task": task, "answerable": True, "scores": {"contains": float(right)}}


def test_sampling_covers_every_stratum_in_proportion():
    """Strata: task x whether the pair's automatic outcomes differ. 90 agreeing qa items,
    6 disagreeing, 4 rewrites: a sample of 10 takes each stratum, the big one most."""
    by_q = {f"q{i}": {"rag": _row("qa", True), "finetuned": _row("qa", i >= 6)} for i in range(96)}
    by_q.update({f"s{i}": {"rag": _row("rewrite", True), "finetuned": _row("rewrite", True)} for i in range(4)})
    chosen = sample_items(by_q, pairs=[("finetuned", "rag")], n=10, seed=0)
    strata = [c[2] for c in chosen]
    assert set(strata) == {
        "qa, automatic metrics agree",
        "qa, automatic metrics differ",
        "rewrite, automatic metrics agree",
    }
    assert strata.count("qa, automatic metrics agree") >= 7 and len(set(c[0] for c in chosen)) == 10
    assert sample_items(by_q, pairs=[("finetuned", "rag")], n=10, seed=0) == chosen  # seeded
    assert sample_items(by_q, pairs=[("finetuned", "rag")], n=10, seed=1) != chosen


def test_labels_for_another_run_or_changed_items_are_refused(run_dir, tmp_path, capsys):
    page = write_page(run_dir, pipelines=["rag", "finetuned"], items=6, seed=0)
    key = json.loads(page.with_suffix(".json").read_text())
    good = _labels_file(tmp_path / "ok.json", key, annotator="ann", choose=lambda it: ("left", "correct", "wrong"))
    other = _labels_file(
        tmp_path / "other.json", key, annotator="b", choose=lambda it: ("left", "correct", "wrong"), run_hash="0" * 24
    )
    assert main(["labels", str(run_dir), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "labels for another run" in err and str(other) in err and "\n" not in err
    raw = json.loads(good.read_text())
    raw["labels"][key["items"][0]["id"]]["item_hash"] = "deadbeef"
    (tmp_path / "tampered.json").write_text(json.dumps(raw))
    with pytest.raises(LabelsError, match="tampered.json: item"):
        merge_labels(run_dir, [tmp_path / "tampered.json"])
    raw = json.loads(good.read_text())
    raw["labels"][key["items"][0]["id"]]["left"] = "brilliant"
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(LabelsError, match="'brilliant' is not one of"):
        merge_labels(run_dir, [tmp_path / "bad.json"])
    with pytest.raises(LabelsError, match="annotator 'ann' appears in two"):
        merge_labels(run_dir, [good, good])
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["labels", str(run_dir), str(tmp_path / "junk.json")]) == 2
    assert "junk.json: not a readable JSON label file" in capsys.readouterr().err


def test_merged_labels_reach_the_report_with_agreement_and_metric_trust(run_dir, tmp_path):
    page = write_page(run_dir, pipelines=["rag", "finetuned"], items=16, seed=1)
    key = json.loads(page.with_suffix(".json").read_text())

    # Two annotators who both always prefer the rag answer and call it correct.
    def prefer_rag(it):
        rag_left = it["left"] == "rag"
        return ("left" if rag_left else "right", "correct" if rag_left else "wrong", "wrong" if rag_left else "correct")

    files = [_labels_file(tmp_path / f"labels-{a}.json", key, annotator=a, choose=prefer_rag) for a in ("ann", "bo")]
    assert main(["labels", str(run_dir), *map(str, files)]) == 0
    h = json.loads((run_dir / "human_labels.json").read_text())
    assert h["agreement"]["preference"]["value"] == pytest.approx(1.0)
    pair = h["pairs"]["finetuned vs rag"]
    assert pair["wins_b"] == 16 and pair["wins_a"] == 0 and pair["verdict"] == "rag better"
    assert h["answers"]["rag"]["rate"] == 1.0 and h["answers"]["finetuned"]["rate"] == 0.0
    left_rag = sum(it["left"] == "rag" for it in key["items"])
    assert h["position_bias"]["left_wins"] == 2 * left_rag and h["position_bias"]["decided"] == 32
    assert "contains" in h["metric_agreement"]
    md = (run_dir / "report.md").read_text()
    assert "## Human evaluation" in md and "rag better" in md and "Position bias" in md
    # the notebook loads them too
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "explore_results.ipynb").read_text())
    os.environ["HARNESS_RESULTS"] = str(run_dir)
    namespace: dict = {}
    try:
        for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
            exec(compile("".join(cell["source"]), f"cell{i}", "exec"), namespace)
    finally:
        del os.environ["HARNESS_RESULTS"]
    assert namespace["pairs"].loc["finetuned vs rag", "wins_b"] == 16
    os.unlink(run_dir / "human_labels.json")  # leave the shared fixture as the run wrote it


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium); .ci/run installs it")
def test_a_scripted_annotator_labels_with_the_keyboard_and_the_export_round_trips(run_dir, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    page_path = write_page(run_dir, pipelines=["rag", "finetuned", "base"], items=6, seed=2)
    key = json.loads(page_path.with_suffix(".json").read_text())
    assert len({tuple(sorted((it["left"], it["right"]))) for it in key["items"]}) == 3  # every pair
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        ctx = browser.new_context(accept_downloads=True)
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: errors.append(f"request {r.url}") if not r.url.startswith(("file:", "data:", "blob:")) else None,
        )
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready='1']")
        page.fill("#annotator", "ann")
        page.click("#question")  # leave the name field so keys reach the page
        for _ in key["items"]:
            page.keyboard.press("1")  # left is better
            page.keyboard.press("q")  # left: correct
            page.keyboard.press("d")  # right: wrong (third label)
            page.keyboard.press("j")  # next
        assert page.inner_text("#progress") == f"{len(key['items'])} of {len(key['items'])} complete"
        page.reload()  # labels survive a reload (kept in the browser)
        page.wait_for_selector("body[data-ready='1']")
        assert page.inner_text("#progress").startswith(f"{len(key['items'])} of")
        with page.expect_download() as dl:
            page.click("#export")
        target = tmp_path / dl.value.suggested_filename
        dl.value.save_as(target)
        shot = os.environ.get("HARNESS_ARTIFACTS")
        if shot:
            os.makedirs(shot, exist_ok=True)
            page.screenshot(path=os.path.join(shot, "annotate.png"))
        browser.close()
    assert not errors, errors
    assert target.name == "labels-ann.json"
    exported = json.loads(target.read_text())
    assert all(
        v["preference"] == "left" and v["left"] == "correct" and v["right"] == "wrong"
        for v in exported["labels"].values()
    ) and len(exported["labels"]) == len(key["items"])
    assert main(["labels", str(run_dir), str(target)]) == 0
    h = json.loads((run_dir / "human_labels.json").read_text())
    assert h["position_bias"]["left_rate"] == 1.0 and h["agreement"]["preference"] is None
    assert "## Human evaluation" in (run_dir / "report.md").read_text()
    os.unlink(run_dir / "human_labels.json")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium); .ci/run installs it")
def test_the_reports_side_by_side_view_filters_disagreements(run_dir, tmp_path):
    from harness.report.run import write_report
    from harness.store.results import atomic_write_jsonl

    playwright = pytest.importorskip("playwright.sync_api")
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    preds = read_jsonl(copy / "predictions.jsonl")
    n_questions = len({r["question_id"] for r in preds})
    flipped = [r for r in preds if r["pipeline"] == "rag" and r["answerable"]][:3]
    for r in flipped:  # three questions that rag gets right and the others not
        r["scores"]["contains"] = 1.0 - r["scores"]["contains"]
    atomic_write_jsonl(copy / "predictions.jsonl", preds)
    write_report(copy)
    run_dir = copy
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((run_dir / "report.html").as_uri())
        page.wait_for_selector("body[data-ready='1']")
        assert page.inner_text("#s-count") == f"{n_questions} of {n_questions} questions"
        disagree = page.locator("#side-by-side tr[data-disagree='1']").count()
        page.check("#s-disagree")
        assert page.inner_text("#s-count") == f"{disagree} of {n_questions} questions"
        browser.close()
    assert disagree >= 1 and disagree < n_questions


def test_style_rewrites_are_labelled_for_style_and_settle_the_pair(tmp_path):
    """The style row: answers are labelled "fits the target style" or not, and the
    pairwise preference gives a human verdict for fine-tuning against RAG."""
    out = tmp_path / "style-run"
    out.mkdir()
    (out / "metrics.json").write_text(
        json.dumps({"experiment": "style", "config_hash": "c" * 64, "seed": 0, "verdicts": {}})
    )
    rows = []
    for i in range(30):
        for pipe, chrf in (("finetuned", 0.9), ("rag", 0.4)):
            rows.append(
                {
                    "question_id": f"r{i}",
                    "pipeline": pipe,
                    "question": f"plain {i}",
                    "answers": [f"styled {i}"],
                    "answerable": True,
                    "task": "rewrite",
                    "output": f"{pipe} {i}",
                    "retrieved": [],
                    "scores": {"chrf": chrf},
                }
            )
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_page(out, pipelines=["finetuned", "rag"], items=30, seed=0)
    data = _page_data(page.read_text())
    assert all(it["labels"] == ["fits", "does_not_fit"] for it in data["items"])
    key = json.loads(page.with_suffix(".json").read_text())

    def prefer_finetuned(it):
        ft_left = it["left"] == "finetuned"
        return (
            "left" if ft_left else "right",
            "fits" if ft_left else "does_not_fit",
            "does_not_fit" if ft_left else "fits",
        )

    h = json.loads(
        merge_labels(out, [_labels_file(tmp_path / "a.json", key, annotator="a", choose=prefer_finetuned)]).read_text()
    )
    assert h["pairs"]["finetuned vs rag"]["verdict"] == "finetuned better"
    assert h["answers"]["finetuned"]["rate"] == 1.0 and h["answers"]["rag"]["rate"] == 0.0
    # Wilson 95% interval of 30 of 30 and 0 of 30
    assert h["answers"]["finetuned"]["ci95"][0] == pytest.approx(0.8865, abs=1e-3)
    assert h["answers"]["rag"]["ci95"] == [0.0, pytest.approx(0.1135, abs=1e-3)]
    assert h["metric_agreement"]["chrf"]["accuracy"] == 1.0  # chrF >= 0.5 exactly where people said "fits"
    wrong = _labels_file(tmp_path / "b.json", key, annotator="b", choose=lambda it: ("left", "correct", "wrong"))
    with pytest.raises(LabelsError, match="'correct' is not one of fits, does_not_fit"):
        merge_labels(out, [wrong])


# --- labels map to pipelines through each page's own key (#22) ---------------------------


def _hand_run(folder, *, n=5, text=lambda i, pipe: f"{pipe} answer {i}", question=lambda i: f"question {i}?"):
    """A finished results folder written by hand (as an older harness would leave it): n
    qa items answered by rag, finetuned and base."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(
        json.dumps({"experiment": folder.name, "config_hash": "c" * 64, "seed": 0, "verdicts": {}})
    )
    rows = [
        {
            "question_id": f"q{i}",
            "pipeline": pipe,
            "question": question(i),
            "answers": [f"gold {i}"],
            "answerable": True,
            "task": "qa",
            "output": text(i, pipe),
            "retrieved": [{"id": f"d{i}", "text": text(i, "evidence")}],
            "scores": {"contains": float(pipe == "rag")},
        }
        for i in range(n)
        for pipe in ("rag", "finetuned", "base")
    ]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _prefer_rag(it):
    rag_left = it["left"] == "rag"
    return ("left" if rag_left else "right", "correct" if rag_left else "wrong", "wrong" if rag_left else "correct")


def test_labels_from_differently_seeded_pages_merge_by_pipeline_not_by_side(tmp_path):
    run = _hand_run(tmp_path / "seeded")
    keys = [
        json.loads(write_page(run, pipelines=["rag", "finetuned"], items=5, seed=s).with_suffix(".json").read_text())
        for s in (0, 3)
    ]
    sides = [{it["id"]: it["left"] for it in k["items"]} for k in keys]
    assert set(sides[0]) == set(sides[1]) == {f"q{i}" for i in range(5)}
    assert sides[0] != sides[1]  # the two pages put rag on different sides for some items
    files = [
        _labels_file(tmp_path / f"labels-{who}.json", key, annotator=who, choose=_prefer_rag)
        for who, key in zip(("ann", "bo"), keys)
    ]
    h = json.loads(merge_labels(run, files).read_text())
    pair = h["pairs"]["finetuned vs rag"]
    assert (pair["wins_b"], pair["wins_a"], pair["n"]) == (5, 0, 5)
    assert h["agreement"]["preference"]["value"] == 1.0 and h["agreement"]["preference"]["raw_agreement"] == 1.0
    assert h["answers"]["rag"]["rate"] == 1.0 and h["answers"]["finetuned"]["rate"] == 0.0
    assert h["answers"]["rag"]["n"] == 5 and h["answers"]["finetuned"]["n"] == 5
    assert h["metric_agreement"]["contains"]["accuracy"] == 1.0
    assert h["metric_agreement"]["contains"]["pair_agreement"] == 1.0
    # position bias still counts screen sides, per annotator's own page
    left_rag = sum(v == "rag" for s in sides for v in s.values())
    assert h["position_bias"]["left_wins"] == left_rag and h["position_bias"]["decided"] == 10


def test_labels_are_refused_once_predictions_change_even_off_the_page(tmp_path, capsys):
    run = _hand_run(tmp_path / "changed")
    key = json.loads(write_page(run, pipelines=["rag", "finetuned"], items=5, seed=0).with_suffix(".json").read_text())
    labels = _labels_file(tmp_path / "labels-ann.json", key, annotator="ann", choose=_prefer_rag)
    rows = read_jsonl(run / "predictions.jsonl")
    for r in rows:  # only the base pipeline, which is not on the page: every item hash still matches
        if r["pipeline"] == "base":
            r["output"] = "another answer"
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["labels", str(run), str(labels)]) == 2
    err = capsys.readouterr().err.strip()
    assert "labels for another run" in err and "\n" not in err
    assert not (run / "human_labels.json").exists()


HOSTILE = (
    "<!--<script>",
    "</script><script>window.pwned=1</script>",
    "<!-- x",
    "a & b > c \u2028 d \u2029 e",
    "</SCRIPT >",
    "<script>window.pwned=2</script>",
)


def test_no_item_text_can_end_or_break_the_pages_script(tmp_path):
    run = _hand_run(
        tmp_path / "hostile",
        n=len(HOSTILE),
        question=lambda i: f"{HOSTILE[i]} question {i}?",
        text=lambda i, pipe: f"{pipe} {HOSTILE[(i + 1) % len(HOSTILE)]} says {HOSTILE[i]}",
    )
    page, key = build_page(run, pipelines=["rag", "finetuned"], items=len(HOSTILE), seed=0)
    script = page.split("<script type='application/json' id='data'>", 1)[1].split("</script>", 1)[0]
    assert "<" not in script and ">" not in script and "&" not in script and "\u2028" not in script
    data = _page_data(page)
    assert {it["question"] for it in data["items"]} == {f"{h} question {i}?" for i, h in enumerate(HOSTILE)}
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data block and the page's own


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium); .ci/run installs it")
def test_a_page_of_hostile_item_text_shows_every_item_and_can_be_labelled(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    run = _hand_run(
        tmp_path / "hostile",
        n=len(HOSTILE),
        question=lambda i: f"{HOSTILE[i]} question {i}?",
        text=lambda i, pipe: f"{pipe} {HOSTILE[(i + 1) % len(HOSTILE)]} says {HOSTILE[i]}",
    )
    page_path = write_page(run, pipelines=["rag", "finetuned"], items=len(HOSTILE), seed=0)
    key = json.loads(page_path.with_suffix(".json").read_text())
    outputs = {(r["question_id"], r["pipeline"]): r for r in read_jsonl(run / "predictions.jsonl")}
    errors, shown = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(accept_downloads=True).new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=10_000)
        page.fill("#annotator", "ann")
        page.click("#question")
        for it in key["items"]:
            shown.append(
                (
                    page.inner_text("#question"),
                    page.inner_text("#left-out"),
                    page.inner_text("#right-out"),
                    page.text_content("#evidence"),
                )
            )
            page.keyboard.press("1" if it["left"] == "rag" else "2")
            page.keyboard.press("q" if it["left"] == "rag" else "w")
            page.keyboard.press("s" if it["left"] == "rag" else "a")
            page.keyboard.press("j")
        assert page.inner_text("#progress") == f"{len(HOSTILE)} of {len(HOSTILE)} complete"
        pwned = page.evaluate("window.pwned === undefined")
        with page.expect_download() as dl:
            page.click("#export")
        target = tmp_path / dl.value.suggested_filename
        dl.value.save_as(target)
        browser.close()
    assert not errors, errors
    assert pwned, "item text ran as a script"
    for (question, left, right, evidence), it in zip(shown, key["items"]):
        a, b = outputs[(it["id"], it["left"])], outputs[(it["id"], it["right"])]
        assert question == a["question"] and left == a["output"].strip() and right == b["output"].strip()
        assert a["retrieved"][0]["text"] in evidence
    h = json.loads(merge_labels(run, [target]).read_text())
    assert h["pairs"]["finetuned vs rag"]["wins_b"] == len(HOSTILE)


def test_pages_and_labels_go_only_into_a_results_folder_harness_wrote(tmp_path, capsys):
    run = _hand_run(tmp_path / "mine")
    (run / "thesis.txt").write_text("years of work")  # not a run's folder any more: someone's
    before = sorted(p.name for p in run.iterdir())
    assert main(["annotate", str(run), "--items", "3"]) == 2
    assert "not a run's results folder written by harness" in capsys.readouterr().err
    (run / "thesis.txt").unlink()
    page = write_page(run, pipelines=["rag", "finetuned"], items=5, seed=0)
    key_file = page.with_suffix(".json")
    key = json.loads(key_file.read_text())
    labels = _labels_file(tmp_path / "labels-ann.json", key, annotator="ann", choose=_prefer_rag)
    (run / "thesis.txt").write_text("years of work")
    assert main(["labels", str(run), str(labels)]) == 2
    assert "not a run's results folder written by harness" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == sorted([*before, "annotation"])
    assert not (run / "human_labels.json").exists()
    (run / "thesis.txt").unlink()
    edited = {**key, "items": [{**it, "left": it["right"], "right": it["left"]} for it in key["items"]]}
    key_file.write_text(json.dumps(edited))  # someone swapped the sides in the key
    assert main(["annotate", str(run), "--pipelines", "rag", "finetuned", "--items", "5"]) == 2
    assert f"{key_file}: differs from the key harness writes" in capsys.readouterr().err
    assert json.loads(key_file.read_text()) == edited
    key_file.write_text("{not json")
    assert main(["labels", str(run), str(labels)]) == 2
    assert f"{key_file}: not a page key harness wrote" in capsys.readouterr().err


def test_one_annotator_in_two_label_files_is_refused_naming_both():
    from harness.report.labels import summarise

    annotators = [
        {"annotator": "ann", "file": "a.json"},
        {"annotator": "bo", "file": "b.json"},
        {"annotator": "ann", "file": "c.json"},
    ]
    with pytest.raises(LabelsError) as err:
        summarise(annotators, {}, [], min_effect=0.1)
    assert str(err.value) == "annotator 'ann' appears in two label files (a.json, c.json); merge or rename them"


def test_a_metric_is_checked_against_people_from_two_labelled_answers():
    from harness.report.labels import _metric_agreement

    human = {("q1", "rag"): 1, ("q2", "rag"): 0}
    scores = {("q1", "rag"): {"contains": 1.0}, ("q2", "rag"): {"contains": 0.0}}
    out = _metric_agreement(human, scores, [], seed=0)
    assert out["contains"]["n"] == 2 and out["contains"]["accuracy"] == 1.0 and out["contains"]["kappa"] == 1.0
    assert _metric_agreement({("q1", "rag"): 1}, scores, [], seed=0) == {}
