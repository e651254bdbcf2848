"""Charts for the report, drawn with matplotlib from results data (never from a model).

Each function takes the parsed `metrics.json` (and predictions or the loss curve where it
needs them) and returns PNG bytes, or None when the run has nothing to draw. Axes are
labelled with units; every estimate carries its 95% interval as an error bar.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"base": "#7f7f7f", "finetuned": "#1f77b4", "rag": "#2ca02c", "rag_finetuned": "#9467bd", "raft": "#d62728"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _num(x: float | None) -> float:
    """A number from a results file, null (not measured) as NaN, which matplotlib leaves out."""
    return float("nan") if x is None else x


def _err(agg: dict) -> tuple[float, list[float]]:
    mean, (lo, hi) = 100 * _num(agg["mean"]), (_num(x) for x in agg["ci95"])
    return mean, [mean - 100 * lo, 100 * hi - mean]


def pipeline_bars(m: dict, metrics: tuple[str, ...]) -> bytes | None:
    """One panel per metric: each pipeline's value with its 95% interval."""
    present = [k for k in metrics if any(k in a for a in m["pipelines"].values())]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, k in zip(axes[0], present):
        names = [p for p, a in m["pipelines"].items() if k in a]
        vals = [_err(m["pipelines"][p][k]) for p in names]
        ax.bar(
            names,
            [v for v, _ in vals],
            yerr=list(zip(*[e for _, e in vals])),
            capsize=4,
            color=[COLORS.get(p, "#333") for p in names],
        )
        if k in (m.get("chance") or {}):  # the mean over items of 1 / choices
            ax.axhline(100 * _num(m["chance"][k]), ls="--", color="k", lw=1, label="chance")
            ax.legend(loc="upper left", fontsize=8)
        ax.set_title(m["metric_definitions"][k]["label"], fontsize=9, wrap=True)
        ax.set_ylabel("% of items (95% CI)")
        ax.set_ylim(0, 105)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    return _png(fig)


def accuracy_vs_cost(m: dict, metric: str = "mc_accuracy") -> bytes | None:
    """Accuracy against per-query latency (p50), one point per pipeline."""
    names = [p for p in m["pipelines"] if metric in m["pipelines"][p] and p in m["costs"]["pipelines"]]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for p in names:
        v, e = _err(m["pipelines"][p][metric])
        x = 1000 * _num(m["costs"]["pipelines"][p]["latency_p50_s"])
        ax.errorbar([x], [v], yerr=[[e[0]], [e[1]]], fmt="o", capsize=4, color=COLORS.get(p, "#333"), label=p)
    ax.set_xlabel("latency per query, p50 (ms)")
    ax.set_ylabel(f"{m['metric_definitions'][metric]['label'].split('(')[0].strip()} (%)")
    ax.set_title("accuracy against cost", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def retrieval_vs_accuracy(predictions: list[dict]) -> bytes | None:
    """Fact recall of each retrieval pipeline, split by whether retrieval found the gold
    chunk: how much of the answer quality the retriever explains."""
    groups: dict[tuple[str, bool], list[float]] = {}
    for r in predictions:
        s = r["scores"]
        if "retrieval_hit" in s and "contains" in s:
            groups.setdefault((r["pipeline"], bool(s["retrieval_hit"])), []).append(s["contains"])
    if not groups:
        return None
    from harness.evaluate.stats import wilson

    pipes = sorted({p for p, _ in groups})
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    width = 0.38
    for j, hit in enumerate((True, False)):
        xs, ys, errs = [], [], [[], []]
        for i, p in enumerate(pipes):
            vals = groups.get((p, hit), [])
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            lo, hi = wilson(sum(vals), len(vals))
            xs.append(i + (j - 0.5) * width)
            ys.append(100 * mean)
            errs[0].append(100 * (mean - lo))
            errs[1].append(100 * (hi - mean))
        ax.bar(
            xs,
            ys,
            width,
            yerr=errs,
            capsize=4,
            color="#2ca02c" if hit else "#d62728",
            label="gold chunk retrieved" if hit else "gold chunk missed",
        )
    ax.set_xticks(range(len(pipes)), pipes)
    ax.set_ylabel("fact recall (%, 95% CI)")
    ax.set_ylim(0, 105)
    ax.set_title("answer accuracy by retrieval outcome", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def loss_curve(curve: list[dict] | None) -> bytes | None:
    """Training loss per step and held-out dev loss per epoch."""
    if not curve:
        return None
    train = [(p["step"], p["train_loss"]) for p in curve if "train_loss" in p]
    dev = [(p["step"], p["dev_loss"]) for p in curve if "dev_loss" in p]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    if train:
        ax.plot(*zip(*train), lw=1, color="#1f77b4", label="train (per step)")
    if dev:
        ax.plot(*zip(*dev), "o-", color="#ff7f0e", label="dev (per epoch)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("adapter training", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def knowledge_vs_forgetting(m: dict) -> bytes | None:
    """Per adapter and benchmark: fact MC gain (x) against benchmark accuracy change (y),
    both paired differences from the base in points, with 95% intervals."""
    bench = m.get("benchmarks") or {}
    changes = bench.get("change_from_base") or {}
    gains = {c["b"]: c for c in m["comparisons"] if c["metric"] == "mc_accuracy" and c["a"] == "base"}
    points = [
        (pipe, label, c["acc"])
        for label, per in changes.items()
        for pipe, c in per.items()
        if pipe in gains and "acc" in c
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    for pipe, label, c in points:
        (gx, glo, ghi), (cy, clo, chi) = ([100 * _num(x) for x in (d["diff"], *d["ci95"])] for d in (gains[pipe], c))
        ax.errorbar(
            [gx],
            [cy],
            xerr=[[gx - glo], [ghi - gx]],
            yerr=[[cy - clo], [chi - cy]],
            fmt="o",
            capsize=3,
            label=f"{pipe}: {label}",
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("fact MC accuracy gain over base (points)")
    ax.set_ylabel("benchmark acc change (points)")
    ax.set_title("knowledge gained vs capability lost", fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)


def axis_effect(
    points: dict[str, list[tuple[object, dict]]], *, axis: str, label: str, chance: float | None = None
) -> bytes | None:
    """A metric against one grid axis: a line per pipeline, each point with its 95%
    interval. `points` maps a pipeline to (axis value, aggregate) pairs in axis order."""
    if not any(points.values()):
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    values = list(dict.fromkeys(str(x) for pts in points.values() for x, _ in pts))
    for i, (p, pts) in enumerate(points.items()):
        xs = [values.index(str(x)) + (i - (len(points) - 1) / 2) * 0.06 for x, _ in pts]  # dodge the bars
        est = [_err(a) for _, a in pts]
        ax.errorbar(
            xs,
            [v for v, _ in est],
            yerr=list(zip(*[e for _, e in est])),
            marker="o",
            capsize=3,
            label=p,
            color=COLORS.get(p, None),
        )
    if chance is not None:
        ax.axhline(100 * _num(chance), ls="--", color="k", lw=1, label="chance")
    ax.set_xticks(range(len(values)), values)
    ax.set_xlabel(axis)
    ax.set_ylabel("% of items (95% CI)")
    ax.set_ylim(0, 105)
    ax.set_title(label, fontsize=9)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def verdict_forest(v: dict, question: str) -> bytes | None:
    """A verdict's comparisons as a forest plot: each interval (at the level its step
    used) and estimate in points, against 0 and the +-min_effect band, in the order of
    the sequence; the comparisons the rule read are dark, with what each showed."""
    rows = sorted(v.get("family") or [], key=lambda c: (c.get("step") is None, str(c.get("step"))))
    if not rows:
        return None
    m = 100 * v["min_effect"]
    fig, ax = plt.subplots(figsize=(7.2, 0.5 * len(rows) + 1.2))
    ax.axvspan(-m, m, color="#f0e6c8", zorder=0)
    ax.axvline(0, color="k", lw=0.8, zorder=1)
    for i, c in enumerate(rows):
        y = len(rows) - 1 - i
        lo, hi, d = (100 * _num(x) for x in (*c["ci"], c["diff"]))
        read = c.get("step") is not None
        color = "#1f3b73" if read else "#a0a0a0"
        ax.plot([lo, hi], [y, y], color=color, lw=2.2 if read else 1.4, zorder=2)
        ax.plot([d], [y], "o", color=color, zorder=3)
        label = f"{c['step']}: {c['showed']}" if read else "not reached"
        ax.annotate(label, xy=(1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8, color=color)
    ax.set_yticks(
        range(len(rows)),
        [f"{c['x']} − {c['y']} ({100 * c.get('confidence', v['confidence']):.0f}%)" for c in reversed(rows)],
        fontsize=8,
    )
    ax.set_xlabel(f"difference in points (interval at the level of its step; shaded: ±{m:.0f}, the margin)")
    ax.set_title(f"{question}: {v['verdict']}", fontsize=10)
    return _png(fig)
