"""Check: the cloze question set built from Fictional Knowledge's passages against the
dataset's shipped probes on the same passages (issue: within 5 points).

Writes the passages that `experiments/fictional_knowledge.yaml` draws as a documents
JSONL, builds a cloze set from them with `harness questions` (as many answerable items
as there are probes), runs both experiments (the adapter is trained once: both train on
the same passages with the same settings) and prints each pipeline's fact recall
(`contains`) on both sets with the difference. Needs the embedded SmolLM2 and MiniLM:
minutes on a CPU.

    .venv/bin/python benchmarks/bench_fk_cloze.py [--entities 10] [--out results/fk_cloze]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compare(*, entities: int | None = None, out: Path | None = None, results: Path | None = None) -> dict:
    """Run both sets; returns {pipeline: {"probes", "cloze", "difference"}} of `contains`."""
    from harness.config import load_config, parse_config
    from harness.data import load_fictional_knowledge
    from harness.questions import make_questions
    from harness.results import atomic_write_jsonl
    from harness.runner import run_experiment

    probes_cfg = load_config(REPO / "experiments" / "fictional_knowledge.yaml")
    cloze_cfg = load_config(REPO / "experiments" / "fictional_knowledge_cloze.yaml")
    ext = probes_cfg.data.external
    raw_probes = probes_cfg.model_dump(mode="json")
    raw_probes["data"]["external"]["path"] = str((REPO / ext.path).resolve()) if not Path(ext.path).is_absolute() \
        else ext.path
    if entities is not None:
        raw_probes["data"]["external"]["max_entities"] = entities
    probes_cfg = parse_config(raw_probes)
    ext = probes_cfg.data.external
    out = out or REPO / "results" / "fk_cloze"
    data = load_fictional_knowledge(ext.path, max_entities=ext.max_entities, seed=ext.seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out / "passages.jsonl", [{"id": d.id, "text": d.text} for d in data.documents])
    make_questions(out / "passages.jsonl", out=out / "q", seed=0, max_questions=len(data.questions), embedder=None)
    raw_cloze = cloze_cfg.model_dump(mode="json")
    raw_cloze["data"].update(documents=str(out / "passages.jsonl"), questions=str(out / "q" / "questions.jsonl"))
    results = results or REPO / "results"
    raw_probes = probes_cfg.model_dump(mode="json")
    for raw in (raw_probes, raw_cloze):
        # fact recall is compared; the known/unknown breakdown is not, and its sampling
        # (4 closed-book answers per item) is most of a CPU run's time
        raw["eval"]["known_samples"] = 0
    runs = {name: json.loads((run_experiment(parse_config(raw), results_root=results) / "metrics.json").read_text())
            for name, raw in (("probes", raw_probes), ("cloze", raw_cloze))}
    table = {}
    for pipeline in runs["probes"]["pipelines"]:
        # fact recall over answerable items (the cloze set's unanswerable ones are left out)
        p = runs["probes"]["pipelines"][pipeline]["contains"]["mean"]
        c = runs["cloze"]["pipelines"][pipeline]["contains"]["mean"]
        table[pipeline] = {"probes": p, "cloze": c, "difference": c - p}
    table["_n"] = {"probes": runs["probes"]["data"]["answerable"], "cloze": runs["cloze"]["data"]["answerable"]}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=None, help="passages drawn (default: the experiment's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = compare(entities=args.entities, out=args.out)
    n = table.pop("_n")
    print(f"| pipeline | probes (n={n['probes']}) | cloze (n={n['cloze']}) | difference |")
    print("|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['probes']:.3f} | {row['cloze']:.3f} | {row['difference']:+.3f} |")


if __name__ == "__main__":
    main()
