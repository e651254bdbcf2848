"""`harness init DOCS`: a starter config for a folder of documents, with a run-time estimate.

    path, estimate = write_starter_config("docs/", out="harness.yaml", questions="q/")

The config trains LoRA on the training questions that `harness questions` writes
(`sft`), retrieves with MiniLM over chunks of the embedder's tokens, and answers with the
embedded SmolLM2. The estimate uses the rates measured on this project's quiet 2-core CPU
(README, Performance): LoRA training 70-170 tokens/s, generation about 100 tokens/s, or
with `rates` (`harness init --measure`, run/probe.py) those measured on this machine just
now, which a busy shared machine needs. The header and the printed line show one string
(`estimate["run_time"]`) and say where the rates came from. The
number of questions is what the cloze generator would build from these documents (it
needs no model, so counting them is cheap); token counts are words x `TOKENS_PER_WORD`.
An existing config is never replaced without `force`, and then it is kept as
`<out>.backup-<date>-<time>`.
"""

from __future__ import annotations

import datetime
import logging
import math
import shutil
from pathlib import Path

import yaml

from harness.config import ConfigError, parse_config

log = logging.getLogger(__name__)

TOKENS_PER_WORD = 1.3  # SmolLM2's BPE on English prose, roughly
TRAIN_TOKENS_PER_SECOND = (70, 170)  # LoRA on SmolLM2-135M, 2 CPU cores, float32 (README)
GENERATE_TOKENS_PER_SECOND = 100  # greedy, batch 32 (README, benchmarks/bench_generation.py)
PROMPT_TOKENS = 60  # the chat template and instructions around each training question
FIXED_SECONDS = 60  # model conversion/load, embedder load, index, report
MAX_QUESTIONS = 200

STARTER = {
    "model": {"name": "smollm2"},
    "embedder": {"name": "minilm"},
    "train": {
        "objective": "sft",
        "epochs": 3,
        "batch_size": 8,
        "lr": 0.001,
        "max_length": 192,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    },
    "retrieval": {"chunk_size": 128, "chunk_overlap": 16, "top_k": 3},
    "eval": {"max_new_tokens": 16},  # replaced by answer_budget(documents)
}
MAX_NEW_TOKENS_RANGE = (16, 64)
MEASURED_BAND = 1.25  # a measured training rate r is estimated as r / 1.25 to r * 1.25
PIPELINES = 4  # base, finetuned, rag, rag_finetuned


def answer_budget(docs) -> int:
    """`eval.max_new_tokens` for these documents' questions: enough for 90% of the
    complete-style items to be restated whole and then answered (a model that repeats
    the sentence before its answer, as base models do, still reaches the answer), in
    `MAX_NEW_TOKENS_RANGE`."""
    from harness.questions.build import build_question_set

    rows = build_question_set(docs, cloze_style="complete", seed=0, unanswerable_share=0).eval
    words = sorted(len(r["evidence"].split()) for r in rows) or [0]
    low, high = MAX_NEW_TOKENS_RANGE
    return max(low, min(high, math.ceil(TOKENS_PER_WORD * words[int(0.9 * (len(words) - 1))]) + 4))


def estimate_run(
    *,
    train_tokens: int,
    epochs: int,
    n_questions: int,
    max_new_tokens: int,
    train_rates: tuple[float, float] = TRAIN_TOKENS_PER_SECOND,
    generate_rate: float = GENERATE_TOKENS_PER_SECOND,
) -> dict:
    """Seconds for training (a range over the rates, slow to fast), answering and the rest."""
    trained = epochs * train_tokens
    train_s = [trained / r for r in reversed(train_rates)]
    # generation, plus as much again for the 4-way choice scoring and the longer RAG prompts
    answer_s = 2 * PIPELINES * n_questions * max_new_tokens / generate_rate
    low, high = (FIXED_SECONDS + t + answer_s for t in train_s)
    return {
        "train_tokens": trained,
        "train_seconds": [round(t) for t in train_s],
        "answer_seconds": round(answer_s),
        "total_seconds": [round(low), round(high)],
    }


def _minutes(*seconds: float) -> str:
    """'3 min', or a range '3-7 min'."""
    values = list(dict.fromkeys(max(1, math.ceil(s / 60)) for s in seconds))
    return "-".join(map(str, values)) + " min"


def _header(documents, questions: Path, *, raw: dict, estimate: dict, n_docs: int, skipped: int) -> list[str]:
    """The config's comment header: the documents, the estimate and where its rates came
    from, and what the starter's choices mean."""
    words, n_eval, epochs = estimate["words"], estimate["questions"], STARTER["train"]["epochs"]
    (slow, fast), generate_rate = (
        estimate["rates"]["train_tokens_per_second"],
        estimate["rates"]["generate_tokens_per_second"],
    )
    return [
        f"# Starter config from `harness init {documents}` ({datetime.date.today().isoformat()}): "
        f"{n_docs} documents, {words:,} words" + (f", {skipped} unreadable file(s) skipped" if skipped else ""),
        f"# (about {round(words * TOKENS_PER_WORD):,} tokens). `harness questions {documents} --out {questions}` "
        f"builds about {n_eval} questions and {estimate['train_questions']} training questions.",
        f"# Estimated run time, rates {estimate['rates']['source']}: {estimate['run_time']}: training "
        f"{_minutes(*estimate['train_seconds'])}",
        f"# ({epochs} epochs x ~{estimate['train_tokens'] // epochs:,} tokens at {slow}-{fast} tokens/s), answering "
        f"~{_minutes(estimate['answer_seconds'])} ({PIPELINES} pipelines x {n_eval} questions at "
        f"~{generate_rate:g} tokens/s). Fewer epochs (train.epochs) or fewer questions shorten it.",
        f"# eval.max_new_tokens: {raw['eval']['max_new_tokens']}, room for 90% of these sentences restated whole and "
        "then answered (the report counts answers cut at the cap).",
        "# train.objective: sft learns from the training questions; cpt would train on the documents themselves.",
        "# retrieval.chunk_size and chunk_overlap count the embedder's tokens (MiniLM reads at most 254).",
    ]


def write_starter_config(
    documents: str | Path,
    *,
    out: str | Path = "harness.yaml",
    questions: str | Path = "q",
    force: bool = False,
    rates: dict | None = None,
) -> tuple[Path, dict]:
    """Write a config for `documents` to `out` (refusing to overwrite one unless `force`);
    returns its path and the estimate written into its header. `rates` (run.probe's
    `measure_rates`) replaces the assumed speeds with ones measured on this machine."""
    from harness.data.ingest import read_documents
    from harness.questions.build import build_question_set

    out, questions = Path(out), Path(questions)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; --out names the config file to write")
    if out.exists() and not force:
        raise ConfigError(
            f"{out}: already exists; pass --force to replace it (it is kept as "
            f"{out.name}.backup-<date>-<time>) or --out another name"
        )
    docs, skipped = read_documents(documents, skip_unreadable=True)
    words = sum(len(d.text.split()) for d in docs)
    qset = build_question_set(docs, generator="cloze", seed=0, max_questions=MAX_QUESTIONS)
    n_eval, n_train = len(qset.eval), len(qset.train)
    train_words = sum(len(t["question"].split()) + len(t["answers"][0].split()) for t in qset.train)
    raw = {
        "name": Path(documents).resolve().name or "my_documents",
        **STARTER,
        "eval": {**STARTER["eval"], "max_new_tokens": answer_budget(docs)},
        "data": {
            "documents": str(documents),
            "questions": str(questions / "questions.jsonl"),
            "train_questions": str(questions / "train_questions.jsonl"),
            "skip_unreadable": bool(skipped),
        },
    }
    parse_config(raw, source=str(out))  # what is written must validate
    train_rates, generate_rate = TRAIN_TOKENS_PER_SECOND, GENERATE_TOKENS_PER_SECOND
    if rates:  # measured just now: a band of MEASURED_BAND either side for the probe's noise
        measured = rates["train_tokens_per_second"]
        train_rates = (round(measured / MEASURED_BAND), round(measured * MEASURED_BAND))
        generate_rate = rates["generate_tokens_per_second"]
    estimate = estimate_run(
        train_tokens=round(train_words * TOKENS_PER_WORD) + n_train * PROMPT_TOKENS,
        epochs=STARTER["train"]["epochs"],
        n_questions=n_eval,
        max_new_tokens=raw["eval"]["max_new_tokens"],
        train_rates=train_rates,
        generate_rate=generate_rate,
    )
    estimate.update(documents=len(docs), words=words, skipped=len(skipped), questions=n_eval, train_questions=n_train)
    lo, hi = estimate["total_seconds"]
    estimate["run_time"] = _minutes(lo, hi)  # the one string the header and `harness init`'s line both show
    estimate["rates"] = {
        "train_tokens_per_second": list(train_rates),
        "generate_tokens_per_second": generate_rate,
        "source": "measured on this machine (harness init --measure)"
        if rates
        else "assumed for a quiet 2-core CPU (README, Performance)",
    }
    header = _header(documents, questions, raw=raw, estimate=estimate, n_docs=len(docs), skipped=len(skipped))
    from harness.store.results import atomic_write_text, backup_path

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # --force: the config it replaces is kept, copied first so a failed write loses nothing
        backup = backup_path(out)
        shutil.copy2(out, backup)
        log.warning("%s: replaced (--force); the config that was there is kept as %s", out, backup)
    atomic_write_text(out, "\n".join(header) + "\n" + yaml.safe_dump(raw, sort_keys=False))
    return out, estimate
