"""The built-in fictional world (harness/data/world.py): seeded and reproducible, evaluation questions
worded unlike the training text, valid distractors, and unanswerable questions about no one."""

import pytest

from harness.data.world import ATTRIBUTES, generate_world, max_paraphrases

KW = dict(n_people=5, n_organisations=3, n_places=3, paraphrases=3, n_unanswerable=6)


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = generate_world(seed=1, **KW), generate_world(seed=1, **KW), generate_world(seed=2, **KW)
    assert a == b
    assert a.documents != c.documents


def test_counts_and_structure():
    w = generate_world(seed=0, **KW)
    n_facts = 5 * 4 + 3 * 3 + 3 * 3
    assert len(w.documents) == 11 and len(w.facts) == n_facts
    assert len(w.train_texts) == len(w.documents) + 3 * n_facts
    assert len(w.train_questions) == 2 * n_facts
    answerable = [q for q in w.questions if q.answerable]
    assert len(answerable) == n_facts and len(w.questions) == n_facts + 6


def test_eval_questions_are_worded_differently_from_training():
    w = generate_world(seed=0, **KW)
    train_wordings = {q.question for q in w.train_questions} | set(w.train_texts)
    assert not {q.question for q in w.questions} & train_wordings
    eval_templates = {a.eval_question for attrs in ATTRIBUTES.values() for a in attrs}
    train_templates = {t for attrs in ATTRIBUTES.values() for a in attrs for t in a.train_questions}
    assert not eval_templates & train_templates


def test_multiple_choice_has_gold_and_three_distinct_distractors():
    w = generate_world(seed=0, **KW)
    for q in w.questions:
        if q.answerable:
            assert len(set(q.choices)) == 4 and q.choices[q.answer_index] == q.answers[0]


def test_evidence_sentence_is_in_the_entity_document():
    w = generate_world(seed=0, **KW)
    docs = {d.id: d.text for d in w.documents}
    for q in w.questions:
        if q.answerable:
            assert q.evidence in docs[q.doc_id] and q.answers[0] in q.evidence


def test_unanswerable_questions_are_about_entities_that_do_not_exist():
    w = generate_world(seed=0, **KW)
    entities = {f["entity"] for f in w.facts}
    corpus = " ".join(w.train_texts)
    for q in w.questions:
        if not q.answerable:
            assert not any(e in q.question for e in entities)
            assert not q.answers and not q.choices
            # no part of the invented name appears anywhere in the training text
            kinds = {"Works", "Company", "Guild", "Foundry", "Trading", "House", "Cooperative"}
            words = [t.strip("?") for t in q.question.split()[1:] if t[:1].isupper()]
            assert words and all(word not in corpus for word in words if word not in kinds)


def test_paraphrase_limit():
    with pytest.raises(ValueError, match="at most"):
        generate_world(seed=0, n_people=1, n_organisations=0, n_places=0, paraphrases=max_paraphrases() + 1)


def test_the_paraphrase_count_changes_only_the_training_text():
    """A paraphrase sweep compares one world: same documents, questions and QA pairs,
    and the restatements of a smaller count are among those of a larger one."""
    kw = {**KW}
    worlds = {k: generate_world(seed=4, **{**kw, "paraphrases": k}) for k in (0, 1, 5)}
    for k in (1, 5):
        w = worlds[k]
        assert (w.documents, w.questions, w.train_questions, w.facts) == (
            worlds[0].documents,
            worlds[0].questions,
            worlds[0].train_questions,
            worlds[0].facts,
        )
    assert set(worlds[0].train_texts) < set(worlds[1].train_texts) < set(worlds[5].train_texts)
    assert len(worlds[5].train_texts) == len(worlds[0].documents) + 5 * len(worlds[0].facts)
