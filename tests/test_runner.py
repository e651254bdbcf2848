"""End to end on the tiny model: the results folder, its contents, caching, failures."""

import json

import pytest

from conftest import tiny_config
from harness.config import parse_config
from harness.data.items import DataError
from harness.run.runner import run_experiment
from harness.store.results import read_jsonl


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    cfg = parse_config(tiny_config(tiny_model_dir))
    return run_experiment(cfg, results_root=root), cfg


def test_results_folder_has_every_file(tiny_run):
    out, _ = tiny_run
    assert sorted(p.name for p in out.iterdir()) == [
        ".harness-results.json",
        "config.yaml",
        "figures",
        "lm_eval_results.json",
        "loss_curve.json",
        "metrics.json",
        "predictions.jsonl",
        "report.html",
        "report.md",
        "run.log",
    ]
    assert not list(out.parent.glob(".*partial*"))


def test_every_pipeline_scored_every_question(tiny_run):
    out, cfg = tiny_run
    m = json.loads((out / "metrics.json").read_text())
    preds = read_jsonl(out / "predictions.jsonl")
    n_q = m["data"]["questions"]
    assert m["data"] == {**m["data"], "answerable": 3 * 4 + 2 * 3 + 2 * 3, "unanswerable": 4}
    assert list(m["pipelines"]) == ["base", "finetuned", "rag", "rag_finetuned"]
    assert len(preds) == 4 * n_q
    for p in m["pipelines"]:
        rows = [r for r in preds if r["pipeline"] == p]
        assert len({r["question_id"] for r in rows}) == n_q
        agg = m["pipelines"][p]
        assert agg["contains"]["n"] == m["data"]["answerable"]
        assert agg["hallucination_unanswerable"]["n"] == 4
        # the aggregate is the mean of the per-item scores written next to it
        values = [r["scores"]["contains"] for r in rows if r["answerable"]]
        assert agg["contains"]["mean"] == pytest.approx(sum(values) / len(values))
        lo, hi = agg["contains"]["ci95"]
        assert 0 <= lo <= agg["contains"]["mean"] <= hi <= 1
    assert "retrieval_recall" in m["pipelines"]["rag"] and "retrieval_recall" not in m["pipelines"]["base"]
    rag_rows = [r for r in preds if r["pipeline"] == "rag"]
    assert all(len(r["retrieved"]) == 2 and r["template"] == "with_context@v1" for r in rag_rows)
    assert all(r["template"] == "closed_book@v1" and not r["retrieved"] for r in preds if r["pipeline"] == "base")


def test_metrics_carry_provenance_and_costs(tiny_run):
    out, cfg = tiny_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "complete" and len(m["config_hash"]) == 64
    assert m["model"]["dtype"] == "float32" and m["provenance"]["versions"]["torch"]
    tr = m["costs"]["training"]
    assert tr["steps"] > 0 and tr["trainable_params"] > 0 and tr["wall_seconds"] > 0  # from this run or the cache
    assert m["costs"]["index"]["chunks"] > 0
    assert m["costs"]["pipelines"]["rag"]["prompt_tokens_mean"] > m["costs"]["pipelines"]["base"]["prompt_tokens_mean"]
    pairs = {(c["a"], c["b"]) for c in m["comparisons"] if c["metric"] == "contains"}
    assert len(pairs) == 6
    report = (out / "report.md").read_text()
    for heading in (
        "## Results by pipeline",
        "## Which differences are real",
        "## Cost per arm",
        "## Worked examples",
        "## Protocol",
    ):
        assert heading in report


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def _predictions(folder) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "latency_s"} for r in read_jsonl(folder / "predictions.jsonl")]


def _batches(m) -> dict:
    return {p: c["batches"] for p, c in m["costs"]["pipelines"].items()}


def test_a_rerun_from_an_empty_cache_recomputes_and_reproduces_every_score(tiny_run, tmp_path, monkeypatch):
    """Reproduced, not replayed: the second run trains, indexes and generates everything
    again in an empty cache and lands on the same scores and answers; then a third run on
    that cache computes nothing and still agrees."""
    out, cfg = tiny_run
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "empty-cache"))
    fresh = run_experiment(cfg, results_root=tmp_path / "fresh")
    first, second = _metrics(out), _metrics(fresh)
    assert second["costs"]["training"]["from_cache"] is False
    assert all(b["reused"] == 0 and b["computed"] > 0 for b in _batches(second).values()), _batches(second)
    assert first["pipelines"] == second["pipelines"] and first["comparisons"] == second["comparisons"]
    assert first["verdicts"] == second["verdicts"] and _predictions(out) == _predictions(fresh)
    warm = run_experiment(cfg, results_root=tmp_path / "warm")
    third = _metrics(warm)
    assert third["costs"]["training"]["from_cache"] is True
    assert all(b["computed"] == 0 and b["reused"] > 0 for b in _batches(third).values()), _batches(third)
    assert third["pipelines"] == first["pipelines"] and _predictions(warm) == _predictions(out)


def test_retrieval_settings_do_not_retrain(tiny_run, tiny_model_dir, tmp_path):
    raw = tiny_config(tiny_model_dir, retrieval={"chunk_size": 16, "top_k": 1})
    m = json.loads((run_experiment(parse_config(raw), results_root=tmp_path) / "metrics.json").read_text())
    assert m["costs"]["training"]["from_cache"] is True


def test_rag_only_run_loads_no_adapter(tiny_model_dir, tmp_path):
    raw = tiny_config(tiny_model_dir, eval={"pipelines": ["base", "rag"], "max_new_tokens": 4})
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["pipelines"]) == ["base", "rag"] and m["costs"]["training"] is None
    assert not (out / "loss_curve.json").exists()


def _tree(folder) -> dict:
    """Every path under `folder` with its bytes' hash (folders as "dir")."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def test_a_run_failing_on_its_input_creates_nothing(tiny_model_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "fine"}\n{broken\n')
    qs = tmp_path / "q.jsonl"
    qs.write_text('{"question": "q?", "answers": ["a"]}\n')
    raw = tiny_config(tiny_model_dir, data={"documents": str(docs), "questions": str(qs)}, train={"objective": "cpt"})
    with pytest.raises(DataError, match=r"docs\.jsonl:2: invalid JSON"):
        run_experiment(parse_config(raw), results_root=tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_a_run_failing_mid_generation_leaves_the_previous_results_and_nothing_else(
    tiny_model_dir, tmp_path, monkeypatch
):
    from harness.answer import pipelines

    cfg = parse_config(
        tiny_config(
            tiny_model_dir,
            name="fails",
            eval={"pipelines": ["base", "rag"], "max_new_tokens": 2, "bootstrap_samples": 100},
        )
    )
    results = tmp_path / "results"
    done = run_experiment(cfg, results_root=results)
    before = _tree(results)
    assert (
        sorted(before) == sorted(str(p.relative_to(results)) for p in results.rglob("*"))
        and "fails/metrics.json" in before
    )
    real, calls = pipelines._compute_unit, []

    def fails_on_the_second_batch(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            # the run is well under way: its staging folder exists and it holds the lock
            assert list(results.glob(".fails.partial-*")) and (results / ".fails.lock").is_file()
            raise RuntimeError("generation failed")
        return real(*a, **kw)

    monkeypatch.setattr(pipelines, "_compute_unit", fails_on_the_second_batch)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))  # so the generations are computed, not replayed
    with pytest.raises(RuntimeError, match="generation failed"):
        run_experiment(cfg, results_root=results)
    assert len(calls) == 2
    assert _tree(results) == before  # the finished run as it was; no staging folder, no lock, no old copy
    assert _metrics(done)["status"] == "complete"


def test_user_data_run_with_cpt(tiny_model_dir, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ana.txt").write_text("Ana Velk was born in Ostrow. Ana Velk plays the harp.")
    (docs / "bo.md").write_text("Bo Trenn works for the Zuna Guild.")
    qs = tmp_path / "q.jsonl"
    qs.write_text(
        json.dumps(
            {
                "question": "Where was Ana Velk born?",
                "answers": ["Ostrow"],
                "choices": ["Ostrow", "Lund"],
                "answer_index": 0,
            }
        )
        + "\n"
        + json.dumps({"question": "Who employs Cy Dorn?", "answers": []})
        + "\n"
    )
    raw = tiny_config(
        tiny_model_dir,
        data={"documents": str(docs), "questions": str(qs)},
        train={"objective": "cpt", "epochs": 1, "rank": 2},
    )
    m = json.loads((run_experiment(parse_config(raw), results_root=tmp_path / "r") / "metrics.json").read_text())
    assert m["data"]["source"] == "files" and m["data"]["answerable"] == 1 and m["data"]["unanswerable"] == 1
    assert m["pipelines"]["rag"]["retrieval_recall"]["mean"] == 1.0


def test_repeated_seeds_report_their_spread(tiny_model_dir, tmp_path):
    raw = tiny_config(
        tiny_model_dir,
        name="seeds",
        eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 4, "bootstrap_samples": 200},
    )
    raw["train"] = {**raw["train"], "repeats": 2, "seed": 5}
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    sp = m["seed_spread"]["finetuned"]["mc_accuracy"]
    assert sp["seeds"] == [5, 6] and len(sp["values"]) == 2
    assert sp["values"][0] == pytest.approx(m["pipelines"]["finetuned"]["mc_accuracy"]["mean"])
    assert sp["min"] <= sp["mean"] <= sp["max"] and sp["sd"] >= 0
    assert "## Spread across training seeds" in (out / "report.md").read_text()
    # one seed again: the seed-5 adapter comes from the cache, untouched by the repeat
    raw["train"]["repeats"] = 1
    again = json.loads((run_experiment(parse_config(raw), results_root=tmp_path / "b") / "metrics.json").read_text())
    assert again["costs"]["training"]["from_cache"] is True and again["seed_spread"] == {}
    assert again["pipelines"]["finetuned"] == m["pipelines"]["finetuned"]


def test_a_second_run_on_the_same_folder_is_refused_and_a_stale_lock_is_taken(tiny_model_dir, tmp_path):
    import os
    import platform
    import subprocess
    import sys

    from harness.store.results import RunLockedError

    cfg = parse_config(tiny_config(tiny_model_dir, name="locked", eval={"pipelines": ["base"], "max_new_tokens": 2}))
    lock = tmp_path / ".locked.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": platform.node(), "started": "now"}))
    with pytest.raises(RunLockedError, match=r"another run is writing it \(pid \d+"):
        run_experiment(cfg, results_root=tmp_path)
    assert not (tmp_path / "locked").exists()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs: its lock is stale
    lock.write_text(json.dumps({"pid": gone.pid, "host": platform.node(), "started": "earlier"}))
    out = run_experiment(cfg, results_root=tmp_path)
    assert (out / "metrics.json").is_file() and not lock.exists()


@pytest.mark.parametrize("method", ["bm25", "hybrid"])
def test_lexical_and_hybrid_retrieval_runs(tiny_model_dir, tmp_path, method):
    raw = tiny_config(
        tiny_model_dir,
        name=method,
        retrieval={"method": method, "chunk_size": 32, "top_k": 2},
        eval={"pipelines": ["base", "rag"], "max_new_tokens": 2, "bootstrap_samples": 200},
    )
    m = json.loads((run_experiment(parse_config(raw), results_root=tmp_path) / "metrics.json").read_text())
    assert m["costs"]["index"]["method"] == method and m["protocol"]["retrieval_method"] == method
    assert m["pipelines"]["rag"]["retrieval_recall"]["mean"] >= 0.8  # names in the questions are exact words


@pytest.mark.skipif(not (__import__("conftest").SHARED_DATA / "tofu").is_dir(), reason="../shared/data not present")
def test_tofu_runs_end_to_end(tiny_model_dir, tmp_path):
    from conftest import SHARED_DATA

    raw = tiny_config(
        tiny_model_dir,
        name="tofu-tiny",
        data={"external": {"format": "tofu", "path": str(SHARED_DATA / "tofu"), "max_entities": 1}},
        train={"objective": "sft", "epochs": 1, "rank": 2, "max_length": 160},
        eval={"max_new_tokens": 4, "bootstrap_samples": 200},
    )
    m = json.loads((run_experiment(parse_config(raw), results_root=tmp_path) / "metrics.json").read_text())
    assert m["data"]["source"] == "tofu" and m["data"]["questions"] == 20
    assert m["pipelines"]["rag"]["mc_accuracy"]["n"] == 20


def test_raft_runs_as_its_own_pipeline_with_its_own_adapter(tiny_model_dir, tmp_path):
    raw = tiny_config(
        tiny_model_dir,
        name="raft",
        eval={
            "pipelines": ["base", "finetuned", "rag", "rag_finetuned", "raft"],
            "max_new_tokens": 4,
            "bootstrap_samples": 200,
        },
    )
    raw["train"]["raft"] = {"passages": 2, "gold_share": 0.5}
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["pipelines"]) == ["base", "finetuned", "rag", "rag_finetuned", "raft"]
    raft, default = m["costs"]["raft_training"], m["costs"]["training"]
    assert raft["cache_key"] != default["cache_key"]
    # RAFT's dev pairs are second wordings of facts that still train (split_by_fact)
    assert raft["examples"] + raft["dev_examples"] == m["data"]["train_questions"] and raft["dev_examples"] > 0
    assert raft["material"]["dev_source"] == "separate" and raft["material"]["dev_items"] == raft["dev_examples"]
    preds = read_jsonl(out / "predictions.jsonl")
    by = {(r["pipeline"], r["question_id"]): r for r in preds}
    assert all(by[("raft", q)]["prompt"] == by[("rag", q)]["prompt"] for p, q in by if p == "rag")
    assert all(
        by[("raft", q)]["choice_logliks"] != by[("rag_finetuned", q)]["choice_logliks"]
        for p, q in by
        if p == "rag" and by[(p, q)]["choice_logliks"]
    )
    assert any(c["a"] == "rag" and c["b"] == "raft" for c in m["comparisons"]) and m["verdicts"]
    assert "| raft" in (out / "report.md").read_text() or "raft |" in (out / "report.md").read_text()
    only = tiny_config(
        tiny_model_dir,
        name="raftonly",
        eval={"pipelines": ["rag", "raft"], "max_new_tokens": 2, "bootstrap_samples": 200},
    )
    m2 = json.loads((run_experiment(parse_config(only), results_root=tmp_path) / "metrics.json").read_text())
    assert m2["costs"]["training"] is None and m2["costs"]["raft_training"]["from_cache"] is False


def test_raft_trains_on_the_retrievers_own_chunks(tiny_model_dir, tmp_path, monkeypatch):
    """RAFT's training passages are the chunks retrieval serves, cut in the embedder's
    tokens: with an embedder that counts two tokens a word, they are not word chunks."""
    from harness.answer.retrieve import HashingEmbedder
    from harness.train import adapters

    monkeypatch.setattr(HashingEmbedder, "count_tokens", staticmethod(lambda text: 2 * len(text.split())))
    seen = []
    real = adapters.build_raft_examples

    def recording(tokenizer, *, chunks, **kw):
        seen.extend(c.text for c in chunks)
        return real(tokenizer, chunks=chunks, **kw)

    monkeypatch.setattr(adapters, "build_raft_examples", recording)
    raw = tiny_config(
        tiny_model_dir,
        name="raftchunks",
        eval={"pipelines": ["rag", "raft"], "max_new_tokens": 2, "bootstrap_samples": 200},
    )
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    retrieved = {h["text"] for r in read_jsonl(out / "predictions.jsonl") for h in r["retrieved"]}
    assert seen and retrieved <= set(seen)
