"""The pipelines (harness/answer/pipelines.py) on the tiny Llama: the two switches, adapter on/off
and retrieval on/off, change exactly what they say (the adapter's weights, the passages
in the prompt), an adapter named by a pipeline is the one that answers, and a memo
serves an unchanged batch instead of computing it again."""

import pytest
import torch

from harness.answer.pipelines import PIPELINES, Pipeline, answer
from harness.answer.retrieve import HashingEmbedder, build_retriever
from harness.data.world import generate_world
from harness.store.memo import Memo

WORLD = generate_world(seed=0, n_people=2, n_organisations=1, n_places=1, paraphrases=0, n_unanswerable=2)
QUESTIONS = [q for q in WORLD.questions if q.choices][:4]
RUN = dict(top_k=2, max_new_tokens=3, batch_size=2, multiple_choice=True)


def _attach(lm, *names):
    """LoRA adapters with random (not zero) weights, so each one changes the answers."""
    from peft import LoraConfig, get_peft_model

    for i, name in enumerate(names):
        torch.manual_seed(100 + i)
        config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        if hasattr(lm.model, "peft_config"):
            lm.model.add_adapter(name, config)
        else:
            lm.model = get_peft_model(lm.model, config, adapter_name=name)
    lm.model.set_adapter(names[0])
    lm.model.eval()


def _scores(rows):
    return [r["choice_logliks"] for r in rows]


def test_the_registry_sets_the_two_switches():
    assert PIPELINES == {
        "base": Pipeline(adapter=False, retrieval=False),
        "finetuned": Pipeline(adapter=True, retrieval=False),
        "rag": Pipeline(adapter=False, retrieval=True),
        "rag_finetuned": Pipeline(adapter=True, retrieval=True),
        "raft": Pipeline(adapter=True, retrieval=True, adapter_name="raft"),
    }


def test_adapter_off_is_the_untouched_base_and_on_is_the_named_adapter(tiny_lm):
    assert len(QUESTIONS) == 4 and all(len(q.choices) == 4 for q in QUESTIONS)
    bare = answer(tiny_lm, QUESTIONS, adapter=False, retriever=None, **RUN)
    _attach(tiny_lm, "default", "raft")
    off = answer(tiny_lm, QUESTIONS, adapter=False, retriever=None, **RUN)
    on = answer(tiny_lm, QUESTIONS, adapter=True, retriever=None, **RUN)
    raft = answer(tiny_lm, QUESTIONS, adapter=True, adapter_name="raft", retriever=None, **RUN)
    assert off == [{**r, "latency_s": o["latency_s"]} for r, o in zip(bare, off)]  # bit for bit the base's
    assert _scores(on) != _scores(off) and _scores(raft) != _scores(on)
    assert tiny_lm.model.active_adapter == "default"  # the raft pipeline switched back after answering


def test_an_adapter_that_is_not_attached_is_an_error(tiny_lm):
    with pytest.raises(RuntimeError, match="no adapter 'default' is attached"):
        answer(tiny_lm, QUESTIONS, adapter=True, retriever=None, **RUN)
    _attach(tiny_lm, "default")
    with pytest.raises(RuntimeError, match="no adapter 'raft' is attached"):
        answer(tiny_lm, QUESTIONS, adapter=True, adapter_name="raft", retriever=None, **RUN)


def test_retrieval_on_puts_the_top_k_passages_in_the_prompt(tiny_lm):
    retriever = build_retriever(list(WORLD.documents), embedder=HashingEmbedder(), chunk_size=32, chunk_overlap=0)
    closed = answer(tiny_lm, QUESTIONS, adapter=False, retriever=None, **RUN)
    rag = answer(tiny_lm, QUESTIONS, adapter=False, retriever=retriever, **RUN)
    hits = retriever.search([q.question for q in QUESTIONS], RUN["top_k"])
    for q, c, r, h in zip(QUESTIONS, closed, rag, hits):
        assert c["question_id"] == r["question_id"] == q.id
        assert c["retrieved"] == [] and r["retrieved"] == [
            {"id": x.chunk.id, "score": round(x.score, 6), "text": x.chunk.text} for x in h
        ]
        assert all(x.chunk.text in r["prompt"] and x.chunk.text not in c["prompt"] for x in h)
        assert q.question in r["prompt"] and q.question in c["prompt"]
        assert c["template"] != r["template"]
    assert _scores(rag) != _scores(closed)


def test_a_memo_serves_unchanged_batches_and_a_changed_setting_computes_again(tiny_lm, tmp_path):
    def memo():
        return Memo("generations", namespace={"model": "tiny"}, root=tmp_path)

    first_memo = memo()
    first = answer(tiny_lm, QUESTIONS, adapter=False, retriever=None, memo=first_memo, **RUN)
    assert first_memo.counts() == {"reused": 0, "computed": 2}  # 4 questions in batches of 2
    again_memo = memo()
    again = answer(tiny_lm, QUESTIONS, adapter=False, retriever=None, memo=again_memo, **RUN)
    assert again == first and again_memo.counts() == {"reused": 2, "computed": 0}  # latencies too: stored
    longer_memo = memo()
    answer(tiny_lm, QUESTIONS, adapter=False, retriever=None, memo=longer_memo, **{**RUN, "max_new_tokens": 4})
    assert longer_memo.counts() == {"reused": 0, "computed": 2}


def test_a_choice_follows_a_plain_prompt_after_a_space_as_lm_eval_scores_it(tiny_lm, monkeypatch):
    """D10: without a chat template the prompt ends in "Answer:", and each choice was
    scored glued to it ("Answer:Paris") where lm-eval scores " Paris". With a chat
    template the assistant turn ends in a newline and the choice follows it directly."""
    from harness.answer import pipelines

    seen = []
    real = pipelines.loglikelihood
    monkeypatch.setattr(pipelines, "loglikelihood", lambda lm, pairs, **kw: seen.extend(pairs) or real(lm, pairs, **kw))
    answer(tiny_lm, QUESTIONS[:1], adapter=False, retriever=None, **RUN)
    chat = list(seen)
    assert chat and all(prompt.endswith("\n") and c in QUESTIONS[0].choices for prompt, c in chat)
    seen.clear()
    monkeypatch.setattr(tiny_lm.tokenizer, "chat_template", None)
    answer(tiny_lm, QUESTIONS[:1], adapter=False, retriever=None, **RUN)
    assert seen and all(
        prompt.endswith("Answer:") and c.startswith(" ") and c[1:] in QUESTIONS[0].choices for prompt, c in seen
    )
