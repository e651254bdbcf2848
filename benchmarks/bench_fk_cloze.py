"""Check: the cloze question set built from Fictional Knowledge's passages against the
dataset's shipped probes on the same passages (issue: within 5 points).

Writes the passages that `experiments/fictional_knowledge.yaml` draws as a documents
JSONL, builds two cloze sets from them with `harness questions` (at most as many answerable
items as there are probes): `--cloze-style blank` (the default) and `--cloze-style
complete` (sentences that stop before their last span, asked as the probes ask), runs the
three experiments (the adapter is trained once: all three train on
the same passages with the same settings) and prints each pipeline's fact recall
(`contains`) on the three sets with the differences from the probes. Needs the embedded SmolLM2 and MiniLM:
minutes on a CPU.

    .venv/bin/python benchmarks/bench_fk_cloze.py [--entities 10] [--out results/fk_cloze]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compare(*, entities: int | None = None, out: Path | None = None, results: Path | None = None) -> dict:
    """Run the probes and both cloze styles; returns {pipeline: {"probes", "cloze",
    "cloze_complete"}} of `contains`."""
    from harness.config import load_config, parse_config
    from harness.data.items import load_fictional_knowledge
    from harness.questions.build import make_questions
    from harness.run.runner import run_experiment
    from harness.store.results import atomic_write_jsonl

    probes_cfg = load_config(REPO / "experiments" / "fictional_knowledge.yaml")
    cloze_cfg = load_config(REPO / "experiments" / "fictional_knowledge_cloze.yaml")
    ext = probes_cfg.data.external
    raw_probes = probes_cfg.model_dump(mode="json")
    raw_probes["data"]["external"]["path"] = (
        str((REPO / ext.path).resolve()) if not Path(ext.path).is_absolute() else ext.path
    )
    if entities is not None:
        raw_probes["data"]["external"]["max_entities"] = entities
    probes_cfg = parse_config(raw_probes)
    ext = probes_cfg.data.external
    out = out or REPO / "results" / "fk_cloze"
    data = load_fictional_knowledge(ext.path, max_entities=ext.max_entities, seed=ext.seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out / "passages.jsonl", [{"id": d.id, "text": d.text} for d in data.documents])
    styles = {"cloze": ("blank", out / "q"), "cloze_complete": ("complete", out / "q_complete")}
    raws = {"probes": probes_cfg.model_dump(mode="json")}
    for name, (style, folder) in styles.items():
        make_questions(
            out / "passages.jsonl",
            out=folder,
            seed=0,
            max_questions=len(data.questions),
            embedder=None,
            cloze_style=style,
        )
        raws[name] = cloze_cfg.model_dump(mode="json")
        raws[name]["data"].update(documents=str(out / "passages.jsonl"), questions=str(folder / "questions.jsonl"))
    results = results or REPO / "results"
    for raw in raws.values():
        # fact recall is compared; the known/unknown breakdown is not, and its sampling
        # (4 closed-book answers per item) is most of a CPU run's time
        raw["eval"]["known_samples"] = 0
    folders = {"probes": None, "cloze": None, "cloze_complete": "fictional_knowledge_cloze_complete"}
    runs = {
        name: json.loads(
            (run_experiment(parse_config(raw), results_root=results, folder=folders[name]) / "metrics.json").read_text()
        )
        for name, raw in raws.items()
    }
    table = {}
    for pipeline in runs["probes"]["pipelines"]:
        # fact recall over answerable items (the cloze sets' unanswerable ones are left out)
        table[pipeline] = {name: r["pipelines"][pipeline]["contains"]["mean"] for name, r in runs.items()}
    table["_n"] = {name: r["data"]["answerable"] for name, r in runs.items()}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=None, help="passages drawn (default: the experiment's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = compare(entities=args.entities, out=args.out)
    n = table.pop("_n")
    print(
        f"| pipeline | probes (n={n['probes']}) | cloze, blank (n={n['cloze']}) | difference | "
        f"cloze, complete (n={n['cloze_complete']}) | difference |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in table.items():
        p = row["probes"]
        print(
            f"| {name} | {p:.3f} | {row['cloze']:.3f} | {row['cloze'] - p:+.3f} | {row['cloze_complete']:.3f} | "
            f"{row['cloze_complete'] - p:+.3f} |"
        )


if __name__ == "__main__":
    main()
