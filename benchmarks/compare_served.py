"""Check: the same experiment answered in-process and through a server, item by item.

Reads two results folders (the in-process run first, the served run second) and prints,
per pipeline: multiple-choice accuracy in each, how many items picked the same choice,
the largest difference of a choice's log-likelihood (nats), and how many greedy outputs
are the same string. README's "Serving" numbers come from it.

    .venv/bin/python benchmarks/compare_served.py results/endpoint_inprocess results/endpoint_ft
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _mc_rows(folder: Path) -> dict:
    """(pipeline, question id) -> prediction row, for rows scored by choice log-likelihood."""
    out = {}
    for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("choice_logliks"):
            out[(row["pipeline"], row["question_id"])] = row
    return out


def _pick(logliks: list[float]) -> int:
    return max(range(len(logliks)), key=logliks.__getitem__)


def compare(local: Path, served: Path) -> list[str]:
    """The table's lines (Markdown), then the served run's adapter check."""
    a, b = _mc_rows(local), _mc_rows(served)
    ma, mb = (json.loads((d / "metrics.json").read_text(encoding="utf-8")) for d in (local, served))
    lines = [
        "| pipeline | MC acc in-process | MC acc served | same pick | max abs loglik diff (nats) | "
        "same greedy output |",
        "|---|---|---|---|---|---|",
    ]
    for p in ma["pipelines"]:
        keys = [k for k in a if k[0] == p and k in b]
        same = sum(_pick(a[k]["choice_logliks"]) == _pick(b[k]["choice_logliks"]) for k in keys)
        diff = max(abs(x - y) for k in keys for x, y in zip(a[k]["choice_logliks"], b[k]["choice_logliks"]))
        out = sum(a[k]["output"] == b[k]["output"] for k in keys)
        acc_a, acc_b = (100 * m["pipelines"][p]["mc_accuracy"]["mean"] for m in (ma, mb))
        lines.append(f"| {p} | {acc_a:.1f} | {acc_b:.1f} | {same}/{len(keys)} | {diff:.2f} | {out}/{len(keys)} |")
    lines.append(f"served_check: {mb['costs']['training'].get('served_check')}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("local", type=Path, help="results folder of the in-process run")
    parser.add_argument("served", type=Path, help="results folder of the served run")
    args = parser.parse_args()
    print("\n".join(compare(args.local, args.served)))


if __name__ == "__main__":
    main()
