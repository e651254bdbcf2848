"""harness: fine-tune, retrieve, or both? Measured on the same items.

One YAML experiment trains a LoRA adapter, builds a FAISS retriever over the same facts,
and scores the `base`, `finetuned`, `rag` and `rag_finetuned` pipelines, writing a
self-describing results folder and a report. The package is in wings named for their
jobs, one floor each (README, "Layout"): `config` (ground floor), `store`, `models`,
`data`, `answer`, `evaluate`, `train`, `questions`, `report`, `run`, and `cli` on top.
"""

__version__ = "0.1.0"
