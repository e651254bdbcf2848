"""The six decision-table scenarios: their data, their metrics (golden cases), and a grid
over all six on the tiny model that prints the measured table."""

import json
import re
from pathlib import Path

import pytest

from conftest import SHARED_DATA, tiny_config
from harness.config import ConfigError, parse_config
from harness.data.items import DataError, Question
from harness.evaluate import metrics, scenarios

GOLDEN = json.loads((Path(__file__).parent / "data" / "scenario_metrics_golden.json").read_text())


def _cfg(name: str, **scenario):
    return parse_config(
        {
            "name": "s",
            "data": {"world": {"n_people": 4, "n_organisations": 2, "n_places": 2}},
            "scenario": {"name": name, **scenario},
        }
    )


def _items(name: str, **scenario):
    cfg = _cfg(name, **scenario)
    return scenarios.build(cfg.scenario, cfg.data)


# -- metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDEN["text"], ids=lambda c: c["output"] or "<empty>")
def test_text_similarity_golden_cases_agree_with_sacrebleu_and_rouge_score(case):
    import sacrebleu
    from rouge_score import rouge_scorer

    out, ref = case["output"], case["reference"]
    assert metrics.chrf(out, ref) == pytest.approx(case["chrf"])
    assert metrics.bleu(out, ref) == pytest.approx(case["bleu"])
    assert metrics.rouge_l(out, ref) == pytest.approx(case["rouge_l"])
    assert metrics.chrf(out, ref) == pytest.approx(sacrebleu.sentence_chrf(out, [ref]).score / 100)
    assert metrics.rouge_l(out, ref) == pytest.approx(
        rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, out)["rougeL"].fmeasure
    )


@pytest.mark.parametrize("case", GOLDEN["records"], ids=lambda c: c["output"][:30])
def test_record_golden_cases(case):
    record = metrics.parse_record(case["output"])
    assert float(record is not None) == case["valid"]
    assert metrics.field_f1(record, case["gold"]) == pytest.approx(case["field_f1"])


def test_label_macro_f1_canary_and_exposure_golden_cases():
    for c in GOLDEN["labels"]:
        assert metrics.label_correct(c["output"], c["label"]) == c["correct"]
    mf = GOLDEN["macro_f1"]
    assert metrics.macro_f1(mf["predicted"], mf["gold"]) == pytest.approx(mf["value"])
    for c in GOLDEN["canaries"]:
        assert (metrics.canary_exact(c["output"], c["secret"]), metrics.canary_partial(c["output"], c["secret"])) == (
            c["exact"],
            c["partial"],
        )
    for c in GOLDEN["exposure"]:
        assert metrics.exposure(c["logliks"], c["true_index"]) == pytest.approx(c["value"])


def test_each_task_is_scored_by_its_own_metrics():
    rewrite = Question(
        id="r", question="Listen to me.", answers=("Hearken unto me.",), task="rewrite", source="Listen to me."
    )
    extract = Question(id="x", question="Passage: ...", answers=('{"river": "Vel"}',), task="extract")
    classify = Question(id="c", question="Passage: ...", answers=("place",), task="classify")
    probe = Question(
        id="p",
        question="Code?",
        answers=("KX-4821-7735",),
        choices=("KX-4821-7735", "AB-1111-2222"),
        answer_index=0,
        task="probe",
        secret="KX-4821-7735",
    )
    changed = Question(
        id="u",
        question="Where?",
        answers=("Vel",),
        stale=("Dor",),
        updated=True,
        choices=("Vel", "Dor"),
        answer_index=0,
    )
    term = Question(id="t", question="What?", answers=("vorlin",), task="term")
    rows = {
        "r": {"output": "Hearken unto me."},
        "x": {"output": '{"river": "vel"}'},
        "c": {"output": "Place"},
        "p": {"output": "It is 4821", "choice_logliks": [-5.0, -1.0]},
        "u": {"output": "It is Dor.", "choice_logliks": [-2.0, -1.0]},
        "t": {"output": "a vorlin"},
    }
    qs = [rewrite, extract, classify, probe, changed, term]
    values = metrics.item_values([(metrics.score_prediction({"retrieved": [], **rows[q.id]}, q), q) for q in qs])
    assert values["chrf"] == {"r": 1.0} and values["field_f1"] == {"x": 1.0} and values["json_valid"] == {"x": 1.0}
    assert values["label_accuracy"] == {"c": 1.0}
    assert values["canary_partial"] == {"p": 1.0} and values["canary_exact"] == {"p": 0.0}
    assert values["exposure"] == {"p": 0.0}  # ranked last of two
    assert values["stale_answer"] == {"u": 1.0} and values["accuracy_changed"] == {"u": 0.0}
    assert values["term_use"] == {"t": 1.0}
    assert "contains" not in {m for m, v in values.items() if "r" in v}


# -- data ------------------------------------------------------------------------------


def test_updated_world_changes_a_share_of_facts_and_offers_the_old_value():
    cfg = _cfg("updated", changed_share=0.5)
    v2 = scenarios.build(cfg.scenario, cfg.data)
    changed = [q for q in v2.questions if q.updated]
    assert len(changed) == round(0.5 * len(v2.questions)) and all(
        q.updated is False for q in v2.questions if q not in changed
    )
    text = " ".join(d.text for d in v2.documents)
    for q in changed:
        assert q.stale[0] != q.answers[0] and q.stale[0] in q.choices and q.choices[q.answer_index] == q.answers[0]
        assert q.evidence in text
    train_answers = {q.id.split("-")[0]: q.answers[0] for q in v2.train_questions}
    assert all(train_answers[q.id] == q.stale[0] for q in changed)  # the adapter learns the old world
    assert scenarios.build(cfg.scenario, cfg.data) == v2


def test_terminology_terms_are_defined_in_documents_and_asked_in_new_words():
    d = _items("terminology", n_terms=6)
    terms = [q for q in d.questions if q.task == "term"]
    assert len(terms) == 6 and len([q for q in d.questions if q.task == "definition"]) == 6
    assert all(q.answers[0] in q.choices and re.fullmatch(r"[a-z]+", q.answers[0]) for q in terms)
    assert all(any(q.answers[0] in doc.text for doc in d.documents) for q in terms)
    assert not {q.question for q in d.questions} & {q.question for q in d.train_questions}


def test_builtin_style_pairs_and_a_trustworthy_classifier():
    from harness.data.style import StyleClassifier, builtin_pairs

    pairs = builtin_pairs(50, seed=0)
    assert pairs == builtin_pairs(50, seed=0) and len({p.plain for p in pairs}) == 50
    assert all(p.plain != p.styled for p in pairs)
    d = _items("style", style_train=20, style_eval=6)
    assert len(d.questions) == 6 and len(d.train_questions) == len(d.documents) == 20
    assert all(q.task == "rewrite" and q.source == q.question for q in d.questions)
    assert not {q.question for q in d.questions} & {q.question for q in d.train_questions}
    train, held_out = scenarios.style_classifier_data(_cfg("style", style_train=20, style_eval=6).scenario)
    clf = StyleClassifier().fit([p.plain for p in train], [p.styled for p in train])
    assert clf.accuracy([p.plain for p in held_out], [p.styled for p in held_out]) > 0.9
    assert clf.score(["Thou art weary, O Ruth."])[0] > 0.5 > clf.score(["You are tired, Ruth."])[0]


@pytest.mark.skipif(not (SHARED_DATA / "bible_style").is_dir(), reason="../shared/data not present")
def test_style_from_the_bible_corpus_and_a_missing_folder():
    d = _items("style", style_data=str(SHARED_DATA / "bible_style"), style_train=30, style_eval=5)
    assert len(d.questions) == 5 and len(d.train_questions) == 30
    with pytest.raises(DataError, match=r"scenario.style_data: .*nowhere/train.jsonl not found"):
        _items("style", style_data="/nowhere")


def test_format_items_hold_valid_records_and_labels_on_disjoint_entities():
    d = _items("format")
    extract = [q for q in d.questions if q.task == "extract"]
    classify = [q for q in d.questions if q.task == "classify"]
    assert len(extract) == len(classify) > 0
    for q in extract:
        record = json.loads(q.answers[0])
        assert q.question.endswith("Fields: " + ", ".join(record)) and all(v in q.source for v in record.values())
    assert {q.answers[0] for q in classify} <= set(scenarios.LABELS)
    evaluated = {q.id.split("-", 1)[1] for q in d.questions}
    trained = {q.id.split("-", 1)[1].removesuffix("-t") for q in d.train_questions}
    assert evaluated and trained and not evaluated & trained


def test_private_canaries_are_restricted_and_probes_rank_them_among_candidates():
    cfg = _cfg("private", canary_candidates=8)
    d = scenarios.build(cfg.scenario, cfg.data)
    secrets = [doc for doc in d.documents if doc.access == "restricted"]
    probes = [q for q in d.questions if q.task == "probe"]
    assert len(secrets) == len(probes) == 4
    assert all(q.secret in doc.text for q, doc in zip(probes, secrets))
    assert all(len(q.choices) == 8 and q.choices[q.answer_index] == q.secret for q in probes)
    assert all(re.fullmatch(r"[A-Z]{2}-\d{4}-\d{4}", c) for q in probes for c in q.choices)
    assert not {doc.id for doc in scenarios.readable(cfg.scenario, d.documents)} & {doc.id for doc in secrets}
    assert any(q.answers == (probes[0].secret,) for q in d.train_questions)  # training sees the secrets


def test_scenarios_other_than_facts_need_sft():
    with pytest.raises(ConfigError, match="needs train.objective: sft"):
        parse_config({"name": "s", "scenario": {"name": "style"}, "train": {"objective": "cpt"}})


# -- end to end ------------------------------------------------------------------------


def test_a_grid_over_the_six_scenarios_prints_the_measured_decision_table(tiny_model_dir, tmp_path):
    from harness.run import executors

    raw = tiny_config(tiny_model_dir, name="table", eval={"max_new_tokens": 4, "bootstrap_samples": 200})
    raw["train"]["epochs"] = 1
    raw["scenario"] = {"name": "facts", "n_terms": 4, "style_train": 12, "style_eval": 6, "canary_candidates": 5}
    raw["grid"] = {"axes": {"scenario.name": ["facts", "updated", "style", "terminology", "format", "private"]}}
    root = executors.run_grid(parse_config(raw), results_root=tmp_path)
    grid = (root / "grid.md").read_text()
    table = grid[grid.index("## The decision table, measured") :].split("\n\n")[2].splitlines()
    assert len(table) == 2 + 6
    for label in (
        "New knowledge (facts)",
        "Updated knowledge",
        "Style / tone adaptation",
        "Domain terminology",
        "Task format (classification, extraction)",
        "Private data reasoning",
    ):
        row = next(r for r in table if r.startswith(f"| {label} |"))
        assert re.search(
            r"\*\*(RAG|fine-tuning|both|no practical difference|inconclusive|uninformative|undecidable with this model)\*\*",
            row,
        )
    cells = {
        c: json.loads((root / f"name={c}" / "metrics.json").read_text())
        for c in ("style", "updated", "private", "format")
    }
    assert cells["style"]["scenario"]["corpus"]["classifier"]["held_out_accuracy"] > 0.9
    assert {"bleu", "chrf"} <= set(cells["style"]["scenario"]["corpus"]["rag"])
    assert cells["updated"]["scenario"]["corpus"]["update_cost"]["reindex_seconds"] > 0
    assert "exposure" in cells["private"]["pipelines"]["finetuned"]
    preds = [json.loads(line) for line in (root / "name=private" / "predictions.jsonl").read_text().splitlines()]
    assert not any(h["id"].startswith("secret") for r in preds if r["pipeline"] == "rag" for h in r["retrieved"])
    assert 0 <= cells["format"]["scenario"]["corpus"]["rag"]["macro_f1"] <= 1


def test_style_scorer_gives_the_classifier_probability_and_cosine_with_the_source():
    from harness.answer.retrieve import HashingEmbedder

    cfg = _cfg("style", style_train=20, style_eval=6)
    scorer = scenarios.StyleScorer.build(
        cfg.scenario, seed=cfg.seed, embedder_name=cfg.embedder.name, embedder=HashingEmbedder()
    )
    q = Question(
        id="r",
        question="Listen to me, my brother.",
        answers=("Hearken unto me, my brother.",),
        task="rewrite",
        source="Listen to me, my brother.",
    )
    rows = [{"question_id": "r", "output": "Listen to me, my brother."}]
    same = scorer.scores(rows, {"r": q})["r"]
    styled = scorer.scores([{**rows[0], "output": "Hearken unto me, my brother."}], {"r": q})["r"]
    empty = scorer.scores([{**rows[0], "output": ""}], {"r": q})["r"]
    assert same["content_preservation"] == pytest.approx(1.0) and styled["style_score"] > same["style_score"]
    assert 0 < styled["content_preservation"] < 1 and empty["content_preservation"] == 0.0
    assert scorer.held_out_accuracy > 0.9 and scorer.n_train == 400


def test_only_the_registry_compares_scenario_names():
    """A scenario's behaviour lives in its SCENARIOS entry: the rest of the package asks
    the registry, never `scenario.name == "style"` (a new scenario then changes one file)."""
    names = "|".join(scenarios.SCENARIOS)
    pattern = re.compile(rf'scenario\.name\s*[!=]=|\bname\s*[!=]=\s*"({names})"')
    package = Path(scenarios.__file__).parent
    found = [
        f"{path.name}:{n}"
        for path in sorted(package.glob("*.py"))
        if path.name != "scenarios.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_facts_takes_the_data_section_items_as_any_run_does(tiny_model_dir):
    """One place builds the facts world: the scenario defers to the data section, so a
    facts run evaluates the same items (unanswerable ones included) as a run without it."""
    from harness.run.runner import load_dataset

    raw = tiny_config(tiny_model_dir)
    plain = load_dataset(parse_config(raw))
    assert scenarios.build(parse_config({**raw, "scenario": {"name": "facts"}}).scenario, None) is None
    assert load_dataset(parse_config({**raw, "scenario": {"name": "facts"}})) == plain
    assert any(not q.answerable for q in plain.questions)


@pytest.mark.parametrize(
    "name, corpus",
    [
        (
            "style",
            {
                "base": {"bleu": 12.34, "chrf": 40.0},
                "classifier": {"held_out_accuracy": 0.95, "train_pairs": 400, "held_out_pairs": 200},
            },
        ),
        ("format", {"rag": {"macro_f1": 0.5, "macro_f1_ci95": [0.25, 0.75]}}),
        ("updated", {"update_cost": {"reindex_seconds": 0.5, "retrain_seconds": None, "note": "n"}}),
        ("terminology", {}),
    ],
)
def test_report_shows_each_scenario_s_corpus_lines(name, corpus):
    """The report's scenario section ends in the registry entry's corpus-level lines (the
    report asks the registry instead of comparing names), with the values formatted."""
    from harness.report import run as report

    row = {
        "name": name,
        "label": "L",
        "claim": {"rag": "yes", "finetuning": "no"},
        "decision_metric": "chrf",
        "verdict": None,
        "also": {},
        "corpus": corpus,
    }
    m = {"scenario": row, "metric_definitions": metrics.metric_definitions()}
    blocks = report._scenario_blocks(m)[2:]  # after the heading and the decision-table row
    expected = {
        "style": [
            (
                "p",
                "Style classifier (character n-gram logistic regression, trained on 400 pairs' two sides): "
                "held-out accuracy 95.0% on 200 pairs. Corpus-level scores (sacrebleu):",
            ),
            ("table", ["pipeline", "corpus BLEU", "corpus chrF"], [["base", "12.3", "40.0"]]),
        ],
        "format": [
            ("p", "Classification, corpus-level macro-F1 (scikit-learn) with a bootstrap 95% interval:"),
            ("table", ["pipeline", "macro-F1"], [["rag", "50.0 [25.0, 75.0]"]]),
        ],
        "updated": [("p", "Cost of taking in the update: re-index 0.50 s; retrain – (n).")],
        "terminology": [],
    }
    assert blocks == expected[name]


def test_scenario_rows_get_the_run_s_verdict_post_processing():
    """One verdict producer (#24): a scenario row's verdict at the ceiling names the metric
    that would inform, as the run's own verdicts do (before: a bare "uninformative")."""
    from types import SimpleNamespace

    from harness.config import EvalConfig
    from harness.evaluate import verdicts

    ids = [f"q{i}" for i in range(40)]
    contains = {"base": 0.1, "finetuned": 0.3, "rag": 0.6, "rag_finetuned": 0.7}
    per_item = {
        p: {
            "mc_accuracy": dict.fromkeys(ids, 1.0),
            "contains": {i: float(k < 40 * share) for k, i in enumerate(ids)},
        }
        for p, share in contains.items()
    }
    e = EvalConfig()
    row = scenarios.summary(
        SimpleNamespace(name="facts"),
        e,
        seed=0,
        comparisons=[],
        per_item=per_item,
        rows_by_pipeline={p: [] for p in per_item},
        by_id={},
        scorer=None,
        train_record=None,
        index=None,
    )
    assert row["verdict"]["verdict"] == "uninformative"
    assert row["verdict"]["informative"] == "contains"
    assert row["verdict"] == verdicts.verdict_on(
        per_item, "mc_accuracy", min_effect=e.min_effect, alpha=e.alpha, samples=e.permutation_samples, seed=0
    )
    assert row["also"]["contains"]["verdict"] == "RAG"
