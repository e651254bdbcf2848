"""Forgetting checks: MMLU and HellaSwag subsets scored by lm-evaluation-harness.

lm-eval is the scoring engine, through its Python API and the already-loaded model
object: the base is loaded once, and each adapter is switched on, scored and switched off
in turn (`harness.models.generator.adapter_switch`), where a plain `lm_eval` run reloads the base
for every adapter. The protocol is lm-eval's own (prompt, choices, `acc` for MMLU, `acc`
and `acc_norm` for HellaSwag); the task definitions for local data ship in
`harness/evaluate/benchmark_tasks/` and are recorded with the results.

    prepared = prepare_tasks(data_dir=..., mmlu_subjects=[...], mmlu_items=20, ...)
    scores = score_tasks(lm, prepared, adapter_id=None, num_fewshot=0, batch_size=16)

Data, in this order: a local folder (config or `HARNESS_BENCHMARK_DATA`) with
`mmlu/{test,dev}.jsonl` and `hellaswag/validation.jsonl`; else lm-eval's hub tasks when
the machine is online (the first N items); else each benchmark is skipped with the
reason and the fix. A seeded subset is written once as JSONL, with a task YAML beside it,
under the cache, so `lm_eval --include_path DIR --tasks NAME` runs exactly the same
items. Scores are cached per (model, adapter, task, items, protocol).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.models.local import LoadedModel, compute_context
from harness.store.cache import cache_dir, content_key, read_bytes, write_bytes
from harness.store.results import read_jsonl

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "benchmark_tasks"
DATA_ENV = "HARNESS_BENCHMARK_DATA"


@dataclass(frozen=True)
class BenchmarkTask:
    name: str  # the lm-eval task name
    benchmark: str  # "mmlu" or "hellaswag"
    label: str  # e.g. "mmlu/anatomy"
    n_items: int
    metrics: tuple[str, ...]
    fingerprint: str  # hash of the task definition and its items


@dataclass
class PreparedTasks:
    source: str  # "local:<dir>" or "hub"
    task_dir: str | None  # folder holding the task YAMLs (local data)
    tasks: list[BenchmarkTask] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def resolve_data_dir(configured: str | None) -> Path | None:
    """The local benchmark folder: the config's, else $HARNESS_BENCHMARK_DATA, else None."""
    for candidate in (configured, os.environ.get(DATA_ENV)):
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser().resolve()
    return None


def _subset(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    """A seeded subset in the original order (all rows when n is None or too large)."""
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def _write_task(out: Path, name: str, template: str, data_files: dict[str, Path], extra: dict) -> str:
    config = yaml.safe_load((TEMPLATES / template).read_text())
    config.update(task=name, dataset_kwargs={"data_files": {k: str(v) for k, v in data_files.items()}}, **extra)
    text = yaml.safe_dump(config, sort_keys=True)
    (out / f"{name}.yaml").write_text(text)
    h = hashlib.sha256(text.encode())
    for path in data_files.values():
        h.update(path.read_bytes())
    return h.hexdigest()


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_tasks(*, data_dir, mmlu_subjects, mmlu_items, hellaswag, hellaswag_items) -> PreparedTasks:
    """Without local data: lm-eval's hub tasks when online, else every benchmark skipped
    with the reason and the fix."""
    fix = (
        f"put mmlu/ and hellaswag/ JSONL in a folder and set benchmarks.data_dir or ${DATA_ENV} "
        "(see README), or run online so lm-eval can fetch its hub tasks"
    )
    wanted = [f"mmlu/{s}" for s in mmlu_subjects] + (["hellaswag"] if hellaswag else [])
    if _offline():
        reason = f"no local benchmark data ({data_dir or 'benchmarks.data_dir unset'}) and the hub is offline"
        return PreparedTasks(
            source="none", task_dir=None, skipped=[{"benchmark": w, "reason": reason, "fix": fix} for w in wanted]
        )
    tasks = [
        BenchmarkTask(
            name=f"mmlu_{s}",
            benchmark="mmlu",
            label=f"mmlu/{s}",
            n_items=mmlu_items or 0,
            metrics=("acc",),
            fingerprint=f"hub:mmlu_{s}:{mmlu_items}",
        )
        for s in mmlu_subjects
    ]
    if hellaswag:
        tasks.append(
            BenchmarkTask(
                name="hellaswag",
                benchmark="hellaswag",
                label="hellaswag",
                n_items=hellaswag_items or 0,
                metrics=("acc", "acc_norm"),
                fingerprint=f"hub:hellaswag:{hellaswag_items}",
            )
        )
    return PreparedTasks(source="hub", task_dir=None, tasks=tasks)


def _mmlu_tasks(prepared: PreparedTasks, local: Path, out: Path, *, mmlu_subjects, mmlu_items, seed) -> None:
    """Each MMLU subject's item subset and task YAML, or the reason it is skipped."""
    mmlu_test, mmlu_dev = local / "mmlu" / "test.jsonl", local / "mmlu" / "dev.jsonl"
    if mmlu_subjects and not mmlu_test.is_file():
        prepared.skipped += [
            {
                "benchmark": f"mmlu/{s}",
                "reason": f"{mmlu_test} not found",
                "fix": "add mmlu/test.jsonl (subject, question, choices, answer)",
            }
            for s in mmlu_subjects
        ]
    elif mmlu_subjects:
        test_rows, dev_rows = read_jsonl(mmlu_test), (read_jsonl(mmlu_dev) if mmlu_dev.is_file() else [])
        for subject in mmlu_subjects:
            rows = [r for r in test_rows if r.get("subject") == subject]
            if not rows:
                prepared.skipped.append(
                    {
                        "benchmark": f"mmlu/{subject}",
                        "reason": f"no items for this subject in {mmlu_test}",
                        "fix": "check the subject name against the file's 'subject' field",
                    }
                )
                continue
            items = _subset(rows, mmlu_items, seed)
            name = f"harness_mmlu_{subject}"
            files = {"test": out / f"{name}.test.jsonl", "dev": out / f"{name}.dev.jsonl"}
            files["test"].write_text("".join(json.dumps(r) + "\n" for r in items))
            files["dev"].write_text("".join(json.dumps(r) + "\n" for r in dev_rows if r.get("subject") == subject))
            description = (
                f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
            )
            fp = _write_task(out, name, "mmlu.yaml", files, {"description": description})
            prepared.tasks.append(
                BenchmarkTask(
                    name=name,
                    benchmark="mmlu",
                    label=f"mmlu/{subject}",
                    n_items=len(items),
                    metrics=("acc",),
                    fingerprint=fp,
                )
            )


def _hellaswag_task(prepared: PreparedTasks, local: Path, out: Path, *, hellaswag_items, seed) -> None:
    """HellaSwag's item subset and task YAML, or the reason it is skipped."""
    val = local / "hellaswag" / "validation.jsonl"
    if not val.is_file():
        prepared.skipped.append(
            {
                "benchmark": "hellaswag",
                "reason": f"{val} not found",
                "fix": "add hellaswag/validation.jsonl (activity_label, ctx, endings, label)",
            }
        )
    else:
        items = _subset(read_jsonl(val), hellaswag_items, seed)
        name = "harness_hellaswag"
        files = {"validation": out / f"{name}.validation.jsonl"}
        files["validation"].write_text("".join(json.dumps(r) + "\n" for r in items))
        fp = _write_task(out, name, "hellaswag.yaml", files, {})
        prepared.tasks.append(
            BenchmarkTask(
                name=name,
                benchmark="hellaswag",
                label="hellaswag",
                n_items=len(items),
                metrics=("acc", "acc_norm"),
                fingerprint=fp,
            )
        )


def prepare_tasks(
    *,
    data_dir: str | None,
    mmlu_subjects,
    mmlu_items: int | None,
    hellaswag: bool,
    hellaswag_items: int | None,
    seed: int,
) -> PreparedTasks:
    """Write the item subsets and task YAMLs (local data), or name hub tasks, or skip."""
    local = resolve_data_dir(data_dir)
    if local is None:
        return _hub_tasks(
            data_dir=data_dir,
            mmlu_subjects=mmlu_subjects,
            mmlu_items=mmlu_items,
            hellaswag=hellaswag,
            hellaswag_items=hellaswag_items,
        )
    prepared = PreparedTasks(source=f"local:{local}", task_dir=None)
    key = content_key(
        [
            str(local),
            list(mmlu_subjects),
            mmlu_items,
            hellaswag,
            hellaswag_items,
            seed,
            sorted(p.name for p in TEMPLATES.iterdir()),
        ],
        files=tuple(t.read_bytes() for t in sorted(TEMPLATES.glob("*.yaml"))),
    )
    out = cache_dir() / "benchmarks" / key[:24]
    out.mkdir(parents=True, exist_ok=True)
    prepared.task_dir = str(out)

    _mmlu_tasks(prepared, local, out, mmlu_subjects=mmlu_subjects, mmlu_items=mmlu_items, seed=seed)
    if hellaswag:
        _hellaswag_task(prepared, local, out, hellaswag_items=hellaswag_items, seed=seed)
    return prepared


def _score_key(lm: LoadedModel, adapter_id: str | None, task: BenchmarkTask, num_fewshot: int) -> str:
    return content_key(
        {
            "model": lm.fingerprint,
            "dtype": lm.dtype,
            "device": lm.device,
            "adapter": adapter_id,
            "task": task.fingerprint,
            "fewshot": num_fewshot,
            "lm_eval": importlib.metadata.version("lm_eval"),
        }
    )


def score_tasks(
    lm: LoadedModel, prepared: PreparedTasks, *, adapter_id: str | None, num_fewshot: int, batch_size: int
) -> dict[str, dict]:
    """Score every prepared task with whatever adapter state `lm.model` is in now.

    Returns {task label: {"acc": mean, "acc_norm": mean?, "n": items, "items": {doc_id:
    {"acc": 0/1, ...}}, "from_cache": bool, "protocol": {...}}}; results come from the
    cache when this model, adapter, task and protocol were scored before.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    out: dict[str, dict] = {}
    todo = []
    for task in prepared.tasks:
        path = cache_dir() / "benchmark_scores" / f"{_score_key(lm, adapter_id, task, num_fewshot)}.json"
        stored = read_bytes(path)  # None when absent, or damaged (then discarded and scored again)
        if stored is not None:
            out[task.label] = {**json.loads(stored), "from_cache": True}
        else:
            todo.append((task, path))
    if not todo:
        return out
    # Indexing lm-eval's ~13,000 built-in task files takes ~30 s on a small CPU; local
    # tasks need only their own folder.
    manager = (
        TaskManager(include_path=prepared.task_dir, include_defaults=False) if prepared.task_dir else TaskManager()
    )
    wrapped = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size, device=lm.device)
    limit = None if prepared.task_dir else max(t.n_items for t, _ in todo) or None
    with compute_context(lm):
        raw = simple_evaluate(
            model=wrapped,
            tasks=[t.name for t, _ in todo],
            task_manager=manager,
            num_fewshot=num_fewshot,
            limit=limit,
            log_samples=True,
            bootstrap_iters=0,
            random_seed=0,
            numpy_random_seed=1234,
            torch_random_seed=1234,
            fewshot_random_seed=1234,
        )
    for task, path in todo:
        samples = raw["samples"][task.name]
        items = {str(s["doc_id"]): {m: float(s[m]) for m in task.metrics} for s in samples}
        result = {m: sum(v[m] for v in items.values()) / len(items) for m in task.metrics}
        result.update(
            n=len(items),
            items=items,
            protocol={
                "task": task.name,
                "version": raw["versions"].get(task.name),
                "num_fewshot": raw["n-shot"].get(task.name),
                "lm_eval": importlib.metadata.version("lm_eval"),
                "output_type": "multiple_choice (log-likelihood)",
            },
        )
        write_bytes(path, json.dumps(result).encode())
        out[task.label] = {**result, "from_cache": False}
    return out
