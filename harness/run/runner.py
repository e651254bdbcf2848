"""One experiment run, as a short list of named phases: data, models and adapters, index,
answers, scoring, analysis, results.

`run_experiment(cfg)` (at the bottom) does, in order and visibly: seed everything; build
or read the data (`load_dataset`); load the generator once and obtain its adapters, from
the cache when the same model, training data and training settings were trained before,
else by training them (`load_models`, `attach_adapters`; adapters.py); build the
retriever (`build_index`); run each configured pipeline on the same questions
(`answer_pipelines`); tag what the base model knows and score (`tag_known`,
`build_scorer`, `score_pipelines`); re-run other seeds and benchmarks when configured
(`evaluate_more`); aggregate with intervals, compare pipelines pairwise and decide the
verdicts (`analyse`); the scenario's row and the judge (`scenario_summary`,
`judge_answers`); then metrics.json (record.py) and the report (`write_results`). Each
phase records its seconds in `timings`.

`train_adapters(cfg)` is the training half alone (`harness train`). The runner owns no
metric, prompt or training logic: those live in metrics.py, stats.py, prompts.py,
train.py and adapters.py. A grid of runs is planned in grid.py and run by executors.py.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.answer.pipelines import PIPELINES, answer
from harness.answer.retrieve import build_retriever, embedder_fingerprint, load_embedder
from harness.config import ExperimentConfig, config_hash, config_to_dict, expand_grid
from harness.data.ingest import load_user_dataset
from harness.data.items import EXTERNAL_FORMATS, Dataset
from harness.data.world import generate_world
from harness.evaluate import benchmarks, knowledge, metrics, scenarios, stats, verdicts
from harness.models import generator
from harness.models.generator import adapter_switch
from harness.models.local import LoadedModel, load_generator
from harness.report import lm_eval_results as lm_eval_format
from harness.report import run as report
from harness.run import tracking
from harness.run.record import costs_record, metrics_record
from harness.store.cache import cache_dir
from harness.store.memo import Memo
from harness.store.results import (
    RUN_LOG,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_yaml,
    check_destination,
    checked_destination,
    run_lock,
    run_log,
    staged_run_dir,
)
from harness.train.adapters import (
    adapter_group,
    generation_memo,
    obtain_adapter,
    obtain_raft_adapter,
    select_training_facts,
)
from harness.train.methods import METHODS

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _data_section_items(d) -> Dataset:
    """The items of the `data` section: an external set, the user's files, or the world."""
    if d.external is not None:
        e = d.external
        loader = EXTERNAL_FORMATS[e.format]
        wanted = e.paraphrases if d.paraphrases is None else d.paraphrases
        kwargs = (
            {"paraphrases": wanted, "only_paraphrased": e.only_paraphrased} if e.format == "fictional_knowledge" else {}
        )
        if wanted and e.format == "tofu":
            log.warning(
                "data.paraphrases: TOFU has no restatements of its facts; the training text is the same "
                "for every paraphrase count"
            )
        return loader(e.path, max_entities=e.max_entities, seed=e.seed, **kwargs)
    if d.documents:
        return load_user_dataset(
            documents=d.documents,
            questions=d.questions,
            train_questions=d.train_questions,
            skip_unreadable=d.skip_unreadable,
        )
    w = d.world
    return generate_world(
        seed=w.seed,
        n_people=w.n_people,
        n_organisations=w.n_organisations,
        n_places=w.n_places,
        paraphrases=w.paraphrases if d.paraphrases is None else d.paraphrases,
        train_questions_per_fact=w.train_questions_per_fact,
        n_unanswerable=w.n_unanswerable,
        n_general=w.n_general,
    )


def load_dataset(cfg: ExperimentConfig) -> Dataset:
    """The run's items: the scenario's own, else the data section's; then at most
    `data.max_questions` evaluation questions, sampled with the run's seed."""
    d = cfg.data
    data = scenarios.build(cfg.scenario, d)
    if data is None:  # no scenario, or one that takes the data section's items (facts)
        data = _data_section_items(d)
    if d.max_questions and d.max_questions < len(data.questions):
        keep = sorted(random.Random(cfg.seed).sample(range(len(data.questions)), d.max_questions))
        data = Dataset(
            documents=data.documents,
            questions=tuple(data.questions[i] for i in keep),
            train_texts=data.train_texts,
            train_questions=data.train_questions,
            facts=data.facts,
            provenance=data.provenance,
        )
    return data


def connect_endpoint(cfg: ExperimentConfig, data: Dataset) -> tuple[LoadedModel, dict | None, bool | None]:
    """The served model of a `backend: endpoint` config. When a fine-tuned arm is asked
    for, its adapter is trained here first on the local model (or read from the cache),
    the vLLM command that serves it is logged, and the server's adapter is checked
    against its cache key where the server reports a path. Returns (model, training
    record, adapter from cache)."""
    from harness.models import endpoint

    m = cfg.model
    record, cached = None, None
    if any(PIPELINES[p].adapter for p in cfg.eval.pipelines):
        local = load_generator(m.name, dtype=m.dtype, device=m.device, trust_remote_code=m.trust_remote_code)
        train_data, selection = select_training_facts(local, data, cfg)
        record, cached = obtain_adapter(local, train_data, cfg, seed=cfg.train.seed, name="default")
        if selection is not None:
            record = {**record, "selection": selection}
        log.warning(
            "serve the adapter with: %s",
            endpoint.serve_command(
                base_model=local.source,
                served_model=m.served_model,
                served_adapter=m.served_adapter,
                adapter_dir=record["adapter_dir"],
                base_gguf=endpoint.base_gguf(m.name),
                lora_rank=cfg.train.rank,
            ),
        )
        del local
    lm = endpoint.connect(
        base_url=m.base_url,
        served_model=m.served_model,
        tokenizer=None,
        name=m.name,
        api=m.api,
        mc_protocol=m.mc_protocol,
        api_key_env=m.api_key_env,
        concurrency=m.concurrency,
        timeout=m.timeout,
        retries=m.retries,
    )
    if m.api == "completions":  # prompts are rendered here, by the local model's chat template
        lm.tokenizer = endpoint.local_tokenizer(m.name)
    if record is not None:
        check = endpoint.serve_adapter(lm, served_adapter=m.served_adapter, cache_key=record["cache_key"])
        record = {**record, "served_adapter": m.served_adapter, "served_check": check}
    return lm, record, cached


def train_adapters(cfg: ExperimentConfig) -> list[dict]:
    """Train (or find in the cache) the adapters a config's runs need, evaluating nothing:
    one per distinct adapter group of a grid, for every seed of `train.repeats`. Under
    torchrun or `accelerate launch`, the processes train each adapter together."""
    records, seen = [], set()
    for cell in expand_grid(cfg):
        c = cell.config
        if adapter_group(c) in seen or not any(
            PIPELINES[p].adapter and PIPELINES[p].adapter_name == "default" for p in c.eval.pipelines
        ):
            continue
        seen.add(adapter_group(c))
        seed_everything(c.seed)
        data = load_dataset(c)
        lm = load_generator(
            c.model.name,
            dtype=c.model.dtype,
            device=c.model.device,
            quantization=METHODS[c.train.method].quantization,
            trust_remote_code=c.model.trust_remote_code,
        )
        train_data, _ = select_training_facts(lm, data, c)
        for i in range(c.train.repeats):
            record, cached = obtain_adapter(
                lm, train_data, c, seed=c.train.seed + i, name="default" if i == 0 else f"seed{c.train.seed + i}"
            )
            records.append({**record, "from_cache": cached, "cell": cell.id})
    return records


@dataclass
class Arms:
    """The loaded models and adapters the pipelines answer with."""

    lm: LoadedModel  # the base model; the adapters are attached to it
    tuned: LoadedModel  # what the fine-tuned pipelines answer with: lm, or after full fine-tuning a second model
    train_record: dict | None = None  # the default adapter's training record
    adapter_cached: bool | None = None  # whether the default adapter came from the cache
    extra_seeds: list = field(default_factory=list)  # (adapter name, seed, record, from cache) of train.repeats
    raft_record: dict | None = None  # the RAFT adapter's training record


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str):
    """Record the seconds the block took as `timings[key]` (nothing when it raises)."""
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


def load_models(cfg: ExperimentConfig, data: Dataset, *, stage: Path, timings: dict) -> Arms:
    """The generator, loaded once: a local model, or a served one (whose adapter, if any,
    is trained here first: connect_endpoint)."""
    record, cached = None, None
    with timed(timings, "model_load_seconds"):
        if cfg.model.backend == "endpoint":  # served: the adapter (if any) is trained here, answered there
            lm, record, cached = connect_endpoint(cfg, data)
            if record is not None:
                atomic_write_json(stage / "loss_curve.json", record["loss_curve"])
        else:
            lm = load_generator(
                cfg.model.name,
                dtype=cfg.model.dtype,
                device=cfg.model.device,
                quantization=METHODS[cfg.train.method].quantization,
                trust_remote_code=cfg.model.trust_remote_code,
            )
    log.info("model %s on %s, compute dtype %s", cfg.model.name, lm.device, lm.dtype)
    return Arms(lm=lm, tuned=lm, train_record=record, adapter_cached=cached)


def attach_adapters(
    cfg: ExperimentConfig, data: Dataset, arms: Arms, *, stage: Path, timings: dict, retriever=None
) -> None:
    """The default adapter (one per seed of train.repeats) and the RAFT adapter, when a
    configured pipeline needs them, each from the cache or trained (adapters.py). RAFT
    trains on the retriever's own chunks (cut in the embedder's tokens), the passages its
    pipeline will be shown."""
    lm = arms.lm
    if not generator.served(lm) and any(
        PIPELINES[p].adapter and PIPELINES[p].adapter_name == "default" for p in cfg.eval.pipelines
    ):
        with timed(timings, "adapter_seconds"):
            if not METHODS[cfg.train.method].adapter:
                # Full fine-tuning changes every weight, so the fine-tuned pipelines get a
                # second load of the base to train; the base and rag pipelines keep the
                # untouched first one (twice the weights in memory while the run lasts).
                arms.tuned = load_generator(
                    cfg.model.name,
                    dtype=cfg.model.dtype,
                    device=cfg.model.device,
                    trust_remote_code=cfg.model.trust_remote_code,
                )
            seeds = [cfg.train.seed + i for i in range(cfg.train.repeats)]
            # The first seed's adapter is the primary: every per-item result, comparison
            # and verdict uses it; the others give the spread across seeds.
            train_data, selection = select_training_facts(lm, data, cfg)
            record, arms.adapter_cached = obtain_adapter(arms.tuned, train_data, cfg, seed=seeds[0], name="default")
            arms.train_record = record if selection is None else {**record, "selection": selection}
            for seed in seeds[1:]:
                record, cached = obtain_adapter(lm, train_data, cfg, seed=seed, name=f"seed{seed}")
                arms.extra_seeds.append((f"seed{seed}", seed, record, cached))
            if arms.extra_seeds:
                lm.model.set_adapter("default")
        atomic_write_json(stage / "loss_curve.json", arms.train_record["loss_curve"])
    if "raft" in cfg.eval.pipelines:
        if retriever is None:  # raft retrieves, so build_index made one: a caller that skipped it
            raise ValueError("attach_adapters: the raft pipeline needs the retriever (build_index) for its chunks")
        with timed(timings, "raft_adapter_seconds"):
            arms.raft_record = obtain_raft_adapter(lm, data, cfg, chunks=retriever.chunks)


def build_index(cfg: ExperimentConfig, data: Dataset, *, timings: dict):
    """The retriever over the documents the reader may see, or None when no configured
    pipeline retrieves."""
    if not any(PIPELINES[p].retrieval for p in cfg.eval.pipelines):
        return None
    with timed(timings, "embedder_load_seconds"):
        embedder = load_embedder(cfg.embedder.name) if cfg.retrieval.method != "bm25" else None
    whole = scenarios.whole_documents(cfg.scenario)
    return build_retriever(
        scenarios.readable(cfg.scenario, data.documents),
        embedder=embedder,
        method=cfg.retrieval.method,
        index_kind=cfg.retrieval.index,
        nprobe=cfg.retrieval.nprobe,
        # worked examples are retrieved whole, never cut
        chunk_size=10**6 if whole else cfg.retrieval.chunk_size,
        chunk_overlap=0 if whole else cfg.retrieval.chunk_overlap,
        batch_size=cfg.embedder.batch_size,
        cache=cache_dir() / "indexes",
        embedder_id=embedder_fingerprint(cfg.embedder.name, embedder) if embedder is not None else None,
    )


def _pipeline_cost(rows: list[dict], *, wall: float, memo: Memo, max_new_tokens: int) -> dict:
    """What one arm cost: wall time, generation time (as first computed, so an arm
    answered from the memo is not free), latency percentiles, tokens, memo reuse, and how
    many answers stopped at `max_new_tokens` (cut before they may have said the answer)."""
    return {
        "at_max_new_tokens": sum(r["new_tokens"] >= max_new_tokens for r in rows),
        # what the answers took when first generated: a memo hit keeps its original latency
        "generation_seconds": float(sum(r["latency_s"] for r in rows)),
        "wall_seconds": wall,
        "latency_p50_s": _percentile([r["latency_s"] for r in rows], 50),
        "latency_p95_s": _percentile([r["latency_s"] for r in rows], 95),
        "prompt_tokens_mean": float(np.mean([r["prompt_tokens"] for r in rows])),
        "new_tokens_mean": float(np.mean([r["new_tokens"] for r in rows])),
        "batches": memo.counts(),
    }


def answer_pipelines(cfg: ExperimentConfig, arms: Arms, questions: list, retriever) -> tuple[dict, dict]:
    """Each configured pipeline's answers to the same questions, and its costs: returns
    (rows by pipeline, costs by pipeline)."""
    lm = arms.lm
    rows_by_pipeline, costs = {}, {}
    generator.take_usage(lm)  # a server's count starts at this run's first question
    for name in cfg.eval.pipelines:
        pipe = PIPELINES[name]
        t0 = time.perf_counter()
        record = arms.raft_record if pipe.adapter_name == "raft" else arms.train_record
        memo = generation_memo(lm, adapter_key=record["cache_key"] if pipe.adapter else None)
        with tqdm(total=len(questions), desc=f"answer [{name}]", unit="q") as bar:
            # the fully fine-tuned model has no adapter to switch on
            full = pipe.adapter and pipe.adapter_name == "default" and arms.tuned is not lm
            rows = answer(
                arms.tuned if full else lm,
                questions,
                adapter=pipe.adapter and not full,
                retriever=retriever if pipe.retrieval else None,
                top_k=cfg.retrieval.top_k,
                max_new_tokens=cfg.eval.max_new_tokens,
                batch_size=cfg.eval.batch_size,
                multiple_choice=cfg.eval.multiple_choice,
                adapter_name=pipe.adapter_name,
                memo=memo,
                progress=bar.update,
            )
        rows_by_pipeline[name] = rows
        costs[name] = _pipeline_cost(
            rows, wall=time.perf_counter() - t0, memo=memo, max_new_tokens=cfg.eval.max_new_tokens
        )
        if generator.served(lm):  # what this run asked of the server for this arm (0 when all cached)
            costs[name]["served_tokens"] = generator.take_usage(lm)
    return rows_by_pipeline, costs


def tag_known(cfg: ExperimentConfig, lm: LoadedModel, questions: list, *, timings: dict) -> dict[str, str]:
    """Each question's knowledge category for the base model (adapter off)."""
    with timed(timings, "knowledge_tagging_seconds"), adapter_switch(lm, False):
        return knowledge.tag_questions(
            lm,
            questions,
            samples=cfg.eval.known_samples,
            temperature=cfg.eval.known_temperature,
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            seed=cfg.seed,
            memo=generation_memo(lm, adapter_key=None),
        )


def build_scorer(cfg: ExperimentConfig, retriever, *, timings: dict):
    """The scenario's extra per-item scorer (the style classifier and similarity), or None."""
    t0 = time.perf_counter()
    scorer = scenarios.build_scorer(
        cfg.scenario,
        seed=cfg.seed,
        embedder_name=cfg.embedder.name,
        embedder=retriever.embedder if retriever is not None else None,
    )
    if scorer is not None:
        timings["style_scorer_seconds"] = time.perf_counter() - t0
    return scorer


def score_rows(rows: list[dict], by_id: dict, *, known: dict, style_scorer) -> dict[str, dict[str, float]]:
    """The one scoring path: each answer's scores (metrics.score_prediction, plus the
    scenario's style scores) set on its row, and the pipeline's per-item metric values
    (with the knowledge tags). The run, the seed spread and the scenario row all read
    what this returns, so no copy of the scoring can drift from another."""
    extra = style_scorer.scores(rows, by_id) if style_scorer is not None else {}
    scored = []
    for row in rows:
        q = by_id[row["question_id"]]
        row["scores"] = {**metrics.score_prediction(row, q), **extra.get(q.id, {})}
        scored.append((row["scores"], q))
    return metrics.item_values(scored, known=known)


def score_pipelines(rows_by_pipeline: dict, by_id: dict, known: dict, style_scorer) -> tuple[list, dict]:
    """Score every answer (score_rows): returns the prediction rows to write and each
    pipeline's per-item metric values."""
    predictions, per_item = [], {}
    for name, rows in rows_by_pipeline.items():
        per_item[name] = score_rows(rows, by_id, known=known, style_scorer=style_scorer)
        for row in rows:
            q = by_id[row["question_id"]]
            predictions.append(
                {
                    "pipeline": name,
                    "question": q.question,
                    "answers": list(q.answers),
                    "answerable": q.answerable,
                    "choices": list(q.choices),
                    "answer_index": q.answer_index,
                    "task": q.task,
                    "known": known.get(q.id),
                    **row,
                }
            )
    return predictions, per_item


def spread_across_seeds(
    lm: LoadedModel,
    questions,
    cfg: ExperimentConfig,
    retriever,
    per_item: dict,
    extra_seeds: list,
    *,
    known: dict | None = None,
    style_scorer=None,
) -> dict:
    """Each fine-tuned pipeline re-run with the adapter of every other seed and scored by
    the run's own path (score_rows, with the same knowledge tags and style scorer); per
    metric, the aggregate for each seed and their mean, standard deviation, min and max.
    Only metrics every seed scored are spread, so no entry mixes N seeds with one."""
    by_id = {q.id: q for q in questions}
    names = [n for n in cfg.eval.pipelines if PIPELINES[n].adapter and PIPELINES[n].adapter_name == "default"]
    runs = {name: [per_item[name]] for name in names}  # raft has one seed
    for adapter, _seed, record, _cached in extra_seeds:
        lm.model.set_adapter(adapter)
        memo = generation_memo(lm, adapter_key=record["cache_key"])
        for name in names:
            rows = answer(
                lm,
                questions,
                adapter=True,
                retriever=retriever if PIPELINES[name].retrieval else None,
                top_k=cfg.retrieval.top_k,
                max_new_tokens=cfg.eval.max_new_tokens,
                batch_size=cfg.eval.batch_size,
                multiple_choice=cfg.eval.multiple_choice,
                adapter_name=adapter,
                memo=memo,
            )
            runs[name].append(score_rows(rows, by_id, known=known or {}, style_scorer=style_scorer))
    lm.model.set_adapter("default")
    seeds = [cfg.train.seed] + [seed for _, seed, _, _ in extra_seeds]
    out = {}
    for name, per_seed in runs.items():
        shared = [m for m in per_seed[0] if all(m in run and run[m] for run in per_seed)]
        vals = {m: [sum(run[m].values()) / len(run[m]) for run in per_seed] for m in shared}
        out[name] = {m: {"seeds": seeds, "values": v, **stats.spread(v)} for m, v in vals.items()}
    return out


def run_benchmarks(
    lm: LoadedModel, cfg: ExperimentConfig, *, adapter_id: str | None, tuned: LoadedModel | None = None
) -> dict:
    """Score the benchmark subsets for the base and each fine-tuned pipeline on the one
    loaded model, switching the adapter on and off (or, after full fine-tuning, on the
    `tuned` second model); then the forgetting summary."""
    b = cfg.benchmarks
    prepared = benchmarks.prepare_tasks(
        data_dir=b.data_dir,
        mmlu_subjects=b.mmlu_subjects,
        mmlu_items=b.mmlu_items,
        hellaswag=b.hellaswag,
        hellaswag_items=b.hellaswag_items,
        seed=b.seed,
    )
    for s in prepared.skipped:
        log.warning("benchmark %s skipped: %s (%s)", s["benchmark"], s["reason"], s["fix"])
    scores, skipped = {}, list(prepared.skipped)
    for name in b.pipelines:
        pipe = PIPELINES[name]
        if pipe.adapter and adapter_id is None:
            skipped.append(
                {
                    "benchmark": f"all ({name})",
                    "reason": "no adapter was trained in this run",
                    "fix": "add 'finetuned' to eval.pipelines",
                }
            )
            continue
        if not prepared.tasks:
            continue
        log.info("benchmarks for %s: %s", name, ", ".join(t.label for t in prepared.tasks))
        full = pipe.adapter and pipe.adapter_name == "default" and tuned is not None and tuned is not lm
        model = tuned if full else lm
        with adapter_switch(model, pipe.adapter and not full):
            scores[name] = benchmarks.score_tasks(
                model,
                prepared,
                adapter_id=adapter_id if pipe.adapter else None,
                num_fewshot=b.num_fewshot,
                batch_size=b.batch_size,
            )
    summary = stats.benchmark_summary(scores, samples=cfg.eval.bootstrap_samples, seed=cfg.seed) if scores else {}
    return {
        **summary,
        "skipped": skipped,
        "source": prepared.source,
        "task_dir": prepared.task_dir,
        "tasks": [t.__dict__ for t in prepared.tasks],
        "num_fewshot": b.num_fewshot,
        "from_cache": {p: {label: r["from_cache"] for label, r in s.items()} for p, s in scores.items()},
        "protocol": {p: {label: r["protocol"] for label, r in s.items()} for p, s in scores.items()},
    }


def decide_verdicts(per_item: dict[str, dict[str, dict[str, float]]], cfg: ExperimentConfig, questions) -> dict:
    """One verdict per question of metrics.DECISIONS whose metric all four pipelines
    scored, each by the fixed sequence of its own comparisons (verdicts.verdict_on), so
    adding or dropping any other metric changes no verdict."""
    e = cfg.eval
    out = {}
    for question, metric in metrics.decision_metrics(
        mc_metric=e.mc_metric, answer_metric=e.answer_metric, questions=questions
    ).items():
        v = verdicts.verdict_on(
            per_item, metric, min_effect=e.min_effect, alpha=e.alpha, samples=e.permutation_samples, seed=cfg.seed
        )
        if v is not None:
            out[question] = v
    return out


def _restrict(
    values: dict[str, dict[str, float]], known: dict[str, str], category: str, names: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """The per-item values of metrics `names` on the questions of one knowledge category."""
    out = {m: {i: x for i, x in values.get(m, {}).items() if known.get(i) == category} for m in names}
    return {m: v for m, v in out.items() if v}


def _percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def recovery_ratios(per_item: dict, *, decided: list[str], samples: int, seed: int) -> dict:
    """stats.recovery_ratio on each deciding metric (`decided`, the verdicts' metrics)
    that base, finetuned and rag all scored."""
    out = {}
    for metric in dict.fromkeys(decided):
        if not all(metric in per_item.get(p, {}) for p in ("base", "finetuned", "rag")):
            continue
        ids = sorted(set.intersection(*(set(per_item[p][metric]) for p in ("base", "finetuned", "rag"))))
        out[metric] = stats.recovery_ratio(
            *([per_item[p][metric][i] for i in ids] for p in ("base", "finetuned", "rag")), samples=samples, seed=seed
        )
    return out


def evaluate_more(
    cfg: ExperimentConfig,
    arms: Arms,
    questions: list,
    retriever,
    per_item: dict,
    *,
    known: dict,
    style_scorer,
    timings: dict,
) -> tuple[dict, dict | None]:
    """The other seeds' adapters on the fine-tuned pipelines (scored as the run is), and
    the benchmark subsets (forgetting), each only when configured: returns (seed spread,
    benchmarks)."""
    seed_spread, benchmark_result = {}, None
    if arms.extra_seeds:
        with timed(timings, "extra_seeds_seconds"):
            seed_spread = spread_across_seeds(
                arms.lm,
                questions,
                cfg,
                retriever,
                per_item,
                arms.extra_seeds,
                known=known,
                style_scorer=style_scorer,
            )
    if cfg.benchmarks is not None:
        with timed(timings, "benchmarks_seconds"):
            adapter_id = arms.train_record["cache_key"] if arms.train_record else None
            benchmark_result = run_benchmarks(arms.lm, cfg, adapter_id=adapter_id, tuned=arms.tuned)
    return seed_spread, benchmark_result


def _splits(cfg: ExperimentConfig, per_item: dict, questions: list, kinds: dict) -> dict | None:
    """The aggregates on each side of the dev/test split of the questions, or None
    without eval.dev_fraction."""
    if cfg.eval.dev_fraction <= 0:
        return None
    samples = cfg.eval.bootstrap_samples
    part = stats.dev_test_split([q.id for q in questions], dev_fraction=cfg.eval.dev_fraction, seed=cfg.seed)
    return {
        "dev_fraction": cfg.eval.dev_fraction,
        "seed": cfg.seed,
        "questions": {s: sum(v == s for v in part.values()) for s in ("dev", "test")},
        **{
            s: {
                p: stats.aggregate(
                    {m: {i: x for i, x in vals.items() if part[i] == s} for m, vals in v.items()},
                    kinds,
                    samples=samples,
                    seed=cfg.seed,
                )
                for p, v in per_item.items()
            }
            for s in ("dev", "test")
        },
    }


def _by_knowledge(cfg: ExperimentConfig, per_item: dict, known: dict, kinds: dict) -> dict:
    """Fact recall and accuracy on the questions of each knowledge category."""
    return {
        "counts": {c: sum(v == c for v in known.values()) for c in knowledge.CATEGORIES},
        "samples": cfg.eval.known_samples,
        "temperature": cfg.eval.known_temperature,
        "pipelines": {
            p: {
                c: stats.aggregate(
                    _restrict(per_item[p], known, c, ("contains", "mc_accuracy")),
                    kinds,
                    samples=cfg.eval.bootstrap_samples,
                    seed=cfg.seed,
                )
                for c in knowledge.CATEGORIES
                if c in known.values()
            }
            for p in per_item
        },
    }


def analyse(cfg: ExperimentConfig, per_item: dict, known: dict, questions: list) -> dict:
    """Aggregates with intervals, chance rates, the dev/test split, pairwise comparisons,
    the knowledge breakdown, the verdicts and the recovery ratios: the metrics.json parts
    computed from the per-item values."""
    by_id = {q.id: q for q in questions}
    kinds = {m: spec[2] for m, spec in metrics.METRICS.items()}
    samples = cfg.eval.bootstrap_samples
    aggregates = {p: stats.aggregate(v, kinds, samples=samples, seed=cfg.seed) for p, v in per_item.items()}
    chance = {
        m: float(np.mean([metrics.chance(by_id[i]) for i in v[m]]))
        for v in per_item.values()
        for m in metrics.MC_METRICS.values()
        if m in v
    }
    splits = _splits(cfg, per_item, questions, kinds)
    comparisons = stats.compare_all(per_item, kinds, samples=cfg.eval.permutation_samples, seed=cfg.seed)
    by_knowledge = _by_knowledge(cfg, per_item, known, kinds)
    verdicts = decide_verdicts(per_item, cfg, questions)
    # on the verdicts' deciding metrics, also in runs without rag_finetuned (no verdict)
    decided = metrics.decision_metrics(
        mc_metric=cfg.eval.mc_metric, answer_metric=cfg.eval.answer_metric, questions=questions
    ).values()
    recovery = recovery_ratios(per_item, decided=list(decided), samples=samples, seed=cfg.seed)
    return {
        "pipelines": aggregates,
        "chance": chance,
        "splits": splits,
        "comparisons": comparisons,
        "verdicts": verdicts,
        "recovery": recovery,
        "by_knowledge": by_knowledge,
    }


def scenario_summary(
    cfg: ExperimentConfig,
    analysis: dict,
    rows_by_pipeline: dict,
    by_id: dict,
    *,
    per_item: dict,
    arms: Arms,
    retriever,
    style_scorer,
) -> dict | None:
    """The scenario's row of the decision table, or None outside a scenario."""
    if cfg.scenario is None:
        return None
    return scenarios.summary(
        cfg.scenario,
        cfg.eval,
        seed=cfg.seed,
        comparisons=analysis["comparisons"],
        per_item=per_item,
        rows_by_pipeline=rows_by_pipeline,
        by_id=by_id,
        scorer=style_scorer,
        train_record=arms.train_record,
        index=retriever.stats() if retriever is not None else None,
    )


def judge_answers(
    cfg: ExperimentConfig,
    rows_by_pipeline: dict,
    by_id: dict,
    per_item: dict,
    predictions: list[dict],
    *,
    timings: dict,
) -> dict | None:
    """The LLM judge's scores (secondary, outside the verdicts), or None without
    eval.judge; each judged prediction gets the verdict as its `judge_correct` score."""
    if cfg.eval.judge is None:
        return None
    from harness.evaluate import judge

    with timed(timings, "judge_seconds"):
        judged = judge.run_judge(
            cfg.eval.judge, rows_by_pipeline, by_id, per_item, samples=cfg.eval.bootstrap_samples, seed=cfg.seed
        )
    judge.add_judged_scores(predictions, judged)
    return judged


def write_results(stage: Path, cfg: ExperimentConfig, predictions: list, result: dict) -> None:
    """The config snapshot, every prediction, metrics.json and its lm-eval-shaped copy,
    then the report from them."""
    atomic_write_yaml(stage / "config.yaml", config_to_dict(cfg))
    atomic_write_jsonl(stage / "predictions.jsonl", predictions)
    atomic_write_json(stage / "metrics.json", result)
    atomic_write_json(stage / lm_eval_format.FILE, lm_eval_format.lm_eval_results(result))
    report.write_report(stage)


def run_experiment(cfg: ExperimentConfig, *, results_root: str | Path | None = None, folder: str | None = None) -> Path:
    """Run every configured pipeline on the same items; returns the results folder,
    `<results_root>/<folder or cfg.name>`."""
    t_run = time.perf_counter()
    timings: dict[str, float] = {}
    final = Path(results_root or cfg.output_dir) / (folder or cfg.name)
    check_destination(final, experiment=cfg.name, kind="run")  # before any work: never destroy a user's folder
    seed_everything(cfg.seed)
    with timed(timings, "data_seconds"):
        data = load_dataset(cfg)
    questions = list(data.questions)
    by_id = {q.id: q for q in questions}

    with (
        checked_destination(final, experiment=cfg.name, kind="run"),
        run_lock(final),
        staged_run_dir(final, experiment=cfg.name) as stage,
        run_log(stage / RUN_LOG),
    ):
        log.info("run of %s (config %s) into %s", cfg.name, config_hash(cfg)[:12], final)
        arms = load_models(cfg, data, stage=stage, timings=timings)
        retriever = build_index(cfg, data, timings=timings)
        attach_adapters(cfg, data, arms, stage=stage, timings=timings, retriever=retriever)
        rows_by_pipeline, pipeline_costs = answer_pipelines(cfg, arms, questions, retriever)
        known = tag_known(cfg, arms.lm, questions, timings=timings)
        style_scorer = build_scorer(cfg, retriever, timings=timings)
        predictions, per_item = score_pipelines(rows_by_pipeline, by_id, known, style_scorer)
        seed_spread, benchmark_result = evaluate_more(
            cfg, arms, questions, retriever, per_item, known=known, style_scorer=style_scorer, timings=timings
        )
        analysis = analyse(cfg, per_item, known, questions)
        scenario_result = scenario_summary(
            cfg,
            analysis,
            rows_by_pipeline,
            by_id,
            per_item=per_item,
            arms=arms,
            retriever=retriever,
            style_scorer=style_scorer,
        )
        judged = judge_answers(cfg, rows_by_pipeline, by_id, per_item, predictions, timings=timings)
        timings["total_seconds"] = time.perf_counter() - t_run
        index = retriever.stats() if retriever is not None else None
        embedder = cfg.embedder.name if retriever is not None and retriever.embedder is not None else None
        costs = costs_record(
            train_record=arms.train_record,
            adapter_cached=arms.adapter_cached,
            raft_record=arms.raft_record,
            index=index,
            pipelines=pipeline_costs,
        )
        result = metrics_record(
            cfg,
            data=data,
            lm=arms.lm,
            analysis=analysis,
            costs=costs,
            embedder=embedder,
            scenario=scenario_result,
            seed_spread=seed_spread,
            benchmarks=benchmark_result,
            judged=judged,
            timings=timings,
        )
        write_results(stage, cfg, predictions, result)
    log.info("results in %s", final)
    if cfg.tracking is not None:  # after the folder is in place: a tracking failure leaves the results whole
        tracking.log_run(cfg.tracking, folder=final, metrics=result, config=config_to_dict(cfg))
    return final
