"""Experiment tracking (harness/run/tracking.py): a run with a `tracking:` section is
logged to a local MLflow store, and MLflow's own client reads back the params, the
metrics with their intervals, the verdicts and the results folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.run.tracking import flatten, metric_values

ROOT = Path(__file__).resolve().parents[1]


def test_flatten_and_metric_names():
    assert flatten({"train": {"rank": 4, "target_modules": ["q_proj"]}, "grid": None, "eval": {}}) == {
        "train.rank": "4",
        "train.target_modules": "['q_proj']",
        "grid": "None",
        "eval": "{}",
    }
    m = {
        "pipelines": {"rag": {"mc_accuracy": {"mean": 0.5, "n": 8, "ci95": [0.2, 0.8]}}},
        "benchmarks": {"accuracy": {"mmlu": {"finetuned": {"acc": {"mean": None, "n": 0, "ci95": [None, None]}}}}},
    }
    assert metric_values(m) == {
        "rag/mc_accuracy": 0.5,
        "rag/mc_accuracy_ci95_low": 0.2,
        "rag/mc_accuracy_ci95_high": 0.8,
        "rag/mc_accuracy_n": 8.0,
        "finetuned/mmlu_acc_n": 0.0,  # not measured: only its n
    }


def test_a_run_is_logged_to_mlflow_and_read_back_through_its_client(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("mlflow", reason="could not import 'mlflow' (the tracking extra)")
    from mlflow.tracking import MlflowClient

    from conftest import tiny_config

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in for a folder store
    uri = f"file:{tmp_path / 'mlruns'}"
    raw = tiny_config(tiny_model_dir, name="tracked", output_dir=str(tmp_path / "results"))
    raw["eval"].update(pipelines=["base", "rag"], known_samples=0)
    raw["tracking"] = {"uri": uri, "experiment": "harness-tests"}
    (tmp_path / "tracked.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "tracked.yaml"), "--set", "train.rank=2"]) == 0
    out = tmp_path / "results" / "tracked"
    m = json.loads((out / "metrics.json").read_text())

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("harness-tests").experiment_id])
    agg = m["pipelines"]["rag"]["mc_accuracy"]
    assert run.data.metrics["rag/mc_accuracy"] == agg["mean"]
    assert (run.data.metrics["rag/mc_accuracy_ci95_low"], run.data.metrics["rag/mc_accuracy_ci95_high"]) == tuple(
        agg["ci95"]
    )
    assert run.data.metrics["base/contains_n"] == m["pipelines"]["base"]["contains"]["n"]
    assert run.data.params["train.rank"] == "2" and run.data.params["retrieval.top_k"] == "2"
    assert run.data.tags["harness.config_hash"] == m["config_hash"] and run.info.run_name == "tracked"
    for question, v in m["verdicts"].items():
        assert run.data.tags[f"verdict.{question}"] == v["verdict"]
    assert run.info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "predictions.jsonl", "config.yaml", "report.md"} <= logged


def test_a_store_mlflow_refuses_fails_before_any_work_in_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow", reason="could not import 'mlflow' (the tracking extra)")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    demo = str(ROOT / "experiments" / "demo.yaml")
    assert main(["validate", demo, "--set", f"tracking.uri=file:{tmp_path / 'mlruns'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"harness: error: tracking.uri file:{tmp_path / 'mlruns'}: ")
    assert "MLFLOW_ALLOW_FILE_STORE=true" in err


def test_without_mlflow_the_error_names_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # import fails as if absent
    monkeypatch.setitem(sys.modules, "mlflow", None)
    demo = str(ROOT / "experiments" / "demo.yaml")
    assert main(["validate", demo, "--set", "tracking={}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "harness: error: tracking: MLflow is not installed; pip install 'ft-or-rag-harness[tracking]'"
