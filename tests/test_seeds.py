"""Finding 5: `train.repeats` re-runs must answer with their own adapter and store their
outputs under their own adapter's key."""

import pytest
import torch

from conftest import tiny_config
from harness.answer.pipelines import GENERATION_FORMAT, answer
from harness.config import parse_config
from harness.data.world import generate_world
from harness.evaluate import metrics
from harness.run.runner import spread_across_seeds
from harness.train.adapters import generation_memo


def _two_adapters(lm):
    """Attach two LoRA adapters with different random weights, so they answer differently."""
    from peft import LoraConfig, get_peft_model

    for i, name in enumerate(("default", "seed6")):
        torch.manual_seed(100 + i)
        config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        if i == 0:
            lm.model = get_peft_model(lm.model, config, adapter_name=name)
        else:
            lm.model.add_adapter(name, config)
    lm.model.set_adapter("default")
    lm.model.eval()


def test_seed_reruns_answer_with_their_own_adapter_and_store_under_its_key(tiny_lm):
    _two_adapters(tiny_lm)
    cfg = parse_config(
        tiny_config(
            "unused",
            name="seeds",
            eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 6, "multiple_choice": False, "batch_size": 8},
        )
    )
    questions = list(
        generate_world(seed=0, n_people=2, n_organisations=1, n_places=1, paraphrases=0, n_unanswerable=2).questions
    )
    kw = dict(adapter=True, retriever=None, top_k=1, max_new_tokens=6, batch_size=8, multiple_choice=False)
    own = [r["output"] for r in answer(tiny_lm, questions, adapter_name="seed6", **kw)]
    first = [r["output"] for r in answer(tiny_lm, questions, adapter_name="default", **kw)]
    assert own != first  # the two adapters answer differently
    per_item = {
        "finetuned": metrics.item_values(
            [
                (metrics.score_generation(o, answers=q.answers, answerable=q.answerable), q)
                for o, q in zip(first, questions)
            ]
        )
    }
    spread_across_seeds(tiny_lm, questions, cfg, None, per_item, [("seed6", 6, {"cache_key": "k6"}, False)])
    # what the re-run stored under seed 6's key is seed 6's answers, not the first adapter's
    memo = generation_memo(tiny_lm, adapter_key="k6")
    rerun = answer(tiny_lm, questions, memo=memo, adapter_name="default", **kw)  # served from the memo only
    assert memo.counts()["computed"] == 0
    assert [r["output"] for r in rerun] == own
    assert tiny_lm.model.active_adapter == "default"


def test_generation_cache_format_was_bumped_past_the_polluted_entries():
    assert GENERATION_FORMAT >= 2


class _StubStyleScorer:
    """The style scenario's scorer, by output length: deterministic and per item."""

    def scores(self, rows, by_id):
        return {r["question_id"]: {"style_score": len(r["output"]) % 7 / 7, "content_preservation": 0.5} for r in rows}


def test_seed_spread_scores_every_seed_as_the_run_does(tiny_lm):
    """One scoring path (#24): the other seeds are scored with the run's knowledge tags and
    style scorer, so a style run with train.repeats > 1 spreads every metric over all its
    seeds (before: KeyError, or entries that mixed two seeds with one)."""
    from harness.data.items import Question
    from harness.run.runner import score_rows

    _two_adapters(tiny_lm)
    cfg = parse_config(
        tiny_config(
            "unused",
            name="seeds",
            eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 6, "multiple_choice": False, "batch_size": 8},
        )
    )
    facts = list(generate_world(seed=0, n_people=2, n_organisations=1, n_places=1, paraphrases=0).questions)[:6]
    rewrites = [
        Question(
            id=f"r{i}",
            question=f"Say it in old words: sentence {i}.",
            answers=(f"Thou sayest {i}.",),
            task="rewrite",
            source=f"sentence {i}.",
        )
        for i in range(4)
    ]
    questions = facts + rewrites
    by_id = {q.id: q for q in questions}
    known = {q.id: ("known" if i % 2 else "unknown") for i, q in enumerate(facts)}
    kw = dict(adapter=True, retriever=None, top_k=1, max_new_tokens=6, batch_size=8, multiple_choice=False)
    rows = answer(tiny_lm, questions, adapter_name="default", **kw)
    first = score_rows(rows, by_id, known=known, style_scorer=_StubStyleScorer())
    per_item = {"finetuned": first}
    spread = spread_across_seeds(
        tiny_lm,
        questions,
        cfg,
        None,
        per_item,
        [("seed6", 6, {"cache_key": "k6s"}, False)],
        known=known,
        style_scorer=_StubStyleScorer(),
    )["finetuned"]
    scored = {m for m, v in first.items() if v}
    assert {"style_score", "chrf", "hallucination_known", "hallucination_new", "contains"} <= scored
    assert set(spread) == scored
    assert all(len(entry["values"]) == 2 and entry["seeds"] == [cfg.train.seed, 6] for entry in spread.values())
    for m in scored:  # the first seed's value is the run's own aggregate
        assert spread[m]["values"][0] == pytest.approx(sum(first[m].values()) / len(first[m]))
