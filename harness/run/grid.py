"""A grid's cells before they run: which are finished, which share an adapter, what is left.

A config with a `grid:` expands into cells (`config.expand_grid`), each run into
`<results_root>/<name>/<cell id>/`. This module reads what those folders already hold and
decides what is still to do, without loading any model:

    rows = plan_grid(cfg)                # per cell: done or to run, adapter, cost estimate
    lanes = grid_lanes(cells, root)      # the cells to run, grouped by adapter group
    plan_lanes(cfg, rows)                # the lanes as jobs: cells, adapter group, GPUs, time

Cells that share an adapter group (`adapters.adapter_group`: same model, data and
training) form one lane, so an executor (executors.py) trains that adapter once and the
rest of the lane reads it from the cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from harness.answer.pipelines import PIPELINES
from harness.config import Cell, ExperimentConfig, config_to_dict, expand_grid
from harness.train.adapters import adapter_group

log = logging.getLogger(__name__)


def finished_run(folder: Path) -> dict | None:
    """metrics.json of a finished run in `folder`, or None (missing, damaged, incomplete)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:  # damaged: the cell is run again
        log.warning("%s: unreadable (%s); the cell will be run again", path, err)
        return None
    if (
        not isinstance(m, dict)
        or not all(isinstance(m.get(k), dict) for k in ("costs", "timings"))
        or "config_hash" not in m
    ):
        log.warning("%s: incomplete; the cell will be run again", path)
        return None
    return m if m.get("status") == "complete" else None


def _trained(m: dict) -> bool:
    """Whether a finished run trained its adapter (rather than reading it from the cache)."""
    return (m["costs"].get("training") or {}).get("from_cache") is False


def _measured(finished: list[dict]) -> tuple[list[float], list[float]]:
    """Seconds the finished cells spent evaluating (total less any training) and training."""
    evals = [
        m["timings"]["total_seconds"] - (m["timings"].get("adapter_seconds", 0.0) if _trained(m) else 0.0)
        for m in finished
    ]
    trains = [m["timings"]["adapter_seconds"] for m in finished if _trained(m)]
    return evals, trains


def plan_grid(cfg: ExperimentConfig, *, results_root: str | Path | None = None) -> list[dict]:
    """What each cell needs and what is already there: a cell is done when its folder
    holds a finished run of the same config hash; its adapter is cached when a finished
    run of the same adapter group recorded an adapter that is still in the cache. The
    estimate is from what the finished cells measured."""
    root = Path(results_root or cfg.output_dir) / cfg.name
    cells = expand_grid(cfg)
    done = {c.id: finished_run(root / c.id) if c.id else finished_run(root) for c in cells}
    finished = [m for m in done.values() if m]
    cached_groups = {
        m.get("adapter_group")
        for m in finished
        if (m["costs"].get("training") or {}).get("adapter_dir")
        and Path(m["costs"]["training"]["adapter_dir"]).is_dir()
    }
    evals, trains = _measured(finished)
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
        rows.append(
            {
                "cell": c.id or cfg.name,
                "hash": c.hash[:12],
                "values": c.values,
                "status": "done" if is_done else "to run",
                "adapter": adapter,
                "benchmarks": "yes" if c.config.benchmarks else "no",
                "estimate_seconds": estimate,
            }
        )
    return rows


def lane_groups(cells: list[Cell]) -> list[list[Cell]]:
    """Every cell of the grid, grouped by adapter group in grid order: lane K is the K-th
    group, finished cells included, so a lane's number is the same in every job of a job
    array however many of its cells are done."""
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(adapter_group(c.config), []).append(c)
    return list(groups.values())


def grid_lanes(cells: list[Cell], root: Path, *, select: list[int] | None = None) -> list[list[tuple[str, dict]]]:
    """The cells still to run, grouped by adapter group in grid order: one lane trains
    its adapter once and the rest of the lane reuses it (see executors.py). `select`
    keeps only those lane numbers (lane_groups). Each cell is (folder, raw config), ready
    to send to a worker process."""
    lanes = []
    for k, group in enumerate(lane_groups(cells)):
        if select is not None and k not in select:
            continue
        lane = []
        for c in group:
            m = finished_run(root / c.id)
            if m is not None and m["config_hash"] == c.hash:
                log.info("cell %s: done already, skipped", c.id)
                continue
            lane.append((c.id, config_to_dict(c.config)))
        if lane:
            lanes.append(lane)
    return lanes


def cell_gpus(cfg: ExperimentConfig, *, requested: float | None, available: float) -> float:
    """The GPUs each cell asks its executor for: `requested` (--gpus-per-cell) when given;
    else none for a model behind an endpoint or pinned to the CPU, and one for a model on
    CUDA or on `device: auto` where `available` GPUs exist (auto would find them, and a
    lane given no GPU of its own would load onto every lane's GPU 0)."""
    if requested is not None:
        return requested
    if cfg.model.backend == "endpoint" or cfg.model.device == "cpu":
        return 0.0
    return 1.0 if cfg.model.device == "cuda" or available > 0 else 0.0


def plan_lanes(cfg: ExperimentConfig, rows: list[dict], *, gpus_per_cell: float | None = None) -> list[dict]:
    """The lanes a scheduler runs as jobs (`harness run GRID --lane K`), from plan_grid's
    rows: each lane's cells and those still to run, its adapter group, the GPUs each of its
    cells needs (where a GPU exists, for `device: auto`) and its estimated seconds (None
    while a cell to run has no estimate)."""
    by_cell = {r["cell"]: r for r in rows}
    need = cell_gpus(cfg, requested=gpus_per_cell, available=1)
    lanes = []
    for k, group in enumerate(lane_groups(expand_grid(cfg))):
        ids = [c.id or cfg.name for c in group]
        todo = [i for i in ids if by_cell[i]["status"] != "done"]
        estimates = [by_cell[i]["estimate_seconds"] for i in todo]
        lanes.append(
            {
                "lane": k,
                "cells": ids,
                "to_run": todo,
                "adapter_group": adapter_group(group[0].config),
                "gpus_per_cell": need,
                "estimate_seconds": None if None in estimates else float(sum(estimates)),
            }
        )
    return lanes
