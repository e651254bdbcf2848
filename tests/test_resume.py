"""A run killed at any point resumes with `harness run` again and ends with the metrics
of an uninterrupted run; what was finished before the kill is not computed again."""

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from harness.answer import pipelines
from harness.config import parse_config
from harness.run.runner import run_experiment
from harness.store.memo import Memo
from harness.store.results import read_jsonl

SAME = ("pipelines", "comparisons", "verdicts", "data")


def _outcome(folder: Path) -> dict:
    """Everything a run concluded, without timings."""
    m = json.loads((folder / "metrics.json").read_text())
    preds = [{k: v for k, v in r.items() if k != "latency_s"} for r in read_jsonl(folder / "predictions.jsonl")]
    training = {
        k: v
        for k, v in (m["costs"]["training"] or {}).items()
        if k
        not in (
            "wall_seconds",
            "tokens_per_second",
            "peak_rss_mb",
            "start_rss_mb",
            "training_memory_mb",
            "from_cache",
            "adapter_dir",
            "steps_run",
            "resumed_from_step",
        )
    }
    return {
        **{k: m[k] for k in SAME},
        "training": training,
        "predictions": preds,
        "loss_curve": json.loads((folder / "loss_curve.json").read_text()),
    }


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


def test_a_run_that_dies_mid_generation_resumes_without_redoing_finished_batches(tiny_model_dir, tmp_path, monkeypatch):
    raw = tiny_config(tiny_model_dir, name="cut", eval={"max_new_tokens": 4, "batch_size": 4, "bootstrap_samples": 200})
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
    # base was answered from the memo: it is costed at the time its answers took when computed
    base = json.loads((out / "metrics.json").read_text())["costs"]["pipelines"]["base"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert base["generation_seconds"] == pytest.approx(sum(r["latency_s"] for r in rows if r["pipeline"] == "base"))
    assert base["generation_seconds"] > 0
    assert (
        "Their eval wall time is the lookup; generation s is the time they took when first computed"
        in (out / "report.md").read_text()
    )


# `harness run` in a process that stops at a known point and says so: after Trainer has
# written checkpoint N (PAUSE_AT=checkpoint:N), or as the N-th generation batch begins, the
# ones before it stored (PAUSE_AT=batch:N). It prints PAUSED and waits there to be killed.
PAUSING = """
import os, sys, time
import transformers
from harness.answer import pipelines
from harness.cli import main

where, n = os.environ["PAUSE_AT"].split(":")

def pause():
    print("PAUSED", flush=True)
    time.sleep(3600)

if where == "checkpoint":
    real_save = transformers.Trainer._save_checkpoint
    def save(self, *a, **kw):
        real_save(self, *a, **kw)
        if self.state.global_step == int(n):
            pause()
    transformers.Trainer._save_checkpoint = save
else:
    real_unit, calls = pipelines._compute_unit, []
    def unit(*a, **kw):
        calls.append(1)
        if len(calls) == int(n):
            pause()
        return real_unit(*a, **kw)
    pipelines._compute_unit = unit
sys.exit(main(sys.argv[1:]))
"""


def _killed_when_paused(argv: list[str], env: dict, pause_at: str) -> None:
    """Run `harness argv` until it pauses at `pause_at`, then SIGKILL it there."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSING, *argv],
        env={**env, "PAUSE_AT": pause_at},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # blocks until the pause, or until the process ends without one
        paused = any(line == "PAUSED\n" for line in iter(proc.stdout.readline, ""))
        assert paused, f"the run never reached {pause_at} (exit {proc.wait()})"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_mid_training_and_mid_generation_then_resume_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    raw = tiny_config(
        tiny_model_dir,
        name="killed",
        train={
            "objective": "sft",
            "rank": 4,
            "alpha": 8,
            "epochs": 8,
            "batch_size": 4,
            "lr": 0.005,
            "max_length": 96,
            "dropout": 0.1,
        },
        eval={"max_new_tokens": 4, "batch_size": 4, "bootstrap_samples": 200},
    )
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(raw))

    def env(cache: Path) -> dict:
        return {**os.environ, "HARNESS_CACHE": str(cache), "TQDM_DISABLE": "1"}

    def argv(results: Path) -> list[str]:
        return ["-m", "harness.cli", "run", str(config), "--results-dir", str(results)]

    whole_run = subprocess.run(
        [sys.executable, *argv(tmp_path / "whole")],
        env=env(tmp_path / "cache-whole"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert whole_run.returncode == 0
    cache, results = tmp_path / "cache", tmp_path / "results"
    # killed right after checkpoint 3 is written, then as the third generation batch begins
    _killed_when_paused(argv(results)[2:], env(cache), "checkpoint:3")
    assert [p.parent.name for p in cache.glob("adapters/*.partial/trainer/checkpoint-*/trainer_state.json")] == [
        "checkpoint-3"
    ]
    _killed_when_paused(argv(results)[2:], env(cache), "batch:3")
    assert not list((cache / "adapters").glob("*.partial")) and not (results / "killed").exists()
    assert (
        subprocess.run(
            [sys.executable, *argv(results)], env=env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode
        == 0
    )
    assert _outcome(results / "killed") == _outcome(tmp_path / "whole" / "killed")
    # Training resumed from exactly the checkpoint the kill followed, and the run that
    # finished the adapter ran only the steps after it (its own record says so).
    whole = json.loads((tmp_path / "whole" / "killed" / "metrics.json").read_text())["costs"]["training"]
    (record,) = [json.loads(p.read_text()) for p in cache.glob("adapters/*/harness-train.json")]
    assert whole["steps_run"] == whole["steps"] > 3 and record["steps"] == whole["steps"]
    assert record["resumed_from_step"] == 3 and record["steps_run"] == whole["steps"] - 3
    # Generation: the two batches stored before the kill were reused, every other one computed.
    m = json.loads((results / "killed" / "metrics.json").read_text())
    batches = [c["batches"] for c in m["costs"]["pipelines"].values()]
    assert sum(b["reused"] for b in batches) == 2
    total = sum(
        c["batches"]["computed"] + c["batches"]["reused"]
        for c in json.loads((tmp_path / "whole" / "killed" / "metrics.json").read_text())["costs"]["pipelines"].values()
    )
    assert sum(b["computed"] for b in batches) == total - 2
    assert not list(results.glob(".killed*")) and not list((cache / "adapters").glob("*.partial"))


def test_a_streamed_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path):
    """atomic_write_file (the trainer's safetensors checkpoints): a save that dies half way
    leaves the previous file whole and nothing beside it."""
    from harness.store.results import atomic_write_file

    target = tmp_path / "weights.safetensors"
    atomic_write_file(target, lambda tmp: open(tmp, "wb").write(b"old"))

    def dies_half_way(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_file(target, dies_half_way)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


# -- checkpoints that fail weights-only loading ---------------------------------------------


class _Killed(Exception):
    pass


class _Plant:
    """Unpickled by anything but a weights-only loader, it creates `marker` (open(marker, "w"))."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _train_tiny(model_dir: Path, out: Path, **kw):
    from harness.data.items import Question
    from harness.models.local import load_generator
    from harness.train.material import build_examples
    from harness.train.trainer import train_model

    lm = load_generator(str(model_dir), dtype="float32", device="cpu")
    qs = [Question(id=f"q{i}", question=f"Where was person {i} born?", answers=(f"Town{i}",)) for i in range(12)]
    return train_model(
        lm,
        build_examples(lm.tokenizer, objective="sft", questions=qs),
        rank=4,
        alpha=8,
        dropout=0.1,
        target_modules=["q_proj", "v_proj"],
        lr=0.01,
        epochs=3,
        batch_size=4,
        max_length=96,
        dev_fraction=0.25,
        seed=0,
        out_dir=out / "adapter",
        **kw,
    )


def _killed_at(model_dir: Path, out: Path, step: int, *, keep_first: Path | None = None) -> Path:
    """Train with checkpoints and die as step `step` is logged (the checkpoints of the steps
    before it are on disk); with `keep_first`, checkpoint-1 is copied there before Trainer
    rotates it away. Returns the trainer folder."""
    import shutil

    run_dir, steps = out / "ckpt" / "trainer", []

    def die(n):
        steps.append(n)
        if keep_first is not None and len(steps) == 2:
            shutil.copytree(run_dir / "checkpoint-1", keep_first)
        if len(steps) == step:
            raise _Killed

    with pytest.raises(_Killed):
        _train_tiny(model_dir, out, checkpoint_dir=out / "ckpt", progress=die)
    return run_dir


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter" / "adapter_model.safetensors")


def _plant(path: Path, marker: Path) -> None:
    import torch

    torch.save({"state": {}, "param_groups": [], "hook": _Plant(marker)}, path)


def test_the_planted_pickle_is_live(tmp_path):
    """The test's plant does what it says when unpickled unsafely, so its absence below means something."""
    import torch

    _plant(tmp_path / "x.pt", tmp_path / "ran")
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert (tmp_path / "ran").exists()


@pytest.fixture(scope="module")
def clean_training(tiny_model_dir, tmp_path_factory):
    """An uninterrupted training: what every resumed one must end with, bit for bit."""
    out = tmp_path_factory.mktemp("clean")
    return _train_tiny(tiny_model_dir, out), _adapter(out)


@pytest.mark.parametrize(
    "poisoned, how",
    [
        ("optimizer.pt", "pickle"),
        ("rng_state.pth", "pickle"),
        ("scheduler.pt", "pickle"),
        ("optimizer.pt", "truncated"),
    ],
)
def test_a_checkpoint_failing_weights_only_loading_is_discarded_and_training_starts_over(
    tiny_model_dir, tmp_path, caplog, clean_training, poisoned, how
):
    import torch

    clean, weights = clean_training
    run_dir = _killed_at(tiny_model_dir, tmp_path / "cut", 3)
    (checkpoint,) = run_dir.glob("checkpoint-*")
    assert checkpoint.name == "checkpoint-2" and (checkpoint / poisoned).is_file()
    if how == "pickle":
        _plant(checkpoint / poisoned, tmp_path / "pwned")
    else:
        (checkpoint / poisoned).write_bytes((checkpoint / poisoned).read_bytes()[:200])
    with caplog.at_level(logging.WARNING):
        resumed = _train_tiny(tiny_model_dir, tmp_path / "cut", checkpoint_dir=tmp_path / "cut" / "ckpt")
    assert not (tmp_path / "pwned").exists()  # nothing in it ran
    assert f"{poisoned} does not load with torch.load(weights_only=True)" in caplog.text
    assert "weights_only=False" not in caplog.text  # never the advice to unpickle it anyway
    assert resumed.resumed_from_step == 0 and resumed.steps_run == clean.steps  # from the start
    assert resumed.loss_curve == clean.loss_curve
    b = _adapter(tmp_path / "cut")
    assert weights.keys() == b.keys() and all(torch.equal(weights[k], b[k]) for k in weights)


def test_a_poisoned_newest_checkpoint_falls_back_to_the_last_good_one(tiny_model_dir, tmp_path, caplog, clean_training):
    import shutil

    import torch

    clean, weights = clean_training
    run_dir = _killed_at(tiny_model_dir, tmp_path / "cut", 4, keep_first=tmp_path / "first")
    shutil.copytree(tmp_path / "first", run_dir / "checkpoint-1")
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-3"]
    _plant(run_dir / "checkpoint-3" / "optimizer.pt", tmp_path / "pwned")
    with caplog.at_level(logging.WARNING):
        resumed = _train_tiny(tiny_model_dir, tmp_path / "cut", checkpoint_dir=tmp_path / "cut" / "ckpt")
    assert not (tmp_path / "pwned").exists() and "checkpoint-3 is discarded" in caplog.text
    assert resumed.resumed_from_step == 1 and resumed.steps_run == clean.steps - 1
    assert resumed.loss_curve == clean.loss_curve
    b = _adapter(tmp_path / "cut")
    assert weights.keys() == b.keys() and all(torch.equal(weights[k], b[k]) for k in weights)
