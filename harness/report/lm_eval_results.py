"""metrics.json in the shape of lm-evaluation-harness's results file, so lm-eval's tooling
(its results tables, loggers and leaderboards' readers) can read a harness run.

    from harness.report.lm_eval_results import lm_eval_results
    doc = lm_eval_results(load_metrics(folder / "metrics.json").raw())
    doc["results"]["facts@rag"]["mc_accuracy,none"], doc["results"]["facts@rag"]["mc_accuracy_stderr,none"]

The runner writes it as `lm_eval_results.json` beside metrics.json. lm-eval's file is one
model on many tasks; a harness run is several pipelines on the same items, so each
(pipeline, item source) is a task: `facts@<pipeline>` for the run's own items and
`<benchmark>@<pipeline>` for the forgetting checks (MMLU, HellaSwag). Each metric is
keyed `<metric>,none` (lm-eval's `metric,filter`), with `<metric>_stderr,none` beside it:
lm-eval's standard error (sample standard deviation with n - 1, over sqrt n), which for a
0/1 metric is sqrt(p (1 - p) / (n - 1)) from the aggregate; metrics.json keeps no item
values of a continuous metric (token F1, chrF), so there the 95% bootstrap interval's
half-width / 1.96 stands in, as `configs.<task>.metadata.stderr` says. metrics.json stays
the source: its intervals, paired tests and verdicts have no place in lm-eval's shape.
"""

from __future__ import annotations

import math

FILE = "lm_eval_results.json"
Z95 = 1.959963984540054


def _undefined(x) -> bool:
    return x is None or x != x


def stderr(agg: dict, kind: str) -> float | None:
    """lm-eval's standard error of one aggregate (see the module docstring), None when
    it is undefined (fewer than two items, nothing measured)."""
    p, n = agg["mean"], agg["n"]
    if _undefined(p) or n < 2:
        return None
    if kind == "proportion":
        return math.sqrt(p * (1 - p) / (n - 1))
    lo, hi = agg["ci95"]
    return None if _undefined(lo) or _undefined(hi) else (hi - lo) / (2 * Z95)


def _task(per_metric: dict[str, dict], kinds: dict[str, str], directions: dict[str, str]) -> tuple[dict, int, dict]:
    values, n = {}, 0
    for k, agg in per_metric.items():
        values[f"{k},none"] = agg["mean"]
        values[f"{k}_stderr,none"] = stderr(agg, kinds.get(k, "mean"))
        n = max(n, agg["n"])
    higher = {k: {"higher": True, "lower": False}.get(directions.get(k, "higher")) for k in per_metric}
    return values, n, higher


def _tasks(m: dict) -> list[tuple[str, str, dict, dict, dict, dict]]:
    """(task, alias, metric aggregates, kinds, directions, config) for every task of the run."""
    defs = m["metric_definitions"]
    kinds = {k: d["kind"] for k, d in defs.items()}
    directions = {k: d["direction"] for k, d in defs.items()}
    out = []
    for pipeline, per_metric in m["pipelines"].items():
        config = {"output_type": "harness pipeline", "num_fewshot": 0, "metadata": {"pipeline": pipeline}}
        out.append((f"facts@{pipeline}", f"facts ({pipeline})", per_metric, kinds, directions, config))
    bench = m.get("benchmarks") or {}
    for label, per_pipeline in (bench.get("accuracy") or {}).items():
        protocol = (bench.get("protocol") or {}).get(label, {})
        for pipeline, per_metric in per_pipeline.items():
            config = {
                "output_type": "multiple_choice",
                "num_fewshot": bench.get("num_fewshot", 0),
                "metadata": {
                    "pipeline": pipeline,
                    "lm_eval_task": protocol.get("task"),
                    "version": protocol.get("version"),
                },
            }
            proportions = {k: "proportion" for k in per_metric}  # acc and acc_norm are 0/1 per item
            out.append((f"{label}@{pipeline}", f"{label} ({pipeline})", per_metric, proportions, {}, config))
    return out


def lm_eval_results(m: dict) -> dict:
    """The lm-eval-shaped document of one run's metrics.json (as a plain dict)."""
    doc = {"results": {}, "configs": {}, "versions": {}, "n-shot": {}, "higher_is_better": {}, "n-samples": {}}
    for task, alias, per_metric, kinds, directions, config in _tasks(m):
        values, n, higher = _task(per_metric, kinds, directions)
        doc["results"][task] = {"alias": alias, **values}
        config["metadata"]["stderr"] = "lm-eval's for 0/1 metrics; 95% interval half-width / 1.96 for means"
        doc["configs"][task] = {"task": task, **config}
        doc["versions"][task] = config["metadata"].get("version") or f"harness-metrics-{m.get('schema_version', 1)}"
        doc["n-shot"][task] = config["num_fewshot"]
        doc["higher_is_better"][task] = higher
        doc["n-samples"][task] = {"original": n, "effective": n}
    doc["config"] = {
        "model": "harness",
        "model_args": f"pretrained={m['model']['name']},dtype={m['model']['dtype']}",
        "model_name": m["model"]["name"],
        "experiment": m["experiment"],
        "config_hash": m["config_hash"],
        "source": "metrics.json",
    }
    prov = m.get("provenance") or {}
    doc["git_hash"] = (prov.get("git") or {}).get("commit")
    doc["package_versions"] = prov.get("versions", {})
    return doc
