"""Known/unknown tagging (a light Gekhman et al.), the hallucination split, and the
general-knowledge probes of the world."""

import json

import pytest

from conftest import tiny_config
from harness import knowledge, metrics
from harness.config import parse_config
from harness.data import Question
from harness.runner import run_experiment
from harness.world import GENERAL_KNOWLEDGE, general_questions, generate_world


@pytest.mark.parametrize("greedy, hits, category", [(True, 0, "known"), (True, 3, "known"),
                                                     (False, 1, "weakly_known"), (False, 0, "unknown")])
def test_categories(greedy, hits, category):
    assert knowledge.categorize(greedy_correct=greedy, sample_hits=hits) == category


def test_tagging_reads_greedy_answers_and_counts_samples(tiny_lm, monkeypatch):
    qs = [Question(id="a", question="Capital of France?", answers=("Paris",)),
          Question(id="b", question="Capital of Peru?", answers=("Lima",)),
          Question(id="c", question="Capital of Chad?", answers=("N'Djamena",)),
          Question(id="u", question="Capital of Nowhere?", answers=(), answerable=False)]
    sampled = iter([["Rome", "Lima", "no idea"], ["Rome", "nothing", "no idea"]])  # two sampling rounds
    monkeypatch.setattr(knowledge, "_closed_book", lambda lm, questions, **kw: next(sampled))
    tags = knowledge.tag_questions(tiny_lm, qs, greedy={"a": "It is Paris.", "b": "Quito", "c": "Abuja"},
                                   samples=2, temperature=0.7, max_new_tokens=4, batch_size=8, seed=0)
    assert tags == {"a": "known", "b": "weakly_known", "c": "unknown"}


def test_sampled_tagging_is_reproducible_and_differs_from_greedy(tiny_lm):
    qs = generate_world(seed=0, n_people=2, n_organisations=1, n_places=1, paraphrases=0).questions
    kw = dict(max_new_tokens=5, batch_size=4, temperature=1.5, seed=3)
    first = knowledge._closed_book(tiny_lm, qs, **kw)
    assert first == knowledge._closed_book(tiny_lm, qs, **kw)
    assert first != knowledge._closed_book(tiny_lm, qs, **{**kw, "temperature": None})


def test_hallucination_split_by_what_the_base_knew():
    q = {i: Question(id=i, question="?", answers=("x",)) for i in ("k1", "k2", "n1")}
    scored = [({"contains": 0.0, "exact_match": 0.0, "token_f1": 0.0, "hallucinated": 1.0, "abstained": 0.0}, q["k1"]),
              ({"contains": 1.0, "exact_match": 1.0, "token_f1": 1.0, "hallucinated": 0.0, "abstained": 0.0}, q["k2"]),
              ({"contains": 0.0, "exact_match": 0.0, "token_f1": 0.0, "hallucinated": 1.0, "abstained": 0.0}, q["n1"])]
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
    raw = tiny_config(tiny_model_dir, name="known", eval={"max_new_tokens": 4, "bootstrap_samples": 200,
                                                          "known_samples": 2, "known_temperature": 1.0})
    raw["data"]["world"]["n_general"] = 4
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    bk = m["by_knowledge"]
    n_answerable = m["data"]["answerable"]
    assert sum(bk["counts"].values()) == n_answerable and bk["samples"] == 2
    base = m["pipelines"]["base"]
    assert base.get("hallucination_known", {"mean": 0.0})["mean"] == 0.0  # right greedily, by definition
    n_split = sum(base[k]["n"] for k in ("hallucination_known", "hallucination_new") if k in base)
    assert n_split == base["hallucination_answerable"]["n"] == n_answerable
    assert "retrieval_recall" in m["pipelines"]["rag"]
    assert m["pipelines"]["rag"]["retrieval_recall"]["n"] == n_answerable - 4  # general questions: not in corpus
    assert "Hallucination by source" in (out / "report.md").read_text()


def test_training_only_on_unknown_facts_relabelled_as_abstention(tiny_model_dir, tmp_path):
    from harness.models import load_generator
    from harness.prompts import ABSTAIN
    from harness.runner import load_dataset, select_training_facts

    raw = tiny_config(tiny_model_dir, name="gekhman", eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 3,
                                                            "bootstrap_samples": 200})
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
