"""Running a grid: its cells in this process, in local worker processes, or on Ray.

    root = run_grid(cfg, executor="processes", workers=4)   # every cell not yet finished
    root = run_grid(cfg, lane=1)                            # one job of a job array
    root = run_grid(cfg, shard="0/4")                       # lanes 0, 4, 8, ...

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
| processes | in `workers` spawned processes, torch threads split between them, each pinned to its own GPU(s) | one machine with cores, memory or GPUs to spare |
| ray | as Ray tasks, each asking for `cpus_per_cell` CPUs and `gpus_per_cell` GPUs | a Ray cluster (`address`), or a local Ray instance |
| submitit | as one job array through submitit's AutoExecutor, a task a lane | Slurm (`sbatch` on the PATH), or local processes (`cluster=local`) |

GPUs per cell (`--gpus-per-cell`, grid.cell_gpus): by default one whenever the model is
on CUDA, or on `device: auto` and GPUs exist (the Ray cluster's, or the ones this machine
shows); none for a CPU or endpoint model. A fraction lets cells share a GPU (0.5: two a
GPU), a whole number above 1 gives each cell several. Ray sets each task's
CUDA_VISIBLE_DEVICES to the GPUs it granted; `processes` does the same for its workers.
Each cell records what it saw in its provenance (`cuda_visible_devices`).

A scheduler's job array runs one lane per job (`lane`, numbered over every cell so the
numbers hold however many are done; `harness plan GRID --json` lists them) or a shard of
the lanes (`shard="I/N"`: lanes I, I+N, ...). Jobs of one grid run side by side: each
cell holds its own lock, the grid folder's lock is held only to set the folder up and to
write the grid report, which the job that finds every cell finished writes (or
`harness report GRID_DIR` does, later).

Ray is an optional extra (`pip install 'ft-or-rag-harness[ray]'`). It is started with the dashboard
and usage statistics off. It still probes the network when it starts; on a machine that
must not reach any address but loopback, start it inside a loopback-only network
namespace (see README.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from pathlib import Path

from harness.config import ExperimentConfig, config_hash, expand_grid, parse_config
from harness.report import run as report
from harness.run import runner
from harness.run.grid import cell_gpus, grid_lanes, lane_groups
from harness.store.results import (
    LOG_FORMAT,
    RUN_LOG,
    atomic_write_json,
    checked_destination,
    mark_folder,
    run_lock,
    run_log,
)

log = logging.getLogger(__name__)

# Settings a worker needs to find the same models and cache as the driver.
FORWARDED_ENV = (
    "HARNESS_CACHE",
    "HARNESS_BENCHMARK_DATA",
    "HARNESS_LOCK_LEASE_SECONDS",
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
    if not logging.getLogger().handlers:  # a spawned or Ray worker: log to its stderr, as the driver does
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return [str(runner.run_experiment(parse_config(raw), results_root=root, folder=folder)) for folder, raw in cells]


def run_sequential(lanes, *, root: str, **_) -> None:
    for lane in lanes:
        run_lane(lane, root=root)


def visible_gpus() -> list[str]:
    """The GPUs this machine gives harness, as CUDA_VISIBLE_DEVICES names them: that
    variable's list when it is set, else every GPU torch sees."""
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [d.strip() for d in named.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(gpus: list[str], per_cell: float) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each worker process: `per_cell` GPUs of their own (a whole
    number), or one GPU shared by 1/`per_cell` workers (a fraction), GPUs taken in turn."""
    if per_cell <= 0:
        return []
    if per_cell < 1:
        share = math.floor(1 / per_cell + 1e-9)
        return [g for _ in range(share) for g in gpus]
    n = int(per_cell)
    return [",".join(gpus[i : i + n]) for i in range(0, len(gpus) - n + 1, n)]


def _set_env(env: dict) -> None:
    """A worker process's initializer: its environment (its GPUs) before anything uses CUDA."""
    os.environ.update(env)


def run_processes(lanes, *, root: str, workers: int | None = None, gpus_for=None, **_) -> None:
    """The lanes on worker processes, each lane in one process; with GPUs, each process
    pinned for its life to its own slot (gpu_slots), a lane waiting for a free one."""
    import concurrent.futures
    import multiprocessing

    gpus = visible_gpus() if gpus_for is not None else []
    per_cell = gpus_for(available=len(gpus)) if gpus_for is not None else 0.0
    slots = gpu_slots(gpus, per_cell)
    if per_cell > 0 and not slots:
        raise ExecutorError(
            f"--gpus-per-cell {per_cell:g}: this machine shows {len(gpus)} GPU(s) "
            f"({', '.join(gpus) or 'none'}); ask for fewer, or 0 to run on the CPU"
        )
    workers = max(1, min(workers or len(slots) or os.cpu_count() or 1, len(lanes), len(slots) or len(lanes)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    log.info(
        "%d lanes on %d worker processes, %d torch threads each, GPUs %s",
        len(lanes),
        workers,
        threads,
        ", ".join(slots[:workers]) or "none",
    )
    ctx = multiprocessing.get_context("spawn")  # not fork: a forked copy of a process using torch threads can hang
    with contextlib.ExitStack() as stack:
        free = []
        for slot in slots[:workers] or [None] * workers:  # one single-process pool a slot: its GPUs are its own
            pinned = {} if slot is None else {"CUDA_VISIBLE_DEVICES": slot}
            pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=_set_env, initargs=(pinned,))
            free.append(stack.enter_context(pool))
        pending, running = list(lanes), {}
        while pending or running:
            while pending and free:
                pool = free.pop(0)
                running[pool.submit(run_lane, pending.pop(0), root=root, threads=threads, env=env)] = pool
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                free.append(running.pop(future))
                future.result()  # re-raises a worker's error here


def run_ray(lanes, *, root: str, address: str | None = None, cpus_per_cell: int = 1, gpus_for=None, **_) -> None:
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
        available = float(ray.cluster_resources().get("GPU", 0))
        gpus = gpus_for(available=available) if gpus_for is not None else 0.0
        if gpus > available and address is None:  # a local instance never grows: the tasks would wait forever
            raise ExecutorError(f"--gpus-per-cell {gpus:g}: the local Ray instance has {available:g} GPU(s)")
        task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus)(run_lane)
        log.info(
            "%d lanes as Ray tasks (%s CPUs, %s GPUs each; %g GPUs in the cluster)",
            len(lanes),
            cpus_per_cell,
            gpus,
            available,
        )
        ray.get([task.remote(lane, root=str(Path(root).resolve()), threads=cpus_per_cell, env=env) for lane in lanes])
    finally:
        if started:
            ray.shutdown()


def _submitit_executor(folder: Path, params: dict, *, cpus: int, gpus: float):
    """submitit's AutoExecutor (Slurm where `sbatch` is found, else local processes; the
    `cluster` key picks one) with harness's defaults under the user's parameters."""
    import submitit

    params = dict(params)
    if gpus != int(gpus):
        raise ExecutorError(f"--executor submitit: --gpus-per-cell {gpus:g}: submitit asks for whole GPUs")
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=params.pop("cluster", None))
        executor.update_parameters(
            **{
                "name": "harness-lane",
                "timeout_min": 24 * 60,
                "cpus_per_task": cpus,
                "gpus_per_node": int(gpus),
                **params,
            }
        )
    except (NameError, AssertionError, ValueError) as err:  # submitit's own ways of naming a bad parameter
        raise ExecutorError(f"--submitit: {str(err).splitlines()[0]}") from None
    return executor


def run_submitit(lanes, *, root: str, cpus_per_cell: int = 1, gpus_for=None, submitit_params=None, **_) -> None:
    """The lanes as one job array through submitit, a task a lane; each task's output and
    pickled result go to `<grid folder>/.submitit/`. `submitit_params` holds AutoExecutor
    parameters (`--submitit KEY=VALUE`: slurm_partition, timeout_min, mem_gb, cluster=local)."""
    try:
        import submitit  # noqa: F401  (here only to say what to install)
    except ImportError:
        raise ExecutorError(
            "--executor submitit: submitit is not installed; pip install 'ft-or-rag-harness[slurm]'"
        ) from None
    gpus = gpus_for(available=len(visible_gpus())) if gpus_for is not None else 0.0
    executor = _submitit_executor(Path(root) / ".submitit", submitit_params or {}, cpus=cpus_per_cell, gpus=gpus)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    work = functools.partial(run_lane, root=str(Path(root).resolve()), threads=cpus_per_cell, env=env)
    jobs = executor.map_array(work, lanes)
    log.info("%d lanes as a %s job array (%s), %g GPUs a task", len(lanes), executor.cluster, jobs[0].job_id, gpus)
    for job in jobs:
        job.result()  # re-raises a task's error here


def parse_submitit(pairs: list[str] | None) -> dict | None:
    """`--submitit KEY=VALUE ...` as AutoExecutor parameters, each value read as a YAML
    scalar (`timeout_min=240` is a number); a pair without `=` is refused in one line."""
    if not pairs:
        return None
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExecutorError(f"--submitit {pair!r}: give KEY=VALUE, e.g. slurm_partition=gpu or timeout_min=240")
        out[key] = yaml.safe_load(value)
    return out


def check_gpus_per_cell(value: float | None) -> None:
    """Refuse, in one line, a --gpus-per-cell Ray could not grant: negative, or above 1 and
    not a whole number."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value > 1 and value != int(value)):
        raise ExecutorError(
            f"--gpus-per-cell: {value:g} is not 0, a fraction up to 1 (cells sharing a GPU) or a whole number of GPUs"
        )


def select_lanes(count: int, *, lane: int | None = None, shard: str | None = None) -> list[int] | None:
    """The lane numbers one job runs: `lane` alone, or every N-th lane from I for `shard`
    "I/N"; None (all) for neither. A number out of range is refused in one line."""
    if lane is not None and shard is not None:
        raise ExecutorError("--lane and --shard: give one of them")
    if lane is not None:
        if not 0 <= lane < count:
            raise ExecutorError(f"--lane {lane}: the grid has {count} lanes (0 to {count - 1}; harness plan --json)")
        return [lane]
    if shard is None:
        return None
    i, sep, n = shard.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise ExecutorError(f"--shard {shard!r}: give I/N with 0 <= I < N, e.g. 0/4")
    return [k for k in range(count) if k % int(n) == int(i)]


def _start_grid_folder(root: Path, cfg: ExperimentConfig, cells) -> None:
    """The grid folder marked as this experiment's, with grid.json naming every cell and
    its config hash (what `harness report GRID_DIR` checks the cells against)."""
    root.mkdir(exist_ok=True)
    mark_folder(root, experiment=cfg.name, kind="grid")
    grid = {
        "experiment": cfg.name,
        "config_hash": config_hash(cfg),
        "cells": [{"id": c.id, "values": c.values, "hash": c.hash} for c in cells],
    }
    atomic_write_json(root / "grid.json", grid)


def finish_grid(root: Path) -> Path | None:
    """Write the grid report when every cell is finished; else log which are not and return None."""
    missing = report.missing_cells(root)
    if missing:
        log.info("grid report waits for %d cell(s): %s", len(missing), ", ".join(missing))
        return None
    return report.write_grid_report(root)


def _run_lanes(cfg: ExperimentConfig, root: Path, cells, select: list[int] | None, *, executor: str, **how) -> None:
    """The selected lanes' unfinished cells on the executor, logged to the grid's run.log too."""
    with run_log(root / RUN_LOG):
        lanes = grid_lanes(cells, root, select=select)
        log.info(
            "%d of %d cells to run, in %d adapter lanes%s, executor %s",
            sum(map(len, lanes)),
            len(cells),
            len(lanes),
            "" if select is None else f" (lanes {', '.join(map(str, select)) or 'none'})",
            executor,
        )
        if lanes:
            EXECUTORS[executor](lanes, root=str(root), **how)


def run_grid(
    cfg: ExperimentConfig,
    *,
    results_root: str | Path | None = None,
    executor: str = "sequential",
    workers: int | None = None,
    address: str | None = None,
    cpus_per_cell: int = 1,
    gpus_per_cell: float | None = None,
    lane: int | None = None,
    shard: str | None = None,
    submitit_params: dict | None = None,
) -> Path:
    """Run every cell of the grid (or of its `lane` or `shard`, select_lanes) that has no
    finished result of its config yet, each into `<results_root>/<name>/<cell id>/`, on
    the chosen executor; adapters are shared through the cache. Then the grid report
    compares the cells: at once for the whole grid, and for a part when every cell of the
    grid is finished."""
    if executor not in EXECUTORS:
        raise ExecutorError(f"--executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    check_gpus_per_cell(gpus_per_cell)
    root = Path(results_root or cfg.output_dir) / cfg.name
    cells = expand_grid(cfg)
    select = select_lanes(len(lane_groups(cells)), lane=lane, shard=shard)
    how = {
        "executor": executor,
        "workers": workers,
        "address": address,
        "cpus_per_cell": cpus_per_cell,
        "gpus_for": functools.partial(cell_gpus, cfg, requested=gpus_per_cell),
        "submitit_params": submitit_params,
    }
    # The whole grid holds the grid folder's lock throughout (a second run of it is
    # refused); a part holds it only to set the folder up and to write the report, so
    # the other jobs of its job array run beside it, each cell under its own lock.
    with checked_destination(root, experiment=cfg.name, kind="grid"), run_lock(root, wait=select is not None):
        _start_grid_folder(root, cfg, cells)
        if select is None:
            _run_lanes(cfg, root, cells, None, **how)
            report.write_grid_report(root)
            return root
    _run_lanes(cfg, root, cells, select, **how)
    with run_lock(root, wait=True):
        finish_grid(root)
    return root


EXECUTORS = {
    "sequential": run_sequential,
    "processes": run_processes,
    "ray": run_ray,
    "submitit": run_submitit,
}
