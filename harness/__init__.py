"""harness: fine-tune, retrieve, or both? Measured on the same items.

One YAML experiment trains a LoRA adapter, builds a FAISS retriever over the same facts,
and scores the `base`, `finetuned`, `rag` and `rag_finetuned` pipelines, writing a
self-describing results folder and a report. See README.md; the modules, one per stage:
config, data, world, models, train, retrieve, prompts, pipelines, metrics, stats,
benchmarks, runner, results, report, plots, cli.
"""

__version__ = "0.1.0"
