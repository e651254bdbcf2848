"""The comparison report: a pure reader of a results folder that writes `report.md`.

`write_report(results_dir)` reads `metrics.json`, `predictions.jsonl` and
`loss_curve.json` and nothing else; it never imports torch or loads a model, so
`harness report DIR` regenerates a report anywhere the result files are.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.results import atomic_write_text, read_jsonl

MAIN_METRICS = ("contains", "mc_accuracy", "token_f1", "exact_match", "hallucination_answerable",
                "hallucination_unanswerable", "abstention_answerable", "retrieval_recall")
HEADLINE_METRICS = ("contains", "mc_accuracy", "hallucination_unanswerable")


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def _cell(agg: dict | None) -> str:
    if not agg:
        return "–"
    lo, hi = agg["ci95"]
    return f"{_pct(agg['mean'])} [{_pct(lo)}, {_pct(hi)}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt_s(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def render_markdown(m: dict, predictions: list[dict], loss_curve: list[dict] | None, *, n_examples: int = 4) -> str:
    pipes = list(m["pipelines"])
    defs = m["metric_definitions"]
    d = m["data"]
    out = [f"# {m['experiment']}: base vs fine-tuned vs RAG vs both", ""]
    out.append(f"Model `{m['model']['name']}` ({m['model']['device']}, {m['model']['dtype']}); "
               f"embedder `{m['embedder']}`; data: {d['source']} "
               f"({d['documents']} documents, {d['answerable']} answerable and {d['unanswerable']} unanswerable "
               f"questions; {d['train_texts']} training texts, {d['train_questions']} training questions). "
               f"Config hash `{m['config_hash'][:12]}`, seed {m['seed']}.")
    out += ["", "All numbers are percentages with 95% confidence intervals in brackets "
            "(Wilson for proportions, bootstrap for means). Every pipeline answered the same questions.", ""]

    out += ["## Results by pipeline", ""]
    metrics_present = [k for k in MAIN_METRICS if any(k in m["pipelines"][p] for p in pipes)]
    rows = []
    for k in metrics_present:
        arrow = {"higher": "↑", "lower": "↓"}.get(defs[k]["direction"], "")
        n = next((m["pipelines"][p][k]["n"] for p in pipes if k in m["pipelines"][p]), 0)
        rows.append([f"{defs[k]['label']} {arrow}", str(n)] + [_cell(m["pipelines"][p].get(k)) for p in pipes])
    out += [_table(["metric", "n"] + pipes, rows), ""]
    if any("mc_accuracy" in m["pipelines"][p] for p in pipes):
        out += ["Multiple choice is 4-way: chance is 25.0.", ""]

    out += ["## Which differences are real", "",
            "Paired on the same items: difference (column minus row pipeline, in points) with a paired "
            "bootstrap 95% interval; p from an exact McNemar test, Benjamini-Hochberg adjusted over all "
            f"{len(m['comparisons'])} comparisons in this run. ✔ marks adjusted p < 0.05.", ""]
    for k in HEADLINE_METRICS:
        comps = [c for c in m["comparisons"] if c["metric"] == k]
        if not comps:
            continue
        rows = [[f"{c['b']} − {c['a']}", f"{100 * c['diff']:+.1f}",
                 f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]", f"{c['p_adj']:.3g}",
                 "✔" if c["significant"] else ""] for c in comps]
        out += [f"**{defs[k]['label']}**", "", _table(["comparison", "diff", "95% CI", "p (adj.)", ""], rows), ""]

    costs = m["costs"]
    out += ["## Cost per arm", ""]
    rows = [[p, _fmt_s(c["wall_seconds"]), f"{1000 * c['latency_p50_s']:.0f}", f"{1000 * c['latency_p95_s']:.0f}",
             f"{c['prompt_tokens_mean']:.0f}", f"{c['new_tokens_mean']:.1f}"] for p, c in costs["pipelines"].items()]
    out += [_table(["pipeline", "eval wall s", "latency p50 ms", "latency p95 ms", "prompt tokens", "generated tokens"],
                   rows), "", "Latency is the batch's wall time divided by its size (batched greedy decoding).", ""]
    tr = costs.get("training")
    if tr:
        out += [f"Training: {tr['steps']} steps on {tr['train_examples']} examples ({tr['dev_examples']} held out), "
                f"{tr['wall_seconds']:.1f} s, {tr['tokens_per_second']:.0f} tokens/s, "
                f"{tr['trainable_params']:,} trainable parameters "
                f"({100 * tr['trainable_params'] / tr['total_params']:.2f}% of {tr['total_params']:,}), "
                f"adapter {tr['adapter_bytes'] / 1e6:.1f} MB, peak RSS {tr['peak_rss_mb']:.0f} MB"
                + (" (adapter reused from the cache; costs are from when it was trained)." if tr["from_cache"] else "."), ""]
    ix = costs.get("index")
    if ix:
        out += [f"Index: {ix['chunks']} chunks, dimension {ix['dim']}, built in {ix['build_seconds']:.2f} s, "
                f"{ix['index_bytes'] / 1e3:.1f} kB; top-k = {m['protocol']['top_k']}.", ""]

    if loss_curve:
        train_pts = [p for p in loss_curve if "train_loss" in p]
        dev_pts = [p for p in loss_curve if "dev_loss" in p]
        out += ["## Training loss", ""]
        if train_pts:
            out.append(f"Train loss: first step {train_pts[0]['train_loss']:.3f}, last step {train_pts[-1]['train_loss']:.3f}.")
        if dev_pts:
            out += ["", _table(["epoch", "step", "dev loss"],
                               [[str(p["epoch"]), str(p["step"]), f"{p['dev_loss']:.4f}"] for p in dev_pts])]
        out.append("")

    out += ["## Worked examples", ""]
    by_q: dict[str, dict[str, dict]] = {}
    for row in predictions:
        by_q.setdefault(row["question_id"], {})[row["pipeline"]] = row
    answerable = [q for q, rows in by_q.items() if next(iter(rows.values()))["answerable"]]
    unanswerable = [q for q in by_q if q not in answerable]
    picks = answerable[:max(n_examples - 1, 0)] + unanswerable[:1]
    for qid in picks:
        rows = by_q[qid]
        first = next(iter(rows.values()))
        gold = ", ".join(first["answers"]) or "(none: unanswerable)"
        out += [f"**{first['question']}** — gold: {gold}", ""]
        for p in pipes:
            r = rows.get(p)
            if r is None:
                continue
            s = r["scores"]
            mark = ("✔" if s.get("contains") else "✘") if first["answerable"] else ("abstained" if s["abstained"] else "asserted")
            out.append(f"- `{p}`: {r['output']!r} — {mark}")
        out.append("")

    out += ["## Protocol", "",
            f"- Templates: {', '.join(m['protocol']['templates'].values())}; decoding: {m['protocol']['decoding']}.",
            f"- Multiple choice: {m['protocol']['multiple_choice']}.",
            f"- Normalisation: {m['protocol']['normalisation']}.",
            "- Abstention rule: an output abstains when it is empty or its normalised text contains one of: "
            + ", ".join(f"“{p}”" for p in m["protocol"]["abstention_phrases"]) + ".",
            "- Hallucination: on answerable questions, a wrong answer given instead of abstaining; on "
            "unanswerable questions (entities that do not exist), any answer asserted.",
            f"- Intervals: {m['protocol']['intervals']}.",
            f"- Timings: total {m['timings']['total_seconds']:.0f} s. Versions: "
            + ", ".join(f"{k} {v}" for k, v in m["provenance"]["versions"].items() if v) + ".",
            f"- Git commit: {m['provenance']['git']['commit'] or 'unknown'}"
            + (" (with uncommitted changes)" if m["provenance"]["git"]["dirty"] else "") + ".", ""]
    return "\n".join(out)


def write_report(results_dir: str | Path, *, n_examples: int = 4) -> Path:
    """(Re)write `report.md` in `results_dir` from its result files."""
    results_dir = Path(results_dir)
    m = json.loads((results_dir / "metrics.json").read_text(encoding="utf-8"))
    predictions = read_jsonl(results_dir / "predictions.jsonl")
    curve_path = results_dir / "loss_curve.json"
    curve = json.loads(curve_path.read_text(encoding="utf-8")) if curve_path.is_file() else None
    target = results_dir / "report.md"
    atomic_write_text(target, render_markdown(m, predictions, curve, n_examples=n_examples))
    return target
