"""Benchmark: a grid's first run, an unchanged re-run, and a one-value extension of an axis.

Runs `harness run` three times (as a user would, imports included) on a grid made from
an experiment file, in a fresh artifact cache (only the converted model weights are
shared with your cache, so the one-off GGUF conversion is not counted), and prints a
table of wall time and of what each phase computed: cells run, adapters trained,
generation batches computed and reused.

    .venv/bin/python benchmarks/bench_grid.py                      # demo.yaml, top_k 1 3, then + 5
    .venv/bin/python benchmarks/bench_grid.py --axis train.rank --values 8 16 --extend 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _phase(config: Path, results: Path, cache: Path) -> float:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(config), "--results-dir", str(results)],
        env=env,
        check=True,
        cwd=REPO,
    )
    return time.perf_counter() - t0


def _computed(grid_dir: Path, since: float) -> dict:
    """What the cells written after `since` computed, from their metrics.json."""
    out = {"cells": 0, "adapters": 0, "batches_computed": 0, "batches_reused": 0}
    for m_path in grid_dir.glob("*/metrics.json"):
        if m_path.stat().st_mtime < since:
            continue
        m = json.loads(m_path.read_text())
        out["cells"] += 1
        out["adapters"] += int((m["costs"]["training"] or {}).get("from_cache") is False)
        for cost in m["costs"]["pipelines"].values():
            out["batches_computed"] += cost["batches"]["computed"]
            out["batches_reused"] += cost["batches"]["reused"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "demo.yaml"))
    parser.add_argument("--axis", default="retrieval.top_k")
    parser.add_argument("--values", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--extend", type=int, default=5)
    parser.add_argument("--keep-benchmarks", action="store_true", help="keep the config's MMLU/HellaSwag section")
    args = parser.parse_args()

    raw = yaml.safe_load(Path(args.config).read_text())
    if not args.keep_benchmarks:
        raw.pop("benchmarks", None)
    raw["name"] = "bench_grid"
    for key in ("data_dir",):  # relative paths in the config are relative to the repo
        if raw.get("benchmarks", {}).get(key):
            raw["benchmarks"][key] = str((REPO / raw["benchmarks"][key]).resolve())
    from harness.models.local import cache_dir

    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        tmp = Path(tmp)
        cache, results = tmp / "cache", tmp / "results"
        cache.mkdir()
        if (cache_dir() / "models").is_dir():
            (cache / "models").symlink_to(cache_dir() / "models")
        rows = []
        for phase, values in (
            ("first run", args.values),
            ("unchanged re-run", args.values),
            (f"extension (+{args.extend})", [*args.values, args.extend]),
        ):
            raw["grid"] = {"axes": {args.axis: values}}
            config = tmp / f"grid-{len(rows)}.yaml"
            config.write_text(yaml.safe_dump(raw, sort_keys=False))
            since = time.time()
            seconds = _phase(config, results, cache)
            rows.append((phase, seconds, _computed(results / "bench_grid", since)))
    first = rows[0][1]
    print(f"\ngrid over {args.axis} from {Path(args.config).name}; this machine: {os.cpu_count()} cores\n")
    print("| phase | wall s | % of first | cells run | adapters trained | batches computed | batches reused |")
    print("|---|---|---|---|---|---|---|")
    for phase, seconds, c in rows:
        print(
            f"| {phase} | {seconds:.1f} | {100 * seconds / first:.1f}% | {c['cells']} | {c['adapters']} | "
            f"{c['batches_computed']} | {c['batches_reused']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
