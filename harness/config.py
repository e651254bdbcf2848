"""Typed, frozen experiment configuration.

An experiment is one YAML file whose keys equal the field names below. Unknown keys and
wrong types are errors that name the key; loading a config has no side effects (it seeds
nothing, creates no directory). `load_config(path)` is the one entry point;
`config_hash(cfg)` fingerprints the resolved config for provenance. The command line's
`--set train.rank=4` (repeatable) sets one dotted key before validation:

    cfg = load_config("experiments/demo.yaml", overrides=["train.rank=4"])
    cfg.train.rank, cfg.retrieval.top_k
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PIPELINE_NAMES = ("base", "finetuned", "rag", "rag_finetuned")  # the default four; "raft" is opt-in
# The scenarios that build their own items and train on their worked examples (sft only).
# config.py imports nothing of harness, so this is a copy of what the scenario registry
# (harness/evaluate/scenarios.py) says; tests/test_registries.py keeps the two equal.
SCENARIOS_WITH_OWN_ITEMS = ("updated", "style", "terminology", "format", "private")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and key."""


def base_url_problem(url: str) -> str | None:
    """Why `url` cannot be an endpoint's address, or None: an http:// or https:// address
    with a host; no user name or password in it (results record the address; the key goes
    in the variable model.api_key_env names), no query or fragment, no space or control
    character."""
    if not url or any(c.isspace() or not c.isprintable() for c in url):
        return "a server address without spaces or control characters, e.g. http://127.0.0.1:8000/v1"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"{url!r} is not an http:// or https:// address, e.g. http://127.0.0.1:8000/v1"
    if parts.username is not None or parts.password is not None:  # not repeated: it may hold a password
        return "the address holds a user name or password; give the key through model.api_key_env instead"
    try:
        parts.port
    except ValueError:
        return f"{url!r} has an invalid port"
    if not parts.hostname:
        return f"{url!r} names no host"
    if parts.query or parts.fragment:
        return f"{url!r} has a query or fragment; give the server's API root, e.g. http://127.0.0.1:8000/v1"
    return None


class _Section(BaseModel):
    # inf and nan are never a meaningful setting (`alpha: .inf` would train nothing useful)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """The generator: an embedded name (`smollm2`, `gemma3-270m`), a hub id, a local
    directory, or a path to a .gguf file."""

    name: str = "smollm2"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # backend: hf runs the model in this process; endpoint asks an OpenAI-compatible server
    # (vLLM, llama.cpp, ...) at base_url for `served_model`. `name` is then still the local
    # model whose tokenizer renders the prompts and on which adapters are trained.
    backend: Literal["hf", "endpoint"] = "hf"
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    served_model: str | None = None  # the id the server lists under /v1/models
    # the fine-tuned arms' adapter as the server names it (vLLM --lora-modules NAME=PATH)
    served_adapter: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the API key, never the key
    api: Literal["completions", "chat"] = "completions"
    # multiple choice through an endpoint: summed log-likelihood of each choice (completions
    # with echo and logprobs: vLLM, llama.cpp), or the letter the model generates
    mc_protocol: Literal["loglikelihood", "letter"] = "loglikelihood"
    concurrency: int = Field(4, ge=1, le=256)
    # seconds per request in all (connect, headers and body), not per read; at most an hour
    timeout: float = Field(120.0, gt=0, le=3600)
    # per request, with exponential backoff of at most 8 s a wait: 20 retries wait under 3.5 minutes
    retries: int = Field(3, ge=0, le=20)

    @field_validator("base_url")
    @classmethod
    def _server_address(cls, url: str | None) -> str | None:
        problem = None if url is None else base_url_problem(url)
        if problem:
            raise ValueError(problem)
        return url

    @model_validator(mode="after")
    def _endpoint_fields(self) -> "ModelConfig":
        if self.backend == "endpoint" and not (self.base_url and self.served_model):
            raise ValueError("model.backend 'endpoint' needs model.base_url and model.served_model")
        if self.backend == "hf" and (self.base_url or self.served_model or self.served_adapter or self.api_key_env):
            raise ValueError(
                "model.base_url, served_model, served_adapter and api_key_env need model.backend: endpoint"
            )
        if self.api == "chat" and self.mc_protocol != "letter":
            raise ValueError("model.api 'chat' has no log-likelihoods: set model.mc_protocol: letter")
        return self

    # Run Python code shipped with a hub model (its own modelling files): off unless asked.
    trust_remote_code: bool = False


class EmbedderConfig(_Section):
    """The retrieval embedder: `minilm` (embedded all-MiniLM-L6-v2), `hashing` (a
    deterministic bag-of-words baseline used by the tests), a hub id or a local dir."""

    name: str = "minilm"
    batch_size: int = Field(64, ge=1)


class WorldConfig(_Section):
    """Size of the built-in fictional world (see harness/data/world.py)."""

    seed: int = 0
    n_people: int = Field(8, ge=1)
    n_organisations: int = Field(6, ge=0)
    n_places: int = Field(6, ge=0)
    paraphrases: int = Field(2, ge=0)
    train_questions_per_fact: int = Field(2, ge=1, le=2)
    n_unanswerable: int = Field(16, ge=0)
    n_general: int = Field(0, ge=0)  # general-knowledge questions the base may know (regression probes)


class ExternalDataConfig(_Section):
    """A public dataset in its own layout: `tofu` (entities.jsonl, qa.jsonl) or
    `fictional_knowledge` (passages.jsonl, probes.jsonl); see harness/data/items.py."""

    format: Literal["tofu", "fictional_knowledge"]
    path: str
    max_entities: int | None = Field(None, ge=1)
    seed: int = 0
    paraphrases: int = Field(0, ge=0)  # fictional_knowledge: rewritten passages added to training text
    # fictional_knowledge: draw entities only among passages that have rewritten copies (a
    # third of them), so every cell of a paraphrase sweep evaluates the same entities
    only_paraphrased: bool = False


class DataConfig(_Section):
    """Either the built-in world, or the user's own files.

    `documents`: a folder of .pdf/.docx/.html/.md/.txt files, or a JSONL file with `id` and `text`.
    `questions`: JSONL with `question`, `answers`, optional `choices` and `answer_index`.
    `train_questions`: JSONL of the same form, used by the `sft` objective.
    """

    world: WorldConfig = WorldConfig()
    external: ExternalDataConfig | None = None
    documents: str | None = None
    questions: str | None = None
    train_questions: str | None = None
    # a folder of documents: leave out files that cannot be read (no text layer, encrypted,
    # unknown type...) instead of stopping; the results list them
    skip_unreadable: bool = False
    max_questions: int | None = Field(None, ge=1)
    # Restatements per fact (world) or rewritten copies per passage (external data) added to
    # the training text, whichever the source; when set it overrides world.paraphrases and
    # external.paraphrases, so one grid axis (`data.paraphrases`) sweeps any source.
    paraphrases: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> "DataConfig":
        if (self.documents is None) != (self.questions is None):
            raise ValueError("data.documents and data.questions are given together or not at all")
        if self.external is not None and self.documents is not None:
            raise ValueError("data.external and data.documents/questions are alternatives: give one")
        return self


class RaftConfig(_Section):
    """RAFT (Zhang et al., COLM 2024): a second adapter trained on the training questions
    with `passages` chunks in the prompt: the gold chunk among distractors in a share
    `gold_share` of examples, distractors alone in the rest. Used by the `raft` pipeline
    (that adapter, retrieval on)."""

    passages: int = Field(4, ge=1)
    gold_share: float = Field(0.8, ge=0, le=1)
    seed: int = 0


class TrainConfig(_Section):
    """Fine-tuning. `cpt`: next-token loss on every token of the training text (documents
    plus restatements), in windows of `max_length`. `sft`: question -> answer with the
    loss on the answer only. `mixed`: both in one adapter."""

    objective: Literal["cpt", "sft", "mixed"] = "sft"
    rank: int = Field(16, ge=1, le=4096)
    alpha: float = Field(32.0, gt=0, le=65536)
    dropout: float = Field(0.05, ge=0, lt=1)
    # a list of module names, or "all-linear" (every linear layer but the output head)
    target_modules: str | tuple[str, ...] = ("q_proj", "v_proj")
    # Any other option of peft.LoraConfig, passed through as is and checked by peft before
    # the run starts (harness validate): {use_dora: true} trains DoRA, {use_rslora: true}
    # rank-stabilised LoRA, {init_lora_weights: pissa} PiSSA. rank, alpha, dropout and
    # target_modules stay the keys above. The options are part of the adapter's cache key
    # (an empty mapping leaves the key as it was before the option existed).
    lora: dict[str, Any] = Field(default_factory=dict)
    lr: float = Field(1e-3, gt=0, le=1)  # above 1 no optimiser here converges
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(128, ge=8)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    # Share held out for the dev loss, never whole facts: cpt holds out each document's
    # end (or uses the training questions), sft and RAFT second wordings of facts that
    # still train (train.split_by_fact), mixed a share of its pairs (documents all train).
    dev_fraction: float = Field(0.1, ge=0, lt=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    seed: int = 0
    # lora: LoRA on the base as loaded. qlora: the base loaded in 4-bit NF4 (bitsandbytes),
    # LoRA on top; every pipeline of the run then uses that 4-bit base.
    # full: every weight trains (no adapter); the base pipelines then answer from a
    # second, untouched load of the base model.
    method: Literal["lora", "qlora", "full"] = "lora"
    # Trainer settings (transformers' Trainer): an optimizer step sees batch_size *
    # gradient_accumulation rows; max_grad_norm 0 turns clipping off; packing joins short
    # documents into full windows (cpt/mixed), separated by boundary tokens.
    gradient_accumulation: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, ge=0)
    gradient_checkpointing: bool = False
    schedule: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    packing: bool = False
    # Gekhman et al.: train only on the training facts of some categories of what the base
    # model already knows (knowledge.py), and/or teach "I don't know" for the unknown ones.
    # sft only; tagging uses eval.known_samples and eval.known_temperature.
    train_categories: tuple[Literal["known", "weakly_known", "unknown"], ...] = ("known", "weakly_known", "unknown")
    unknown_as: Literal["gold", "abstain"] = "gold"
    raft: RaftConfig = RaftConfig()
    checkpoint_every: int = Field(1, ge=1)  # steps between resumable checkpoints; not part of the adapter's key
    repeats: int = Field(1, ge=1)  # adapters trained with seeds seed, seed+1, ...: the spread across seeds

    @model_validator(mode="after")
    def _categories_need_sft(self) -> "TrainConfig":
        if not self.train_categories:
            raise ValueError("train.train_categories: give at least one of known, weakly_known, unknown")
        if self.objective == "cpt" and (len(set(self.train_categories)) < 3 or self.unknown_as != "gold"):
            raise ValueError(
                "train.train_categories and train.unknown_as select training questions, so they "
                "need train.objective: sft"
            )
        if self.method == "full" and self.repeats > 1:
            raise ValueError(
                "train.repeats: full fine-tuning trains one model per run (each seed would be a "
                "whole copy of the model); use repeats: 1 or method: lora"
            )
        return self

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v):
        if isinstance(v, str) and v != "all-linear":
            raise ValueError(f"must be 'all-linear' or a non-empty list of module names, not {v!r}")
        if not isinstance(v, str) and not v:
            raise ValueError("must be 'all-linear' or a non-empty list of module names, not an empty list")
        return v


class RetrievalConfig(_Section):
    """Sentence-packed chunks of at most `chunk_size` tokens of the embedder's tokenizer
    (words for `bm25`), `chunk_overlap` tokens shared between neighbours, `top_k`
    passages; a sentence longer than the embedder reads is split, never truncated.
    `method`: `dense` (FAISS inner product on normalised embeddings), `bm25` (lexical),
    or `hybrid` (reciprocal rank fusion)."""

    method: Literal["dense", "bm25", "hybrid"] = "dense"
    index: Literal["flat", "ivf", "hnsw"] = "flat"  # FAISS index for dense search; flat is exact
    nprobe: int = Field(8, ge=1)  # ivf: clusters searched per query
    chunk_size: int = Field(64, ge=8)
    chunk_overlap: int = Field(0, ge=0)
    top_k: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _overlap_smaller(self) -> "RetrievalConfig":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("retrieval.chunk_overlap must be smaller than retrieval.chunk_size")
        return self


class JudgeConfig(_Section):
    """A model that grades answers (see harness/evaluate/judge.py): correctness of an answer against
    the gold answer, faithfulness of a RAG answer to its retrieved passages (share of its
    claims the passages support), and pairwise preference between two pipelines, asked in
    both orders. Judged numbers are reported beside the judge's agreement with the exact
    labels and never enter the verdicts."""

    model: ModelConfig
    faithfulness: bool = True
    pairwise: tuple[tuple[str, str], ...] = ()  # pipeline pairs to compare, e.g. [[rag, rag_finetuned]]
    # How a verdict is read (judge.py): the likelier of the two reply words by
    # log-likelihood, or the judge's generated reply parsed; auto: log-likelihood wherever
    # the judge can score one (in-process, or completions with mc_protocol loglikelihood).
    verdicts: Literal["auto", "loglikelihood", "generate"] = "auto"
    max_new_tokens: int = Field(96, ge=1)
    batch_size: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _scorable(self) -> "JudgeConfig":
        m = self.model
        if (
            self.verdicts == "loglikelihood"
            and m.backend == "endpoint"
            and (m.api != "completions" or m.mc_protocol != "loglikelihood")
        ):
            raise ValueError(
                "eval.judge.verdicts: loglikelihood needs a judge that scores text: in-process, or an "
                "endpoint with api: completions and mc_protocol: loglikelihood (else verdicts: generate)"
            )
        return self


class EvalConfig(_Section):
    """Which pipelines run and how answers are generated and scored."""

    pipelines: tuple[Literal["base", "finetuned", "rag", "rag_finetuned", "raft"], ...] = PIPELINE_NAMES
    max_new_tokens: int = Field(24, ge=1)
    batch_size: int = Field(16, ge=1)
    multiple_choice: bool = True
    n_examples: int = Field(4, ge=0)
    bootstrap_samples: int = Field(2000, ge=100)
    min_effect: float = Field(0.05, ge=0, le=1)  # smallest difference worth acting on (0.05 = 5 points)
    alpha: float = Field(0.05, gt=0, lt=1)  # family-wise error of each verdict's declared comparisons (Holm)
    permutation_samples: int = Field(4000, ge=100)  # sign-flip patterns when n is too large to enumerate
    # The deciding metric of the multiple-choice verdict: lm-eval's acc (summed
    # log-likelihood) or acc_norm (log-likelihood per character of the choice).
    mc_metric: Literal["acc", "acc_norm"] = "acc"
    # Evaluation questions split (seeded by `seed`) into dev and test: a grid picks each
    # pipeline's best cell on dev and reports that cell on test. 0: no split.
    dev_fraction: float = Field(0.5, ge=0, lt=1)
    # The deciding metric of the generated-answer verdict; auto: contains for short gold
    # answers (median <= 3 words), token F1 for sentence answers.
    answer_metric: Literal["auto", "contains", "exact_match", "token_f1", "rouge_l", "chrf"] = "auto"
    # Tag each answerable question by what the base model knows (knowledge.py), from
    # `known_samples` sampled closed-book answers (never the scored greedy one); 0: no tags.
    known_samples: int = Field(4, ge=0)
    known_temperature: float = Field(0.7, gt=0)
    judge: JudgeConfig | None = None  # secondary, judged numbers; never in the verdicts

    @model_validator(mode="after")
    def _unique(self) -> "EvalConfig":
        if len(set(self.pipelines)) != len(self.pipelines) or not self.pipelines:
            raise ValueError("eval.pipelines must list each pipeline at most once, and at least one")
        for pair in self.judge.pairwise if self.judge else ():
            if len(pair) != 2 or not set(pair) <= set(self.pipelines):
                raise ValueError(f"eval.judge.pairwise: {list(pair)} must name two of eval.pipelines")
        return self


class BenchmarksConfig(_Section):
    """Forgetting checks: MMLU and HellaSwag subsets scored through lm-evaluation-harness
    for the base model and each fine-tuned pipeline (see harness/evaluate/benchmarks.py).

    `data_dir` (or the environment variable HARNESS_BENCHMARK_DATA) holds `mmlu/test.jsonl`,
    `mmlu/dev.jsonl` and `hellaswag/validation.jsonl`; relative paths are taken from the
    working directory. Without local data, lm-eval's hub tasks are used when the machine is
    online; otherwise the benchmark is reported as skipped, with the reason."""

    data_dir: str | None = None
    mmlu_subjects: tuple[str, ...] = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")
    mmlu_items: int | None = Field(20, ge=1)  # per subject, a seeded subset; null = all
    hellaswag_items: int | None = Field(100, ge=1)  # null = all; 0 subjects and no hellaswag: use `benchmarks: null`
    hellaswag: bool = True
    num_fewshot: int = Field(0, ge=0, le=5)
    pipelines: tuple[Literal["base", "finetuned"], ...] = ("base", "finetuned")
    batch_size: int = Field(16, ge=1)
    seed: int = 1234


class GridConfig(_Section):
    """Axes over any config field by dotted path (`train.rank: [4, 8]`), crossed
    (cartesian product) or zipped (equal-length lists, taken together); `include` adds
    cells ({path: value, ...}, other fields at the experiment's values), `exclude` drops
    every cell that matches all of the given {path: value} pairs."""

    mode: Literal["cross", "zip"] = "cross"
    axes: dict[str, tuple[Any, ...]]
    include: tuple[dict[str, Any], ...] = ()
    exclude: tuple[dict[str, Any], ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> "GridConfig":
        if not self.axes or any(len(v) == 0 for v in self.axes.values()):
            raise ValueError("grid.axes needs at least one axis, each with at least one value")
        if self.mode == "zip" and len({len(v) for v in self.axes.values()}) > 1:
            raise ValueError("grid.mode 'zip' needs every axis to have the same number of values")
        return self


class ScenarioConfig(_Section):
    """One row of the decision table (see harness/evaluate/scenarios.py). `facts` uses the `data`
    section as any run does; the others build their own items from these settings."""

    name: Literal["facts", "updated", "style", "terminology", "format", "private"]
    seed: int = 0
    changed_share: float = Field(0.5, gt=0, le=1)  # updated: share of facts given a new value
    n_terms: int = Field(24, ge=4)  # terminology: invented terms
    # style: "builtin" (template pairs), or a folder with train/dev/test.jsonl of
    # {"plain": ..., "styled": ...} lines, such as ../shared/data/bible_style
    style_data: str = "builtin"
    style_train: int = Field(200, ge=4)
    style_eval: int = Field(48, ge=2)
    format_train_share: float = Field(0.5, gt=0, lt=1)  # format: entities whose items are worked examples
    reader_access: tuple[str, ...] = ("public",)  # private: the access labels the probing reader holds
    canary_candidates: int = Field(20, ge=2)  # private: same-format candidates for a canary's exposure


class TrackingConfig(_Section):
    """Experiment tracking (harness/run/tracking.py): after a run, MLflow at `uri` gets
    its flattened config as params, each pipeline x metric with its interval and n as
    metrics, the verdicts as tags and the results folder as artifacts. `uri`: a server
    (`http://...`), a database (`sqlite:///mlflow.db`, full mlflow), or a folder
    (`file:./mlruns`; MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE=true to use one). Not in
    `config_hash`: where results are logged changes none of them."""

    backend: Literal["mlflow"] = "mlflow"
    uri: str = "file:./mlruns"
    experiment: str | None = None  # the MLflow experiment; default: the config's name
    artifacts: bool = True  # log the results folder (a few MB: predictions, report, figures)


class ExperimentConfig(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: int = 0
    output_dir: str = "results"
    model: ModelConfig = ModelConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    eval: EvalConfig = EvalConfig()
    benchmarks: BenchmarksConfig | None = None
    scenario: ScenarioConfig | None = None
    grid: GridConfig | None = None
    tracking: TrackingConfig | None = None

    @model_validator(mode="after")
    def _sft_needs_questions(self) -> "ExperimentConfig":
        if (
            self.scenario is not None
            and self.scenario.name in SCENARIOS_WITH_OWN_ITEMS
            and self.train.objective != "sft"
        ):
            raise ValueError(
                f"scenario {self.scenario.name!r} trains on its worked examples: it needs train.objective: sft"
            )
        if self.train.objective == "sft" and self.data.documents and not self.data.train_questions:
            raise ValueError("train.objective 'sft' on your own data needs data.train_questions")
        if self.model.backend == "endpoint":
            if self.benchmarks is not None:
                raise ValueError(
                    "benchmarks run in-process through lm-eval: with model.backend 'endpoint' set benchmarks: null"
                )
            if "raft" in self.eval.pipelines or self.train.repeats > 1 or self.train.method == "qlora":
                raise ValueError(
                    "model.backend 'endpoint' serves one adapter: no raft pipeline, train.repeats 1, train.method lora"
                )
            if any(p in ("finetuned", "rag_finetuned") for p in self.eval.pipelines) and not self.model.served_adapter:
                raise ValueError(
                    "eval.pipelines: the fine-tuned arms through an endpoint need model.served_adapter "
                    "(the name given to vLLM --lora-modules NAME=PATH)"
                )
        if "raft" in self.eval.pipelines and self.train.method == "full":
            raise ValueError(
                "eval.pipelines: 'raft' trains a LoRA adapter beside the default one; it cannot run "
                "with train.method: full"
            )
        if (
            self.train.objective == "sft"
            and self.data.external is not None
            and self.data.external.format == "fictional_knowledge"
        ):
            raise ValueError("train.objective 'sft' needs QA pairs; fictional_knowledge has passages only: use 'cpt'")
        return self


def parse_config(raw: object, *, source: str = "<config>", overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Validate an already-parsed YAML mapping; errors name `source` and the key path,
    and the `--set` override (of `overrides`, as given) that set that key, if one did."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys at the top level")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<top level>"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        setting = _override_of(key, overrides)
        where = f"{source} (--set {setting})" if setting else source
        raise ConfigError(f"{where}: {key}: {first['msg']}{more}") from None


def _override_of(key: str, overrides: Sequence[str]) -> str | None:
    """The last of `overrides` that set `key`, a key inside it, or the section holding it."""
    for text in reversed(overrides):
        path = text.partition("=")[0]
        if key == path or key.startswith(path + ".") or path.startswith(key + "."):
            return text
    return None


# Resource limits on a config file: a few kB is typical, so these only stop files that
# would exhaust memory or the stack (YAML aliases nested inside aliases, deep nesting).
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 64  # nested mappings/lists
MAX_VALUES = 100_000  # keys and values once every alias is expanded


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: no Python tags, so no code runs) that also
    refuses a key given twice in one mapping (YAML would silently keep the last) and
    nesting deeper than MAX_DEPTH (the composer recurses: 5,000 levels overflow the stack)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key_node.value!r} (YAML would silently keep only the last)",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(obj, memo: dict, active: set) -> int:
    """How many keys and values `obj` has once aliases are copied out (as pydantic and
    JSON do), computed on the shared structure, so it costs what the file costs."""
    if not isinstance(obj, (dict, list)):
        return 1
    if id(obj) in active:
        raise ValueError("a YAML alias refers to a mapping or list that contains it")
    if id(obj) not in memo:
        active.add(id(obj))
        items = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else obj
        total = 1
        for x in items:
            total += _expanded_size(x, memo, active)
            if total > MAX_VALUES:
                break
        active.discard(id(obj))
        memo[id(obj)] = total
    return memo[id(obj)]


def read_yaml(path: str | Path) -> object:
    """Plain data from a YAML file, within the limits above; errors name the file and line."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise ConfigError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 10} KiB; a config is a few kB")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte {err.start}: {data[err.start]:#04x}); save the file as UTF-8"
        ) from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a subclass of SafeLoader: plain data only
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', err)}") from None
    try:
        size = _expanded_size(raw, {}, set())
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    if size > MAX_VALUES:
        raise ConfigError(
            f"{path}: expands to more than {MAX_VALUES:,} keys and values through YAML aliases "
            "(anchors reused inside anchors); write the values out"
        )
    return raw


# --set KEY=VALUE on the command line: a dotted config key and a YAML value
_OVERRIDE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_override(text: str) -> tuple[str, object]:
    """One `--set KEY=VALUE`: the dotted key and the value read as YAML (`4`, `0.001`,
    `[q_proj, v_proj]`, `null`), or ConfigError naming it."""
    key, sep, value = text.partition("=")
    if not sep or not _OVERRIDE_KEY.fullmatch(key):
        raise ConfigError(f"--set {text}: expected KEY=VALUE with a dotted config key, e.g. --set train.rank=4")
    try:
        return key, yaml.load(value, Loader=_StrictLoader)  # plain data only, as in a config file
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text}: the value is not valid YAML ({getattr(err, 'problem', err)})") from None


def _unshared(obj):
    """A copy of plain YAML data in which no mapping or list is shared, so setting a key
    under one YAML alias does not change the other places the anchor is used."""
    if isinstance(obj, dict):
        return {k: _unshared(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unshared(v) for v in obj]
    return obj


def apply_overrides(raw: object, overrides: Sequence[str]) -> dict:
    """`raw` (a config file's mapping) with each `KEY=VALUE` set in order (a later one
    wins); a section the file leaves out (or sets to null) is started. The result is
    validated as the file is, by `parse_config`, which names a misspelt key. Unlike the
    grid's `_set_path`, which sets keys of the resolved config (every field present, so an
    absent one is a typo), this sets the file's own mapping, where leaving keys out is
    normal, and so an override can also complete a file that lacks a required key."""
    if not isinstance(raw, dict):
        return raw  # parse_config names the file's problem
    raw = _unshared(raw)
    for text in overrides:
        key, value = parse_override(text)
        node, parts = raw, key.split(".")
        for depth, k in enumerate(parts[:-1]):
            if node.get(k) is None:
                node[k] = {}
            elif not isinstance(node[k], dict):
                raise ConfigError(f"--set {text}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            node = node[k]
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read and validate one experiment YAML file, with `--set KEY=VALUE` overrides
    (`apply_overrides`) set before validation, so an overridden value is checked as the
    file's own would be, and the config a run records holds it."""
    raw = read_yaml(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return parse_config(raw, source=str(path), overrides=overrides)


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """The resolved config (defaults filled in) as plain JSON-able data."""
    return cfg.model_dump(mode="json")


def config_hash(cfg: ExperimentConfig) -> str:
    """sha256 of the resolved config's canonical JSON without `tracking` (where results
    are logged changes none of them, and configs from before it hash as they did); equal
    configs hash equal."""
    resolved = config_to_dict(cfg)
    resolved.pop("tracking")
    blob = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Cell:
    """One point of a grid: a readable id from its values, its full config, its hash."""

    id: str
    values: dict
    config: ExperimentConfig
    hash: str


def _set_path(raw: dict, path: str, value, *, source: str) -> None:
    keys = path.split(".")
    node = raw
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            if k in node and node[k] is None:  # an optional section left out: start it
                node[k] = {}
            else:
                raise ConfigError(f"{source}: grid: {path!r} is not a config field")
        node = node[k]
    if keys[-1] not in node:
        raise ConfigError(f"{source}: grid: {path!r} is not a config field")
    node[keys[-1]] = value


def _cell_id(values: dict) -> str:
    short = [p.split(".")[-1] for p in values]
    names = short if len(set(short)) == len(short) else list(values)
    text = ",".join(f"{n}={v}" for n, v in zip(names, values.values()))
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "-", text)


def expand_grid(cfg: ExperimentConfig, *, source: str = "<config>") -> list[Cell]:
    """The cells of `cfg.grid` (a one-cell list without a grid), each a validated config."""
    base = config_to_dict(cfg)
    base.pop("grid")
    if cfg.grid is None:
        return [Cell(id="", values={}, config=cfg, hash=config_hash(cfg))]
    g = cfg.grid
    paths = list(g.axes)
    combos = itertools.product(*g.axes.values()) if g.mode == "cross" else zip(*g.axes.values())
    points = [dict(zip(paths, c)) for c in combos] + [dict(x) for x in g.include]
    cells, seen = [], {}
    for values in points:
        if any(all(values.get(k) == v for k, v in ex.items()) for ex in g.exclude):
            continue
        raw = json.loads(json.dumps(base))
        for path, value in values.items():
            _set_path(raw, path, value, source=source)
        cell_cfg = parse_config(raw, source=f"{source} (grid cell {values})")
        cid = _cell_id(values)
        if cid in seen:
            if seen[cid] == values:  # the same point twice (an include repeating an axis point)
                continue
            raise ConfigError(
                f"{source}: grid: cells {seen[cid]} and {values} both get the folder name "
                f"{cid!r} (characters outside A-Z a-z 0-9 _ . , = + - become '-'); make the values "
                "differ in those characters"
            )
        seen[cid] = values
        cells.append(Cell(id=cid, values=values, config=cell_cfg, hash=config_hash(cell_cfg)))
    if not cells:
        raise ConfigError(f"{source}: grid: every cell is excluded")
    return cells
