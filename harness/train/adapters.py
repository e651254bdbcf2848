"""Adapters: what identifies one, and obtaining it from the cache or by training it.

An adapter is determined by the model, the exact training pairs, the training settings
and the seed, never by retrieval or evaluation settings. That content is hashed into a
cache key (`adapter_key`), and a trained adapter lives under
`$HARNESS_CACHE/adapters/<key>`, so every run, grid cell or worker that asks for the same
adapter trains it once:

    record, from_cache = obtain_adapter(lm, data, cfg, seed=0)        # attached as "default"
    train_data, selection = select_training_facts(lm, data, cfg)      # train.train_categories
    raft = obtain_raft_adapter(lm, data, cfg, chunks=retriever.chunks)  # attached as "raft"
    memo = generation_memo(lm, adapter_key=record["cache_key"])       # its generations

`adapter_group(cfg)` is the coarser, config-level identity a grid groups its cells by
(grid.py): cells of one group train the same adapters.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from harness.answer.prompts import ABSTAIN
from harness.config import ExperimentConfig, TrainConfig
from harness.data.items import Dataset
from harness.evaluate import knowledge
from harness.models.generator import adapter_switch
from harness.models.local import LoadedModel
from harness.store.cache import cache_dir, content_key, discard, verify_dir, write_manifest
from harness.store.memo import Memo
from harness.store.results import atomic_write_json, run_lock
from harness.train.material import TrainError, build_examples, build_raft_examples, split_by_fact
from harness.train.methods import METHODS
from harness.train.trainer import TrainResult, launch_from_env, train_model

log = logging.getLogger(__name__)

ADAPTER_FORMAT = 2  # bump when a change to train.py makes old cached adapters invalid
RECORD = "harness-train.json"  # the training record, written into the adapter folder


def _without_empty_lora(train: dict) -> dict:
    """The train settings as keys hash them: an empty `lora` mapping left out, so keys
    made before train.lora existed stay the same."""
    return {k: v for k, v in train.items() if not (k == "lora" and not v)}


def adapter_group(cfg: ExperimentConfig) -> str:
    """Hash of what decides the adapters of a config (model, data, training): configs with
    the same group train the same adapters and share them through the cache."""
    return content_key(
        {
            "model": cfg.model.model_dump(mode="json"),
            "data": cfg.data.model_dump(mode="json"),
            "train": _without_empty_lora(cfg.train.model_dump(mode="json")),
            "scenario": cfg.scenario.model_dump(mode="json") if cfg.scenario else None,
        }
    )


def adapter_key(
    lm: LoadedModel, examples, cfg: ExperimentConfig, seed: int, dev_examples=(), dev_split: str | None = None
) -> str:
    """What determines an adapter: the model, the exact training pairs (and separate dev
    pairs), the training settings and seed, the compute dtype. Never retrieval or
    evaluation settings, nor how many seeds the run repeats. `dev_split` names a dev
    split rule that changed after adapters were cached under the key without it."""
    train = cfg.train.model_dump(mode="json")
    train.pop("repeats")
    train.pop("checkpoint_every")
    train.pop("raft")  # the RAFT settings reach an adapter through its examples only
    train = _without_empty_lora(train)
    train["seed"] = seed
    if dev_split is not None:
        train["dev_split"] = dev_split
    return content_key(
        {
            "format": ADAPTER_FORMAT,
            "model": lm.fingerprint,
            "dtype": lm.dtype,
            "device": lm.device,
            "examples": content_key([[e.prompt, e.completion] for e in examples]),
            "dev": content_key([[e.prompt, e.completion] for e in dev_examples]),
            "train": train,
        }
    )


def generation_memo(lm: LoadedModel, *, adapter_key: str | None) -> Memo:
    """The store of this model's (and adapter's, by its cache key; None for the base)
    generations and choice scores."""
    return Memo(
        "generations",
        namespace={"model": lm.fingerprint, "dtype": lm.dtype, "device": lm.device, "adapter": adapter_key},
    )


def training_examples(lm: LoadedModel, data: Dataset, t: TrainConfig, *, seed: int) -> tuple[list, list]:
    """The training pairs of the config's objective on the data, and the separate dev
    pairs: for cpt the training questions' answers; for sft second wordings of facts
    whose other wordings train (train.split_by_fact); empty for mixed, whose held-out
    pairs' facts still train through the documents (trainer's own split)."""
    if t.objective == "sft" and t.dev_fraction > 0:
        train_qs, dev_qs = split_by_fact(list(data.train_questions), dev_fraction=t.dev_fraction, seed=seed)
        return (
            build_examples(lm.tokenizer, objective="sft", questions=train_qs),
            build_examples(lm.tokenizer, objective="sft", questions=dev_qs),
        )
    examples = build_examples(
        lm.tokenizer, objective=t.objective, texts=data.train_texts, questions=data.train_questions
    )
    dev_examples = []
    if t.objective == "cpt" and t.dev_fraction > 0:
        # cpt trains on every document token; its dev loss comes from separate
        # material, the training questions' answers, when the data has them
        dev_examples = build_examples(lm.tokenizer, objective="sft", questions=data.train_questions)
    return examples, dev_examples


def _attach_cached(lm: LoadedModel, target: Path, *, name: str, method: str) -> dict | None:
    """Attach the finished adapter in `target` to `lm` under `name` (active), or, for
    `full`, replace lm's model with the cached one. Returns its training record, or None
    when `target` holds no finished adapter."""
    record_path = target / RECORD
    if not record_path.is_file():
        return None
    from peft import PeftModel

    log.info("adapter %s from cache: %s", name, target)
    if not METHODS[method].adapter:  # the whole fine-tuned model, in place of lm's
        from transformers import AutoModelForCausalLM

        lm.model = AutoModelForCausalLM.from_pretrained(
            target, dtype=next(lm.model.parameters()).dtype, device_map=lm.device
        ).eval()
    elif hasattr(lm.model, "peft_config"):
        lm.model.load_adapter(target, adapter_name=name)
        lm.model.set_adapter(name)
    else:
        lm.model = PeftModel.from_pretrained(lm.model, target, adapter_name=name)
    lm.model.eval()
    return json.loads(record_path.read_text())


def _train_settings(t: TrainConfig, *, seed: int, name: str, partial: Path, dev_examples: list) -> dict:
    """trainer.train_model's keyword arguments from the train section."""
    return dict(
        method=t.method,
        rank=t.rank,
        alpha=t.alpha,
        dropout=t.dropout,
        target_modules=t.target_modules,
        lora_options=dict(t.lora),
        lr=t.lr,
        epochs=t.epochs,
        max_steps=t.max_steps,
        batch_size=t.batch_size,
        max_length=t.max_length,
        warmup_ratio=t.warmup_ratio,
        dev_fraction=t.dev_fraction,
        early_stopping_patience=t.early_stopping_patience,
        seed=seed,
        adapter_name=name,
        checkpoint_dir=partial,
        checkpoint_every=t.checkpoint_every,
        gradient_accumulation=t.gradient_accumulation,
        max_grad_norm=t.max_grad_norm,
        gradient_checkpointing=t.gradient_checkpointing,
        schedule=t.schedule,
        weight_decay=t.weight_decay,
        packing=t.packing,
        dev_examples=dev_examples or None,
    )


def _train_into_cache(
    lm: LoadedModel, examples: list, *, settings: dict, stamp: dict, partial: Path, target: Path, desc: str
) -> dict:
    """Train in `partial/adapter`, write the record and manifest there, then rename the
    finished folder to `target` (a reader never sees a half-written adapter)."""
    out = partial / "adapter"
    shutil.rmtree(out, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    with tqdm(desc=desc, unit="step") as bar:
        result: TrainResult = train_model(lm, examples, out_dir=out, progress=bar, **settings)
    record = {**result.to_json(), **stamp}
    atomic_write_json(out / RECORD, record)
    write_manifest(out)
    out.rename(target)
    shutil.rmtree(partial)
    return record


def obtain_adapter(
    lm: LoadedModel,
    data: Dataset,
    cfg: ExperimentConfig,
    *,
    seed: int,
    name: str = "default",
    examples: list | None = None,
    dev_examples: list | None = None,
) -> tuple[dict, bool]:
    """Attach the adapter for this config and seed to `lm` under `name` (and make it the
    active one), training it only if not cached. Returns (training record, from cache).
    The training pairs are the config's objective on the data unless `examples` are given
    (the RAFT adapter's, with `dev_examples` split from them by fact)."""
    t = cfg.train
    # sft's and RAFT's dev pairs come from split_by_fact, which holds no fact out of
    # training; named in the key so that adapters cached under the whole-pair split are
    # not reused
    dev_split = "by-fact" if t.dev_fraction > 0 and (examples is not None or t.objective == "sft") else None
    if examples is None:
        examples, dev_examples = training_examples(lm, data, t, seed=seed)
    dev_examples = list(dev_examples or [])
    key = adapter_key(lm, examples, cfg, seed, dev_examples, dev_split)
    target = cache_dir() / "adapters" / key[:32]
    if target.is_dir() and not verify_dir(target):  # damaged or unfinished: trained again
        discard(target)
    record = _attach_cached(lm, target, name=name, method=t.method)
    if record is not None:
        return record, True
    # A stable partial folder (not per process), so a run killed mid-training resumes
    # from its last checkpoint; the lock keeps two live processes from training it at once.
    partial = target.with_name(f"{target.name}.partial")
    settings = _train_settings(t, seed=seed, name=name, partial=partial, dev_examples=dev_examples)
    if dev_split is not None and not dev_examples:  # no fact asked two ways: no dev split at all
        settings["dev_fraction"] = 0.0
    stamp = {"adapter_dir": str(target), "cache_key": key, "seed": seed, "method": t.method}
    if launch_from_env().process_rank > 0:  # a data-parallel helper: the first process owns the files
        result = train_model(lm, examples, out_dir=partial / "adapter", **settings)
        return {**result.to_json(), **stamp}, False
    with run_lock(partial, wait=True):
        record = _attach_cached(lm, target, name=name, method=t.method)
        if record is not None:  # another process finished it while this one waited
            return record, True
        label = METHODS[t.method].label
        record = _train_into_cache(
            lm,
            examples,
            settings=settings,
            stamp=stamp,
            partial=partial,
            target=target,
            desc=f"train {label} ({t.objective}, seed {seed})",
        )
    return record, False


def select_training_facts(lm: LoadedModel, data: Dataset, cfg: ExperimentConfig) -> tuple[Dataset, dict | None]:
    """The training questions kept by train.train_categories, with unknown ones relabelled
    "I don't know" when train.unknown_as is abstain; tags from the base model (adapter
    off). Returns the data unchanged, and None, when neither option is set."""
    t = cfg.train
    if set(t.train_categories) == set(knowledge.CATEGORIES) and t.unknown_as == "gold":
        return data, None
    with adapter_switch(lm, False):
        tags = knowledge.tag_questions(
            lm,
            data.train_questions,
            samples=cfg.eval.known_samples,
            temperature=cfg.eval.known_temperature,
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            seed=cfg.seed,
            memo=generation_memo(lm, adapter_key=None),
        )
    kept = []
    for q in data.train_questions:
        category = tags.get(q.id, "unknown")
        if category not in t.train_categories:
            continue
        if category == "unknown" and t.unknown_as == "abstain":
            q = dataclasses.replace(q, answers=(ABSTAIN,))
        kept.append(q)
    tagged = {c: sum(v == c for v in tags.values()) for c in knowledge.CATEGORIES}
    if not kept:
        raise TrainError(
            f"train.train_categories: no training question is {' or '.join(t.train_categories)} "
            f"for the base model (tagged: {', '.join(f'{c} {n}' for c, n in tagged.items())})"
        )
    summary = {
        "tagged": tagged,
        "kept": len(kept),
        "relabelled_abstain": sum(q.answers == (ABSTAIN,) for q in kept),
        "train_categories": list(t.train_categories),
        "unknown_as": t.unknown_as,
    }
    return dataclasses.replace(data, train_questions=tuple(kept)), summary


def obtain_raft_adapter(lm: LoadedModel, data: Dataset, cfg: ExperimentConfig, *, chunks: list) -> dict:
    """The RAFT adapter (see train.build_raft_examples) trained on `chunks` (the
    retriever's, so that training shows the passages retrieval will), attached as "raft"
    beside the default one, which stays active."""
    if not METHODS[cfg.train.method].adapter:  # it would train every weight of the base the other pipelines use
        raise TrainError(
            "eval.pipelines: 'raft' trains a LoRA adapter beside the default one; it cannot run with train.method: full"
        )
    r = cfg.train.raft
    train_qs, dev_qs = split_by_fact(
        list(data.train_questions), dev_fraction=cfg.train.dev_fraction, seed=cfg.train.seed
    )
    examples, dev = (
        build_raft_examples(
            lm.tokenizer, questions=qs, chunks=chunks, passages=r.passages, gold_share=r.gold_share, seed=r.seed
        )
        if qs
        else []
        for qs in (train_qs, dev_qs)
    )
    if not examples:
        raise TrainError(
            "eval.pipelines has 'raft', but no training question has a gold chunk in the documents "
            "(RAFT needs training questions whose evidence or answer is in a document)"
        )
    before = getattr(lm.model, "active_adapter", None) if hasattr(lm.model, "peft_config") else None
    record, cached = obtain_adapter(
        lm, data, cfg, seed=cfg.train.seed, name="raft", examples=examples, dev_examples=dev
    )
    if before is not None:
        lm.model.set_adapter(before)
    return {
        **record,
        "from_cache": cached,
        "raft": r.model_dump(mode="json"),
        "examples": len(examples),
        "dev_examples": len(dev),
    }
