"""Orchestration of one experiment: data, model, adapter, index, pipelines, results.

`run_experiment(cfg)` does, in order and visibly: seed everything; build or read the
data; load the generator once; obtain the adapter (from the cache when the same model,
training data and training settings were trained before, else by training it); build the
retriever; run each configured pipeline on the same questions; score; aggregate with
intervals; compare pipelines pairwise; write results atomically; write the report.

The runner owns no metric, prompt or training logic: those live in metrics.py,
prompts.py and train.py. It records the costs of each arm as it goes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harness import benchmarks, knowledge, metrics, report, scenarios, stats
from harness.config import PIPELINE_NAMES, ExperimentConfig, config_hash, config_to_dict, expand_grid
from harness.data import EXTERNAL_FORMATS, Dataset, load_user_dataset
from harness.cache import discard, verify_dir, write_manifest
from harness.memo import Memo
from harness.models import LoadedModel, cache_dir, load_generator
from harness.pipelines import PIPELINES, adapter_switch, answer
from harness.prompts import ABSTAIN, TEMPLATES
from harness.results import (atomic_write_json, atomic_write_jsonl, atomic_write_yaml, check_destination,
                             checked_destination, mark_folder, provenance, run_lock, staged_run_dir)
from harness.retrieve import build_retriever, chunk_documents, embedder_fingerprint, load_embedder
from harness.train import TrainError, build_examples, build_raft_examples
from harness.trainer import TrainResult, train_model
from harness.world import generate_world

log = logging.getLogger(__name__)

ADAPTER_FORMAT = 2  # bump when a change to train.py makes old cached adapters invalid


def adapter_group(cfg: ExperimentConfig) -> str:
    """Hash of what decides the adapters of a config (model, data, training): configs with
    the same group train the same adapters and share them through the cache."""
    blob = json.dumps({"model": cfg.model.model_dump(mode="json"), "data": cfg.data.model_dump(mode="json"),
                       "train": cfg.train.model_dump(mode="json"),
                       "scenario": cfg.scenario.model_dump(mode="json") if cfg.scenario else None}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _finished(folder: Path) -> dict | None:
    """metrics.json of a finished run in `folder`, or None."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:  # damaged: the cell is run again
        log.warning("%s: unreadable (%s); the cell will be run again", path, err)
        return None
    if not isinstance(m, dict) or not all(isinstance(m.get(k), dict) for k in ("costs", "timings")) \
            or "config_hash" not in m:
        log.warning("%s: incomplete; the cell will be run again", path)
        return None
    return m if m.get("status") == "complete" else None


def plan_grid(cfg: ExperimentConfig, *, results_root: str | Path | None = None) -> list[dict]:
    """What each cell needs and what is already there: a cell is done when its folder
    holds a finished run of the same config hash; its adapter is cached when a finished
    run of the same adapter group recorded an adapter that is still in the cache. The
    estimate is from what the finished cells measured."""
    root = Path(results_root or cfg.output_dir) / cfg.name
    cells = expand_grid(cfg)
    done = {c.id: _finished(root / c.id) if c.id else _finished(root) for c in cells}
    finished = [m for m in done.values() if m]
    cached_groups = {m.get("adapter_group") for m in finished
                     if (m["costs"].get("training") or {}).get("adapter_dir")
                     and Path(m["costs"]["training"]["adapter_dir"]).is_dir()}

    def trained(m: dict) -> bool:
        return (m["costs"].get("training") or {}).get("from_cache") is False

    evals = [m["timings"]["total_seconds"] - (m["timings"].get("adapter_seconds", 0.0) if trained(m) else 0.0)
             for m in finished]
    trains = [m["timings"]["adapter_seconds"] for m in finished if trained(m)]
    rows, first_of_group = [], {}
    for c in cells:
        m = done[c.id]
        is_done = m is not None and m["config_hash"] == c.hash
        needs_adapter = any(PIPELINES[p].adapter for p in c.config.eval.pipelines)
        group = adapter_group(c.config)
        if not needs_adapter:
            adapter = "not needed"
        elif group in cached_groups:
            adapter = "cached"
        elif group in first_of_group:  # an earlier cell of this run trains it
            adapter = f"from {first_of_group[group]}"
        else:
            adapter = "to train"
            first_of_group[group] = c.id or cfg.name
        estimate = None
        if not is_done and evals:
            estimate = float(np.mean(evals)) + (float(np.mean(trains)) if adapter == "to train" and trains else 0.0)
        rows.append({"cell": c.id or cfg.name, "hash": c.hash[:12], "values": c.values,
                     "status": "done" if is_done else "to run", "adapter": adapter,
                     "benchmarks": "yes" if c.config.benchmarks else "no", "estimate_seconds": estimate})
    return rows


def grid_lanes(cells, root: Path) -> list[list[tuple[str, dict]]]:
    """The cells still to run, grouped by adapter group in grid order: one lane trains
    its adapter once and the rest of the lane reuses it (see executors.py)."""
    lanes: dict[str, list[tuple[str, dict]]] = {}
    for c in cells:
        m = _finished(root / c.id)
        if m is not None and m["config_hash"] == c.hash:
            log.info("cell %s: done already, skipped", c.id)
            continue
        lanes.setdefault(adapter_group(c.config), []).append((c.id, config_to_dict(c.config)))
    return list(lanes.values())


def run_grid(cfg: ExperimentConfig, *, results_root: str | Path | None = None, executor: str = "sequential",
             workers: int | None = None, address: str | None = None, cpus_per_cell: int = 1) -> Path:
    """Run every cell of the grid that has no finished result of its config yet, each into
    `<results_root>/<name>/<cell id>/`, on the chosen executor; adapters are shared
    through the cache. Then the grid report compares the cells."""
    from harness.executors import EXECUTORS, ExecutorError

    if executor not in EXECUTORS:
        raise ExecutorError(f"--executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    root = Path(results_root or cfg.output_dir) / cfg.name
    cells = expand_grid(cfg)
    with checked_destination(root, experiment=cfg.name, kind="grid"), run_lock(root):
        root.mkdir(exist_ok=True)
        mark_folder(root, experiment=cfg.name, kind="grid")
        lanes = grid_lanes(cells, root)
        log.info("%d of %d cells to run, in %d adapter lanes, executor %s", sum(map(len, lanes)), len(cells),
                 len(lanes), executor)
        if lanes:
            EXECUTORS[executor](lanes, root=str(root), workers=workers, address=address, cpus_per_cell=cpus_per_cell,
                                gpus_per_cell=1 if cfg.model.device == "cuda" else 0)
        atomic_write_json(root / "grid.json", {"experiment": cfg.name, "config_hash": config_hash(cfg),
                                               "cells": [{"id": c.id, "values": c.values, "hash": c.hash}
                                                         for c in cells]})
        report.write_grid_report(root)
    return root


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_dataset(cfg: ExperimentConfig) -> Dataset:
    d = cfg.data
    if cfg.scenario is not None and cfg.scenario.name != "facts":
        data = scenarios.build(cfg)
    elif d.external is not None:
        e = d.external
        loader = EXTERNAL_FORMATS[e.format]
        wanted = e.paraphrases if d.paraphrases is None else d.paraphrases
        kwargs = ({"paraphrases": wanted, "only_paraphrased": e.only_paraphrased}
                  if e.format == "fictional_knowledge" else {})
        if wanted and e.format == "tofu":
            log.warning("data.paraphrases: TOFU has no restatements of its facts; the training text is the same "
                        "for every paraphrase count")
        data = loader(e.path, max_entities=e.max_entities, seed=e.seed, **kwargs)
    elif d.documents:
        data = load_user_dataset(documents=d.documents, questions=d.questions, train_questions=d.train_questions,
                                 skip_unreadable=d.skip_unreadable)
    else:
        w = d.world
        data = generate_world(seed=w.seed, n_people=w.n_people, n_organisations=w.n_organisations,
                              n_places=w.n_places, paraphrases=w.paraphrases if d.paraphrases is None else d.paraphrases,
                              train_questions_per_fact=w.train_questions_per_fact, n_unanswerable=w.n_unanswerable,
                              n_general=w.n_general)
    if d.max_questions and d.max_questions < len(data.questions):
        keep = sorted(random.Random(cfg.seed).sample(range(len(data.questions)), d.max_questions))
        data = Dataset(documents=data.documents, questions=tuple(data.questions[i] for i in keep),
                       train_texts=data.train_texts, train_questions=data.train_questions, facts=data.facts,
                       provenance=data.provenance)
    return data


def _adapter_key(lm: LoadedModel, examples, cfg: ExperimentConfig, seed: int, dev_examples=()) -> str:
    """What determines an adapter: the model, the exact training pairs (and separate dev
    pairs), the training settings and seed, the compute dtype. Never retrieval or
    evaluation settings, nor how many seeds the run repeats."""
    train = cfg.train.model_dump(mode="json")
    train.pop("repeats")
    train.pop("checkpoint_every")
    train.pop("raft")  # the RAFT settings reach an adapter through its examples only
    train["seed"] = seed
    blob = json.dumps({
        "format": ADAPTER_FORMAT, "model": lm.fingerprint, "dtype": lm.dtype, "device": lm.device,
        "examples": hashlib.sha256(json.dumps([[e.prompt, e.completion] for e in examples]).encode()).hexdigest(),
        "dev": hashlib.sha256(json.dumps([[e.prompt, e.completion] for e in dev_examples]).encode()).hexdigest(),
        "train": train,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def obtain_adapter(lm: LoadedModel, data: Dataset, cfg: ExperimentConfig, *, seed: int,
                   name: str = "default", examples: list | None = None) -> tuple[dict, bool]:
    """Attach the adapter for this config and seed to `lm` under `name` (and make it the
    active one), training it only if not cached. Returns (training record, from cache).
    The training pairs are the config's objective on the data unless `examples` are given
    (the RAFT adapter's)."""
    from peft import PeftModel

    t = cfg.train
    dev_examples = []
    if examples is None:
        examples = build_examples(lm.tokenizer, objective=t.objective, texts=data.train_texts,
                                  questions=data.train_questions)
        if t.objective == "cpt" and t.dev_fraction > 0:
            # cpt trains on every document token; its dev loss comes from separate
            # material, the training questions' answers, when the data has them
            dev_examples = build_examples(lm.tokenizer, objective="sft", questions=data.train_questions)
    key = _adapter_key(lm, examples, cfg, seed, dev_examples)
    target = cache_dir() / "adapters" / key[:32]
    record_path = target / "harness-train.json"
    if target.is_dir() and not verify_dir(target):  # damaged or unfinished: trained again
        discard(target)
    if record_path.is_file():
        log.info("adapter %s from cache: %s", name, target)
        if t.method == "full":  # the whole fine-tuned model, in place of lm's
            from transformers import AutoModelForCausalLM

            lm.model = AutoModelForCausalLM.from_pretrained(target, dtype=next(lm.model.parameters()).dtype,
                                                            device_map=lm.device).eval()
        elif hasattr(lm.model, "peft_config"):
            lm.model.load_adapter(target, adapter_name=name)
            lm.model.set_adapter(name)
        else:
            lm.model = PeftModel.from_pretrained(lm.model, target, adapter_name=name)
        lm.model.eval()
        return json.loads(record_path.read_text()), True
    # A stable partial folder (not per process), so a run killed mid-training resumes
    # from its last checkpoint; the lock keeps two live processes from training it at once.
    partial = target.with_name(f"{target.name}.partial")
    settings = dict(method=t.method, rank=t.rank, alpha=t.alpha, dropout=t.dropout, target_modules=t.target_modules,
                    lr=t.lr, epochs=t.epochs, max_steps=t.max_steps, batch_size=t.batch_size,
                    max_length=t.max_length, warmup_ratio=t.warmup_ratio, dev_fraction=t.dev_fraction,
                    early_stopping_patience=t.early_stopping_patience, seed=seed, adapter_name=name,
                    checkpoint_dir=partial, checkpoint_every=t.checkpoint_every,
                    gradient_accumulation=t.gradient_accumulation, max_grad_norm=t.max_grad_norm,
                    gradient_checkpointing=t.gradient_checkpointing, schedule=t.schedule,
                    weight_decay=t.weight_decay, packing=t.packing, dev_examples=dev_examples or None)
    if int(os.environ.get("RANK", "0")) > 0:  # a data-parallel helper: the first process owns the files
        result = train_model(lm, examples, out_dir=partial / "adapter", **settings)
        return {**result.to_json(), "adapter_dir": str(target), "cache_key": key, "seed": seed, "method": t.method}, False
    with run_lock(partial, wait=True):
        if record_path.is_file():  # another process finished it while this one waited
            return obtain_adapter(lm, data, cfg, seed=seed, name=name, examples=examples)
        out = partial / "adapter"
        shutil.rmtree(out, ignore_errors=True)
        partial.mkdir(parents=True, exist_ok=True)
        label = {"lora": "LoRA", "qlora": "QLoRA", "full": "full"}[t.method]
        with tqdm(desc=f"train {label} ({t.objective}, seed {seed})", unit="step") as bar:
            result: TrainResult = train_model(lm, examples, out_dir=out, progress=bar, **settings)
        record = result.to_json()
        record["adapter_dir"] = str(target)
        record["cache_key"] = key
        record["seed"] = seed
        record["method"] = t.method
        atomic_write_json(out / "harness-train.json", record)
        write_manifest(out)
        out.rename(target)
        shutil.rmtree(partial)
    return record, False


def generation_memo(lm: LoadedModel, *, adapter_key: str | None) -> Memo:
    """The store of this model's (and adapter's) generations and choice scores."""
    return Memo("generations", namespace={"model": lm.fingerprint, "dtype": lm.dtype, "device": lm.device,
                                          "adapter": adapter_key})


def select_training_facts(lm: LoadedModel, data: Dataset, cfg: ExperimentConfig) -> tuple[Dataset, dict | None]:
    """The training questions kept by train.train_categories, with unknown ones relabelled
    "I don't know" when train.unknown_as is abstain; tags from the base model (adapter
    off). Returns the data unchanged, and None, when neither option is set."""
    t = cfg.train
    if set(t.train_categories) == set(knowledge.CATEGORIES) and t.unknown_as == "gold":
        return data, None
    with adapter_switch(lm, False):
        tags = knowledge.tag_questions(lm, data.train_questions, samples=cfg.eval.known_samples,
                                       temperature=cfg.eval.known_temperature, max_new_tokens=cfg.eval.max_new_tokens,
                                       batch_size=cfg.eval.batch_size, seed=cfg.seed,
                                       memo=generation_memo(lm, adapter_key=None))
    kept = []
    for q in data.train_questions:
        category = tags.get(q.id, "unknown")
        if category not in t.train_categories:
            continue
        if category == "unknown" and t.unknown_as == "abstain":
            q = dataclasses.replace(q, answers=(ABSTAIN,))
        kept.append(q)
    if not kept:
        raise TrainError(f"train.train_categories: no training question is {' or '.join(t.train_categories)} "
                         f"for the base model (tagged: {', '.join(f'{c} {sum(v == c for v in tags.values())}' for c in knowledge.CATEGORIES)})")
    summary = {"tagged": {c: sum(v == c for v in tags.values()) for c in knowledge.CATEGORIES},
               "kept": len(kept), "relabelled_abstain": sum(q.answers == (ABSTAIN,) for q in kept),
               "train_categories": list(t.train_categories), "unknown_as": t.unknown_as}
    return dataclasses.replace(data, train_questions=tuple(kept)), summary


def connect_endpoint(cfg: ExperimentConfig, data: Dataset) -> tuple[LoadedModel, dict | None, bool | None]:
    """The served model of a `backend: endpoint` config. When a fine-tuned arm is asked
    for, its adapter is trained here first on the local model (or read from the cache),
    the vLLM command that serves it is logged, and the server's adapter is checked
    against its cache key where the server reports a path. Returns (model, training
    record, adapter from cache)."""
    from harness import endpoint

    m = cfg.model
    record, cached = None, None
    if any(PIPELINES[p].adapter for p in cfg.eval.pipelines):
        local = load_generator(m.name, dtype=m.dtype, device=m.device, trust_remote_code=m.trust_remote_code)
        train_data, selection = select_training_facts(local, data, cfg)
        record, cached = obtain_adapter(local, train_data, cfg, seed=cfg.train.seed, name="default")
        if selection is not None:
            record = {**record, "selection": selection}
        log.warning("serve the adapter with: %s", endpoint.serve_command(
            base_model=local.source, served_model=m.served_model, served_adapter=m.served_adapter,
            adapter_dir=record["adapter_dir"], base_gguf=endpoint.base_gguf(m.name)))
        del local
    lm = endpoint.connect(base_url=m.base_url, served_model=m.served_model, tokenizer=None, name=m.name, api=m.api,
                          mc_protocol=m.mc_protocol, api_key_env=m.api_key_env, concurrency=m.concurrency,
                          timeout=m.timeout, retries=m.retries)
    if m.api == "completions":  # prompts are rendered here, by the local model's chat template
        lm.tokenizer = endpoint.local_tokenizer(m.name)
    if record is not None:
        lm.endpoint.adapters["default"] = m.served_adapter
        record = {**record, "served_adapter": m.served_adapter,
                  "served_check": endpoint.check_adapter(lm.endpoint, served_adapter=m.served_adapter,
                                                         cache_key=record["cache_key"])}
    return lm, record, cached


def obtain_raft_adapter(lm: LoadedModel, data: Dataset, cfg: ExperimentConfig) -> dict:
    """The RAFT adapter (see train.build_raft_examples), attached as "raft" beside the
    default one, which stays active."""
    if cfg.train.method == "full":  # it would train every weight of the base the other pipelines use
        raise TrainError("eval.pipelines: 'raft' trains a LoRA adapter beside the default one; it cannot run with "
                         "train.method: full")
    r = cfg.train.raft
    chunks = chunk_documents(list(data.documents), chunk_size=cfg.retrieval.chunk_size,
                             chunk_overlap=cfg.retrieval.chunk_overlap)
    examples = build_raft_examples(lm.tokenizer, questions=data.train_questions, chunks=chunks,
                                   passages=r.passages, gold_share=r.gold_share, seed=r.seed)
    if not examples:
        raise TrainError("eval.pipelines has 'raft', but no training question has a gold chunk in the documents "
                         "(RAFT needs training questions whose evidence or answer is in a document)")
    before = getattr(lm.model, "active_adapter", None) if hasattr(lm.model, "peft_config") else None
    record, cached = obtain_adapter(lm, data, cfg, seed=cfg.train.seed, name="raft", examples=examples)
    if before is not None:
        lm.model.set_adapter(before)
    return {**record, "from_cache": cached, "raft": r.model_dump(mode="json"), "examples": len(examples)}


def train_adapters(cfg: ExperimentConfig) -> list[dict]:
    """Train (or find in the cache) the adapters a config's runs need, evaluating nothing:
    one per distinct adapter group of a grid, for every seed of `train.repeats`. Under
    torchrun or `accelerate launch`, the processes train each adapter together."""
    records, seen = [], set()
    for cell in expand_grid(cfg):
        c = cell.config
        if adapter_group(c) in seen or not any(PIPELINES[p].adapter and PIPELINES[p].adapter_name == "default"
                                               for p in c.eval.pipelines):
            continue
        seen.add(adapter_group(c))
        seed_everything(c.seed)
        data = load_dataset(c)
        lm = load_generator(c.model.name, dtype=c.model.dtype, device=c.model.device,
                            quantization="nf4" if c.train.method == "qlora" else None,
                            trust_remote_code=c.model.trust_remote_code)
        train_data, _ = select_training_facts(lm, data, c)
        for i in range(c.train.repeats):
            record, cached = obtain_adapter(lm, train_data, c, seed=c.train.seed + i,
                                            name="default" if i == 0 else f"seed{c.train.seed + i}")
            records.append({**record, "from_cache": cached, "cell": cell.id})
    return records


def spread_across_seeds(lm: LoadedModel, questions, cfg: ExperimentConfig, retriever, per_item: dict,
                        extra_seeds: list) -> dict:
    """Each fine-tuned pipeline re-run with the adapter of every other seed; per metric,
    the aggregate for each seed and their mean, standard deviation, min and max."""
    by_id = {q.id: q for q in questions}
    values: dict[str, dict[str, list]] = {}
    for name in cfg.eval.pipelines:
        if PIPELINES[name].adapter and PIPELINES[name].adapter_name == "default":  # raft has one seed
            for metric, v in per_item[name].items():
                values.setdefault(name, {})[metric] = [sum(v.values()) / len(v)]
    for adapter, _seed, record, _cached in extra_seeds:
        lm.model.set_adapter(adapter)
        memo = generation_memo(lm, adapter_key=record["cache_key"])
        for name in values:
            pipe = PIPELINES[name]
            rows = answer(lm, questions, adapter=True, retriever=retriever if pipe.retrieval else None,
                          top_k=cfg.retrieval.top_k, max_new_tokens=cfg.eval.max_new_tokens,
                          batch_size=cfg.eval.batch_size, multiple_choice=cfg.eval.multiple_choice,
                          adapter_name=adapter, memo=memo)
            items = metrics.item_values([(metrics.score_prediction(r, by_id[r["question_id"]]), by_id[r["question_id"]])
                                         for r in rows])
            for metric, v in items.items():
                values[name][metric].append(sum(v.values()) / len(v))
    lm.model.set_adapter("default")
    seeds = [cfg.train.seed] + [seed for _, seed, _, _ in extra_seeds]
    return {name: {metric: {"seeds": seeds, "values": vals, **stats.spread(vals)} for metric, vals in per.items()}
            for name, per in values.items()}


def run_benchmarks(lm: LoadedModel, cfg: ExperimentConfig, *, adapter_id: str | None,
                   tuned: LoadedModel | None = None) -> dict:
    """Score the benchmark subsets for the base and each fine-tuned pipeline on the one
    loaded model, switching the adapter on and off (or, after full fine-tuning, on the
    `tuned` second model); then the forgetting summary."""
    b = cfg.benchmarks
    prepared = benchmarks.prepare_tasks(data_dir=b.data_dir, mmlu_subjects=b.mmlu_subjects, mmlu_items=b.mmlu_items,
                                        hellaswag=b.hellaswag, hellaswag_items=b.hellaswag_items, seed=b.seed)
    for s in prepared.skipped:
        log.warning("benchmark %s skipped: %s (%s)", s["benchmark"], s["reason"], s["fix"])
    scores, skipped = {}, list(prepared.skipped)
    for name in b.pipelines:
        pipe = PIPELINES[name]
        if pipe.adapter and adapter_id is None:
            skipped.append({"benchmark": f"all ({name})", "reason": "no adapter was trained in this run",
                            "fix": "add 'finetuned' to eval.pipelines"})
            continue
        if not prepared.tasks:
            continue
        log.info("benchmarks for %s: %s", name, ", ".join(t.label for t in prepared.tasks))
        full = pipe.adapter and pipe.adapter_name == "default" and tuned is not None and tuned is not lm
        model = tuned if full else lm
        with adapter_switch(model, pipe.adapter and not full):
            scores[name] = benchmarks.score_tasks(model, prepared, adapter_id=adapter_id if pipe.adapter else None,
                                                  num_fewshot=b.num_fewshot, batch_size=b.batch_size)
    summary = stats.benchmark_summary(scores, samples=cfg.eval.bootstrap_samples, seed=cfg.seed) if scores else {}
    return {**summary, "skipped": skipped, "source": prepared.source, "task_dir": prepared.task_dir,
            "tasks": [t.__dict__ for t in prepared.tasks], "num_fewshot": b.num_fewshot,
            "from_cache": {p: {label: r["from_cache"] for label, r in s.items()} for p, s in scores.items()},
            "protocol": {p: {label: r["protocol"] for label, r in s.items()} for p, s in scores.items()}}


def decide_verdicts(per_item: dict[str, dict[str, dict[str, float]]], cfg: ExperimentConfig, questions) -> dict:
    """One verdict per question of metrics.DECISIONS whose metric all four pipelines
    scored, each from its own declared family of comparisons (stats.decide), so adding
    or dropping any other metric changes no verdict. A verdict at floor or ceiling names
    a metric that would inform; a hallucination question on which no pipeline ever
    abstains is undecidable with this model."""
    e = cfg.eval
    out = {}
    for question, metric in metrics.decision_metrics(mc_metric=e.mc_metric, answer_metric=e.answer_metric,
                                                     questions=questions).items():
        if not all(p in per_item and metric in per_item[p] for p in PIPELINE_NAMES):
            continue
        _, direction, kind = metrics.METRICS[metric]
        v = stats.decide({p: per_item[p][metric] for p in PIPELINE_NAMES}, metric=metric, kind=kind,
                         direction=direction, min_effect=e.min_effect, alpha=e.alpha, samples=e.permutation_samples,
                         seed=cfg.seed)
        if v["verdict"] == "uninformative":
            if metric == "hallucination_unanswerable" and v["uninformative"] == "ceiling":
                v["verdict"] = "undecidable with this model"
                v["note"] = ("no pipeline abstains on questions with no answer, so none can be shown to "
                             "hallucinate less; this model does not say \"I don't know\" here")
            else:
                v["informative"] = metrics.informative_metric({p: per_item[p] for p in PIPELINE_NAMES},
                                                              exclude=metric,
                                                              floor_ceiling=max(stats.FLOOR_CEILING, e.min_effect))
        out[question] = v
    return out


def _restrict(values: dict[str, dict[str, float]], known: dict[str, str], category: str,
              names: tuple[str, ...]) -> dict[str, dict[str, float]]:
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
        out[metric] = stats.recovery_ratio(*([per_item[p][metric][i] for i in ids] for p in ("base", "finetuned", "rag")),
                                           samples=samples, seed=seed)
    return out


def run_experiment(cfg: ExperimentConfig, *, results_root: str | Path | None = None,
                   folder: str | None = None) -> Path:
    """Run every configured pipeline on the same items; returns the results folder,
    `<results_root>/<folder or cfg.name>`."""
    t_run = time.perf_counter()
    timings: dict[str, float] = {}
    final = Path(results_root or cfg.output_dir) / (folder or cfg.name)
    check_destination(final, experiment=cfg.name, kind="run")  # before any work: never destroy a user's folder
    seed_everything(cfg.seed)

    t0 = time.perf_counter()
    data = load_dataset(cfg)
    timings["data_seconds"] = time.perf_counter() - t0
    questions = list(data.questions)
    by_id = {q.id: q for q in questions}
    wanted = [PIPELINES[p] for p in cfg.eval.pipelines]

    with (checked_destination(final, experiment=cfg.name, kind="run"), run_lock(final),
          staged_run_dir(final, experiment=cfg.name) as stage):
        t0 = time.perf_counter()
        train_record, adapter_cached, extra_seeds, raft_record = None, None, [], None
        if cfg.model.backend == "endpoint":  # served: the adapter (if any) is trained here, answered there
            lm, train_record, adapter_cached = connect_endpoint(cfg, data)
            if train_record is not None:
                atomic_write_json(stage / "loss_curve.json", train_record["loss_curve"])
        else:
            lm = load_generator(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device,
                                quantization="nf4" if cfg.train.method == "qlora" else None,
                                trust_remote_code=cfg.model.trust_remote_code)
        timings["model_load_seconds"] = time.perf_counter() - t0
        log.info("model %s on %s, compute dtype %s", cfg.model.name, lm.device, lm.dtype)

        tuned = lm  # the model the fine-tuned pipelines answer with
        if lm.endpoint is None and any(p.adapter and p.adapter_name == "default" for p in wanted):
            t0 = time.perf_counter()
            if cfg.train.method == "full":
                # Full fine-tuning changes every weight, so the fine-tuned pipelines get a
                # second load of the base to train; the base and rag pipelines keep the
                # untouched first one (twice the weights in memory while the run lasts).
                tuned = load_generator(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device,
                                       trust_remote_code=cfg.model.trust_remote_code)
            seeds = [cfg.train.seed + i for i in range(cfg.train.repeats)]
            # The first seed's adapter is the primary: every per-item result, comparison
            # and verdict uses it; the others give the spread across seeds.
            train_data, selection = select_training_facts(lm, data, cfg)
            train_record, adapter_cached = obtain_adapter(tuned, train_data, cfg, seed=seeds[0], name="default")
            if selection is not None:
                train_record = {**train_record, "selection": selection}
            for seed in seeds[1:]:
                record, cached = obtain_adapter(lm, train_data, cfg, seed=seed, name=f"seed{seed}")
                extra_seeds.append((f"seed{seed}", seed, record, cached))
            if extra_seeds:
                lm.model.set_adapter("default")
            timings["adapter_seconds"] = time.perf_counter() - t0
            atomic_write_json(stage / "loss_curve.json", train_record["loss_curve"])
        if "raft" in cfg.eval.pipelines:
            t0 = time.perf_counter()
            raft_record = obtain_raft_adapter(lm, data, cfg)
            timings["raft_adapter_seconds"] = time.perf_counter() - t0

        retriever = None
        if any(p.retrieval for p in wanted):
            t0 = time.perf_counter()
            embedder = load_embedder(cfg.embedder.name) if cfg.retrieval.method != "bm25" else None
            timings["embedder_load_seconds"] = time.perf_counter() - t0
            whole = cfg.scenario is not None and scenarios.SCENARIOS[cfg.scenario.name].whole_documents
            retriever = build_retriever(scenarios.readable(cfg, data.documents), embedder=embedder,
                                        method=cfg.retrieval.method, index_kind=cfg.retrieval.index,
                                        nprobe=cfg.retrieval.nprobe,
                                        # worked examples are retrieved whole, never cut
                                        chunk_size=10**6 if whole else cfg.retrieval.chunk_size,
                                        chunk_overlap=0 if whole else cfg.retrieval.chunk_overlap,
                                        batch_size=cfg.embedder.batch_size, cache=cache_dir() / "indexes",
                                        embedder_id=embedder_fingerprint(cfg.embedder.name, embedder)
                                        if embedder is not None else None)

        predictions, per_item, pipeline_costs, rows_by_pipeline = [], {}, {}, {}
        if lm.endpoint is not None:
            lm.endpoint.take_usage()
        for name in cfg.eval.pipelines:
            pipe = PIPELINES[name]
            t0 = time.perf_counter()
            record = raft_record if pipe.adapter_name == "raft" else train_record
            memo = generation_memo(lm, adapter_key=record["cache_key"] if pipe.adapter else None)
            with tqdm(total=len(questions), desc=f"answer [{name}]", unit="q") as bar:
                # the fully fine-tuned model has no adapter to switch on
                full = pipe.adapter and pipe.adapter_name == "default" and tuned is not lm
                rows = answer(tuned if full else lm, questions, adapter=pipe.adapter and not full,
                              retriever=retriever if pipe.retrieval else None,
                              top_k=cfg.retrieval.top_k, max_new_tokens=cfg.eval.max_new_tokens,
                              batch_size=cfg.eval.batch_size, multiple_choice=cfg.eval.multiple_choice,
                              adapter_name=pipe.adapter_name, memo=memo, progress=bar.update)
            wall = time.perf_counter() - t0
            rows_by_pipeline[name] = rows
            pipeline_costs[name] = {
                "wall_seconds": wall,
                "latency_p50_s": _percentile([r["latency_s"] for r in rows], 50),
                "latency_p95_s": _percentile([r["latency_s"] for r in rows], 95),
                "prompt_tokens_mean": float(np.mean([r["prompt_tokens"] for r in rows])),
                "new_tokens_mean": float(np.mean([r["new_tokens"] for r in rows])),
                "batches": memo.counts(),
            }
            if lm.endpoint is not None:  # what this run asked of the server for this arm (0 when all cached)
                pipeline_costs[name]["served_tokens"] = lm.endpoint.take_usage()

        t0 = time.perf_counter()
        with adapter_switch(lm, False):
            known = knowledge.tag_questions(
                lm, questions, samples=cfg.eval.known_samples, temperature=cfg.eval.known_temperature,
                max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size, seed=cfg.seed,
                memo=generation_memo(lm, adapter_key=None))
        timings["knowledge_tagging_seconds"] = time.perf_counter() - t0
        style_scorer = None
        if cfg.scenario is not None and cfg.scenario.name == "style":
            t0 = time.perf_counter()
            style_scorer = scenarios.StyleScorer.build(cfg, embedder=retriever.embedder if retriever is not None else None)
            timings["style_scorer_seconds"] = time.perf_counter() - t0
        for name, rows in rows_by_pipeline.items():
            scored = []
            extra = style_scorer.scores(rows, by_id) if style_scorer is not None else {}
            for row in rows:
                q = by_id[row["question_id"]]
                row["scores"] = {**metrics.score_prediction(row, q), **extra.get(q.id, {})}
                scored.append((row["scores"], q))
                predictions.append({"pipeline": name, "question": q.question, "answers": list(q.answers),
                                    "answerable": q.answerable, "choices": list(q.choices),
                                    "answer_index": q.answer_index, "task": q.task, "known": known.get(q.id), **row})
            per_item[name] = metrics.item_values(scored, known=known)

        seed_spread = {}
        if extra_seeds:
            t0 = time.perf_counter()
            seed_spread = spread_across_seeds(lm, questions, cfg, retriever, per_item, extra_seeds)
            timings["extra_seeds_seconds"] = time.perf_counter() - t0

        benchmark_result = None
        if cfg.benchmarks is not None:
            t0 = time.perf_counter()
            benchmark_result = run_benchmarks(lm, cfg, adapter_id=train_record["cache_key"] if train_record else None,
                                              tuned=tuned)
            timings["benchmarks_seconds"] = time.perf_counter() - t0

        kinds = {m: spec[2] for m, spec in metrics.METRICS.items()}
        samples = cfg.eval.bootstrap_samples
        aggregates = {p: stats.aggregate(v, kinds, samples=samples, seed=cfg.seed) for p, v in per_item.items()}
        chance = {m: float(np.mean([metrics.chance(by_id[i]) for i in v[m]]))
                  for v in per_item.values() for m in metrics.MC_METRICS.values() if m in v}
        splits = None
        if cfg.eval.dev_fraction > 0:
            part = stats.dev_test_split([q.id for q in questions], dev_fraction=cfg.eval.dev_fraction, seed=cfg.seed)
            splits = {"dev_fraction": cfg.eval.dev_fraction, "seed": cfg.seed,
                      "questions": {s: sum(v == s for v in part.values()) for s in ("dev", "test")},
                      **{s: {p: stats.aggregate({m: {i: x for i, x in vals.items() if part[i] == s}
                                                 for m, vals in v.items()}, kinds, samples=samples, seed=cfg.seed)
                             for p, v in per_item.items()} for s in ("dev", "test")}}
        comparisons = stats.compare_all(per_item, kinds, samples=cfg.eval.permutation_samples, seed=cfg.seed)
        by_knowledge = {
            "counts": {c: sum(v == c for v in known.values()) for c in knowledge.CATEGORIES},
            "samples": cfg.eval.known_samples, "temperature": cfg.eval.known_temperature,
            "pipelines": {p: {c: stats.aggregate(_restrict(per_item[p], known, c, ("contains", "mc_accuracy")), kinds,
                                                 samples=samples, seed=cfg.seed)
                              for c in knowledge.CATEGORIES if c in known.values()}
                          for p in per_item},
        }
        verdicts = decide_verdicts(per_item, cfg, questions)
        # on the verdicts' deciding metrics, also in runs without rag_finetuned (no verdict)
        decided = metrics.decision_metrics(mc_metric=cfg.eval.mc_metric, answer_metric=cfg.eval.answer_metric,
                                           questions=questions).values()
        recovery = recovery_ratios(per_item, decided=list(decided), samples=samples, seed=cfg.seed)
        scenario_result = None
        if cfg.scenario is not None:
            scenario_result = scenarios.summary(cfg, comparisons, rows_by_pipeline, by_id, style_scorer=style_scorer,
                                               train_record=train_record,
                                               index=retriever.stats() if retriever is not None else None)
        judged = None
        if cfg.eval.judge is not None:
            from harness import judge
            t0 = time.perf_counter()
            judged = judge.run_judge(cfg.eval.judge, rows_by_pipeline, by_id, per_item, samples=samples,
                                     seed=cfg.seed)
            timings["judge_seconds"] = time.perf_counter() - t0
        timings["total_seconds"] = time.perf_counter() - t_run

        n_answerable = sum(q.answerable for q in questions)
        result = {
            "experiment": cfg.name,
            "status": "complete",
            "config_hash": config_hash(cfg),
            "adapter_group": adapter_group(cfg),
            "seed": cfg.seed,
            "model": {"name": cfg.model.name, "fingerprint": lm.fingerprint, "dtype": lm.dtype, "device": lm.device,
                      "quantization": "nf4" if cfg.train.method == "qlora" else None},
            "embedder": cfg.embedder.name if retriever is not None and retriever.embedder is not None else None,
            "data": {
                "source": (f"scenario {cfg.scenario.name}" if cfg.scenario and cfg.scenario.name != "facts" else
                           cfg.data.external.format if cfg.data.external else
                           "files" if cfg.data.documents else "world"),
                "fingerprint": data.fingerprint(),
                "documents": len(data.documents), "questions": len(questions),
                "answerable": n_answerable, "unanswerable": len(questions) - n_answerable,
                "train_texts": len(data.train_texts), "train_questions": len(data.train_questions),
                **data.provenance,  # user files: skipped documents, the question set's manifest
            },
            "pipelines": aggregates,
            "chance": chance,
            "splits": splits,
            "comparisons": comparisons,
            "verdicts": verdicts,
            "recovery": recovery,
            "by_knowledge": by_knowledge,
            "scenario": scenario_result,
            "seed_spread": seed_spread,
            "benchmarks": benchmark_result,
            "metric_definitions": {m: {"label": s[0], "direction": s[1], "kind": s[2]} for m, s in metrics.METRICS.items()},
            "costs": {
                "training": None if train_record is None else {
                    **{k: v for k, v in train_record.items() if k != "loss_curve"}, "from_cache": adapter_cached},
                "raft_training": None if raft_record is None else {
                    k: v for k, v in raft_record.items() if k != "loss_curve"},
                "index": None if retriever is None else retriever.stats(),
                "pipelines": pipeline_costs,
            },
            "protocol": {
                "templates": {k: t.id for k, t in TEMPLATES.items()},
                "decoding": f"greedy, max_new_tokens={cfg.eval.max_new_tokens}",
                "multiple_choice": "acc: argmax over choices of summed continuation log-likelihood under the pipeline's "
                                   "prompt; acc_norm: the same per character of the choice (lm-eval); the verdict "
                                   f"decides on {cfg.eval.mc_metric}",
                "abstention_phrases": list(metrics.ABSTENTION_PHRASES),
                "normalisation": "SQuAD: lower case, strip punctuation and articles, collapse whitespace",
                "intervals": "95%: Wilson for proportions, percentile bootstrap for means. Differences: exact McNemar "
                             "with Newcombe's hybrid score interval (0/1 metrics) or a paired sign-flip permutation "
                             "test with the interval that inverts it (continuous); a verdict's family is Holm adjusted "
                             f"with intervals at {100 * stats.family_level(cfg.eval.alpha):.0f}% (each bound one-sided "
                             f"{100 * (1 - cfg.eval.alpha / len(stats.FAMILY)):.0f}%); other comparisons are unadjusted",
                "permutation_samples": cfg.eval.permutation_samples,
                "bootstrap_samples": samples,
                "top_k": cfg.retrieval.top_k,
                "retrieval_method": cfg.retrieval.method,
                "retrieval_index": cfg.retrieval.index,
                "n_examples": cfg.eval.n_examples,
            },
            "timings": timings,
            "provenance": provenance(),
        }
        if judged is not None:
            result["judged"] = judged  # secondary: outside the verdicts
        if lm.endpoint is not None:
            ep = lm.endpoint
            result["model"]["endpoint"] = {"base_url": ep.base_url, "served_model": ep.served_model, "api": ep.api,
                                           "mc_protocol": ep.mc_protocol, "identity": ep.identity(),
                                           "served_adapter": ep.adapters.get("default"),
                                           "requests": ep.requests}
            if ep.mc_protocol == "letter":
                result["protocol"]["multiple_choice"] = ("the letter the model generates for lettered choices "
                                                         "(served model without log-likelihoods)")
        atomic_write_yaml(stage / "config.yaml", config_to_dict(cfg))
        atomic_write_jsonl(stage / "predictions.jsonl", predictions)
        atomic_write_json(stage / "metrics.json", result)
        report.write_report(stage)
    log.info("results in %s", final)
    return final
