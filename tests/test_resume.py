"""A run killed at any point resumes with `harness run` again and ends with the metrics
of an uninterrupted run; what was finished before the kill is not computed again."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from harness import pipelines
from harness.config import parse_config
from harness.memo import Memo
from harness.results import read_jsonl
from harness.runner import run_experiment

SAME = ("pipelines", "comparisons", "verdicts", "data")


def _outcome(folder: Path) -> dict:
    """Everything a run concluded, without timings."""
    m = json.loads((folder / "metrics.json").read_text())
    preds = [{k: v for k, v in r.items() if k != "latency_s"} for r in read_jsonl(folder / "predictions.jsonl")]
    training = {k: v for k, v in (m["costs"]["training"] or {}).items()
                if k not in ("wall_seconds", "tokens_per_second", "peak_rss_mb", "start_rss_mb", "training_memory_mb",
                             "from_cache", "adapter_dir", "steps_run", "resumed_from_step")}
    return {**{k: m[k] for k in SAME}, "training": training, "predictions": preds,
            "loss_curve": json.loads((folder / "loss_curve.json").read_text())}


def test_memo_skips_a_torn_line_and_keeps_the_rest(tmp_path):
    memo = Memo("generations", namespace={"model": "m"}, root=tmp_path)
    memo.put("a", [1, 2])
    memo.put("b", {"x": "y"})
    with open(next(memo.folder.glob("*.jsonl")), "a") as f:
        f.write('{"key": "c", "val')  # a writer killed mid-line
    again = Memo("generations", namespace={"model": "m"}, root=tmp_path)
    assert again.get("a") == [1, 2] and again.get("b") == {"x": "y"} and again.get("c") is None
    assert again.counts() == {"reused": 2, "computed": 0}
    assert Memo("generations", namespace={"model": "other"}, root=tmp_path).get("a") is None


def test_a_run_that_dies_mid_generation_resumes_without_redoing_finished_batches(tiny_model_dir, tmp_path,
                                                                                 monkeypatch):
    raw = tiny_config(tiny_model_dir, name="cut", eval={"max_new_tokens": 4, "batch_size": 4,
                                                        "bootstrap_samples": 200})
    whole = run_experiment(parse_config(raw), results_root=tmp_path / "whole")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))

    real, calls = pipelines._compute_unit, []

    def dies_on_the_ninth_batch(*a, **kw):
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(pipelines, "_compute_unit", dies_on_the_ninth_batch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_config(raw), results_root=tmp_path / "cut")
    assert not (tmp_path / "cut" / "cut").exists()
    monkeypatch.setattr(pipelines, "_compute_unit", real)
    out = run_experiment(parse_config(raw), results_root=tmp_path / "cut")
    assert _outcome(out) == _outcome(whole)
    batches = {p: c["batches"] for p, c in json.loads((out / "metrics.json").read_text())["costs"]["pipelines"].items()}
    assert sum(b["reused"] for b in batches.values()) == 8  # the batches finished before the crash
    assert batches["base"]["computed"] == 0 and batches["rag_finetuned"]["computed"] > 0


def _wait_for(pattern: str, root: Path, proc, seconds: float = 120) -> bool:
    end = time.time() + seconds
    while time.time() < end and proc.poll() is None:
        if list(root.glob(pattern)):
            return True
        time.sleep(0.05)
    return False


def test_sigkill_mid_training_and_mid_generation_then_resume_matches_an_uninterrupted_run(tiny_model_dir,
                                                                                          tmp_path):
    raw = tiny_config(tiny_model_dir, name="killed",
                      train={"objective": "sft", "rank": 4, "alpha": 8, "epochs": 8, "batch_size": 4, "lr": 0.005,
                             "max_length": 96, "dropout": 0.1},
                      eval={"max_new_tokens": 4, "batch_size": 4, "bootstrap_samples": 200})
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(raw))

    def harness(cache: Path, results: Path) -> subprocess.Popen:
        env = {**os.environ, "HARNESS_CACHE": str(cache)}
        return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(config), "--results-dir",
                                 str(results)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    assert harness(tmp_path / "cache-whole", tmp_path / "whole").wait() == 0
    cache, results = tmp_path / "cache", tmp_path / "results"
    rng = random.Random(7)
    kills = 0
    # Kill as soon as a training checkpoint exists, then as soon as generations are being
    # stored, each after a random extra delay; then let the third attempt finish.
    # Each kill must land: the process is still running when it is killed, and dies of it.
    for pattern in ("adapters/*.partial/trainer/checkpoint-*/trainer_state.json", "generations/*/*/*.jsonl"):
        proc = harness(cache, results)
        assert _wait_for(pattern, cache, proc), f"{pattern} never appeared"
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None, f"the run ended before the kill at {pattern}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        kills += 1
    assert kills == 2
    assert harness(cache, results).wait() == 0
    assert _outcome(results / "killed") == _outcome(tmp_path / "whole" / "killed")
    # The training resumed from a checkpoint: the run that finished the adapter ran fewer
    # optimizer steps than the uninterrupted one (its own record says so).
    whole = json.loads((tmp_path / "whole" / "killed" / "metrics.json").read_text())["costs"]["training"]
    (record,) = [json.loads(p.read_text()) for p in cache.glob("adapters/*/harness-train.json")]
    assert whole["steps_run"] == whole["steps"] and record["steps"] == whole["steps"]
    assert 0 < record["resumed_from_step"] and record["steps_run"] == whole["steps"] - record["resumed_from_step"]
    assert not list(results.glob(".killed*")) and not list((cache / "adapters").glob("*.partial"))


def test_a_streamed_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path):
    """atomic_write_file (the trainer's safetensors checkpoints): a save that dies half way
    leaves the previous file whole and nothing beside it."""
    from harness.results import atomic_write_file

    target = tmp_path / "weights.safetensors"
    atomic_write_file(target, lambda tmp: open(tmp, "wb").write(b"old"))

    def dies_half_way(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_file(target, dies_half_way)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]
