"""A grid's cells before they run: which are finished, which share an adapter, what is left.

A config with a `grid:` expands into cells (`config.expand_grid`), each run into
`<results_root>/<name>/<cell id>/`. This module reads what those folders already hold and
decides what is still to do, without loading any model:

    rows = plan_grid(cfg)                # per cell: done or to run, adapter, cost estimate
    lanes = grid_lanes(cells, root)      # the cells to run, grouped by adapter group

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


def grid_lanes(cells: list[Cell], root: Path) -> list[list[tuple[str, dict]]]:
    """The cells still to run, grouped by adapter group in grid order: one lane trains
    its adapter once and the rest of the lane reuses it (see executors.py). Each cell is
    (folder, raw config), ready to send to a worker process."""
    lanes: dict[str, list[tuple[str, dict]]] = {}
    for c in cells:
        m = finished_run(root / c.id)
        if m is not None and m["config_hash"] == c.hash:
            log.info("cell %s: done already, skipped", c.id)
            continue
        lanes.setdefault(adapter_group(c.config), []).append((c.id, config_to_dict(c.config)))
    return list(lanes.values())
