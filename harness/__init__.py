"""harness: fine-tune, retrieve, or both? Measured on the same items.

One YAML experiment trains a LoRA adapter, builds a FAISS retriever over the same facts,
and scores the `base`, `finetuned`, `rag` and `rag_finetuned` pipelines, writing a
self-describing results folder and a report. The package is in wings named for their
jobs, one floor each (README, "Layout"): `config` (ground floor), `store`, `models`,
`data`, `answer`, `evaluate`, `train`, `questions`, `report`, `run`, and `cli` on top.

From Python, the same steps as `harness run` (docs/reference.md):

    import harness

    cfg = harness.parse_config({"name": "mine", "train": {"rank": 4}})  # or load_config(path)
    out = harness.run_experiment(cfg, results_root="results")           # the results folder
    m = harness.load_metrics(out / "metrics.json")                     # typed metrics.json
    harness.write_report(out)                                           # report.md and .html again

The functions are imported on first use (PEP 562 `__getattr__`), so `import harness`
loads neither torch nor pydantic.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load_config", "parse_config", "run_experiment", "write_report", "load_metrics"]


def __getattr__(name: str):
    if name in ("load_config", "parse_config"):
        from harness import config as module
    elif name == "run_experiment":
        from harness.run import runner as module
    elif name == "write_report":
        from harness.report import run as module
    elif name == "load_metrics":
        from harness.store import schema as module
    else:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
