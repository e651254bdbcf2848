"""Known/unknown tagging (a light Gekhman et al.), the hallucination split, and the
general-knowledge probes of the world."""

import json

import pytest

from conftest import tiny_config
from harness.config import parse_config
from harness.data.items import Question
from harness.data.world import GENERAL_KNOWLEDGE, general_questions, generate_world
from harness.evaluate import knowledge, metrics
from harness.run.runner import run_experiment


@pytest.mark.parametrize(
    "hits, samples, category",
    [
        (3, 4, "known"),
        (4, 4, "known"),
        (2, 4, "weakly_known"),
        (1, 4, "weakly_known"),
        (0, 4, "unknown"),
        (1, 1, "known"),
    ],
)
def test_categories(hits, samples, category):
    assert knowledge.categorize(sample_hits=hits, samples=samples) == category


def test_tagging_uses_sampled_answers_only(tiny_lm, monkeypatch):
    """Finding 4: tags never read a greedy answer (the one the base pipeline is scored on)."""
    qs = [
        Question(id="a", question="Capital of France?", answers=("Paris",)),
        Question(id="b", question="Capital of Peru?", answers=("Lima",)),
        Question(id="c", question="Capital of Chad?", answers=("N'Djamena",)),
        Question(id="u", question="Capital of Nowhere?", answers=(), answerable=False),
    ]
    sampled = iter([["Paris", "Lima", "no idea"], ["It is Paris", "nothing", "no idea"]])  # two sampling rounds
    temperatures = []

    def fake(lm, questions, *, temperature, **kw):
        temperatures.append(temperature)
        return ["Paris", "Quito", "Abuja"] if temperature is None else next(sampled)

    monkeypatch.setattr(knowledge, "_closed_book", fake)
    tags = knowledge.tag_questions(tiny_lm, qs, samples=2, temperature=0.7, max_new_tokens=4, batch_size=8, seed=0)
    assert tags == {"a": "known", "b": "weakly_known", "c": "unknown"}
    assert temperatures == [0.7, 0.7]
    assert (
        knowledge.tag_questions(tiny_lm, qs, samples=0, temperature=0.7, max_new_tokens=4, batch_size=8, seed=0) == {}
    )


def test_an_adapter_identical_to_base_shows_no_regression_on_known_facts(monkeypatch):
    """Finding 4: tagged by base's own scored greedy answer, base's hallucination on
    "known" facts was 0 by construction, and an adapter answering exactly like base in
    distribution showed a significant regression in ~96% of runs (regression to the
    mean). Tagged on samples, the McNemar test on known facts finds a regression in at
    most 5% of 1,000 simulated runs (binomial bound)."""
    import numpy as np
    from scipy.stats import binom

    from harness.evaluate import stats

    runs, n, samples = 1000, 76, 4
    rng = np.random.default_rng(0)
    p_right = rng.beta(0.7, 0.7, size=(runs, n))  # how well the base model knows each fact
    base = rng.uniform(size=(runs, n)) < p_right  # greedy answers scored for base
    adapter = rng.uniform(size=(runs, n)) < p_right  # an adapter identical in distribution
    draws = rng.uniform(size=(samples, runs, n)) < p_right  # the tagger's sampled answers
    qs = [Question(id=f"q{i}", question="?", answers=("yes",)) for i in range(n)]
    known = np.zeros((runs, n), dtype=bool)
    for r in range(runs):
        rounds = iter([["yes" if x else "no" for x in draws[j, r]] for j in range(samples)])

        def fake(lm, questions, *, temperature, greedy=base[r], rounds=rounds, **kw):
            if temperature is None:  # a greedy answer: the scored base output
                return ["yes" if x else "no" for x in greedy]
            return next(rounds)

        monkeypatch.setattr(knowledge, "_closed_book", fake)
        tags = knowledge.tag_questions(
            None, qs, samples=samples, temperature=0.7, max_new_tokens=4, batch_size=8, seed=0
        )
        known[r] = [tags[q.id] == "known" for q in qs]
    # hallucination (no abstention here) = not right; regression: adapter wrong where base right
    only_base_wrong = (known & ~base & adapter).sum(axis=1)
    only_adapter_wrong = (known & base & ~adapter).sum(axis=1)
    both_wrong = (known & ~base & ~adapter).sum(axis=1)
    test = stats.mcnemar_counts(only_base_wrong, only_adapter_wrong, known.sum(axis=1), both=both_wrong)
    regression = (test["p"] < 0.05) & (only_adapter_wrong > only_base_wrong)
    assert 1 - regression.mean() >= 1 - binom.ppf(0.999, runs, 0.05) / runs


def test_sampled_tagging_is_reproducible_and_differs_from_greedy(tiny_lm):
    qs = generate_world(seed=0, n_people=2, n_organisations=1, n_places=1, paraphrases=0).questions
    kw = dict(max_new_tokens=5, batch_size=4, temperature=1.5, seed=3)
    first = knowledge._closed_book(tiny_lm, qs, **kw)
    assert first == knowledge._closed_book(tiny_lm, qs, **kw)
    assert first != knowledge._closed_book(tiny_lm, qs, **{**kw, "temperature": None})


def test_hallucination_split_by_what_the_base_knew():
    q = {i: Question(id=i, question="?", answers=("x",)) for i in ("k1", "k2", "n1")}
    scored = [
        ({"contains": 0.0, "exact_match": 0.0, "token_f1": 0.0, "hallucinated": 1.0, "abstained": 0.0}, q["k1"]),
        ({"contains": 1.0, "exact_match": 1.0, "token_f1": 1.0, "hallucinated": 0.0, "abstained": 0.0}, q["k2"]),
        ({"contains": 0.0, "exact_match": 0.0, "token_f1": 0.0, "hallucinated": 1.0, "abstained": 0.0}, q["n1"]),
    ]
    v = metrics.item_values(scored, known={"k1": "known", "k2": "known", "n1": "weakly_known"})
    assert v["hallucination_known"] == {"k1": 1.0, "k2": 0.0} and v["hallucination_new"] == {"n1": 1.0}
    assert "hallucination_known" not in metrics.item_values(scored)


def test_general_questions_are_outside_the_corpus_with_four_choices():
    g = general_questions(5, seed=0)
    assert [x.id for x in g] == ["g0000", "g0001", "g0002", "g0003", "g0004"]
    assert all(len(x.choices) == 4 and x.choices[x.answer_index] == x.answers[0] and not x.in_corpus for x in g)
    w = generate_world(seed=0, n_people=2, n_organisations=1, n_places=1, paraphrases=0, n_general=3)
    assert [x.id for x in w.questions if x.id.startswith("g")] == ["g0000", "g0001", "g0002"]
    assert not any(ans in d.text for x in g for ans in x.answers for d in w.documents)
    assert len(GENERAL_KNOWLEDGE) == 20


def test_a_run_reports_hallucination_by_source(tiny_model_dir, tmp_path):
    raw = tiny_config(
        tiny_model_dir,
        name="known",
        eval={"max_new_tokens": 4, "bootstrap_samples": 200, "known_samples": 2, "known_temperature": 1.0},
    )
    raw["data"]["world"]["n_general"] = 4
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    bk = m["by_knowledge"]
    n_answerable = m["data"]["answerable"]
    assert sum(bk["counts"].values()) == n_answerable and bk["samples"] == 2
    base = m["pipelines"]["base"]
    n_split = sum(base[k]["n"] for k in ("hallucination_known", "hallucination_new") if k in base)
    assert n_split == base["hallucination_answerable"]["n"] == n_answerable
    assert "retrieval_recall" in m["pipelines"]["rag"]
    assert m["pipelines"]["rag"]["retrieval_recall"]["n"] == n_answerable - 4  # general questions: not in corpus
    assert "Hallucination by source" in (out / "report.md").read_text()


def test_training_only_on_unknown_facts_relabelled_as_abstention(tiny_model_dir, tmp_path):
    from harness.answer.prompts import ABSTAIN
    from harness.models.local import load_generator
    from harness.run.runner import load_dataset
    from harness.train.adapters import select_training_facts

    raw = tiny_config(
        tiny_model_dir,
        name="gekhman",
        eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 3, "bootstrap_samples": 200},
    )
    raw["train"].update(train_categories=["unknown", "weakly_known"], unknown_as="abstain")
    m = json.loads((run_experiment(parse_config(raw), results_root=tmp_path) / "metrics.json").read_text())
    sel = m["costs"]["training"]["selection"]
    n_train = m["data"]["train_questions"]
    assert sum(sel["tagged"].values()) == n_train
    assert sel["kept"] == sel["tagged"]["unknown"] + sel["tagged"]["weakly_known"]
    assert sel["relabelled_abstain"] == sel["tagged"]["unknown"] > 0  # a tiny model knows nothing
    cfg = parse_config(raw)
    lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    data, _ = select_training_facts(lm, load_dataset(cfg), cfg)
    assert len(data.train_questions) == sel["kept"]
    assert sum(q.answers == (ABSTAIN,) for q in data.train_questions) == sel["relabelled_abstain"]

    raw["train"].update(train_categories=["known"], unknown_as="gold")
    with pytest.raises(Exception, match=r"train.train_categories: no training question is known"):
        run_experiment(parse_config({**raw, "name": "none-known"}), results_root=tmp_path)


def test_category_options_need_sft():
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match="need train.objective: sft"):
        parse_config({"name": "x", "train": {"objective": "cpt", "unknown_as": "abstain"}})
