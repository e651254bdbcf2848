"""Running a grid: its cells in this process, in local worker processes, or on Ray.

    root = run_grid(cfg, executor="processes", workers=4)   # every cell not yet finished

`run_grid` asks the grid (grid.py) for *lanes*: lists of cells that share an adapter
(same model, data and training settings), in grid order, and hands them to an executor.
A lane runs in order inside one worker (`runner.run_experiment` per cell), so its
adapter is trained once and the rest of the lane loads it from the cache; different
lanes run side by side. Every worker writes its cells' results folders itself and
shares the artifact cache (`HARNESS_CACHE`) with the others, so on a cluster both the
results folder and the cache must be on storage every node sees.

| executor | runs lanes | for |
|---|---|---|
| sequential | one after another in this process | the default; a laptop |
| processes | in `workers` spawned processes, torch threads split between them | one machine with cores and memory to spare |
| ray | as Ray tasks, each asking for `cpus_per_cell` CPUs and, for a CUDA model, one GPU | a Ray cluster (`address`), or a local Ray instance |

Ray is an optional extra (`pip install 'ft-or-rag-harness[ray]'`). It is started with the dashboard
and usage statistics off. It still probes the network when it starts; on a machine that
must not reach any address but loopback, start it inside a loopback-only network
namespace (see README.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from harness.config import ExperimentConfig, config_hash, expand_grid, parse_config
from harness.report import run as report
from harness.run import runner
from harness.run.grid import grid_lanes
from harness.store.results import atomic_write_json, checked_destination, mark_folder, run_lock

log = logging.getLogger(__name__)

# Settings a worker needs to find the same models and cache as the driver.
FORWARDED_ENV = (
    "HARNESS_CACHE",
    "HARNESS_BENCHMARK_DATA",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
)


class ExecutorError(ValueError):
    """An executor that cannot start; the message says what to install or change."""


def run_lane(
    cells: list[tuple[str, dict]], *, root: str, threads: int | None = None, env: dict | None = None
) -> list[str]:
    """Worker entry point: run each (folder, raw config) in order into `root/<folder>`."""
    os.environ.update(env or {})
    if threads:
        import torch

        torch.set_num_threads(threads)
    return [str(runner.run_experiment(parse_config(raw), results_root=root, folder=folder)) for folder, raw in cells]


def run_sequential(lanes, *, root: str, **_) -> None:
    for lane in lanes:
        run_lane(lane, root=root)


def run_processes(lanes, *, root: str, workers: int | None = None, **_) -> None:
    import concurrent.futures
    import multiprocessing

    workers = max(1, min(workers or os.cpu_count() or 1, len(lanes)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    log.info("%d lanes on %d worker processes, %d torch threads each", len(lanes), workers, threads)
    # spawn, not fork: a forked copy of a process that has used torch threads can hang.
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(run_lane, lane, root=root, threads=threads, env=env) for lane in lanes]:
            future.result()  # re-raises a worker's error here


def run_ray(
    lanes, *, root: str, address: str | None = None, cpus_per_cell: int = 1, gpus_per_cell: float = 0, **_
) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray: Ray is not installed; pip install 'ft-or-rag-harness[ray]'") from None
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
            runtime_env={"env_vars": env},
        )
    try:
        task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell)(run_lane)
        log.info("%d lanes as Ray tasks (%s CPUs, %s GPUs each)", len(lanes), cpus_per_cell, gpus_per_cell)
        ray.get([task.remote(lane, root=str(Path(root).resolve()), threads=cpus_per_cell, env=env) for lane in lanes])
    finally:
        if started:
            ray.shutdown()


def run_grid(
    cfg: ExperimentConfig,
    *,
    results_root: str | Path | None = None,
    executor: str = "sequential",
    workers: int | None = None,
    address: str | None = None,
    cpus_per_cell: int = 1,
) -> Path:
    """Run every cell of the grid that has no finished result of its config yet, each into
    `<results_root>/<name>/<cell id>/`, on the chosen executor; adapters are shared
    through the cache. Then the grid report compares the cells."""
    if executor not in EXECUTORS:
        raise ExecutorError(f"--executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    root = Path(results_root or cfg.output_dir) / cfg.name
    cells = expand_grid(cfg)
    with checked_destination(root, experiment=cfg.name, kind="grid"), run_lock(root):
        root.mkdir(exist_ok=True)
        mark_folder(root, experiment=cfg.name, kind="grid")
        lanes = grid_lanes(cells, root)
        log.info(
            "%d of %d cells to run, in %d adapter lanes, executor %s",
            sum(map(len, lanes)),
            len(cells),
            len(lanes),
            executor,
        )
        if lanes:
            EXECUTORS[executor](
                lanes,
                root=str(root),
                workers=workers,
                address=address,
                cpus_per_cell=cpus_per_cell,
                gpus_per_cell=1 if cfg.model.device == "cuda" else 0,
            )
        atomic_write_json(
            root / "grid.json",
            {
                "experiment": cfg.name,
                "config_hash": config_hash(cfg),
                "cells": [{"id": c.id, "values": c.values, "hash": c.hash} for c in cells],
            },
        )
        report.write_grid_report(root)
    return root


EXECUTORS = {
    "sequential": run_sequential,
    "processes": run_processes,
    "ray": run_ray,
}
