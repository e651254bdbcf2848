"""Where a grid's cells run: in this process, in local worker processes, or on Ray.

The runner hands an executor *lanes*: lists of cells that share an adapter (same model,
data and training settings), in grid order. A lane runs in order inside one worker, so
its adapter is trained once and the rest of the lane loads it from the cache; different
lanes run side by side. Every worker writes its cells' results folders itself and
shares the artifact cache (`HARNESS_CACHE`) with the others, so on a cluster both the
results folder and the cache must be on storage every node sees.

| executor | runs lanes | for |
|---|---|---|
| sequential | one after another in this process | the default; a laptop |
| processes | in `workers` spawned processes, torch threads split between them | one machine with cores and memory to spare |
| ray | as Ray tasks, each asking for `cpus_per_cell` CPUs and, for a CUDA model, one GPU | a Ray cluster (`address`), or a local Ray instance |

Ray is an optional extra (`pip install 'harness[ray]'`). It is started with the dashboard
and usage statistics off. It still probes the network when it starts; on a machine that
must not reach any address but loopback, start it inside a loopback-only network
namespace (see README.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Settings a worker needs to find the same models and cache as the driver.
FORWARDED_ENV = ("HARNESS_CACHE", "HARNESS_BENCHMARK_DATA", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                 "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM")


class ExecutorError(ValueError):
    """An executor that cannot start; the message says what to install or change."""


def run_lane(cells: list[tuple[str, dict]], *, root: str, threads: int | None = None,
             env: dict | None = None) -> list[str]:
    """Worker entry point: run each (folder, raw config) in order into `root/<folder>`."""
    from harness.config import parse_config
    from harness.runner import run_experiment

    os.environ.update(env or {})
    if threads:
        import torch

        torch.set_num_threads(threads)
    return [str(run_experiment(parse_config(raw), results_root=root, folder=folder)) for folder, raw in cells]


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


def run_ray(lanes, *, root: str, address: str | None = None, cpus_per_cell: int = 1, gpus_per_cell: float = 0,
            **_) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray: Ray is not installed; pip install 'harness[ray]'") from None
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=True, configure_logging=False,
                 runtime_env={"env_vars": env})
    try:
        task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell)(run_lane)
        log.info("%d lanes as Ray tasks (%s CPUs, %s GPUs each)", len(lanes), cpus_per_cell, gpus_per_cell)
        ray.get([task.remote(lane, root=str(Path(root).resolve()), threads=cpus_per_cell, env=env)
                 for lane in lanes])
    finally:
        if started:
            ray.shutdown()


EXECUTORS = {
    "sequential": run_sequential,
    "processes": run_processes,
    "ray": run_ray,
}
