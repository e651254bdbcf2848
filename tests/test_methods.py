"""`train.method: full` in a run: the fine-tuned pipelines answer with a fully
fine-tuned second load of the base, the base pipelines with the untouched first."""

import json

from conftest import tiny_config
from harness.config import parse_config
from harness.run.runner import run_experiment
from harness.store.results import read_jsonl


def _answers(folder, pipeline):
    """Each item's output and choice log-likelihoods (the tiny model often says nothing)."""
    return {
        r["question_id"]: (r["output"], r["choice_logliks"])
        for r in read_jsonl(folder / "predictions.jsonl")
        if r["pipeline"] == pipeline
    }


def test_full_fine_tuning_keeps_the_base_pipelines_on_the_untouched_base(tiny_model_dir, tmp_path):
    ev = {"pipelines": ["base", "finetuned", "rag"], "max_new_tokens": 4, "bootstrap_samples": 200}
    raw = tiny_config(tiny_model_dir, name="full", eval=ev)
    raw["train"].update(method="full", lr=0.005, epochs=2)
    out = run_experiment(parse_config(raw), results_root=tmp_path / "a")
    m = json.loads((out / "metrics.json").read_text())
    tr = m["costs"]["training"]
    assert tr["method"] == "full" and tr["trainable_params"] == tr["total_params"] and not tr["from_cache"]
    assert (tmp_path / "a" / "full" / "loss_curve.json").is_file()
    # base answers equal those of a run that trains nothing
    untrained = tiny_config(tiny_model_dir, name="none", eval={**ev, "pipelines": ["base", "rag"]})
    plain = run_experiment(parse_config(untrained), results_root=tmp_path / "b")
    assert _answers(out, "base") == _answers(plain, "base") and _answers(out, "rag") == _answers(plain, "rag")
    assert _answers(out, "finetuned") != _answers(out, "base")
    # a second run takes the fine-tuned model from the cache and answers the same
    again = run_experiment(parse_config(raw), results_root=tmp_path / "c")
    m2 = json.loads((again / "metrics.json").read_text())
    assert m2["costs"]["training"]["from_cache"] is True
    assert _answers(again, "finetuned") == _answers(out, "finetuned")
    assert set(m["recovery"]) >= {"mc_accuracy", "contains"}
    assert "Fine-tuning arm: material and recovery" in (out / "report.md").read_text()
