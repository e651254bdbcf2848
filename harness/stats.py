"""Uncertainty for every number the report prints. Pure functions on lists of per-item
scores; seeded, so the same scores give the same intervals.

- `wilson(k, n)`: the Wilson score interval for a proportion (better than the normal
  approximation near 0 and 1, which is where a base model sits on unknown facts).
- `bootstrap_ci(values)`: percentile bootstrap interval for a mean.
- `paired_difference(a, b)`: mean of b - a over the same items, with a paired bootstrap
  interval (items are resampled together, so item difficulty cancels).
- `mcnemar_exact(a, b)`: exact McNemar p-value for two 0/1 score lists on the same items.
- `benjamini_hochberg(pvalues)`: false-discovery-rate adjusted p-values.
- `paired_test(a, b, kind=...)`: the test that fits the metric (exact McNemar for 0/1,
  a paired sign-flip permutation test for continuous scores) with an interval that
  agrees with it; `mcnemar_counts` and `sign_flip` are its vectorised kernels (one row
  per simulated run), used as is by the simulation tests.
- `holm(pvalues)`: Holm step-down family-wise adjusted p-values.
- `decide(values, metric=...)`: the verdict for one question from its declared family of
  comparisons (see `FAMILY`): "RAG", "fine-tuning", "both", "no practical difference" or
  "inconclusive" (with the items that would resolve it).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.stats import binom, binomtest, norm


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


EXACT_MAX_N = 12  # up to 2**12 sign patterns the sign-flip test enumerates them all


@functools.lru_cache(maxsize=32)
def _signs(n: int, samples: int, seed: int) -> tuple[np.ndarray, bool]:
    """The sign patterns of a sign-flip test on n items: all 2**n of them for small n
    (exact), else `samples` random ones (Monte Carlo). Cached: the same (n, samples,
    seed) always gives the same patterns, so a test is reproducible and cheap to repeat."""
    if n <= EXACT_MAX_N:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1
        signs, exact = 2.0 * bits - 1.0, True
    else:
        signs, exact = np.random.default_rng(seed).choice([-1.0, 1.0], size=(samples, n)), False
    signs.setflags(write=False)
    return signs, exact


def sign_flip(d, *, confidence: float = 0.95, samples: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """Paired sign-flip permutation test of mean(d) = 0, with the interval that inverts it.

    `d` is one run's per-item differences (n,) or many runs' (runs, n). Under the null
    each difference is as likely to have either sign, so the p-value is the share of sign
    patterns whose mean is at least as far from 0 as the observed one: exact over all
    2**n patterns for n <= EXACT_MAX_N; otherwise (b + 1) / (m + 1) over m random
    patterns (the observed pattern counts once, so p is never 0). The interval is every
    shift delta that the same test (same sign patterns) does not reject at 1 - confidence
    when applied to d - delta, found in closed form, so interval and test agree: 0 lies
    outside the interval exactly when p <= 1 - confidence (ties aside).
    Returns arrays diff, lo, hi, p (shape (runs,), or scalars' 0-d arrays for one run)."""
    x = np.asarray(d, dtype=float)
    one = x.ndim == 1
    x = np.atleast_2d(x)
    runs, n = x.shape
    if n == 0:
        nan = np.full(runs, np.nan)
        return {"diff": nan, "lo": nan, "hi": nan, "p": np.ones(runs)}
    signs, exact = _signs(n, samples, seed)
    m = signs.shape[0]
    flipped = x @ signs.T / n  # mean of each sign pattern applied to d
    sbar = signs.mean(axis=1)  # mean(s * (d - delta)) = flipped - delta * sbar
    mean = x.mean(axis=1)
    span = x.max(axis=1) - x.min(axis=1)
    tol = 1e-9 * np.maximum(1.0, np.abs(x).max(axis=1))

    def pvalue(delta: np.ndarray) -> np.ndarray:
        perm = np.abs(flipped - delta[:, None] * sbar[None, :])
        hits = (perm >= (np.abs(mean - delta) - tol)[:, None]).sum(axis=1)
        return hits / m if exact else (hits + 1) / (m + 1)

    alpha = 1 - confidence
    p = pvalue(np.zeros(runs))
    # Inverting the test in closed form: pattern s counts at shift delta when
    # (flipped_s - delta * sbar_s)**2 >= (mean - delta)**2, a concave quadratic in delta
    # (sbar_s**2 < 1) that holds between its two roots, always around the mean. So below
    # the mean the count of patterns grows with delta, and the interval's lower bound is
    # the K-th smallest lower root, K being the least count at which p > alpha; the upper
    # bound mirrors it. Patterns of one sign (sbar = +-1) count at every delta.
    qa = sbar ** 2 - 1
    qb = -2 * (flipped * sbar[None, :] - mean[:, None])
    qc = flipped ** 2 - mean[:, None] ** 2
    flat = np.isclose(qa, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.maximum(qb ** 2 - 4 * qa * qc, 0.0))
        r1, r2 = (-qb + root) / (2 * qa), (-qb - root) / (2 * qa)  # qa < 0: r1 <= r2
    r1 = np.where(flat[None, :], -np.inf, np.minimum(r1, mean[:, None]))
    r2 = np.where(flat[None, :], np.inf, np.maximum(r2, mean[:, None]))
    k = math.floor(alpha * m) + 1 if exact else math.floor(alpha * (m + 1) - 1) + 1
    k = min(max(k, 1), m)
    reach = span + 1.0
    lo = np.maximum(np.partition(r1, k - 1, axis=1)[:, k - 1], mean - reach)
    hi = np.minimum(-np.partition(-r2, k - 1, axis=1)[:, k - 1], mean + reach)
    out = {"diff": mean, "lo": lo, "hi": hi, "p": np.minimum(p, 1.0)}
    return {k: v[0] for k, v in out.items()} if one else out


def _wilson_bounds(k: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """`wilson` on arrays (k successes of n, both broadcast) at normal quantile z."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.where(k == 0, 0.0, np.maximum(centre - half, 0.0)), np.where(k == n, 1.0, np.minimum(centre + half, 1.0))


def mcnemar_counts(only_a, only_b, n, *, both, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Exact McNemar test and Newcombe's interval for the paired difference of two 0/1
    scores, from the counts of n items: only a right, only b right, `both` right; arrays
    broadcast, one entry per run.

    p: exact two-sided binomial test of only_b ~ Bin(only_a + only_b, 1/2) (the two-sided
    p of a symmetric binomial is 2 * the smaller tail). Interval for mean(b - a) =
    P(b right) - P(a right): Newcombe's hybrid score interval for paired proportions
    (Newcombe 1998, Stat Med 17:2635, method 10): Wilson intervals (l1, u1) for P(b right)
    and (l2, u2) for P(a right), combined as
        lo = diff - sqrt((p1 - l1)**2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)**2)
        hi = diff + sqrt((u1 - p1)**2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)**2)
    with phi the correlation of the two 0/1 scores over items, shrunk as Newcombe does
    (ad - bc reduced by n/2 when above it, 0 when between 0 and n/2, 0 when a margin is
    empty). Its coverage is close to nominal (unlike the product of two Clopper-Pearson
    intervals used before, which covered far more than asked and cost power), but it
    does not invert the exact test: 0 can lie inside it at p < 1 - confidence or outside
    it at p above. So a verdict asks for both (`outcome`: adjusted p < alpha and a bound
    beyond 0)."""
    c, b, n, a = (np.asarray(v, dtype=float) for v in (only_a, only_b, n, both))
    disc = b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(disc == 0, 1.0, np.minimum(1.0, 2 * binom.cdf(np.minimum(b, c), disc, 0.5)))
        d = n - a - disc  # both wrong
        p1, p2 = (a + b) / n, (a + c) / n  # P(b right), P(a right)
        z = _z(confidence)
        l1, u1 = _wilson_bounds(a + b, n, z)
        l2, u2 = _wilson_bounds(a + c, n, z)
        margins = (a + b) * (c + d) * (a + c) * (b + d)
        cross = a * d - b * c
        shrunk = np.where(cross > n / 2, cross - n / 2, np.where(cross >= 0, 0.0, cross))
        phi = np.where(margins > 0, shrunk / np.sqrt(np.where(margins > 0, margins, 1.0)), 0.0)
        diff = p1 - p2
        lo = diff - np.sqrt(np.maximum((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
        hi = diff + np.sqrt(np.maximum((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    empty = n <= 0
    nan = np.full(np.broadcast(diff, p).shape, np.nan)
    return {"diff": np.where(empty, nan, diff), "lo": np.where(empty, nan, np.maximum(lo, -1.0)),
            "hi": np.where(empty, nan, np.minimum(hi, 1.0)), "p": p}


def paired_test(a, b, *, kind: str, confidence: float = 0.95, samples: int = 4000, seed: int = 0) -> dict:
    """The paired test that fits the metric, for mean(b - a) over the same items: exact
    McNemar for 0/1 scores (kind "proportion"), the sign-flip permutation test for
    continuous ones; with its matching interval at `confidence` and what an items-needed
    calculation uses (`sd`: the per-item SD of the differences under no difference)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.size} vs {y.size}")
    n = int(x.size)
    if kind == "proportion":
        only_a, only_b = int(np.sum((x > 0.5) & (y <= 0.5))), int(np.sum((x <= 0.5) & (y > 0.5)))
        r = mcnemar_counts(only_a, only_b, n, both=int(np.sum((x > 0.5) & (y > 0.5))), confidence=confidence)
        # the SD of a paired 0/1 difference with no effect is sqrt(discordance rate);
        # one pseudo-count keeps it above 0 when no item is discordant
        extra = {"test": "mcnemar_exact", "only_a": only_a, "only_b": only_b,
                 "sd": math.sqrt((only_a + only_b + 1) / (n + 2))}
    else:
        r = sign_flip(y - x, confidence=confidence, samples=samples, seed=seed)
        exact = n <= EXACT_MAX_N
        extra = {"test": "sign_flip_exact" if exact else f"sign_flip_monte_carlo_{samples}",
                 "sd": float(np.std(y - x, ddof=1)) if n > 1 else float("nan")}
    return {"diff": float(r["diff"]), "n": n, "ci": [float(r["lo"]), float(r["hi"])], "confidence": confidence,
            "p": float(r["p"]), **extra}


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values along the last axis (family-wise error control
    under any dependence): the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    if p.shape[-1] == 0:
        return p.copy()
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def items_needed(sd: float, *, min_effect: float, confidence: float, power: float = 0.8,
                 discordance: float | None = None, both_right: float | None = None) -> int | None:
    """Paired items at which the decision rule resolves at `min_effect` with probability
    `power` when the true difference is 0: the interval then lies inside +- min_effect
    ("no practical difference"); with a true difference of 2 * min_effect its bound clears
    min_effect about as often. From the per-item SD of the differences (continuous:
    n = ((z_conf + z) * sd / min_effect)**2, z the (1 + power) / 2 quantile, as the
    estimate must sit within min_effect - z_conf * se of 0 with probability `power`);
    for 0/1 metrics from the observed `discordance` rate and share of items `both_right`
    (default: half the concordant ones), by searching n for Newcombe's interval
    (`mcnemar_counts`) at an estimate that far out, since its width depends on the two
    accuracies and not only on the discordance."""
    if not min_effect or not sd or math.isnan(sd):
        return None
    z = norm.ppf(0.5 + power / 2)
    if discordance is None:
        return math.ceil(((norm.ppf(0.5 + confidence / 2) + z) * sd / min_effect) ** 2)

    def resolves(n: int) -> bool:
        disc = max(discordance * n, 1.0)
        only_b = disc / 2 + z * math.sqrt(disc) / 2
        both = (1 - discordance) / 2 * n if both_right is None else both_right * n
        r = mcnemar_counts(disc - only_b, only_b, n, both=both, confidence=confidence)
        return bool(r["hi"] < min_effect and r["lo"] > -min_effect)

    lo, hi = 1, 2
    while not resolves(hi):
        lo, hi = hi, hi * 2
        if hi > 10 ** 8:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if resolves(mid) else (mid, hi)
    return hi


def compare_all(per_pipeline: dict[str, dict[str, dict[str, float]]], kinds: dict[str, str], *,
                samples: int = 4000, seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """Every pair of pipelines on every metric they share, on the items both scored: the
    paired difference (b - a) with the test that fits the metric (`paired_test`) and its
    95% interval. These are secondary comparisons: each p is unadjusted (no verdict
    uses them; the verdicts adjust their own declared families, see `decide`), and
    `significant` means unadjusted p < alpha. `ci95` is the matching 95% interval."""
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
                r = paired_test(xa, xb, kind=kinds[metric], samples=samples, seed=seed)
                rows.append({"metric": metric, "a": a, "b": b, "diff": r["diff"], "n": r["n"], "ci95": r["ci"],
                             "test": r["test"], "p": r["p"], "adjusted": False, "significant": r["p"] < alpha,
                             **{k: r[k] for k in ("only_a", "only_b") if k in r}})
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


VERDICTS = ("RAG", "fine-tuning", "both", "no practical difference", "inconclusive", "uninformative",
            "undecidable with this model")

# The declared family of every verdict question: (y, x) means "x against y", the
# difference x - y. Arm against arm, the combined pipeline against each arm, each arm
# against base. Only these comparisons are adjusted (Holm) and only they decide.
FAMILY = (("finetuned", "rag"), ("rag", "rag_finetuned"), ("finetuned", "rag_finetuned"),
          ("base", "rag"), ("base", "finetuned"))
# The intervals and tests behind every number, as metrics.json's protocol says; `family`
# and `bound` are the percentages of family_level(alpha) and of each one-sided bound.
INTERVALS = ("95%: Wilson for proportions, percentile bootstrap for means. Differences: exact McNemar "
             "with Newcombe's hybrid score interval (0/1 metrics) or a paired sign-flip permutation "
             "test with the interval that inverts it (continuous); a verdict's family is Holm adjusted "
             "with intervals at {family:.0f}% (each bound one-sided {bound:.0f}%); other comparisons are unadjusted")
FLOOR_CEILING = 0.03  # a metric within 3 points (or min_effect, if larger) of 0 or 1 for every pipeline cannot move


def outcome(lo, hi, p_adj, *, min_effect: float, alpha: float):
    """One comparison's outcome from its interval (at `family_level`), oriented so that
    positive favours x: "better" when the Holm-adjusted p is below alpha AND the
    interval's lower bound is above 0 AND it clears `min_effect`; "worse" mirrored;
    "equivalent" ("no practical difference") when the interval lies strictly inside
    +- min_effect, i.e. both one-sided tests of TOST reject at alpha / size; otherwise
    "inconclusive".

    The bound, not the estimate, must clear min_effect, because "better" is then a
    claim that holds at the family's level: x is better by at least min_effect, with
    family-wise error at most alpha (a one-sided margin test). An estimate above
    min_effect with a bound below it says only that the effect might be that large; the
    report calls that inconclusive and gives the items that would settle it. The test
    and the interval are asked for separately because the 0/1 interval (Newcombe's) does
    not invert the exact McNemar test: a win is never declared on an interval that
    includes 0, nor without a significant adjusted p. Vectorised."""
    lo, hi, p_adj = np.asarray(lo), np.asarray(hi), np.asarray(p_adj)
    significant = p_adj < alpha
    return np.select([(lo >= min_effect) & (lo > 0) & significant, (hi <= -min_effect) & (hi < 0) & significant,
                      (lo > -min_effect) & (hi < min_effect)],
                     ["better", "worse", "equivalent"], "inconclusive")


def family_level(alpha: float, size: int = len(FAMILY)) -> float:
    """The two-sided confidence of each interval in a family: 1 - 2 * alpha / size, so that
    each bound on its own is a one-sided 1 - alpha / size bound (Bonferroni over the
    family). A claim is one-sided ("x better than y by at least min_effect", or, for
    equivalence, "above -min_effect" and "below +min_effect", the two one-sided tests
    of TOST), so this is the standard margin test at family-wise level alpha; the
    two-sided 1 - alpha / size interval used before tested each claim at alpha / (2 size)
    and cost power for nothing."""
    return 1 - 2 * alpha / size


def family_tests(values: dict[str, np.ndarray], *, kind: str, direction: str, min_effect: float, alpha: float,
                 samples: int, seed: int) -> list[dict]:
    """The declared family (`FAMILY`) on aligned per-item values, one row per run:
    `values[pipeline]` has shape (runs, n). For each comparison (x against y): diff,
    interval at the family level, p, Holm-adjusted p and outcome, each an array over runs."""
    level = family_level(alpha)
    sign = 1.0 if direction == "higher" else -1.0
    rows = []
    for y, x in FAMILY:
        a, b = np.atleast_2d(values[y]), np.atleast_2d(values[x])
        n = a.shape[1]
        if kind == "proportion":
            only_a = ((a > 0.5) & (b <= 0.5)).sum(axis=1)
            only_b = ((a <= 0.5) & (b > 0.5)).sum(axis=1)
            r = mcnemar_counts(only_a, only_b, n, both=((a > 0.5) & (b > 0.5)).sum(axis=1), confidence=level)
            sd = np.sqrt((only_a + only_b + 1) / (n + 2))  # one pseudo-count keeps it above 0
            both_right = ((a > 0.5) & (b > 0.5)).mean(axis=1)
            test = "mcnemar_exact"
        else:
            r = sign_flip(b - a, confidence=level, samples=samples, seed=seed)
            sd = (b - a).std(axis=1, ddof=1) if n > 1 else np.full(a.shape[0], np.nan)
            both_right = np.full(a.shape[0], np.nan)
            test = "sign_flip_exact" if n <= EXACT_MAX_N else f"sign_flip_monte_carlo_{samples}"
        rows.append({"x": x, "y": y, "n": n, "test": test, "sd": sd, "both_right": both_right,
                     **{k: np.broadcast_to(np.asarray(v, dtype=float), (a.shape[0],)) for k, v in r.items()}})
    adjusted = holm(np.stack([r["p"] for r in rows], axis=-1))
    for j, r in enumerate(rows):
        r["p_adj"] = adjusted[:, j]
        lo, hi = sign * r["lo"], sign * r["hi"]
        r["outcome"] = outcome(np.minimum(lo, hi), np.maximum(lo, hi), r["p_adj"], min_effect=min_effect, alpha=alpha)
        r["favourable_lo"] = np.minimum(lo, hi)
    return rows


def choose(outcomes: dict[tuple[str, str], str], favourable_lo: dict[tuple[str, str], float], *,
           base: str = "base", rag: str = "rag", finetuned: str = "finetuned",
           combined: str = "rag_finetuned") -> tuple[str, str, str, str]:
    """The verdict of one run from its family's outcomes ({(x, y): outcome of x against
    y}): (verdict, x, y, note), where x vs y is the deciding comparison.
    "both" if rag_finetuned is better than each arm and some arm is better than base;
    "RAG" / "fine-tuning" if that arm is better than the other and than base;
    "no practical difference" if the arms are equivalent; otherwise "inconclusive"."""
    def o(x: str, y: str) -> str:
        if (x, y) in outcomes:
            return outcomes[(x, y)]
        return {"better": "worse", "worse": "better"}.get(outcomes[(y, x)], outcomes[(y, x)])

    beats_base = [arm for arm in (rag, finetuned) if o(arm, base) == "better"]
    note = (f"{' and '.join(beats_base)} beat{'s' if len(beats_base) == 1 else ''} base" if beats_base
            else "no arm beats base")
    if o(combined, rag) == "better" and o(combined, finetuned) == "better" and beats_base:
        weaker = min((rag, finetuned), key=lambda s: favourable_lo[(combined, s)])
        return "both", combined, weaker, note
    for arm, other, name in ((rag, finetuned, "RAG"), (finetuned, rag, "fine-tuning")):
        if o(arm, other) == "better":
            if arm in beats_base:
                return name, arm, other, note
            return "inconclusive", arm, base, f"{arm} is better than {other} but not shown better than base"
    if o(rag, finetuned) == "equivalent":
        return "no practical difference", rag, finetuned, note
    return "inconclusive", rag, finetuned, note


def _flat(means, min_effect: float) -> str | None:
    """"floor" or "ceiling" when every mean is within max(FLOOR_CEILING, min_effect) of 0
    or of 1: then no two pipelines differ by more than min_effect, so no interval bound
    can clear it and the metric cannot decide."""
    edge = max(FLOOR_CEILING, min_effect)
    if means and all(v <= edge for v in means):
        return "floor"
    if means and all(v >= 1 - edge for v in means):
        return "ceiling"
    return None


def simulate_verdicts(values: dict[str, np.ndarray], *, kind: str, direction: str = "higher",
                      min_effect: float = 0.05, alpha: float = 0.05, samples: int = 4000,
                      seed: int = 0) -> np.ndarray:
    """The verdict of each of many runs ({pipeline: (runs, n) per-item values}), by the same
    tests, adjustment and rule as `decide`: the simulation tests and
    benchmarks/verdict_simulation.py measure the rule through this."""
    rows = family_tests(values, kind=kind, direction=direction, min_effect=min_effect, alpha=alpha,
                        samples=samples, seed=seed)
    runs = rows[0]["p"].shape[0]
    means = {p: np.atleast_2d(v).mean(axis=1) for p, v in values.items()}
    out = []
    for i in range(runs):
        if _flat([means[p][i] for p in means], min_effect):
            out.append("uninformative")
            continue
        out.append(choose({(r["x"], r["y"]): str(r["outcome"][i]) for r in rows},
                          {(r["x"], r["y"]): float(r["favourable_lo"][i]) for r in rows})[0])
    return np.array(out)


def decide(values: dict[str, dict[str, float]], *, metric: str, kind: str, direction: str,
           min_effect: float = 0.05, alpha: float = 0.05, samples: int = 4000, seed: int = 0) -> dict:
    """The verdict for one question from the per-item values of its deciding metric
    ({pipeline: {item id: value}} for base, finetuned, rag and rag_finetuned), using only
    its declared family (`FAMILY`) on the items all four scored.

    Each comparison gets the test that fits the metric (exact McNemar for 0/1, sign-flip
    permutation for continuous scores) with its interval at the family level
    (`family_level`); p-values are Holm adjusted over the family; `outcome` and `choose`
    decide. An "inconclusive" verdict carries `items_needed` for its deciding comparison;
    "uninformative" means the metric sits within max(FLOOR_CEILING, min_effect) of 0 or 1
    for every pipeline: it cannot move enough to decide anything."""
    pipes = ["base", "finetuned", "rag", "rag_finetuned"]
    ids = sorted(set.intersection(*(set(values[p]) for p in pipes)))
    arrays = {p: np.array([[values[p][i] for i in ids]], dtype=float) for p in pipes}
    rows = family_tests(arrays, kind=kind, direction=direction, min_effect=min_effect, alpha=alpha,
                        samples=samples, seed=seed)
    family = [{"x": r["x"], "y": r["y"], "n": r["n"], "test": r["test"], "diff": float(r["diff"][0]),
               "ci": [float(r["lo"][0]), float(r["hi"][0])], "p": float(r["p"][0]), "p_adj": float(r["p_adj"][0]),
               "outcome": str(r["outcome"][0]), "sd": float(r["sd"][0])} for r in rows]
    table = {(c["x"], c["y"]): c for c in family}
    means = {p: float(arrays[p].mean()) if ids else float("nan") for p in pipes}
    flat = _flat(list(means.values()), min_effect)
    if flat:
        verdict, x, y, note = "uninformative", "rag", "finetuned", f"every pipeline is at the {flat} of this metric"
    else:
        verdict, x, y, note = choose({k: c["outcome"] for k, c in table.items()},
                                     {(r["x"], r["y"]): float(r["favourable_lo"][0]) for r in rows})
    c = table.get((x, y)) or table[(y, x)]
    flipped = (x, y) not in table
    level = family_level(alpha)
    return {"metric": metric, "verdict": verdict, "comparison": f"{x} vs {y}",
            "effect": -c["diff"] if flipped else c["diff"], "ci": [-c["ci"][1], -c["ci"][0]] if flipped else c["ci"],
            "confidence": level, "p": c["p"], "p_adj": c["p_adj"], "test": c["test"], "n": c["n"],
            "min_effect": min_effect, "alpha": alpha, "correction": "holm", "family": family, "means": means,
            "beats_base": [a for a in ("rag", "finetuned") if table[(a, "base")]["outcome"] == "better"],
            "note": note, "uninformative": flat,
            "items_needed": items_needed(c["sd"], min_effect=min_effect, confidence=level,
                                         discordance=c["sd"] ** 2 if kind == "proportion" else None,
                                         both_right=next(float(r["both_right"][0]) for r in rows
                                                         if {r["x"], r["y"]} == {x, y}) if kind == "proportion" else None)
            if verdict == "inconclusive" else None}


def dev_test_split(ids, *, dev_fraction: float, seed: int) -> dict[str, str]:
    """Each id "dev" or "test": a seeded shuffle of the sorted ids, the first
    round(dev_fraction * n) to dev. The same ids and seed always split the same way."""
    import random

    order = sorted(ids)
    random.Random(seed).shuffle(order)
    k = round(dev_fraction * len(order))
    return {i: "dev" if j < k else "test" for j, i in enumerate(order)}


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
