"""Uncertainty for every number the report prints. Pure functions on lists of per-item
scores; seeded, so the same scores give the same intervals.

- `wilson(k, n)`: the Wilson score interval for a proportion (better than the normal
  approximation near 0 and 1, which is where a base model sits on unknown facts).
- `bootstrap_ci(values)`: percentile bootstrap interval for a mean.
- `paired_difference(a, b)`: mean of b - a over the same items, with a paired bootstrap
  interval (items are resampled together, so item difficulty cancels).
- `mcnemar_exact(a, b)`: exact McNemar p-value for two 0/1 score lists on the same items.
- `benjamini_hochberg(pvalues)`: false-discovery-rate adjusted p-values.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest, norm


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2))


def wilson(k: float, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n == 0:
        return (float("nan"), float("nan"))
    z, p = _z(confidence), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At k = 0 and k = n the bounds are exactly 0 and 1; rounding must not move them.
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def bootstrap_ci(values, *, samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (float(lo), float(hi))


def bootstrap_statistic(items: list, statistic, *, samples: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a corpus-level `statistic(items)` (macro-F1, say),
    resampling items with replacement."""
    if not items:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    values = [statistic([items[i] for i in rng.integers(0, len(items), size=len(items))]) for _ in range(samples)]
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (float(lo), float(hi))


def summarize(values, *, kind: str, samples: int = 2000, seed: int = 0) -> dict:
    """Mean, n and a 95% interval: Wilson for 0/1 proportions, bootstrap for means."""
    x = [float(v) for v in values]
    n = len(x)
    mean = sum(x) / n if n else float("nan")
    if kind == "proportion":
        lo, hi = wilson(sum(x), n)
        method = "wilson"
    else:
        lo, hi = bootstrap_ci(x, samples=samples, seed=seed)
        method = "bootstrap"
    return {"mean": mean, "n": n, "ci95": [lo, hi], "ci_method": method}


def spread(values) -> dict:
    """Mean, sample standard deviation, min and max of one aggregate across seeds."""
    x = np.asarray(values, dtype=float)
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "min": float(x.min()), "max": float(x.max())}


def paired_difference(a, b, *, samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean of (b - a) over paired items with a paired percentile-bootstrap interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.size} vs {y.size}")
    d = y - x
    lo, hi = bootstrap_ci(d, samples=samples, confidence=confidence, seed=seed)
    return {"diff": float(d.mean()) if d.size else float("nan"), "n": int(d.size), "ci95": [lo, hi]}


def mcnemar_exact(a, b) -> dict:
    """Exact (binomial) McNemar test on discordant pairs of two 0/1 score lists."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    only_a, only_b = int(np.sum(x & ~y)), int(np.sum(~x & y))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_b, n, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p": p}


def benjamini_hochberg(pvalues) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in out]


def aggregate(values_by_metric: dict[str, dict[str, float]], kinds: dict[str, str], *,
              samples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """`summarize` for each metric's per-item values."""
    return {m: summarize(list(v.values()), kind=kinds[m], samples=samples, seed=seed)
            for m, v in values_by_metric.items()}


def compare_all(per_pipeline: dict[str, dict[str, dict[str, float]]], kinds: dict[str, str], *,
                samples: int = 2000, seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """Every pair of pipelines on every metric they share, on the items both scored:
    paired difference (b - a) with a paired bootstrap interval; for 0/1 metrics an exact
    McNemar p-value. p-values are Benjamini-Hochberg adjusted across all comparisons,
    and `significant` means adjusted p < alpha."""
    names = list(per_pipeline)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for metric in per_pipeline[a]:
                if metric not in per_pipeline[b]:
                    continue
                ids = sorted(set(per_pipeline[a][metric]) & set(per_pipeline[b][metric]))
                if not ids:
                    continue
                xa = [per_pipeline[a][metric][k] for k in ids]
                xb = [per_pipeline[b][metric][k] for k in ids]
                row = {"metric": metric, "a": a, "b": b, **paired_difference(xa, xb, samples=samples, seed=seed)}
                if kinds[metric] == "proportion":
                    row.update(test="mcnemar_exact", **mcnemar_exact(xa, xb))
                else:
                    row.update(test="paired_bootstrap", p=_bootstrap_p(xa, xb, samples=samples, seed=seed))
                rows.append(row)
    for row, p_adj in zip(rows, benjamini_hochberg([r["p"] for r in rows])):
        row["p_adj"] = p_adj
        row["significant"] = p_adj < alpha
    return rows


def _bootstrap_p(a, b, *, samples: int, seed: int) -> float:
    """Two-sided paired bootstrap p-value for mean(b - a) = 0 (centred resampling)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if d.size == 0 or np.all(d == d[0]):
        return 1.0 if d.size == 0 or d[0] == 0 else 0.0
    rng = np.random.default_rng(seed)
    centred = d - d.mean()
    means = centred[rng.integers(0, d.size, size=(samples, d.size))].mean(axis=1)
    return float((np.sum(np.abs(means) >= abs(d.mean())) + 1) / (samples + 1))


VERDICTS = ("RAG", "fine-tuning", "both", "no clear winner")


def decide(comparisons: list[dict], *, metric: str, direction: str, min_effect: float = 0.05,
           alpha: float = 0.05, rag: str = "rag", finetuned: str = "finetuned",
           combined: str = "rag_finetuned") -> dict:
    """The verdict for one question from the paired comparisons of one metric.

    X beats Y when the paired difference favours X by at least `min_effect` (in the
    metric's units; 0.05 = 5 points) and its Benjamini-Hochberg adjusted p is below
    `alpha`. Then: "both" if the combined pipeline beats each single arm; "RAG" if RAG
    beats fine-tuning head to head; "fine-tuning" if fine-tuning beats RAG; otherwise "no
    clear winner". The effect reported is the deciding difference. (Whether an arm beats
    the base is in the comparisons table; the verdict answers which arm to choose.)
    """
    sign = 1.0 if direction == "higher" else -1.0
    table = {}
    for c in comparisons:
        if c["metric"] == metric:
            table[(c["a"], c["b"])] = c
            table[(c["b"], c["a"])] = {**c, "a": c["b"], "b": c["a"], "diff": -c["diff"],
                                       "ci95": [-c["ci95"][1], -c["ci95"][0]]}

    def gap(x: str, y: str) -> dict | None:
        """Comparison oriented as x minus y (x's advantage, in the metric's direction)."""
        return table.get((y, x))

    def beats(x: str, y: str) -> bool:
        c = gap(x, y)
        return c is not None and sign * c["diff"] >= min_effect and c["p_adj"] < alpha

    def result(verdict: str, x: str | None, y: str | None) -> dict:
        c = gap(x, y) if x and y else None
        return {"metric": metric, "verdict": verdict, "min_effect": min_effect, "alpha": alpha,
                "comparison": f"{x} vs {y}" if c else None,
                "effect": c["diff"] if c else None, "ci95": c["ci95"] if c else None,
                "p_adj": c["p_adj"] if c else None}

    if beats(combined, rag) and beats(combined, finetuned):
        worse_single = min((rag, finetuned), key=lambda s: sign * gap(combined, s)["diff"])
        return result("both", combined, worse_single)
    if beats(rag, finetuned):
        return result("RAG", rag, finetuned)
    if beats(finetuned, rag):
        return result("fine-tuning", finetuned, rag)
    return result("no clear winner", rag, finetuned)


def benchmark_summary(scores: dict[str, dict[str, dict]], *, base: str = "base", samples: int = 2000,
                      seed: int = 0) -> dict:
    """Accuracy per (benchmark task, pipeline) with Wilson intervals, plus each other
    pipeline's paired change from `base` on the same items (forgetting when negative).
    MMLU subjects are also pooled into "mmlu (all subjects)", weighted by item count as
    lm-eval's group average is. `scores` is {pipeline: {task label: score_tasks() entry}}."""
    pooled: dict[str, dict] = {}
    for pipe, tasks in scores.items():
        mmlu = {f"{label}:{k}": v for label, t in tasks.items() if label.startswith("mmlu/") for k, v in t["items"].items()}
        pooled[pipe] = dict(tasks)
        if len([t for t in tasks if t.startswith("mmlu/")]) > 1:
            pooled[pipe]["mmlu (all subjects)"] = {"items": mmlu}
    out: dict = {"accuracy": {}, "change_from_base": {}}
    for pipe, tasks in pooled.items():
        for label, t in tasks.items():
            for metric in next(iter(t["items"].values())).keys():
                values = [v[metric] for v in t["items"].values()]
                out["accuracy"].setdefault(label, {}).setdefault(pipe, {})[metric] = summarize(values, kind="proportion")
    if base in pooled:
        for pipe, tasks in pooled.items():
            if pipe == base:
                continue
            for label, t in tasks.items():
                ref = pooled[base].get(label)
                if ref is None:
                    continue
                ids = sorted(set(t["items"]) & set(ref["items"]))
                for metric in next(iter(t["items"].values())).keys():
                    a = [ref["items"][i][metric] for i in ids]
                    b = [t["items"][i][metric] for i in ids]
                    out["change_from_base"].setdefault(label, {}).setdefault(pipe, {})[metric] = {
                        **paired_difference(a, b, samples=samples, seed=seed), **mcnemar_exact(a, b)}
    return out


def recovery_ratio(base, finetuned, rag, *, samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """How much of RAG's gain fine-tuning recovers on the same items:
    (mean(finetuned) - mean(base)) / (mean(rag) - mean(base)), with a paired percentile
    bootstrap interval (the items are resampled together for the three pipelines). 1.0:
    fine-tuning gains as much as RAG; 0: nothing; below 0: fine-tuning is below base.
    Resamples where RAG gains nothing are left out of the interval (`samples_used`);
    when RAG's own gain is zero the ratio is undefined (None)."""
    b, f, r = (np.asarray(x, dtype=float) for x in (base, finetuned, rag))
    n = b.size
    rag_gain, ft_gain = float(r.mean() - b.mean()) if n else 0.0, float(f.mean() - b.mean()) if n else 0.0
    out = {"n": int(n), "rag_gain": rag_gain, "finetuned_gain": ft_gain, "ratio": None, "ci95": [None, None],
           "samples_used": 0}
    if n == 0 or rag_gain == 0:
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    den = r[idx].mean(axis=1) - b[idx].mean(axis=1)
    num = f[idx].mean(axis=1) - b[idx].mean(axis=1)
    ok = den != 0
    ratios = num[ok] / den[ok]
    lo, hi = np.percentile(ratios, [50 * (1 - confidence), 50 * (1 + confidence)]) if ratios.size else (None, None)
    return {**out, "ratio": ft_gain / rag_gain, "ci95": [None if lo is None else float(lo),
                                                         None if hi is None else float(hi)],
            "samples_used": int(ok.sum())}
