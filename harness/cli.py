"""The `harness` command: parse arguments, call one library function, exit.

    harness run CONFIG [--results-dir DIR]   run an experiment, write results and report
        [--executor sequential|processes|ray] [--workers N] [--address RAY] [--cpus-per-cell N]
        [--gpus-per-cell G] [--lane K | --shard I/N]   (a grid: one job of a job array)
        [--executor submitit --submitit KEY=VALUE ...]   (a grid as a Slurm job array)
    harness train CONFIG                     only train its adapters into the cache (multi-GPU: under
                                             torchrun or accelerate launch)
    harness plan CONFIG [--json]             a grid's cells: done, adapter cached, estimated cost; its lanes
    harness validate CONFIG                  check a config without loading any model
    run, train, plan, validate: --set KEY=VALUE (repeatable) sets one config key before
                                             validation, e.g. --set train.rank=4
    harness report RESULTS_DIR               rewrite report.md/.html from result files alone (a grid's
                                             folder: grid.md, once every cell is finished)
    harness compare DIR_A DIR_B              two runs side by side, Markdown on stdout
    harness annotate RESULTS_DIR [--pipelines A B ...] [--items N] [--seed S]
                                             a blind side-by-side page for human annotators
    harness labels RESULTS_DIR LABELS.json ...   check and merge annotators' labels into the report
    harness init DOCS [--out harness.yaml] [--force]   a starter config for a folder of documents, with a
                                             time estimate
    harness questions DOCS --out DIR [--force]   build questions from documents (cloze, or --generator model)
    harness questions --apply-review SHEET --out DIR [--force]   write the reviewed question set
    harness export-lora ADAPTER_DIR --base MODEL.gguf [--out FILE.gguf] [--force]   a PEFT LoRA as a llama.cpp
                                             GGUF adapter

Commands that write never replace what a person wrote (harness/store/results.py): `--force`
replaces an edited question set, an existing config or a file export-lora did not write,
and keeps it as `<name>.backup-<date>-<time>`.

Exit codes: 0 success, 2 a problem with the user's input (config, data, model name), a
results folder that another live run is writing, a path in the way of the results that
harness did not write (it is never replaced), or a place that cannot be written (results
or cache folder, disk full), 1 anything else. Input problems print one line naming the
file, line or key. `run`, `train`, `plan` and `validate` check everything a run would
reject before any work (harness/run/preflight.py). `harness --help` lists the exit codes,
the environment variables harness reads and examples (EPILOG); `-q`, `-v` and
`--log-level` set the logging level, `--version` prints the version.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import sys
import warnings

# OSErrors that mean a place cannot be written, which the user fixes, not a bug
_PLACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def _input_errors() -> tuple[type[BaseException], ...]:
    from harness.answer.retrieve import EmbedderError
    from harness.config import ConfigError
    from harness.data.items import DataError
    from harness.models.local import ModelError
    from harness.report.annotate import AnnotateError
    from harness.report.labels import LabelsError
    from harness.report.run import ReportError
    from harness.run.executors import ExecutorError
    from harness.run.tracking import TrackingError
    from harness.store.cache import CacheError
    from harness.store.results import ResultsFolderError, RunLockedError
    from harness.train.material import TrainError

    return (
        ConfigError,
        DataError,
        ModelError,
        EmbedderError,
        TrainError,
        RunLockedError,
        ResultsFolderError,
        ExecutorError,
        AnnotateError,
        LabelsError,
        CacheError,
        ReportError,
        TrackingError,
    )


def _run(args) -> int:
    from harness.config import load_config
    from harness.report.run import missing_cells
    from harness.run.executors import EXECUTORS, ExecutorError, parse_submitit, run_grid
    from harness.run.preflight import check_experiment
    from harness.run.runner import run_experiment

    if args.executor not in EXECUTORS:
        raise ExecutorError(f"--executor: {args.executor!r} is not one of {', '.join(EXECUTORS)}")
    cfg = load_config(args.config, overrides=args.overrides)
    part = args.lane is not None or args.shard is not None
    submitit_params = parse_submitit(args.submitit)
    if cfg.grid is None and part:
        raise ExecutorError(f"{args.config}: has no grid; --lane and --shard pick lanes of a grid")
    check_experiment(cfg, source=args.config, results_root=args.results_dir)
    if cfg.grid is not None:
        out = run_grid(
            cfg,
            results_root=args.results_dir,
            executor=args.executor,
            workers=args.workers,
            address=args.address,
            cpus_per_cell=args.cpus_per_cell,
            gpus_per_cell=args.gpus_per_cell,
            lane=args.lane,
            shard=args.shard,
            submitit_params=submitit_params,
        )
        missing = missing_cells(out) if part else []
        if missing:
            print(f"{len(missing)} cell(s) of the grid not finished yet; when they are: harness report {out}")
        else:
            print(f"grid report: {out / 'grid.md'}")
        return 0
    out = run_experiment(cfg, results_root=args.results_dir)
    print(f"report: {out / 'report.md'}")
    return 0


def _train(args) -> int:

    from harness.config import load_config
    from harness.run.preflight import check_experiment
    from harness.run.runner import train_adapters
    from harness.train.trainer import launch_from_env

    cfg = load_config(args.config, overrides=args.overrides)
    check_experiment(cfg, source=args.config)
    records = train_adapters(cfg)
    if launch_from_env().process_rank == 0:
        for r in records:
            how = "cached" if r["from_cache"] else f"trained by {r.get('world_size', 1)} process(es)"
            print(f"adapter {r['adapter_dir']} ({how}{', cell ' + r['cell'] if r['cell'] else ''})")
    return 0


def _plan(args) -> int:
    from harness.config import load_config
    from harness.report.tables import markdown_table
    from harness.run.grid import plan_grid
    from harness.run.preflight import check_experiment

    cfg = load_config(args.config, overrides=args.overrides)
    check_experiment(cfg, source=args.config, results_root=args.results_dir)
    rows = plan_grid(cfg, results_root=args.results_dir)
    if args.json:
        print(json.dumps(_plan_json(cfg, rows, args), indent=2))
        return 0
    table = [
        [
            r["cell"],
            r["hash"],
            r["status"],
            r["adapter"],
            r["benchmarks"],
            "–" if r["estimate_seconds"] is None else f"~{r['estimate_seconds']:.0f} s",
        ]
        for r in rows
    ]
    print("\n".join(markdown_table(["cell", "config", "status", "adapter", "benchmarks", "estimate"], table)))
    todo = [r for r in rows if r["status"] != "done"]
    known = [r["estimate_seconds"] for r in todo if r["estimate_seconds"] is not None]
    print(
        f"{len(todo)} of {len(rows)} cells to run"
        + (f", about {sum(known):.0f} s from earlier measurements" if known and len(known) == len(todo) else "")
        + "."
    )
    print()
    print("\n".join(_items_plan_lines(cfg, pilot=args.pilot, power=args.power)))
    return 0


def _plan_json(cfg, rows: list[dict], args) -> dict:
    """`harness plan --json`: what a scheduler needs to start one job a lane."""
    from pathlib import Path

    from harness.run.executors import check_gpus_per_cell
    from harness.run.grid import plan_lanes

    check_gpus_per_cell(args.gpus_per_cell)
    lanes = plan_lanes(cfg, rows, gpus_per_cell=args.gpus_per_cell)
    return {
        "experiment": cfg.name,
        "grid_dir": str(Path(args.results_dir or cfg.output_dir) / cfg.name),
        "lanes": lanes,
        "cells": rows,
        "run_lane": f"harness run {args.config} --lane K",
        "report": f"harness report {Path(args.results_dir or cfg.output_dir) / cfg.name}",
    }


def _plan_rows_assumed() -> list[dict]:
    """power.plan_table for multiple choice at the default eval settings, no pilot."""
    from harness.config import EvalConfig
    from harness.evaluate import power as planning
    from harness.evaluate import verdicts

    e = EvalConfig()
    return planning.plan_table(
        kind="proportion",
        min_effect=e.min_effect,
        alpha_win=e.alpha * (1 - verdicts.TIE_SHARE),
        alpha_tie=e.alpha * verdicts.TIE_SHARE,
    )


def _items_plan_lines(cfg, *, pilot: str | None, power: float) -> list[str]:
    """The paired items the verdict rule needs per question (power.questions_plan), from
    a pilot run's metrics.json when one is given, with what they would take in time on
    the machine that ran the pilot."""
    from harness.evaluate import power as planning
    from harness.evaluate import verdicts
    from harness.report.run import settle_seconds
    from harness.report.tables import markdown_table
    from harness.store.schema import load_metrics

    m = load_metrics(f"{pilot}/metrics.json").raw() if pilot else None
    e = cfg.eval
    a_win, a_tie = e.alpha * (1 - verdicts.TIE_SHARE), e.alpha * verdicts.TIE_SHARE
    rows = planning.questions_plan(
        verdicts=(m or {}).get("verdicts"), min_effect=e.min_effect, alpha_win=a_win, alpha_tie=a_tie, power=power
    )
    table = []
    for r in rows:
        seconds = settle_seconds(m, r["items"]) if m and r["items"] else None
        table.append(
            [
                r["question"],
                "none" if r["effect"] == 0 else f"{100 * r['effect']:.0f} points",
                r["claim"],
                "not possible" if r["items"] is None else f"{r['items']:,}",
                "–" if seconds is None else f"~{seconds / 60:.0f} min",
            ]
        )
    source = (
        f"from the pilot {pilot}"
        if m
        else f"assuming {100 * planning.ASSUMED['proportion']['discordance']:.0f}% of items discordant (no --pilot)"
    )
    return [
        f"Paired items the verdict rule needs ({100 * power:.0f}% power, {source}; a difference of exactly "
        f"min_effect cannot be shown to clear it):",
        *markdown_table(["question", "true difference", "to show", "items", "time on the pilot's machine"], table),
    ]


def _validate(args) -> int:
    from pathlib import Path

    from harness.config import config_hash, load_config
    from harness.run.preflight import check_experiment
    from harness.store.results import check_destination

    cfg = load_config(args.config, overrides=args.overrides)
    cells = check_experiment(cfg, source=args.config)  # every grid cell, its data, model and embedder
    check_destination(
        Path(args.results_dir or cfg.output_dir) / cfg.name, experiment=cfg.name, kind="grid" if cfg.grid else "run"
    )
    grid = f", {len(cells)} grid cells" if cfg.grid else ""
    print(f"{args.config}: ok (experiment {cfg.name!r}, config hash {config_hash(cfg)[:12]}{grid})")
    return 0


def _report(args) -> int:
    from pathlib import Path

    from harness.report.run import assemble_grid_report, write_report

    folder = Path(args.results_dir)
    if (folder / "grid.json").is_file():  # a grid's folder: its report once every cell is finished
        print(f"grid report: {assemble_grid_report(folder)}")
        return 0
    if not (folder / "metrics.json").is_file():
        print(f"harness: error: {folder}: no metrics.json (not a finished results folder)", file=sys.stderr)
        return 2
    print(f"report: {write_report(folder)}")
    return 0


def _compare(args) -> int:
    from pathlib import Path

    from harness.report.run import compare_runs

    for folder in (args.dir_a, args.dir_b):
        if not (Path(folder) / "metrics.json").is_file():
            print(f"harness: error: {folder}: no metrics.json (not a finished results folder)", file=sys.stderr)
            return 2
    print(compare_runs(args.dir_a, args.dir_b), end="")
    return 0


def _annotate(args) -> int:
    from harness.report.annotate import write_page

    page = write_page(args.results_dir, pipelines=args.pipelines, items=args.items, seed=args.seed)
    print(f"annotation page: {page}")
    print(f"open it in a browser, label, export; then: harness labels {args.results_dir} labels-*.json")
    return 0


def _labels(args) -> int:
    from harness.report.labels import merge_labels
    from harness.report.run import write_report

    merged = merge_labels(args.results_dir, args.files)
    print(f"human labels: {merged}")
    print(f"report: {write_report(args.results_dir)}")
    return 0


def _questions(args) -> int:
    if args.apply_review:
        from harness.questions.review import apply_review

        m = apply_review(args.apply_review, args.out, force=args.force)
        r = m["review"]
        print(
            f"reviewed set: {args.out}/questions.jsonl ({r['kept']} kept, {r['edited']} edited, "
            f"{r['dropped']} dropped of {r['rows']})"
        )
        return 0
    if not args.documents:
        print("harness: error: questions: give DOCS (a folder of documents) or --apply-review SHEET", file=sys.stderr)
        return 2
    from harness.questions.build import make_questions

    m = make_questions(
        args.documents,
        out=args.out,
        generator=args.generator,
        seed=args.seed,
        model=args.model,
        max_questions=args.items or args.max_questions,
        embedder=args.embedder or None,
        leakage_model=args.leakage_model,
        skip_unreadable=args.skip_unreadable,
        cloze_style=args.cloze_style,
        force=args.force,
        eval_sample=args.eval_sample,
    )
    items, rejected = m["items"], {k: v for k, v in m["filters"]["rejected"].items() if v}
    print(
        f"{items['answerable']} questions + {items['unanswerable']} unanswerable, {items['train']} training "
        f"questions from {m['n_documents']} documents ({m['filters']['candidates']} candidates"
        + (f"; rejected: {', '.join(f'{k} {v}' for k, v in rejected.items())}" if rejected else "")
        + ")"
    )
    if m["skipped_documents"]:
        print(f"skipped {len(m['skipped_documents'])} unreadable file(s)")
    if args.items and items["answerable"] < args.items:
        per_doc = items["answerable"] / max(m["n_documents"], 1)
        more = (
            ""
            if not per_doc
            else f"; about {math.ceil((args.items - items['answerable']) / per_doc)} more "
            "documents like these would give them"
        )
        print(f"asked for {args.items} items, these documents give {items['answerable']}{more}")
    if m["retrieval_round_trip"]:
        rt = m["retrieval_round_trip"]
        print(
            f"retrieval round trip ({rt['embedder']}): evidence in the top {rt['top_k']} for {rt['retrieved']} "
            f"of {rt['of']}"
        )
    if m["closed_book_leakage"]:
        lk = m["closed_book_leakage"]
        print(
            f"closed-book leakage ({lk['model']}): {lk['known']} of {lk['of']} already known, set aside in "
            "known_questions.jsonl"
        )
    print(f"review: {args.out}/review.csv, then harness questions --apply-review {args.out}/review.csv --out DIR")
    return 0


def _init(args) -> int:
    from harness.questions.starter import write_starter_config

    rates = None
    if args.measure:
        from harness.questions.starter import STARTER
        from harness.run.probe import measure_rates

        rates = measure_rates(STARTER["model"]["name"], target_modules=STARTER["train"]["target_modules"])
        print(
            f"measured in {rates['seconds']:.0f} s: training {rates['train_tokens_per_second']:g} tokens/s, "
            f"generating {rates['generate_tokens_per_second']:g} tokens/s"
        )
    path, est = write_starter_config(
        args.documents, out=args.out, questions=args.questions, force=args.force, rates=rates
    )
    print(
        f"wrote {path}: {est['documents']} documents, {est['words']:,} words, about {est['questions']} questions; "
        f"estimated run {est['run_time']}, rates {est['rates']['source']}"
        + (f" ({est['skipped']} unreadable file(s) skipped)" if est["skipped"] else "")
    )
    plan = {r["effect"]: r["items"] for r in _plan_rows_assumed()}
    print(
        f"the verdict rule needs about {plan[0.2]:,} items to show a 20-point winner and {plan[0.1]:,} for 10 "
        f"points (80% power, multiple choice; `harness plan {path}`); these documents give about {est['questions']}"
    )
    print("next:")
    print(f"  harness questions {args.documents} --out {args.questions}")
    print(f"  harness run {path}")
    return 0


def _export_lora(args) -> int:
    from harness.models.endpoint import lora_gguf_path
    from harness.models.gguf_lora import ExportError, export_lora

    try:
        print(
            export_lora(
                args.adapter_dir,
                base_gguf=args.base,
                out=args.out or lora_gguf_path(args.adapter_dir),
                force=args.force,
            )
        )
    except ExportError as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
    return 0


# The registries' names, for `choices`: importing run/executors or questions/build loads
# torch, which `harness --help` should not wait for (tests/test_cli.py keeps them equal).
EXECUTOR_NAMES = ("sequential", "processes", "ray", "submitit")  # run/executors.py: EXECUTORS
GENERATOR_NAMES = ("cloze", "model")  # questions/build.py: GENERATORS
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

EPILOG = """\
exit codes:
  0  success
  2  a problem with the input, named in one line (file, line or key): a config, --set,
     data, a model name; a results folder another live run is writing; a path in the
     way that harness did not write (never replaced); a place that cannot be written
     (results or cache folder, full disk)
  1  anything else (a bug: the traceback is printed)

environment variables:
  HARNESS_CACHE           cache of adapters, indexes, generations and benchmark scores
                          (default ~/.cache/harness); move it with this variable
  HARNESS_BENCHMARK_DATA  folder with mmlu/ and hellaswag/ JSONL for the forgetting
                          checks, when benchmarks.data_dir is not set
  HARNESS_LOCK_LEASE_SECONDS  how long a lock's heartbeat stays fresh (default 120 s): a
                          lock older than that is taken over on any host (a requeued job)
  HF_HOME                 Hugging Face's own cache (models from the hub)
  HF_HUB_OFFLINE=1        never contact the hub; also HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE
  TOKENIZERS_PARALLELISM  passed on to grid workers, as the variables above
  RANK, WORLD_SIZE        set by torchrun / accelerate launch: `harness train` data parallel
  CUDA_VISIBLE_DEVICES    the GPUs a run may use; the processes executor sets it per worker
  the variable that model.api_key_env names holds an endpoint's API key

examples:
  harness validate experiments/demo.yaml --set train.rank=4
  harness -q run experiments/demo.yaml --set train.epochs=1 --set retrieval.top_k=2
"""


def _config_arguments(p) -> None:
    """CONFIG and `--set KEY=VALUE` (repeatable), for the commands that read a config."""
    p.add_argument("config", help="the experiment's YAML file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="set one config key before validation, the value read as YAML (repeatable; later wins), "
        "e.g. --set train.rank=4 --set eval.pipelines=[base,rag]; the results' config.yaml holds it",
    )


def _results_dir_argument(p, what: str) -> None:
    p.add_argument("--results-dir", default=None, help=f"parent folder {what} (default: the config's output_dir)")


def _force_argument(p, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what}, keeping it as OUT.backup-<date>-<time>")


def _add_config_commands(sub) -> None:
    """run, train, plan, validate: the commands that read an experiment config."""
    p = sub.add_parser("run", help="run an experiment (or a grid's cells): train, retrieve, score, report")
    _config_arguments(p)
    _results_dir_argument(p, "of the results folder")
    p.add_argument("--executor", default="sequential", choices=EXECUTOR_NAMES, help="where a grid's cells run")
    p.add_argument("--workers", type=int, default=None, help="processes executor: worker processes (default: cores)")
    p.add_argument("--address", default=None, help="ray executor: an existing cluster (default: start a local one)")
    p.add_argument("--cpus-per-cell", type=int, default=1, help="ray executor: CPUs each cell's task asks for")
    p.add_argument(
        "--gpus-per-cell",
        type=float,
        default=None,
        help="ray and processes executors: GPUs each cell gets (a fraction shares one; default: 1 where the model "
        "is on CUDA or on device auto and GPUs exist, else 0)",
    )
    p.add_argument("--lane", type=int, default=None, help="run only this lane of the grid (harness plan --json)")
    p.add_argument("--shard", default=None, metavar="I/N", help="run only lanes I, I+N, I+2N, ... of the grid")
    p.add_argument(
        "--submitit",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="submitit executor: AutoExecutor parameters (slurm_partition=gpu timeout_min=240; cluster=local)",
    )
    p.set_defaults(func=_run)
    p = sub.add_parser(
        "train",
        help="train a config's adapters into the cache, evaluate nothing (torchrun / accelerate launch: data parallel)",
    )
    _config_arguments(p)
    p.set_defaults(func=_train)
    p = sub.add_parser(
        "plan",
        help="list a grid's cells, what is done or cached, and an estimate; and the paired items the verdict rule needs",
    )
    _config_arguments(p)
    _results_dir_argument(p, "in which finished cells are looked for")
    p.add_argument(
        "--pilot",
        default=None,
        help="a finished run's results folder: plan the items from its discordance and price them in its time",
    )
    p.add_argument("--power", type=float, default=0.8, help="chance of settling the question (default 0.8)")
    p.add_argument("--json", action="store_true", help="the lanes and cells as JSON, for a scheduler")
    p.add_argument("--gpus-per-cell", type=float, default=None, help="--json: the GPUs each cell will ask for")
    p.set_defaults(func=_plan)
    p = sub.add_parser(
        "validate", help="check a config file (and its data, model and destination) without loading models"
    )
    _config_arguments(p)
    _results_dir_argument(p, "the run would write its results in")
    p.set_defaults(func=_validate)


def _add_results_commands(sub) -> None:
    """report, compare, annotate, labels: the commands that read a finished results folder."""
    p = sub.add_parser("report", help="rewrite report.md and report.html from a results folder")
    p.add_argument("results_dir", help="a finished run's results folder (holding metrics.json)")
    p.set_defaults(func=_report)
    p = sub.add_parser("compare", help="put two results folders side by side (Markdown on stdout)")
    p.add_argument("dir_a", help="the first run's results folder")
    p.add_argument("dir_b", help="the second run's results folder (differences are B - A)")
    p.set_defaults(func=_compare)
    p = sub.add_parser("annotate", help="write a blind side-by-side page for human annotators")
    p.add_argument("results_dir", help="a finished run's results folder")
    p.add_argument("--pipelines", nargs="+", default=None, help="pipelines to compare (default: rag finetuned)")
    p.add_argument("--items", type=int, default=40, help="items to sample (stratified by task and agreement)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and of the left/right order")
    p.set_defaults(func=_annotate)
    p = sub.add_parser("labels", help="check and merge annotators' label files into the report")
    p.add_argument("results_dir", help="the results folder the annotation page was written for")
    p.add_argument("files", nargs="*", help="label files exported from the annotation page (labels-*.json)")
    p.set_defaults(func=_labels)


def _add_questions_parser(sub) -> None:
    """`harness questions`: its arguments."""
    p = sub.add_parser("questions", help="build a question set from a folder of documents, or apply its review")
    p.add_argument("documents", nargs="?", help="a folder of documents (or a JSONL file with id and text)")
    p.add_argument("--out", required=True, help="folder for questions.jsonl, train_questions.jsonl, review.csv")
    p.add_argument(
        "--generator", default="cloze", choices=GENERATOR_NAMES, help="cloze (no model, the default) or model"
    )
    p.add_argument(
        "--cloze-style",
        default="blank",
        choices=["blank", "complete"],
        help="cloze items: fill in a blank (default), or complete a sentence that stops before its "
        "last span, as Fictional Knowledge's probes ask",
    )
    p.add_argument("--model", default=None, help="--generator model: the model that writes questions")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and of the item order")
    p.add_argument(
        "--max-questions", type=int, default=None, help="keep at most this many facts (a seeded sample; training too)"
    )
    p.add_argument(
        "--eval-sample",
        type=int,
        default=None,
        help="evaluate a seeded sample of this many items, keeping every fact's training question",
    )
    p.add_argument(
        "--items",
        type=int,
        default=None,
        help="the evaluation items wanted (from `harness plan`): a seeded sample if the documents give more, "
        "and a note of how many more documents if they give fewer",
    )
    p.add_argument("--embedder", default="hashing", help="embedder of the retrieval round trip ('' for none)")
    p.add_argument("--leakage-model", default=None, help="set aside the questions this model answers closed-book")
    p.add_argument("--skip-unreadable", action="store_true", help="leave out files that cannot be read")
    p.add_argument("--apply-review", default=None, metavar="SHEET", help="write the reviewed set into --out")
    _force_argument(p, "a question set in --out that was edited since harness wrote it")
    p.set_defaults(func=_questions)


def _add_writing_commands(sub) -> None:
    """init, questions, export-lora: the commands that write a user's files."""
    p = sub.add_parser("init", help="write a starter config for a folder of documents, with a run-time estimate")
    p.add_argument("documents", help="a folder of the documents the questions will be about")
    p.add_argument("--out", default="harness.yaml", help="config file to write (default: harness.yaml)")
    p.add_argument("--questions", default="q", help="folder the config expects the question set in (default: q)")
    _force_argument(p, "an existing config")
    p.add_argument(
        "--measure",
        action="store_true",
        help="time a few steps of training and answering on this machine now (loads the model; seconds) "
        "instead of assuming a quiet 2-core CPU's rates",
    )
    p.set_defaults(func=_init)
    _add_questions_parser(sub)
    p = sub.add_parser("export-lora", help="write a PEFT LoRA adapter as a GGUF adapter for llama.cpp's server")
    p.add_argument("adapter_dir", help="a PEFT adapter folder (adapter_config.json, adapter_model.safetensors)")
    p.add_argument("--base", required=True, help="the base model's GGUF file (its architecture and shapes)")
    p.add_argument("--out", default=None, help="the GGUF file to write (default: ADAPTER_DIR.gguf)")
    _force_argument(p, "a file at --out that harness did not export")
    p.set_defaults(func=_export_lora)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a command-line mistake is one line, `harness: error: ...`, exit 2, as
    every other input error is (argparse's own prints the usage block first). The
    subcommands' parsers are of this class too (add_subparsers passes it on)."""

    def error(self, message: str):
        command = self.prog.removeprefix("harness").strip()
        print(f"harness: error: {command + ': ' if command else ''}{message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per job, each calling one `_command` function."""
    from harness import __version__

    parser = OneLineParser(
        prog="harness",
        description="Fine-tune, retrieve, or both? Measure it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="debug logging (--log-level DEBUG)")
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings and errors only (--log-level WARNING)"
    )
    loudness.add_argument("--log-level", choices=LOG_LEVELS, default=None, help="logging level (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_config_commands(sub)
    _add_results_commands(sub)
    _add_writing_commands(sub)
    return parser


def log_level(args) -> str:
    """The logging level the flags ask for: --log-level, -v (DEBUG), -q (WARNING), else INFO."""
    return args.log_level or ("DEBUG" if args.verbose else "WARNING" if args.quiet else "INFO")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = log_level(args)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # basicConfig leaves a root logger that already has handlers alone
    for noisy in ("httpx", "urllib3", "sentence_transformers", "transformers", "filelock", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Warnings no one running harness can act on, printed on every run: bitsandbytes'
    # optional CPU kernel for 4-bit layers (only QLoRA on a CPU would use it; its errors
    # still show), and a deprecation inside peft's call into transformers.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        return args.func(args)
    except _input_errors() as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in _PLACE_ERRNOS:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"harness: error: {where}{err.strerror} (a results or cache folder that cannot be written, a full "
            "disk or a file-size limit); finished results and cache entries are unchanged",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
