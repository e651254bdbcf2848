"""Training material: every document token in some window, dev losses that never take
facts away from training, long pairs cut visibly, `mixed` and `all-linear`."""

import dataclasses

from harness.data.items import Question
from harness.train.material import Example, build_examples, prepare_material, windows

FACT = "The vault code of Ostrow Mill is 4471."


def _long_document(tok, n_tokens: int = 2000) -> str:
    filler, text = "Rain fell on the harbour while the ferries waited. ", ""
    while len(tok(text, add_special_tokens=False)["input_ids"]) < n_tokens:
        text += filler
    return text + FACT


def test_a_fact_at_the_end_of_a_2000_token_document_is_trained(tiny_lm):
    tok = tiny_lm.tokenizer
    doc = _long_document(tok)
    ex = build_examples(tok, objective="cpt", texts=[doc])
    m = prepare_material(tok, ex, max_length=128, dev_fraction=0.0, seed=0)
    text = tok(ex[0].completion, add_special_tokens=False)["input_ids"]
    assert len(text) > 2000 and m.stats["windows"] == len(m.train) > 15
    # the labelled tokens of the windows, in order, are the whole document: each token once
    assert [t for _, labels in m.train for t in labels if t != -100] == text
    assert all(len(ids) <= 128 for ids, _ in m.train)
    assert FACT in tok.decode(m.train[-1][0]) or FACT in tok.decode(m.train[-2][0] + m.train[-1][0][1:])
    assert m.stats["corpus_tokens"] == m.stats["tokens_trained_per_epoch"] == len(text)


def test_windows_overlap_by_one_token_and_cover_the_stream():
    stream = list(range(10))
    got = windows(stream, 4)
    assert [ids for ids, _ in got] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert [t for _, labels in got for t in labels[1:]] == stream[1:]
    assert windows(list(range(4)), 4) == [([0, 1, 2, 3], [-100, 1, 2, 3])]


def test_packing_fills_windows_across_documents_with_boundaries(tiny_lm):
    tok = tiny_lm.tokenizer
    ex = build_examples(tok, objective="cpt", texts=[f"Ana {i} was born in Ostrow." for i in range(20)])
    apart = prepare_material(tok, ex, max_length=64, dev_fraction=0.0, seed=0)
    packed = prepare_material(tok, ex, max_length=64, dev_fraction=0.0, seed=0, packing=True)
    assert len(packed.train) < len(apart.train) == 20
    # the same document tokens, plus the 19 boundary tokens between documents as targets
    assert packed.stats["tokens_trained_per_epoch"] == apart.stats["tokens_trained_per_epoch"] + 19
    joined = [t for ids, _ in packed.train for t in ids[1:]]
    assert joined.count(tok.bos_token_id) == 19  # the boundary before every document but the first


def test_cpt_dev_split_never_removes_a_document(tiny_lm):
    """Without separate material, the dev loss comes from the end of every document;
    every document still trains, and the held-out tokens are counted."""
    tok = tiny_lm.tokenizer
    texts = [f"Person {i} was born in Town{i} and works at Mill{i}." for i in range(10)]
    m = prepare_material(
        tok, build_examples(tok, objective="cpt", texts=texts), max_length=96, dev_fraction=0.2, seed=0
    )
    assert m.stats["dev_source"] == "held-out document ends" and len(m.train) == len(m.dev) == 10
    for i, (ids, _) in enumerate(m.train):
        assert f"Person {i} was born" in tok.decode(ids)
    s = m.stats
    assert s["dev_tokens"] == s["dev_tokens_held_out"] > 0
    assert s["tokens_trained_per_epoch"] + s["dev_tokens_held_out"] == s["corpus_tokens"]


def test_cpt_dev_from_separate_material_trains_every_token(tiny_lm):
    tok = tiny_lm.tokenizer
    texts = [f"Person {i} was born in Town{i}." for i in range(10)]
    qs = [Question(id=f"q{i}", question=f"Where was person {i} born?", answers=(f"Town{i}",)) for i in range(10)]
    m = prepare_material(
        tok,
        build_examples(tok, objective="cpt", texts=texts),
        max_length=96,
        dev_fraction=0.2,
        seed=0,
        dev_examples=build_examples(tok, objective="sft", questions=qs),
    )
    assert m.stats["dev_source"] == "separate" and len(m.dev) == 10 and len(m.train) == 10
    assert m.stats["tokens_trained_per_epoch"] == m.stats["corpus_tokens"]


def test_a_long_pair_is_cut_at_the_prompt_start_and_counted(tiny_lm, caplog):
    tok = tiny_lm.tokenizer
    long_q = Question(id="long", question="Where was the person born? " * 30, answers=("Town1",))
    short = Question(id="short", question="Where?", answers=("Town2",))
    ex = build_examples(tok, objective="sft", questions=[long_q, short])
    fits = len(tok(ex[1].prompt + ex[1].completion, add_special_tokens=False)["input_ids"]) + 2
    m = prepare_material(tok, ex, max_length=fits, dev_fraction=0.0, seed=0)
    assert m.stats["examples_truncated"] == 1 and m.stats["answers_truncated"] == 0 and "cut to fit" in caplog.text
    ids, labels = m.train[0]
    assert len(ids) == fits and tok.decode([t for t in labels if t != -100]) == "Town1<|im_end|>"
    # an answer longer than the window keeps half a window of prompt and loses its end, counted
    m = prepare_material(tok, [Example("Q " * 40, "word " * 80)], max_length=32, dev_fraction=0.0, seed=0)
    ((ids, labels),) = m.train
    assert len(ids) == 32 and labels.count(-100) == 16 and m.stats["answers_truncated"] == 1


def test_mixed_trains_documents_and_pairs(tiny_lm):
    tok = tiny_lm.tokenizer
    texts = ["Ana was born in Ostrow."]
    qs = [Question(id=f"q{i}", question=f"Where was person {i} born?", answers=(f"Town{i}",)) for i in range(12)]
    ex = build_examples(tok, objective="mixed", texts=texts, questions=qs)
    assert ex[0] == Example("", "Ana was born in Ostrow.<|im_end|>") and len(ex) == 13
    m = prepare_material(tok, ex, max_length=96, dev_fraction=0.25, seed=0)
    assert m.stats["documents"] == 1 and m.stats["pairs"] == 9 and m.stats["dev_source"] == "held-out pairs"
    assert len(m.dev) == 3 and len(m.train) == 10  # the document is never held out


def test_all_linear_targets_every_linear_layer(tiny_lm, tmp_path):
    from harness.train.trainer import train_model

    qs = [Question(id=f"q{i}", question=f"Where was person {i} born?", answers=(f"Town{i}",)) for i in range(4)]
    r = train_model(
        tiny_lm,
        build_examples(tiny_lm.tokenizer, objective="sft", questions=qs),
        rank=2,
        alpha=4,
        dropout=0.0,
        target_modules="all-linear",
        lr=0.01,
        epochs=1,
        batch_size=4,
        max_length=96,
        out_dir=tmp_path / "a",
    )
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in tiny_lm.model.named_parameters() if "lora_A" in n}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert r.steps == r.steps_run == 1


def test_sft_dev_questions_are_second_wordings_of_facts_that_still_train():
    """The sft dev loss never takes a fact out of training: a dev question is one wording
    of a fact whose other wording trains; a fact asked one way always trains."""
    from harness.train.material import fact_of, split_by_fact

    twice = [
        Question(id=f"f{i:04d}-t{k}", question=f"Wording {k} about fact {i}?", answers=(f"A{i}",))
        for i in range(20)
        for k in range(2)
    ]
    once = [
        Question(id=f"g{i:04d}-train", question=f"Only wording of fact {i}?", answers=(f"B{i}",)) for i in range(20)
    ]
    train, dev = split_by_fact(twice + once, dev_fraction=0.1, seed=0)
    assert len(dev) == 6 and len({fact_of(q) for q in dev}) == 6  # 10% of 60, at most one per fact
    assert {fact_of(q) for q in dev} <= {fact_of(q) for q in train}  # each still trains through its twin
    assert all(q.id.startswith("f") for q in dev) and len(train) + len(dev) == 60
    assert split_by_fact(once, dev_fraction=0.1, seed=0) == (once, [])  # one wording each: no dev split


def test_an_sft_adapter_trains_every_fact_and_has_a_dev_split_only_from_second_wordings(tiny_model_dir):
    """Through obtain_adapter: with two wordings per fact the dev pairs are second
    wordings (every fact trains); with one wording per fact there is no dev split."""
    from conftest import tiny_config
    from harness.config import parse_config
    from harness.models.local import load_generator
    from harness.run.runner import load_dataset
    from harness.train.adapters import obtain_adapter, training_examples

    lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    world = {"seed": 0, "n_people": 3, "n_organisations": 2, "n_places": 2, "n_unanswerable": 4}
    two = parse_config(tiny_config(tiny_model_dir, data={"world": {**world, "paraphrases": 2}}))
    data = load_dataset(two)
    examples, dev = training_examples(lm, data, two.train, seed=0)
    assert dev and len(examples) + len(dev) == len(data.train_questions)
    from harness.train.material import fact_of

    def facts(exs):  # the facts a list of pairs asks about, by the question each prompt renders
        return {fact_of(q) for e in exs for q in data.train_questions if f"Question: {q.question}" in e.prompt}

    assert facts(dev) and facts(dev) <= facts(examples)  # each dev fact still trains, through another wording
    one = parse_config(
        tiny_config(
            tiny_model_dir,
            data={"world": {**world, "paraphrases": 1}},
            train={
                "objective": "sft",
                "rank": 4,
                "alpha": 8,
                "max_steps": 2,
                "batch_size": 8,
                "lr": 0.005,
                "max_length": 96,
                "dev_fraction": 0.2,
            },
        )
    )
    data = load_dataset(one)  # the world asks each fact two ways (-t0, -t1): keep one
    data = dataclasses.replace(data, train_questions=tuple(q for q in data.train_questions if q.id.endswith("-t0")))
    assert training_examples(lm, data, one.train, seed=0)[1] == []
    record, cached = obtain_adapter(lm, data, one, seed=0)
    assert not cached and record["material"]["dev_items"] == 0
    assert record["material"]["pairs"] == len(data.train_questions)  # no fact held out of training
