"""Experiment tracking: a finished run logged to MLflow (the config's `tracking:` section).

    from harness.run.tracking import log_run
    run_id = log_run(cfg.tracking, folder=results_folder, metrics=metrics, config=config_to_dict(cfg))

One MLflow run per harness run (per grid cell), in the experiment `tracking.experiment`
(default: the config's name), named after the results folder. It holds the flattened
config as params (`train.rank`), each pipeline x metric as metrics (`rag/mc_accuracy`,
with `_ci95_low`, `_ci95_high` and `_n`), each benchmark's accuracy likewise
(`finetuned/mmlu_acc`), the verdicts as tags (`verdict.<question>`), and the results
folder as artifacts. It is logged after the results folder is in place, so a tracking
failure (no MLflow installed, a server that refuses) leaves the results whole and says
where they are. MLflow's client is used directly (`MlflowClient`), so nothing global
(tracking URI, active run) is set in the process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

INSTALL = "pip install 'ft-or-rag-harness[tracking]'"
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000  # MLflow's log_batch limits
PARAM_CHARS = 6000  # MLflow's limit on a param's value


class TrackingError(RuntimeError):
    """A run that could not be logged; the message names the URI and the results folder."""


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """`{"train": {"rank": 4}}` -> `{"train.rank": "4"}`; lists and None as their text."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flatten(value, prefix=f"{name}.")
        else:
            out[name] = str(value)[:PARAM_CHARS]
    return out


def _aggregate_metrics(name: str, agg: dict) -> dict[str, float]:
    out = {f"{name}_n": float(agg["n"])}
    for key, value in (
        (name, agg["mean"]),
        (f"{name}_ci95_low", agg["ci95"][0]),
        (f"{name}_ci95_high", agg["ci95"][1]),
    ):
        if value is not None and value == value:  # not measured: not logged (MLflow takes no null)
            out[key] = float(value)
    return out


def metric_values(metrics: dict) -> dict[str, float]:
    """Every aggregate of metrics.json by its MLflow name (see the module docstring)."""
    out = {}
    for pipeline, per in metrics["pipelines"].items():
        for metric, agg in per.items():
            out |= _aggregate_metrics(f"{pipeline}/{metric}", agg)
    for task, per_pipeline in ((metrics.get("benchmarks") or {}).get("accuracy") or {}).items():
        for pipeline, per in per_pipeline.items():
            for metric, agg in per.items():
                out |= _aggregate_metrics(f"{pipeline}/{task}_{metric}", agg)
    return out


def _problem(err, tracking, folder: Path | None) -> TrackingError:
    """MLflow's error as one line naming the URI (and the results folder, when written)."""
    text = str(getattr(err, "message", err)).splitlines()[0][:300]
    if "MLFLOW_ALLOW_FILE_STORE" in str(getattr(err, "message", err)):
        text = "MLflow 3 takes a folder store only with MLFLOW_ALLOW_FILE_STORE=true; set it, or give a sqlite:// or http:// URI"
    where = f" (the results are in {folder})" if folder is not None else ""
    return TrackingError(f"tracking.uri {tracking.uri}: {text}{where}")


def _client(tracking, folder: Path | None = None):
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(f"tracking: MLflow is not installed; {INSTALL}") from None
    try:
        return MlflowClient(tracking_uri=tracking.uri)
    except MlflowException as err:
        raise _problem(err, tracking, folder) from None


def check_tracking(tracking) -> None:
    """Before any work: MLflow is installed and takes `tracking.uri` (TrackingError otherwise)."""
    if tracking is not None:
        _client(tracking)


def _log(client, tracking, *, folder: Path, metrics: dict, config: dict) -> str:
    from mlflow.entities import Metric, Param, RunTag

    name = tracking.experiment or metrics["experiment"]
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found else client.create_experiment(name)
    tags = {
        "harness.experiment": metrics["experiment"],
        "harness.config_hash": metrics["config_hash"],
        "harness.results": str(folder.resolve()),
    }
    tags |= {f"verdict.{q}": str(v.get("verdict")) for q, v in (metrics.get("verdicts") or {}).items()}
    run_id = client.create_run(experiment_id, run_name=folder.name, tags=tags).info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, v) for k, v in flatten(config).items()]
    values = [Metric(k, v, now, 0) for k, v in metric_values(metrics).items()]
    for i in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[i : i + PARAMS_PER_BATCH])
    for i in range(0, len(values), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=values[i : i + METRICS_PER_BATCH])
    client.log_batch(run_id, tags=[RunTag("harness.status", metrics["status"])])
    if tracking.artifacts:
        client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id)
    return run_id


def log_run(tracking, *, folder: Path, metrics: dict, config: dict) -> str:
    """Log one finished run (its metrics.json as `metrics`, its resolved config) to
    MLflow; returns the MLflow run id."""
    folder = Path(folder)
    client = _client(tracking, folder)
    from mlflow.exceptions import MlflowException

    try:
        run_id = _log(client, tracking, folder=folder, metrics=metrics, config=config)
    except MlflowException as err:
        raise _problem(err, tracking, folder) from None
    log.info("logged to MLflow %s: run %s", tracking.uri, run_id)
    return run_id
