"""Stress test: SIGKILL a run at random moments, resume it, compare with an uninterrupted run.

Builds the tests' tiny Llama, runs `harness run` once uninterrupted (the reference), then
`--kills` times: starts a run in a fresh cache and results folder, waits until it is in
one phase (training, generation, benchmarks, report writing; taken in turn), kills it with
SIGKILL after a random delay, runs it again to the end, and compares everything the run
concluded (metrics, every prediction, the loss curve, benchmark scores; not timings) with
the reference. Prints a table: kills, resumes, identical final metrics, work repeated.

    .venv/bin/python benchmarks/kill_stress.py              # 20 kills, seed 0
    .venv/bin/python benchmarks/kill_stress.py --kills 4 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

# What a run writes when it is in each phase (relative to the cache or the results folder).
PHASES = {
    "training": ("cache", "adapters/*.partial"),
    "generation": ("cache", "generations/*/*/*.jsonl"),
    "benchmarks": ("cache", "benchmarks/*/*.yaml"),
    "report writing": ("results", ".stress.partial-*/metrics.json"),
}


def _config(model_dir: Path, folder: Path) -> Path:
    from conftest import tiny_config

    raw = tiny_config(
        model_dir,
        name="stress",
        data={
            "world": {
                "seed": 0,
                "n_people": 2,
                "n_organisations": 1,
                "n_places": 1,
                "paraphrases": 1,
                "n_unanswerable": 2,
            }
        },
        train={
            "objective": "sft",
            "rank": 4,
            "alpha": 8,
            "epochs": 2,
            "batch_size": 4,
            "lr": 0.005,
            "max_length": 96,
            "checkpoint_every": 2,
        },
        eval={"max_new_tokens": 4, "batch_size": 4, "bootstrap_samples": 200},
    )
    if (SHARED / "mmlu" / "test.jsonl").is_file():
        raw["benchmarks"] = {
            "data_dir": str(SHARED),
            "mmlu_subjects": ["anatomy"],
            "mmlu_items": 4,
            "hellaswag": False,
            "batch_size": 8,
        }
    path = folder / "stress.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start(config: Path, cache: Path, results: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "HARNESS_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(config), "--results-dir", str(results)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )


def _outcome(folder: Path) -> dict:
    """Everything a run concluded, without timings and cache bookkeeping."""
    m = json.loads((folder / "metrics.json").read_text())
    preds = [
        {k: v for k, v in json.loads(line).items() if k != "latency_s"}
        for line in (folder / "predictions.jsonl").read_text().splitlines()
        if line.strip()
    ]
    bench = m.get("benchmarks") or {}
    return {
        "pipelines": m["pipelines"],
        "comparisons": m["comparisons"],
        "verdicts": m["verdicts"],
        "predictions": preds,
        "loss_curve": json.loads((folder / "loss_curve.json").read_text()),
        "benchmarks": {k: bench.get(k) for k in ("accuracy", "change_from_base")},
    }


def _work(folder: Path) -> dict:
    m = json.loads((folder / "metrics.json").read_text())
    batches = [c["batches"] for c in m["costs"]["pipelines"].values()]
    bench = (m.get("benchmarks") or {}).get("from_cache") or {}
    return {
        "batches_computed": sum(b["computed"] for b in batches),
        "batches_reused": sum(b["reused"] for b in batches),
        "adapter_from_cache": m["costs"]["training"]["from_cache"],
        "benchmark_scores_from_cache": sum(v for per in bench.values() for v in per.values()),
        "benchmark_scores": sum(len(per) for per in bench.values()),
    }


def _wait_for(root: Path, pattern: str, proc: subprocess.Popen, seconds: float = 600) -> bool:
    end = time.time() + seconds
    while time.time() < end and proc.poll() is None:
        if list(root.glob(pattern)):
            return True
        time.sleep(0.02)
    return False


def _scores(row: dict) -> str:
    return f"{row['benchmark_scores_from_cache']}/{row['benchmark_scores']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from conftest import _tiny_corpus, build_tiny_model

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kill-stress-") as tmp:
        tmp = Path(tmp)
        config = _config(build_tiny_model(tmp / "model", _tiny_corpus()), tmp)
        t0 = time.perf_counter()
        assert _start(config, tmp / "cache-ref", tmp / "ref").wait() == 0, "the uninterrupted run failed"
        reference_seconds = time.perf_counter() - t0
        reference, ref_work = _outcome(tmp / "ref" / "stress"), _work(tmp / "ref" / "stress")
        phases = [p for p in PHASES if p != "benchmarks" or "benchmarks" in yaml.safe_load(config.read_text())]
        rows = []
        for i in range(args.kills):
            phase = phases[i % len(phases)]
            cache, results = tmp / f"cache{i}", tmp / f"res{i}"
            where, pattern = PHASES[phase]
            proc = _start(config, cache, results)
            killed = False
            if _wait_for(cache if where == "cache" else results, pattern, proc):
                time.sleep(rng.uniform(0.0, 0.5 if phase != "report writing" else 0.15))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
            code = proc.wait()
            resumed = _start(config, cache, results).wait() == 0
            same = resumed and _outcome(results / "stress") == reference
            work = _work(results / "stress") if resumed else {}
            rows.append(
                {
                    "phase": phase,
                    "killed": killed and code == -signal.SIGKILL,
                    "resumed": resumed,
                    "identical": same,
                    **work,
                }
            )
            print(
                f"{i + 1:2d} {phase:15s} killed={rows[-1]['killed']} resumed={resumed} identical={same} {work}",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"Reference run: {reference_seconds:.0f} s; {ref_work['batches_computed']} generation batches, "
        f"{ref_work['benchmark_scores']} benchmark scores.\n"
    )
    print(
        "| phase killed in | kills | resumed | identical final metrics | generation batches computed on resume "
        "(the rest reused) | adapter from cache on resume | benchmark scores from cache on resume |"
    )
    print("|---|---|---|---|---|---|---|")
    for phase in phases:
        rs = [r for r in rows if r["phase"] == phase]
        if not rs:
            continue
        ok = [r for r in rs if r["resumed"]]
        print(
            f"| {phase} | {sum(r['killed'] for r in rs)}/{len(rs)} | {len(ok)}/{len(rs)} | "
            f"{sum(r['identical'] for r in rs)}/{len(rs)} | "
            f"{', '.join(str(r['batches_computed']) for r in ok)} (of {ref_work['batches_computed']}) | "
            f"{sum(bool(r['adapter_from_cache']) for r in ok)}/{len(ok)} | "
            f"{', '.join(_scores(r) for r in ok)} |"
        )
    total = len(rows)
    print(
        f"| all | {sum(r['killed'] for r in rows)}/{total} | {sum(r['resumed'] for r in rows)}/{total} | "
        f"{sum(r['identical'] for r in rows)}/{total} | | | |"
    )


if __name__ == "__main__":
    main()
