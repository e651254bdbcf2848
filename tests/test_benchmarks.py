"""Forgetting checks through lm-evaluation-harness, on the tiny model and shared data."""

import json
import subprocess
import sys

import pytest

from conftest import SHARED_DATA, tiny_config
from harness.config import parse_config
from harness.evaluate import benchmarks
from harness.models.local import load_generator, loglikelihood

needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "mmlu" / "test.jsonl").is_file(), reason="../shared/data (MMLU, HellaSwag) not present"
)
SUBSET = dict(mmlu_subjects=["anatomy", "astronomy"], mmlu_items=6, hellaswag=True, hellaswag_items=6, seed=7)


@pytest.fixture(scope="module")
def prepared():
    return benchmarks.prepare_tasks(data_dir=str(SHARED_DATA), **SUBSET)


@needs_data
def test_prepare_writes_seeded_subsets_and_task_files(prepared):
    assert [t.label for t in prepared.tasks] == ["mmlu/anatomy", "mmlu/astronomy", "hellaswag"]
    assert all(t.n_items == 6 for t in prepared.tasks) and not prepared.skipped
    again = benchmarks.prepare_tasks(data_dir=str(SHARED_DATA), **SUBSET)
    assert [t.fingerprint for t in again.tasks] == [t.fingerprint for t in prepared.tasks]
    other = benchmarks.prepare_tasks(data_dir=str(SHARED_DATA), **{**SUBSET, "seed": 8})
    assert other.tasks[0].fingerprint != prepared.tasks[0].fingerprint
    rows = [json.loads(x) for x in open(f"{prepared.task_dir}/harness_mmlu_anatomy.test.jsonl")]
    assert {r["subject"] for r in rows} == {"anatomy"} and len(rows) == 6


def test_no_data_offline_is_skipped_with_reason_and_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(benchmarks.DATA_ENV, raising=False)
    p = benchmarks.prepare_tasks(data_dir=str(tmp_path / "absent"), **SUBSET)
    assert not p.tasks and len(p.skipped) == 3
    assert all("offline" in s["reason"] and "data_dir" in s["fix"] for s in p.skipped)


@needs_data
def test_unknown_subject_is_skipped_not_zero():
    p = benchmarks.prepare_tasks(data_dir=str(SHARED_DATA), **{**SUBSET, "mmlu_subjects": ["astrology"]})
    assert [s["benchmark"] for s in p.skipped] == ["mmlu/astrology"] and [t.label for t in p.tasks] == ["hellaswag"]


def _lm_eval_api_loading_its_own_model(model_dir, prepared, peft):
    """lm-eval's Python API with model="hf": lm-eval loads the model and the adapter."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    raw = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": "float32", "peft": str(peft)},
        tasks=[t.name for t in prepared.tasks],
        num_fewshot=0,
        batch_size=4,
        device="cpu",
        task_manager=TaskManager(include_path=prepared.task_dir, include_defaults=False),
        bootstrap_iters=0,
    )["results"]
    return {t.label: {m: raw[t.name][f"{m},none"] for m in t.metrics} for t in prepared.tasks}


def _standalone_lm_eval(model_dir, prepared, tmp_path, peft=None):
    """The lm_eval command run on its own, as a user would: it loads the model itself."""
    args = f"pretrained={model_dir},dtype=float32" + (f",peft={peft}" if peft else "")
    out = tmp_path / ("out-peft" if peft else "out")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "run",
            "--model",
            "hf",
            "--model_args",
            args,
            "--tasks",
            ",".join(t.name for t in prepared.tasks),
            "--include_path",
            prepared.task_dir,
            "--num_fewshot",
            "0",
            "--batch_size",
            "4",
            "--device",
            "cpu",
            "--output_path",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    return {t.label: {m: result[t.name][f"{m},none"] for m in t.metrics} for t in prepared.tasks}


@needs_data
def test_accuracies_equal_a_standalone_lm_eval_run(prepared, tiny_model_dir, tmp_path):
    from harness.data.world import generate_world
    from harness.models.generator import adapter_switch
    from harness.train.material import build_examples
    from harness.train.trainer import train_model

    lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    ours = benchmarks.score_tasks(lm, prepared, adapter_id=None, num_fewshot=0, batch_size=4)
    theirs = _standalone_lm_eval(tiny_model_dir, prepared, tmp_path)
    for label, metrics in theirs.items():
        for m, value in metrics.items():
            assert ours[label][m] == value, (label, m)

    world = generate_world(seed=0, n_people=2, n_organisations=1, n_places=1, paraphrases=0)
    train_model(
        lm,
        build_examples(lm.tokenizer, objective="sft", questions=world.train_questions),
        rank=4,
        alpha=8,
        dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        lr=0.05,
        epochs=2,
        max_steps=None,
        batch_size=4,
        max_length=96,
        warmup_ratio=0.0,
        dev_fraction=0.0,
        early_stopping_patience=None,
        seed=0,
        out_dir=tmp_path / "adapter",
    )
    with adapter_switch(lm, True):
        ours_ft = benchmarks.score_tasks(lm, prepared, adapter_id="test-adapter", num_fewshot=0, batch_size=4)
    theirs_ft = _lm_eval_api_loading_its_own_model(tiny_model_dir, prepared, tmp_path / "adapter")
    for label, metrics in theirs_ft.items():
        for m, value in metrics.items():
            assert ours_ft[label][m] == value, (label, m)
    with adapter_switch(lm, False):  # base again, on the same loaded model: from the cache, unchanged
        again = benchmarks.score_tasks(lm, prepared, adapter_id=None, num_fewshot=0, batch_size=4)
    assert all(again[label]["from_cache"] and again[label]["items"] == ours[label]["items"] for label in ours)


def test_fact_choices_are_scored_like_lm_eval(tiny_lm):
    """The fact questions' multiple choice uses harness.models.local.loglikelihood; it must give
    lm-eval's numbers for the same requests."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    pairs = [
        ("Where was Ana born? Answer:", " Ostrow"),
        ("Where was Ana born? Answer:", " Lund"),
        ("Who plays the harp?", " Bo Trenn"),
    ]
    wrapped = HFLM(pretrained=tiny_lm.model, tokenizer=tiny_lm.tokenizer, batch_size=2, device="cpu")
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]
    theirs = [ll for ll, _ in wrapped.loglikelihood(reqs)]
    assert loglikelihood(tiny_lm, pairs, batch_size=2) == pytest.approx(theirs, abs=1e-4)


@needs_data
def test_run_reports_forgetting_per_adapter(tiny_model_dir, tmp_path):
    from harness.run.runner import run_experiment

    raw = tiny_config(
        tiny_model_dir, name="bench", benchmarks={"data_dir": str(SHARED_DATA), **SUBSET, "batch_size": 4}
    )
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    b = json.loads((out / "metrics.json").read_text())["benchmarks"]
    assert set(b["accuracy"]) == {"mmlu/anatomy", "mmlu/astronomy", "mmlu (all subjects)", "hellaswag"}
    assert b["accuracy"]["mmlu (all subjects)"]["base"]["acc"]["n"] == 12
    assert set(b["accuracy"]["hellaswag"]["finetuned"]) == {"acc", "acc_norm"}
    change = b["change_from_base"]["hellaswag"]["finetuned"]["acc_norm"]
    base, ft = (b["accuracy"]["hellaswag"][p]["acc_norm"]["mean"] for p in ("base", "finetuned"))
    assert change["diff"] == pytest.approx(ft - base) and change["n"] == 6
    report = (out / "report.md").read_text()
    assert "## Knowledge gained against capability lost" in report and "hellaswag" in report
