"""metrics.json: the one self-describing record of a run, assembled from what the run
computed.

    costs = costs_record(train_record=..., adapter_cached=..., raft_record=..., index=..., pipelines=...)
    result = metrics_record(cfg, data=data, lm=lm, analysis=analysis, costs=costs, ...)

The record carries the config hash and adapter group (what grid.py matches finished
cells by), the model and data as used, every aggregate with its interval, the
comparisons and verdicts, the costs, the pinned protocol, timings and provenance. The
words that describe metrics and tests come from metrics.py and verdicts.py. Its shape is
defined once, in schema.py: the record carries `schema_version` and is validated against
it before it is written, so a run cannot write a file the report would refuse.
"""

from __future__ import annotations

from harness.answer.prompts import TEMPLATES
from harness.config import ExperimentConfig, config_hash
from harness.data.items import Dataset
from harness.evaluate import metrics, scenarios, verdicts
from harness.models import generator
from harness.models.local import LoadedModel
from harness.store.results import provenance
from harness.store.schema import SCHEMA_VERSION, validate_metrics
from harness.train.adapters import adapter_group
from harness.train.methods import METHODS


def model_record(cfg: ExperimentConfig, lm: LoadedModel) -> dict:
    """The generator as loaded, and for a served one the endpoint it was asked through."""
    out = {
        "name": cfg.model.name,
        "fingerprint": lm.fingerprint,
        "dtype": lm.dtype,
        "device": lm.device,
        "quantization": METHODS[cfg.train.method].quantization,
    }
    if generator.served(lm):
        out["endpoint"] = generator.describe(lm)
    return out


def data_record(cfg: ExperimentConfig, data: Dataset) -> dict:
    """Where the items came from and how many there are of each kind."""
    questions = data.questions
    n_answerable = sum(q.answerable for q in questions)
    return {
        "source": (
            f"scenario {cfg.scenario.name}"
            if cfg.scenario and scenarios.builds_own_items(cfg.scenario.name)
            else cfg.data.external.format
            if cfg.data.external
            else "files"
            if cfg.data.documents
            else "world"
        ),
        "fingerprint": data.fingerprint(),
        "documents": len(data.documents),
        "questions": len(questions),
        "answerable": n_answerable,
        "unanswerable": len(questions) - n_answerable,
        "train_texts": len(data.train_texts),
        "train_questions": len(data.train_questions),
        "document_sentences": sentences_trained(data, objective=cfg.train.objective),
        **data.provenance,  # user files: skipped documents, the question set's manifest
    }


def sentences_trained(data: Dataset, *, objective: str) -> dict | None:
    """How many of the documents' sentences the adapter's training material holds: under
    `sft` those that are the evidence of a training question, under `cpt` and `mixed`
    those of the training texts too (the documents themselves, for a user's files). None
    without documents."""
    from harness.answer.retrieve import split_sentences

    def sentences(texts) -> set[str]:
        return {" ".join(s.split()) for t in texts for s in split_sentences(t)}

    documents = sentences(d.text for d in data.documents)
    if not documents:
        return None
    seen = {" ".join(q.evidence.split()) for q in data.train_questions if q.evidence}
    if objective != "sft":
        seen |= sentences(data.train_texts)
    return {"objective": objective, "trained": len(documents & seen), "of": len(documents)}


def costs_record(
    *,
    train_record: dict | None,
    adapter_cached: bool | None,
    raft_record: dict | None,
    index: dict | None,
    pipelines: dict,
) -> dict:
    """Training (without its loss curve, written beside), the index and each arm."""
    return {
        "training": None
        if train_record is None
        else {**{k: v for k, v in train_record.items() if k != "loss_curve"}, "from_cache": adapter_cached},
        "raft_training": None if raft_record is None else {k: v for k, v in raft_record.items() if k != "loss_curve"},
        "index": index,
        "pipelines": pipelines,
    }


def protocol_record(cfg: ExperimentConfig, lm: LoadedModel) -> dict:
    """The evaluation protocol, pinned: templates, decoding, scoring, intervals, retrieval."""
    alpha = cfg.eval.alpha
    served_letters = generator.mc_protocol(lm) == "letter"
    return {
        "templates": {k: t.id for k, t in TEMPLATES.items()},
        "decoding": f"greedy, max_new_tokens={cfg.eval.max_new_tokens}",
        "multiple_choice": (
            metrics.MC_SCORING_LETTER if served_letters else metrics.MC_SCORING.format(mc_metric=cfg.eval.mc_metric)
        ),
        "abstention_phrases": list(metrics.ABSTENTION_PHRASES),
        "normalisation": metrics.NORMALISATION,
        "intervals": verdicts.INTERVALS.format(alpha=alpha, bound=100 * (1 - alpha)),
        "verdict_rule": verdicts.RULE,
        "permutation_samples": cfg.eval.permutation_samples,
        "bootstrap_samples": cfg.eval.bootstrap_samples,
        "top_k": cfg.retrieval.top_k,
        "retrieval_method": cfg.retrieval.method,
        "retrieval_index": cfg.retrieval.index,
        "n_examples": cfg.eval.n_examples,
    }


def metrics_record(
    cfg: ExperimentConfig,
    *,
    data: Dataset,
    lm: LoadedModel,
    analysis: dict,
    costs: dict,
    embedder: str | None,
    scenario: dict | None,
    seed_spread: dict,
    benchmarks: dict | None,
    judged: dict | None,
    timings: dict,
) -> dict:
    """The contents of metrics.json. `analysis` holds the aggregates, chance rates,
    splits, comparisons, verdicts, recovery ratios and knowledge breakdown (in that
    order); `judged` is secondary, outside the verdicts, and absent when None."""
    result = {
        "schema_version": SCHEMA_VERSION,
        "experiment": cfg.name,
        "status": "complete",
        "config_hash": config_hash(cfg),
        "adapter_group": adapter_group(cfg),
        "seed": cfg.seed,
        "model": model_record(cfg, lm),
        "embedder": embedder,
        "data": data_record(cfg, data),
        **analysis,
        "scenario": scenario,
        "seed_spread": seed_spread,
        "benchmarks": benchmarks,
        "metric_definitions": metrics.metric_definitions(),
        "costs": costs,
        "protocol": protocol_record(cfg, lm),
        "timings": timings,
        "provenance": provenance(),
    }
    if judged is not None:
        result["judged"] = judged
    validate_metrics(result, source="metrics.json as built")  # schema.py is its one definition
    return result
