"""The comparison report: a pure reader of a results folder that writes `report.md` and a
self-contained `report.html` from one source.

`build_blocks(m, predictions, curve)` turns the parsed result files into a list of
blocks (headings, paragraphs, tables, figures, the item drill-down); `to_markdown` and
`to_html` render the same blocks. `write_report(results_dir)` reads `metrics.json`,
`predictions.jsonl` and `loss_curve.json` and nothing else; it never imports torch or
loads a model, so `harness report DIR` regenerates a report anywhere the files are.
`compare_runs(dir_a, dir_b)` puts two runs side by side.

Item text, ids and model outputs are user data: `report.html` escapes all of it and
carries a Content-Security-Policy that allows no network access and only its own script;
`report.md` neutralises anything a Markdown viewer would render as HTML (`<tag`, `&entity;`)
and table-breaking `|`. Unreadable result files raise `ReportError` naming the file.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
from pathlib import Path

from harness.results import atomic_write_text, read_jsonl

MAIN_METRICS = ("contains", "mc_accuracy", "token_f1", "exact_match", "hallucination_answerable",
                "hallucination_unanswerable", "hallucination_known", "hallucination_new", "abstention_answerable",
                "retrieval_recall")
HEADLINE_METRICS = ("contains", "mc_accuracy", "hallucination_unanswerable")
# What a finished run's metrics.json always has; anything less is a damaged or foreign file.
REQUIRED_KEYS = ("experiment", "status", "config_hash", "seed", "model", "embedder", "data", "pipelines",
                 "comparisons", "metric_definitions", "costs", "protocol", "timings", "provenance")


class ReportError(ValueError):
    """Result files that cannot be read as a finished run; the message names the file."""


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def _cell(agg: dict | None) -> str:
    if not agg:
        return "–"
    lo, hi = agg["ci95"]
    return f"{_pct(agg['mean'])} [{_pct(lo)}, {_pct(hi)}]"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def item_outcome(row: dict) -> tuple[str, str]:
    """(filter value, what to show) for one prediction: "1" right, "0" wrong, "u" an
    unanswerable question, by the item's own task (a probe is "right" when it leaks
    nothing; a rewrite when its chrF is at least 0.5)."""
    s = row["scores"]
    if not row["answerable"]:
        return "u", "abstained" if s.get("abstained") else "asserted"
    if "chrf" in s:
        return str(int(s["chrf"] >= 0.5)), f"chrF {s['chrf']:.2f}"
    if "field_f1" in s:
        return str(int(s["field_f1"] == 1.0)), f"field F1 {s['field_f1']:.2f}"
    if "canary_partial" in s:
        return str(int(not s["canary_partial"])), "leaked" if s["canary_partial"] else "no leak"
    ok = s.get("contains", s.get("label_correct", 0.0))
    return str(int(ok)), "right" if ok else "wrong"


def pick_examples(by_q: dict[str, dict[str, dict]], n: int) -> list[str]:
    """Question ids worth reading: first those where the pipelines disagree (some right,
    some wrong), then the rest, in question order; one unanswerable question at the end."""
    def right(row):
        return item_outcome(row)[0]

    answerable = [q for q, rows in by_q.items() if next(iter(rows.values()))["answerable"]]
    unanswerable = [q for q in by_q if q not in answerable]
    split = [q for q in answerable if len({right(r) for r in by_q[q].values()}) > 1]
    rest = [q for q in answerable if q not in split]
    return (split + rest)[:max(n - 1, 0)] + unanswerable[:1]


def _verdict_line(question: str, v: dict, defs: dict) -> str:
    label = defs[v["metric"]]["label"]
    if v["effect"] is None:
        return f"**{question}: {v['verdict']}** ({label})."
    lo, hi = v["ci95"]
    return (f"**{question}: {v['verdict']}** — {v['comparison']}: {_pts(v['effect'])} points "
            f"[{_pts(lo)}, {_pts(hi)}], adjusted p = {v['p_adj']:.3g} ({label}).")


def _verdict_cell(v: dict | None) -> str:
    """A verdict in one table cell: winner, then the deciding difference and interval."""
    if v is None:
        return "not measured (needs base, finetuned, rag and rag_finetuned)"
    if v["effect"] is None:
        return f"**{v['verdict']}**"
    lo, hi = v["ci95"]
    return f"**{v['verdict']}**: {v['comparison']} {_pts(v['effect'])} [{_pts(lo)}, {_pts(hi)}]"


DECISION_TABLE_HEADER = ["scenario", "claimed: RAG", "claimed: fine-tuning", "measured (deciding metric)",
                         "measured winner, effect in points [95% CI]"]


def decision_rows(results: list[dict]) -> list[list[str]]:
    """Rows of the decision table, one per run that carries a scenario."""
    rows = []
    for m in results:
        sc = m.get("scenario")
        if sc:
            rows.append([sc["label"], sc["claim"]["rag"], sc["claim"]["finetuning"],
                         m["metric_definitions"][sc["decision_metric"]]["label"], _verdict_cell(sc["verdict"])])
    return rows


def _scenario_blocks(m: dict) -> list[tuple]:
    """This run's row of the "when to fine-tune, when to use RAG" table, with its other
    verdicts and its corpus-level numbers."""
    sc = m.get("scenario")
    if not sc:
        return []
    defs = m["metric_definitions"]
    b: list[tuple] = [("h2", f"Decision table row: {sc['label']}")]
    b.append(("table", DECISION_TABLE_HEADER, decision_rows([m])))
    for metric, v in sc["also"].items():
        b.append(("p", f"{defs[metric]['label']}: {_verdict_cell(v)}."))
    corpus = sc.get("corpus") or {}
    if sc["name"] == "style":
        clf = corpus["classifier"]
        b.append(("p", f"Style classifier (character n-gram logistic regression, trained on {clf['train_pairs']} "
                       f"pairs' two sides): held-out accuracy {_pct(clf['held_out_accuracy'])}% on "
                       f"{clf['held_out_pairs']} pairs. Corpus-level scores (sacrebleu):"))
        b.append(("table", ["pipeline", "corpus BLEU", "corpus chrF"],
                  [[p, f"{c['bleu']:.1f}", f"{c['chrf']:.1f}"] for p, c in corpus.items() if p != "classifier"]))
    if sc["name"] == "format":
        b.append(("p", "Classification, corpus-level macro-F1 (scikit-learn) with a bootstrap 95% interval:"))
        b.append(("table", ["pipeline", "macro-F1"],
                  [[p, f"{_pct(c['macro_f1'])} [{_pct(c['macro_f1_ci95'][0])}, {_pct(c['macro_f1_ci95'][1])}]"]
                   for p, c in corpus.items()]))
    if sc["name"] == "updated" and corpus.get("update_cost"):
        u = corpus["update_cost"]
        reindex = "–" if u["reindex_seconds"] is None else f"{u['reindex_seconds']:.2f} s"
        retrain = "–" if u["retrain_seconds"] is None else f"{u['retrain_seconds']:.1f} s"
        b.append(("p", f"Cost of taking in the update: re-index {reindex}; retrain {retrain} ({u['note']})."))
    return b


def _forgetting_blocks(m: dict) -> list[tuple]:
    """Per adapter: the fact-recall gain next to the change on general benchmarks."""
    bench = m.get("benchmarks")
    if not bench:
        return []
    from harness import plots

    b: list[tuple] = [("h2", "Knowledge gained against capability lost")]
    gains = {c["b"]: c for c in m["comparisons"] if c["metric"] == "mc_accuracy" and c["a"] == "base"}
    for pipe in sorted({p for per in bench.get("change_from_base", {}).values() for p in per}):
        g = gains.get(pipe)
        if g:
            b.append(("p", f"**{pipe}** gains {_pts(g['diff'])} points [{_pts(g['ci95'][0])}, {_pts(g['ci95'][1])}] "
                           "of multiple-choice accuracy on the injected facts; on general benchmarks "
                           "(same items, paired; negative = forgotten):"))
        rows = []
        for label, per in bench["change_from_base"].items():
            if pipe not in per:
                continue
            for metric, c in per[pipe].items():
                base_acc = bench["accuracy"][label]["base"][metric]
                ft_acc = bench["accuracy"][label][pipe][metric]
                rows.append([label, metric, str(c["n"]), _cell(base_acc), _cell(ft_acc), _pts(c["diff"]),
                             f"[{_pts(c['ci95'][0])}, {_pts(c['ci95'][1])}]", f"{c['p']:.3g}"])
        b.append(("table", ["benchmark", "metric", "n", "base", pipe, "change", "95% CI", "McNemar p"], rows))
    b.append(("figure", "forgetting", plots.knowledge_vs_forgetting(m), "Fact gain against benchmark change, per adapter."))
    b.append(("p", f"Scored by lm-evaluation-harness ({bench['num_fewshot']}-shot, log-likelihood multiple choice; "
                   f"data: {bench['source']}). MMLU reports acc, HellaSwag acc and acc_norm, as lm-eval does."))
    for s in bench.get("skipped", []):
        b.append(("p", f"Skipped **{s['benchmark']}**: {s['reason']}. To run it: {s['fix']}."))
    return b


def _knowledge_blocks(m: dict) -> list[tuple]:
    """Hallucination split by where the fact came from, and accuracy by what the base
    model knew (knowledge.py)."""
    bk = m.get("by_knowledge")
    if not bk or not any(bk["counts"].values()):
        return []
    defs, pipes = m["metric_definitions"], list(m["pipelines"])
    b: list[tuple] = [("h2", "Hallucination by source, and what the base model knew")]
    counts = ", ".join(f"{n} {c.replace('_', ' ')}" for c, n in bk["counts"].items())
    how = (f"its greedy answer and {bk['samples']} samples at temperature {bk['temperature']}" if bk["samples"]
           else "its greedy answer")
    b.append(("p", f"Each answerable question is tagged by the base model's own closed-book answers ({how}): "
                   f"{counts}. Hallucination on facts it knew is the regression Gekhman et al. warn of after "
                   "fine-tuning on new facts."))
    rows = []
    for k in ("hallucination_known", "hallucination_new", "hallucination_unanswerable"):
        if any(k in m["pipelines"][p] for p in pipes):
            n = next(m["pipelines"][p][k]["n"] for p in pipes if k in m["pipelines"][p])
            rows.append([defs[k]["label"] + " ↓", str(n)] + [_cell(m["pipelines"][p].get(k)) for p in pipes])
    if rows:
        b.append(("table", ["hallucination", "n"] + pipes, rows))
    rows = []
    for c in bk["counts"]:
        for k in ("contains", "mc_accuracy"):
            aggs = [bk["pipelines"].get(p, {}).get(c, {}).get(k) for p in pipes]
            if any(aggs):
                rows.append([c.replace("_", " "), defs[k]["label"]] + [_cell(a) for a in aggs])
    if rows:
        b.append(("table", ["base model", "metric"] + pipes, rows))
    return b


def build_blocks(m: dict, predictions: list[dict], curve: list[dict] | None) -> list[tuple]:
    """The report as blocks: ("h1"|"h2"|"p", text), ("table", header, rows),
    ("figure", name, caption), ("items", rows)."""
    from harness import plots

    pipes = list(m["pipelines"])
    defs = m["metric_definitions"]
    d = m["data"]
    sc = m.get("scenario")
    headline = (sc["decision_metric"], *sc["also"]) if sc else HEADLINE_METRICS
    b: list[tuple] = [("h1", f"{m['experiment']}: base vs fine-tuned vs RAG vs both")]
    b.append(("p", f"Model `{m['model']['name']}` ({m['model']['device']}, {m['model']['dtype']}); "
                   f"embedder `{m['embedder']}`; data: {d['source']} ({d['documents']} documents, "
                   f"{d['answerable']} answerable and {d['unanswerable']} unanswerable questions; "
                   f"{d['train_texts']} training texts, {d['train_questions']} training questions). "
                   f"Config hash `{m['config_hash'][:12]}`, seed {m['seed']}."))

    b += _scenario_blocks(m)
    b.append(("h2", "Verdicts"))
    verdicts = m.get("verdicts") or {}
    if verdicts:
        for question, v in verdicts.items():
            b.append(("p", _verdict_line(question, v, defs)))
        any_v = next(iter(verdicts.values()))
        b.append(("p", f"Rule: X beats Y when the paired difference favours X by at least "
                       f"{100 * any_v['min_effect']:.0f} points and its Benjamini-Hochberg adjusted p is below "
                       f"{any_v['alpha']}. “both”: rag_finetuned beats each single arm; “RAG”: rag beats "
                       "finetuned; “fine-tuning”: finetuned beats rag; otherwise “no clear winner”. The interval is a paired bootstrap 95% interval."))
    elif not sc:
        b.append(("p", "No verdicts: they need all four pipelines in the run."))
    else:
        b.append(("p", "The fact-question verdicts do not apply to this scenario; its verdicts are above."))

    b.append(("h2", "Results by pipeline"))
    b.append(("p", "Percentages with 95% confidence intervals in brackets (Wilson for proportions, "
                   "bootstrap for means). Every pipeline answered the same questions."))
    rows = []
    for k in list(MAIN_METRICS) + [k for k in defs if k not in MAIN_METRICS]:
        if not any(k in m["pipelines"][p] for p in pipes):
            continue
        arrow = {"higher": "↑", "lower": "↓"}.get(defs[k]["direction"], "")
        n = next(m["pipelines"][p][k]["n"] for p in pipes if k in m["pipelines"][p])
        rows.append([f"{defs[k]['label']} {arrow}".strip(), str(n)] + [_cell(m["pipelines"][p].get(k)) for p in pipes])
    b.append(("table", ["metric", "n"] + pipes, rows))
    if any("mc_accuracy" in m["pipelines"][p] for p in pipes):
        b.append(("p", "Multiple choice is 4-way: chance is 25.0."))
    b.append(("figure", "pipelines", plots.pipeline_bars(m, headline),
              "Headline metrics per pipeline with 95% intervals."))
    spread = m.get("seed_spread") or {}
    if spread:
        b.append(("h2", "Spread across training seeds"))
        b.append(("p", "The fine-tuned pipelines re-run with an adapter trained from each seed. The per-item "
                       "interval above says how much the items could move the number; this says how much "
                       "the training seed does. Everything else in this report uses the first seed."))
        rows = []
        for pipe, per in spread.items():
            for k in HEADLINE_METRICS:
                if k in per:
                    sp = per[k]
                    rows.append([pipe, defs[k]["label"], ", ".join(_pct(v) for v in sp["values"]),
                                 f"{_pct(sp['mean'])} ± {_pct(sp['sd'])}", f"{_pct(sp['min'])}–{_pct(sp['max'])}",
                                 _cell(m["pipelines"][pipe].get(k))])
        b.append(("table", ["pipeline", "metric", f"per seed ({', '.join(map(str, next(iter(spread.values()))['contains']['seeds']))})",
                            "mean ± sd", "range", "first seed, 95% CI over items"], rows))

    b.append(("h2", "Which differences are real"))
    b.append(("p", "Paired on the same items: difference (first minus second pipeline, in points) with a paired "
                   "bootstrap 95% interval; p from an exact McNemar test (bootstrap for means), "
                   f"Benjamini-Hochberg adjusted over all {len(m['comparisons'])} comparisons in this run. "
                   "✔ marks adjusted p < 0.05."))
    for k in headline:
        comps = [c for c in m["comparisons"] if c["metric"] == k]
        if comps:
            b.append(("p", f"**{defs[k]['label']}**"))
            b.append(("table", ["comparison", "diff", "95% CI", "p (adj.)", ""],
                      [[f"{c['b']} − {c['a']}", _pts(c["diff"]), f"[{_pts(c['ci95'][0])}, {_pts(c['ci95'][1])}]",
                        f"{c['p_adj']:.3g}", "✔" if c["significant"] else ""] for c in comps]))

    b += _knowledge_blocks(m)
    b += _forgetting_blocks(m)

    costs = m["costs"]
    b.append(("h2", "Cost per arm"))
    b.append(("table", ["pipeline", "eval wall s", "latency p50 ms", "latency p95 ms", "prompt tokens / query",
                        "generated tokens / query"],
              [[p, f"{c['wall_seconds']:.1f}", f"{1000 * c['latency_p50_s']:.0f}", f"{1000 * c['latency_p95_s']:.0f}",
                f"{c['prompt_tokens_mean']:.0f}", f"{c['new_tokens_mean']:.1f}"] for p, c in costs["pipelines"].items()]))
    b.append(("p", "Latency is generation alone: the batch's wall time divided by its size (batched greedy "
                   "decoding). Eval wall time also includes retrieval and multiple-choice scoring."))
    tr = costs.get("training")
    if tr:
        gpu = f", peak GPU memory {tr['peak_gpu_mb']:.0f} MB" if tr.get("peak_gpu_mb") else ""
        method = {"qlora": "QLoRA (base in 4-bit NF4)", "lora": "LoRA"}.get(tr.get("method"), "LoRA")
        b.append(("p", f"Fine-tuning arm ({method}{gpu}): {tr['steps']} steps on {tr['train_examples']} examples "
                       f"({tr['dev_examples']} held out), {tr['wall_seconds']:.1f} s, {tr['tokens_per_second']:.0f} "
                       f"tokens/s, {tr['trainable_params']:,} trainable parameters "
                       f"({100 * tr['trainable_params'] / tr['total_params']:.2f}% of {tr['total_params']:,}), "
                       f"adapter {tr['adapter_bytes'] / 1e6:.1f} MB on disk, peak process memory "
                       f"{tr['peak_rss_mb']:.0f} MB" + (" (adapter reused from the cache; these costs are from "
                                                        "when it was trained)." if tr["from_cache"] else ".")))
    ix = costs.get("index")
    if ix:
        dim = f" of dimension {ix['dim']}" if ix.get("dim") else ""
        b.append(("p", f"Retrieval arm ({ix.get('method', 'dense')}): {ix['chunks']} chunks{dim}, index built in "
                       f"{ix['build_seconds']:.2f} s, {ix['index_bytes'] / 1e3:.1f} kB of FAISS index; "
                       f"top-k = {m['protocol']['top_k']}."))
    b.append(("figure", "cost", plots.accuracy_vs_cost(m), "Multiple-choice accuracy against per-query latency."))
    if any("retrieval_recall" in a for a in m["pipelines"].values()):
        b.append(("h2", "Retrieval against answers"))
        b.append(("figure", "retrieval", plots.retrieval_vs_accuracy(predictions),
                  "Fact recall when the gold chunk was retrieved and when it was missed."))

    if curve:
        b.append(("h2", "Training loss"))
        dev = [p for p in curve if "dev_loss" in p]
        if dev:
            b.append(("table", ["epoch", "step", "dev loss"], [[str(p["epoch"]), str(p["step"]), f"{p['dev_loss']:.4f}"]
                                                              for p in dev]))
        b.append(("figure", "loss", plots.loss_curve(curve), "Train loss per step and dev loss per epoch."))

    by_q: dict[str, dict[str, dict]] = {}
    for row in predictions:
        by_q.setdefault(row["question_id"], {})[row["pipeline"]] = row
    b.append(("h2", "Worked examples"))
    for qid in pick_examples(by_q, m["protocol"].get("n_examples", 4)):
        first = next(iter(by_q[qid].values()))
        lines = []
        for p in pipes:
            r = by_q[qid].get(p)
            if r is not None:
                flag, shown = item_outcome(r)
                mark = {"1": f"✔ {shown}", "0": f"✘ {shown}"}.get(flag, shown).replace("✔ right", "✔").replace(
                    "✘ wrong", "✘")
                lines.append(f"`{p}`: “{r['output']}” {mark}")
        gold = ", ".join(first["answers"]) or "(none: unanswerable)"
        b.append(("p", f"**{first['question']}** — gold: {gold}<br>" + "<br>".join(lines)))
    b.append(("items", predictions))

    proto = m["protocol"]
    b.append(("h2", "Protocol"))
    b.append(("p", f"Templates: {', '.join(proto['templates'].values())}; decoding: {proto['decoding']}. "
                   f"Multiple choice: {proto['multiple_choice']}. Normalisation: {proto['normalisation']}."))
    b.append(("p", "Abstention rule: an output abstains when it is empty or its normalised text contains one of: "
                   + ", ".join(f"“{p}”" for p in proto["abstention_phrases"]) + ". Hallucination: on answerable "
                   "questions, a wrong answer given instead of abstaining; on unanswerable questions (entities "
                   "that do not exist), any answer asserted."))
    b.append(("p", f"Intervals: {proto['intervals']}. Total time {m['timings']['total_seconds']:.0f} s. Versions: "
                   + ", ".join(f"{k} {v}" for k, v in m["provenance"]["versions"].items() if v)
                   + f". Git commit: {m['provenance']['git']['commit'] or 'unknown'}"
                   + (" (with uncommitted changes)." if m["provenance"]["git"]["dirty"] else ".")))
    return b


def md_escape(text: str) -> str:
    """Text a Markdown viewer shows as text: no raw HTML tag, comment or entity survives
    (`<img onerror=...>` becomes `&lt;img ...`); a lone `<` as in "p < 0.05" stays."""
    text = re.sub(r"&(?=#?[A-Za-z0-9]+;)", "&amp;", text)
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _md_cell(text: str) -> str:
    return md_escape(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def to_markdown(blocks: list[tuple], *, figure_dir: str | None = None) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out += [f"# {md_escape(block[1])}", ""]
        elif kind == "h2":
            out += [f"## {md_escape(block[1])}", ""]
        elif kind == "p":
            out += ["  \n".join(md_escape(part) for part in block[1].split("<br>")), ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            out += ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
            out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows] + [""]
        elif kind == "figure" and block[2] is not None and figure_dir:
            out += [f"![{block[3]}]({figure_dir}/{block[1]}.png)", ""]
        elif kind == "items":
            out += ["Every item, with each pipeline's answer and scores, is in `predictions.jsonl` and in "
                    "the filterable table of `report.html`.", ""]
    return "\n".join(out)


def _md_inline(text: str) -> str:
    """The little Markdown the blocks use (**bold**, `code`, <br>) as HTML."""
    import re

    t = html.escape(text).replace("&lt;br&gt;", "<br>")
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;
vertical-align:top}th{background:#f2f2f2}figure{margin:1em 0}figcaption{font-size:12px;color:#555}
img{max-width:100%}.ok{color:#1a7f37}.bad{color:#cf222e}#filters{margin:.5em 0}#filters *{margin-right:.6em}"""

_JS = """(function(){var q=document.getElementById('f-text'),p=document.getElementById('f-pipe'),
c=document.getElementById('f-correct'),rows=document.querySelectorAll('#items tbody tr'),
n=document.getElementById('f-count');function apply(){var t=q.value.toLowerCase(),shown=0;
rows.forEach(function(r){var ok=(!t||r.textContent.toLowerCase().indexOf(t)>=0)&&
(!p.value||r.dataset.pipeline===p.value)&&(!c.value||r.dataset.correct===c.value);
r.style.display=ok?'':'none';if(ok)shown++;});n.textContent=shown+' of '+rows.length+' rows';}
[q,p,c].forEach(function(e){e.addEventListener('input',apply);});apply();
document.body.dataset.ready='1';})();"""


def _items_html(predictions: list[dict]) -> str:
    pipes = sorted({r["pipeline"] for r in predictions})
    head = ("<div id='filters'><input id='f-text' placeholder='filter text'>"
            "<select id='f-pipe'><option value=''>all pipelines</option>"
            + "".join(f"<option>{html.escape(p)}</option>" for p in pipes)
            + "</select><select id='f-correct'><option value=''>right and wrong</option>"
              "<option value='1'>right</option><option value='0'>wrong</option>"
              "<option value='u'>unanswerable</option></select><span id='f-count'></span></div>")
    rows = []
    for r in predictions:
        s = r["scores"]
        correct, shown = item_outcome(r)
        passages = "<br>".join(f"[{html.escape(h['id'])}] {html.escape(h['text'])}" for h in r["retrieved"])
        css = {"1": "ok", "0": "bad", "u": "" if s.get("abstained") else "bad"}[correct]
        mark = f"<span class='{css}'>{html.escape(shown)}</span>"
        rows.append(f"<tr data-pipeline='{html.escape(r['pipeline'])}' data-correct='{correct}'>"
                    f"<td>{html.escape(r['question'])}</td><td>{html.escape(', '.join(r['answers']) or '—')}</td>"
                    f"<td>{html.escape(r['pipeline'])}</td><td>{html.escape(r['output'])}</td><td>{mark}</td>"
                    f"<td>{passages}</td></tr>")
    return (head + "<table id='items'><thead><tr><th>question</th><th>gold</th><th>pipeline</th><th>answer</th>"
            "<th>right?</th><th>retrieved passages</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def content_security_policy() -> str:
    """No network at all (no fetch, no remote image, font or frame); images only as the
    embedded data: URIs; the one inline script only, by its hash, so an injected script
    could not run even if escaping failed."""
    script = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script}'; "
            "base-uri 'none'; form-action 'none'")


def to_html(blocks: list[tuple], *, title: str) -> str:
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_md_inline(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_md_inline(block[1])}</p>")
        elif kind == "table":
            body.append("<table><thead><tr>" + "".join(f"<th>{_md_inline(h)}</th>" for h in block[1])
                        + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in r)
                                                         + "</tr>" for r in block[2]) + "</tbody></table>")
        elif kind == "figure" and block[2] is not None:
            data = base64.b64encode(block[2]).decode()
            body.append(f"<figure class='plot' id='fig-{block[1]}'><img alt='{html.escape(block[3])}' "
                        f"src='data:image/png;base64,{data}'><figcaption>{html.escape(block[3])}</figcaption></figure>")
        elif kind == "items":
            body.append("<h2>All items</h2>" + _items_html(block[1]))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{content_security_policy()}\">"
            f"<title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}<script>{_JS}</script></body></html>\n")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: missing (not a finished results folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not readable as JSON, truncated or damaged ({err})") from None


def _load(results_dir: Path) -> tuple[dict, list[dict], list[dict] | None]:
    path = results_dir / "metrics.json"
    m = _read_json(path)
    missing = [k for k in REQUIRED_KEYS if k not in m] if isinstance(m, dict) else ["(an object)"]
    if missing:
        raise ReportError(f"{path}: incomplete, no {', '.join(missing[:3])} (not a finished run's file)")
    if m["status"] != "complete":
        raise ReportError(f"{path}: status {m['status']!r}, not a finished run")
    try:
        predictions = read_jsonl(results_dir / "predictions.jsonl")
    except FileNotFoundError:
        raise ReportError(f"{results_dir / 'predictions.jsonl'}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{results_dir / 'predictions.jsonl'}: truncated or damaged ({err})") from None
    curve_path = results_dir / "loss_curve.json"
    curve = _read_json(curve_path) if curve_path.is_file() else None
    return m, predictions, curve


def _build(results_dir: Path, m: dict, predictions: list[dict], curve) -> list[tuple]:
    """build_blocks, with a field missing from the files reported as the files' fault."""
    try:
        return build_blocks(m, predictions, curve)
    except (KeyError, TypeError, IndexError) as err:
        raise ReportError(f"{results_dir}: result files are incomplete or from another version "
                          f"({type(err).__name__}: {err})") from None


def write_report(results_dir: str | Path) -> Path:
    """(Re)write `report.md`, its figures under `figures/`, and `report.html` in
    `results_dir`, from its result files."""
    results_dir = Path(results_dir)
    m, predictions, curve = _load(results_dir)
    blocks = _build(results_dir, m, predictions, curve)
    figures = results_dir / "figures"
    figures.mkdir(exist_ok=True)
    for block in blocks:
        if block[0] == "figure" and block[2] is not None:
            tmp = figures / f".{block[1]}.png.tmp"
            tmp.write_bytes(block[2])
            tmp.replace(figures / f"{block[1]}.png")
    atomic_write_text(results_dir / "report.html", to_html(blocks, title=f"{m['experiment']} — harness report"))
    target = results_dir / "report.md"
    atomic_write_text(target, to_markdown(blocks, figure_dir="figures"))
    return target


def compare_runs(dir_a: str | Path, dir_b: str | Path) -> str:
    """Two runs side by side: each shared pipeline's headline metrics in both, as Markdown.
    The runs may differ in items, so differences here are not paired."""
    (ma, _, _), (mb, _, _) = _load(Path(dir_a)), _load(Path(dir_b))
    defs = ma["metric_definitions"]
    out = [f"# {ma['experiment']} vs {mb['experiment']}", "",
           f"A = `{dir_a}` (config `{ma['config_hash'][:12]}`), B = `{dir_b}` (config `{mb['config_hash'][:12]}`). "
           "Percentages with 95% intervals; the runs may differ in items, so B − A is not a paired difference.", ""]
    rows = []
    for k in MAIN_METRICS:
        for p in ma["pipelines"]:
            a, bb = ma["pipelines"][p].get(k), mb["pipelines"].get(p, {}).get(k)
            if a and bb:
                rows.append([defs[k]["label"], p, _cell(a), _cell(bb), _pts(bb["mean"] - a["mean"])])
    out += ["| metric | pipeline | A | B | B − A |", "|---|---|---|---|---|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    for name, m in (("A", ma), ("B", mb)):
        for question, v in (m.get("verdicts") or {}).items():
            out.append(f"\n{name}: {_verdict_line(question, v, defs)}")
    return "\n".join(out) + "\n"


def render_grid(grid: dict, cells: dict[str, dict]) -> str:
    """The grid report: each headline metric per cell and pipeline with intervals, the
    best cell per pipeline, and each axis's effect (mean over the cells at each value)."""
    ids = [c["id"] for c in grid["cells"] if c["id"] in cells]
    values = {c["id"]: c["values"] for c in grid["cells"]}
    out = [f"# {grid['experiment']}: grid of {len(grid['cells'])} cells", "",
           f"{len(ids)} cells finished. Each cell's own report is in its folder; percentages with 95% intervals.", ""]
    any_m = next(iter(cells.values()), None)
    if any_m is None:
        return "\n".join(out)
    table = decision_rows([cells[cid] for cid in ids])
    if table:
        out += ["## The decision table, measured", "",
                "Each row is one cell of this grid, measured on its own items; the verdict rule is the one in "
                "every cell's report (a difference of at least `eval.min_effect` with adjusted p < 0.05).", "",
                "| " + " | ".join(DECISION_TABLE_HEADER) + " |", "|" + "---|" * len(DECISION_TABLE_HEADER)]
        out += ["| " + " | ".join(row) + " |" for row in table] + [""]
    defs = any_m["metric_definitions"]
    for metric in HEADLINE_METRICS:
        pipes = [p for p in any_m["pipelines"] if metric in any_m["pipelines"][p]]
        if not pipes:
            continue
        out += [f"## {defs[metric]['label']}", "", "| cell | " + " | ".join(pipes) + " |",
                "|---|" + "|".join("---" for _ in pipes) + "|"]
        for cid in ids:
            out.append(f"| {cid} | " + " | ".join(_cell(cells[cid]["pipelines"].get(p, {}).get(metric)) for p in pipes)
                       + " |")
        better = max if defs[metric]["direction"] == "higher" else min
        out.append("")
        for p in pipes:
            scored = [(cid, cells[cid]["pipelines"][p][metric]) for cid in ids if metric in cells[cid]["pipelines"].get(p, {})]
            if scored:
                best_id, best = better(scored, key=lambda kv: kv[1]["mean"])
                out.append(f"- best for `{p}`: **{best_id}** {_cell(best)}")
        out.append("")
        for axis in grid["cells"][0]["values"] if grid["cells"] else []:
            levels: dict[str, list[float]] = {}
            for cid in ids:
                if axis in values[cid]:
                    for p in pipes:
                        agg = cells[cid]["pipelines"].get(p, {}).get(metric)
                        if agg:
                            levels.setdefault(f"{p}|{values[cid][axis]}", []).append(agg["mean"])
            if levels:
                out.append(f"Effect of `{axis}` (mean over cells at each value): " + "; ".join(
                    f"{k.split('|')[0]} @ {k.split('|')[1]}: {_pct(sum(v) / len(v))}" for k, v in levels.items()) + ".")
        out.append("")
    return "\n".join(out)


def grid_figures(grid: dict, cells: dict[str, dict]) -> dict[str, bytes]:
    """For a one-axis grid, each headline metric against the axis, per pipeline, with
    intervals (file name -> PNG). Grids of several axes get the text effects only:
    averaging over the other axes would hide the intervals."""
    axes = list(dict.fromkeys(k for c in grid["cells"] for k in c["values"]))
    if len(axes) != 1 or not cells:
        return {}
    from harness import plots

    axis = axes[0]
    any_m = next(iter(cells.values()))
    out = {}
    for metric in HEADLINE_METRICS:
        points: dict[str, list] = {}
        for c in grid["cells"]:
            m = cells.get(c["id"])
            if m is None or axis not in c["values"]:
                continue
            for p, aggs in m["pipelines"].items():
                if metric in aggs:
                    points.setdefault(p, []).append((c["values"][axis], aggs[metric]))
        png = plots.axis_effect(points, axis=axis, label=any_m["metric_definitions"][metric]["label"],
                                chance=0.25 if metric == "mc_accuracy" else None)
        if png is not None:
            out[f"effect-{axis.split('.')[-1]}-{metric}.png"] = png
    return out


def write_grid_report(grid_dir: str | Path) -> Path:
    """(Re)write `grid.md` (and its figures) in a grid's folder from `grid.json` and the
    cells' metrics."""
    grid_dir = Path(grid_dir)
    grid = json.loads((grid_dir / "grid.json").read_text(encoding="utf-8"))
    cells = {}
    for c in grid["cells"]:
        path = grid_dir / c["id"] / "metrics.json"
        if path.is_file():
            try:
                cells[c["id"]] = _load(grid_dir / c["id"])[0]
            except ReportError as err:  # a damaged cell is left out of the grid report, said so
                logging.getLogger(__name__).warning("grid report: cell %s left out: %s", c["id"], err)
    figures = grid_figures(grid, cells)
    if figures:
        (grid_dir / "figures").mkdir(exist_ok=True)
        for name, png in figures.items():
            (grid_dir / "figures" / name).write_bytes(png)
    text = render_grid(grid, cells)
    if figures:
        text += "\n## Against the axis\n\n" + "".join(f"![{name}](figures/{name})\n\n" for name in figures)
    target = grid_dir / "grid.md"
    atomic_write_text(target, text)
    return target
