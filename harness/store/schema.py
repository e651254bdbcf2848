"""The one definition of `metrics.json`: typed models of what a finished run writes, its
schema version, and `load_metrics(path)`, the reader the report and the notebook use.

    from harness.store.schema import load_metrics
    m = load_metrics("results/demo/metrics.json")
    m.pipelines["rag"]["mc_accuracy"].ci95      # typed: [low, high]
    m.raw()                                     # the file as the plain dict it was

Every part whose keys are fixed is a model that names them all and rejects any other key
(so a run that writes something new fails its tests until the schema says so); parts
whose keys depend on the scenario, the training method or the verdict rule that wrote
them (`verdicts`, `scenario`, `judged`, the training record) stay `dict[str, Any]`.
Fields the report has always read with a default (`chance`, `splits`, `recovery`, ...)
may be absent, so results written before they existed still load.

Versions: `SCHEMA_VERSION` is 1. Files written before the version was recorded have no
`schema_version` key; they are read as version 1 and load when they validate as it. A
file of another version, or one that does not validate, fails with one line naming the
version found and the one this harness reads. `python -m harness.store.schema` prints the JSON
Schema that `results/metrics.schema.json` holds (a test keeps the two equal).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "results" / "metrics.schema.json"

Interval = Annotated[list[float | None], Field(min_length=2, max_length=2)]  # [low, high]; null when nothing was scored
# A number that can be undefined (a mean over no items): null in the file (JSON has no NaN;
# files written before harness wrote null hold the NaN literal, read as NaN)
Number = float | None


class MetricsError(ValueError):
    """A metrics.json that cannot be read as this schema version; the message names the file."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Aggregate(_Part):
    """One metric over one pipeline's items: mean, n and the 95% interval (stats.summarize)."""

    mean: Number
    n: int
    ci95: Interval
    ci_method: Literal["wilson", "bootstrap"]


class Endpoint(_Part):
    """The server a `model.backend: endpoint` run answered from (never the API key)."""

    base_url: str
    served_model: str
    api: str
    mc_protocol: str
    identity: str
    served_adapter: str | None
    requests: int


class ModelInfo(_Part):
    name: str
    fingerprint: str
    dtype: str
    device: str
    quantization: Literal["nf4"] | None
    endpoint: Endpoint | None = None


class DataInfo(_Part):
    """What the run read; user files add the skipped documents and the question set's manifest."""

    source: str
    fingerprint: str
    documents: int
    questions: int
    answerable: int
    unanswerable: int
    train_texts: int
    train_questions: int
    document_sentences: dict[str, Any] | None = None  # run.record.sentences_trained
    skipped_documents: list[dict[str, Any]] | None = None
    question_set: dict[str, Any] | None = None


class Splits(_Part):
    """Aggregates on each side of the dev/test split (eval.dev_fraction)."""

    dev_fraction: float
    seed: int
    questions: dict[str, int]
    dev: dict[str, dict[str, Aggregate]]
    test: dict[str, dict[str, Aggregate]]


class Comparison(_Part):
    """A secondary paired comparison, b − a, unadjusted (stats.compare_all)."""

    metric: str
    a: str
    b: str
    diff: Number
    n: int
    ci95: Interval
    test: str
    p: Number
    adjusted: bool | None = None  # False: p is unadjusted (absent in files written before declared families)
    p_adj: float | None = None  # files written before declared families: Benjamini-Hochberg over all comparisons
    significant: bool
    only_a: int | None = None  # McNemar's discordant counts, 0/1 metrics only
    only_b: int | None = None


class Recovery(_Part):
    """(finetuned − base) / (rag − base) on one deciding metric (stats.recovery_ratio)."""

    n: int
    rag_gain: Number
    finetuned_gain: Number
    ratio: float | None  # None when RAG gains nothing
    ci95: Annotated[list[float | None], Field(min_length=2, max_length=2)]
    samples_used: int


class ByKnowledge(_Part):
    """Questions per knowledge category and accuracy within each (knowledge.py)."""

    counts: dict[str, int]
    samples: int
    temperature: float
    pipelines: dict[str, dict[str, dict[str, Aggregate]]]


class SeedSpread(_Part):
    """One metric's aggregate per training seed, and their spread (stats.spread)."""

    seeds: list[int]
    values: list[Number]
    mean: Number
    sd: Number
    min: Number
    max: Number


class BenchmarkChange(_Part):
    """A pipeline's paired change from base on one benchmark metric."""

    diff: Number
    n: int
    ci95: Interval
    only_a: int
    only_b: int
    p: Number
    ci_method: Literal["newcombe"] | None = None  # absent before the interval matched the test: bootstrap


class Benchmarks(_Part):
    """General benchmarks through lm-eval and the forgetting summary (runner.run_benchmarks)."""

    accuracy: dict[str, dict[str, dict[str, Aggregate]]] = {}  # task -> pipeline -> metric
    change_from_base: dict[str, dict[str, dict[str, BenchmarkChange]]] = {}
    skipped: list[dict[str, str]]
    source: str
    task_dir: str | None
    tasks: list[dict[str, Any]]
    num_fewshot: int
    from_cache: dict[str, dict[str, bool]]
    protocol: dict[str, dict[str, Any]]


class MetricDefinition(_Part):
    label: str
    direction: Literal["higher", "lower", "context"]
    kind: Literal["proportion", "mean"]


class IndexStats(_Part):
    """The retrieval index (retrieve.Retriever.stats)."""

    method: str
    index: str | None
    from_cache: bool
    chunks: int
    build_seconds: float
    index_bytes: int
    dim: int | None
    chunk_tokens: dict[str, Any] | None = None  # absent in files written before it was measured


class PipelineCost(_Part):
    wall_seconds: float
    latency_p50_s: Number
    latency_p95_s: Number
    prompt_tokens_mean: Number
    new_tokens_mean: Number
    batches: dict[str, int]  # generations reused from the memo and computed
    at_max_new_tokens: int | None = None  # answers cut at eval.max_new_tokens
    generation_seconds: float | None = None  # the answers' generation time when first computed
    served_tokens: dict[str, int] | None = None  # endpoint runs: what the server reported


class Costs(_Part):
    training: dict[str, Any] | None  # the adapter's training record; keys depend on the method
    raft_training: dict[str, Any] | None
    index: IndexStats | None
    pipelines: dict[str, PipelineCost]


class Protocol(_Part):
    """The evaluation protocol as run: templates with versions, decoding, scoring rules."""

    templates: dict[str, str]
    decoding: str
    multiple_choice: str
    abstention_phrases: list[str]
    normalisation: str
    intervals: str
    permutation_samples: int | None = None  # absent in files written before permutation tests
    verdict_rule: str | None = None  # absent in files written by the Holm-family rule
    bootstrap_samples: int
    top_k: int
    retrieval_method: str
    retrieval_index: str
    n_examples: int = 4


class Git(_Part):
    commit: str | None
    dirty: bool | None


class Provenance(_Part):
    versions: dict[str, str | None]
    git: Git
    python: str
    platform: str
    argv: list[str]
    host: str | None = None  # absent in runs before the run log (#27)
    cuda_visible_devices: str | None = None
    log: str | None = None


class Metrics(_Part):
    """A finished run's metrics.json. The required fields are the ones every version of
    the harness wrote; the others default to empty for files written before them."""

    schema_version: int = SCHEMA_VERSION
    experiment: str
    status: str
    config_hash: str
    adapter_group: str | None = None
    seed: int
    model: ModelInfo
    embedder: str | None
    data: DataInfo
    pipelines: dict[str, dict[str, Aggregate]]  # pipeline -> metric -> aggregate
    chance: dict[str, Number] = {}
    splits: Splits | None = None
    comparisons: list[Comparison]
    verdicts: dict[str, dict[str, Any]] = {}  # question -> verdict; two shapes (with and before `family`)
    recovery: dict[str, Recovery] = {}
    by_knowledge: ByKnowledge | None = None
    scenario: dict[str, Any] | None = None  # its corpus-level part differs per scenario
    seed_spread: dict[str, dict[str, SeedSpread]] = {}
    benchmarks: Benchmarks | None = None
    metric_definitions: dict[str, MetricDefinition]
    costs: Costs
    protocol: Protocol
    timings: dict[str, float]  # seconds per phase; total_seconds always
    provenance: Provenance
    judged: dict[str, Any] | None = None  # secondary, outside the verdicts

    def raw(self) -> dict:
        """The record as the plain dict it was read from: every key the file had, none
        added (a test checks the round trip byte for byte on real files)."""
        return self.model_dump(mode="python", exclude_unset=True)


REQUIRED_KEYS = tuple(name for name, f in Metrics.model_fields.items() if f.is_required())


def read_json(path: Path) -> Any:
    """A results file's JSON, or MetricsError naming it (missing, unreadable, damaged)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetricsError(f"{path}: missing (not a finished results folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MetricsError(f"{path}: not readable as JSON, truncated or damaged ({err})") from None


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(part) for part in e["loc"])
    return f"{where}: {e['msg']}" + (f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else "")


def validate_metrics(obj: Any, *, source: str | Path) -> Metrics:
    """`obj` (a parsed metrics.json) as the typed record, or MetricsError naming `source`:
    a missing top-level field, another schema version, or the first field that does not
    validate, with the version found and the one expected."""
    if not isinstance(obj, dict):
        raise MetricsError(f"{source}: incomplete, no (an object) (not a finished run's file)")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise MetricsError(f"{source}: incomplete, no {', '.join(missing[:3])} (not a finished run's file)")
    found = obj.get("schema_version")
    if found is not None and found != SCHEMA_VERSION:
        raise MetricsError(
            f"{source}: schema version {found!r}; this harness reads version {SCHEMA_VERSION} "
            "(regenerate with the harness version that wrote it, or run again)"
        )
    try:
        return Metrics.model_validate(obj)
    except ValidationError as err:
        how = (
            f"schema version {found}"
            if found is not None
            else f"no schema_version (written before versions; read as version {SCHEMA_VERSION})"
        )
        raise MetricsError(
            f"{source}: {how}, does not validate as version {SCHEMA_VERSION}: {_first_error(err)}"
        ) from None


def load_metrics(path: str | Path) -> Metrics:
    """Read and validate one run's metrics.json (see validate_metrics for the errors)."""
    path = Path(path)
    return validate_metrics(read_json(path), source=path)


def json_schema_text() -> str:
    """The JSON Schema of `Metrics`, as results/metrics.schema.json holds it."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Metrics.model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(json_schema_text())
