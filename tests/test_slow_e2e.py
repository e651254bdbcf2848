"""The embedded real models end to end on a small world (marked slow: minutes on a CPU)."""

import json

import pytest

from harness.config import parse_config
from harness.run.runner import run_experiment

pytestmark = pytest.mark.slow


def test_smollm2_and_minilm_end_to_end(tmp_path):
    raw = {
        "name": "slow-e2e",
        "model": {"name": "smollm2"},
        "embedder": {"name": "minilm"},
        "data": {
            "world": {
                "seed": 3,
                "n_people": 3,
                "n_organisations": 2,
                "n_places": 2,
                "paraphrases": 1,
                "n_unanswerable": 4,
            }
        },
        "train": {"epochs": 2, "batch_size": 8, "target_modules": ["q_proj", "v_proj"]},
        "eval": {"max_new_tokens": 12, "bootstrap_samples": 500},
    }
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    p = m["pipelines"]
    assert set(p) == {"base", "finetuned", "rag", "rag_finetuned"}
    # The base model cannot know invented facts; with the passages in context it can read them.
    assert p["base"]["contains"]["mean"] <= 0.1
    assert p["rag"]["retrieval_recall"]["mean"] >= 0.8
    assert p["rag"]["contains"]["mean"] > p["base"]["contains"]["mean"]
    assert p["rag"]["mc_accuracy"]["mean"] > p["base"]["mc_accuracy"]["mean"]
    assert m["costs"]["training"]["steps"] > 0 and m["model"]["fingerprint"]
    assert "## Results by pipeline" in (out / "report.md").read_text()
