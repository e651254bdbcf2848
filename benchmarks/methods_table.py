"""Table: full fine-tuning, LoRA and QLoRA side by side, from a finished
`experiments/methods.yaml` grid (README, "Training").

Per cell: trainable parameters, training memory (report.training_memory: the weights plus
the rise while training, of the process's memory on a CPU or torch's allocations on a GPU)
and its ratio to the weights' size,
training time, the fact gain of the fine-tuned arm over base (multiple-choice accuracy,
points) and the change from base on MMLU (all subjects, acc) and HellaSwag (acc_norm),
with the paired 95% intervals the runs computed (forgetting: below zero).

    .venv/bin/python benchmarks/methods_table.py [results/methods]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.report.run import training_memory
from harness.store.schema import load_metrics


def _change(bench: dict, label: str, metric: str) -> str:
    c = bench["change_from_base"][label]["finetuned"][metric]
    return f"{100 * c['diff']:+.0f} [{100 * c['ci95'][0]:+.0f}, {100 * c['ci95'][1]:+.0f}]"


def rows(folder: Path) -> list[str]:
    """The table's Markdown lines, one row per cell in the grid's order."""
    lines = [
        "| cell | trainable params | training memory MB | memory / weights | train s | fact gain, MC (pts) | "
        "MMLU change (pts) | HellaSwag acc_norm change (pts) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in sorted(p.parent for p in folder.glob("*/metrics.json")):
        m = load_metrics(cell / "metrics.json").raw()
        t, pipes, bench = m["costs"]["training"], m["pipelines"], m["benchmarks"]
        gain = 100 * (pipes["finetuned"]["mc_accuracy"]["mean"] - pipes["base"]["mc_accuracy"]["mean"])
        mb, _ = training_memory(t)
        lines.append(
            f"| {cell.name} | {t['trainable_params']:,} | {mb:,.0f} | "
            f"{mb * 2**20 / t['weights_bytes']:.1f}x | {t['wall_seconds']:.0f} | {gain:+.1f} | "
            f"{_change(bench, 'mmlu (all subjects)', 'acc')} | {_change(bench, 'hellaswag', 'acc_norm')} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=Path("results/methods"))
    print("\n".join(rows(parser.parse_args().folder)))


if __name__ == "__main__":
    main()
