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

The verdict rule that reads these is verdicts.py; the sample size it needs, power.py.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.stats import beta, binom, binomtest, norm


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


def bootstrap_statistic(
    items: list, statistic, *, samples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
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
    return {
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
    }


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


def aggregate(
    values_by_metric: dict[str, dict[str, float]], kinds: dict[str, str], *, samples: int = 2000, seed: int = 0
) -> dict[str, dict]:
    """`summarize` for each metric's per-item values."""
    return {
        m: summarize(list(v.values()), kind=kinds[m], samples=samples, seed=seed) for m, v in values_by_metric.items()
    }


EXACT_MAX_N = 12  # up to 2**12 sign patterns the sign-flip test enumerates them all


@functools.lru_cache(maxsize=8)
def _signs(n: int, samples: int, seed: int) -> tuple[np.ndarray, bool]:
    """The sign patterns of a sign-flip test on n items: all 2**n of them for small n
    (exact), else `samples` random ones (Monte Carlo), as int8 (a 64,000 x 1,000 set is
    64 MB). Cached: the same (n, samples, seed) always gives the same patterns, so a test
    is reproducible and cheap to repeat."""
    if n <= EXACT_MAX_N:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        signs, exact = (2 * bits - 1).astype(np.int8), True
    else:
        signs, exact = np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(samples, n)), False
    signs.setflags(write=False)
    return signs, exact


def _flipped_means(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """mean(s * x) for every row of x (runs, n) and every pattern s, in blocks of patterns
    so that no float copy of a large pattern set is made at once."""
    n = x.shape[1]
    out = np.empty((x.shape[0], signs.shape[0]))
    for j in range(0, signs.shape[0], 8192):
        out[:, j : j + 8192] = x @ signs[j : j + 8192].T.astype(float) / n
    return out


def _kth(values: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The k-th smallest (1-based, one k per row) of each row of `values` (already sorted)."""
    return np.take_along_axis(values, (k - 1)[:, None], axis=1)[:, 0]


def _order(alpha, m: int, exact: bool):
    """The order statistic (1-based) of the roots that is the bound at two-sided `alpha`."""
    k = np.floor(alpha * m).astype(int) + 1 if exact else np.floor(alpha * (m + 1) - 1).astype(int) + 1
    return np.clip(k, 1, m)


def _sign_flip_core(d, *, samples: int, seed: int, max_alpha: float = 1.0) -> dict:
    """What every bound of a sign-flip test is read from: the p-values and the two
    sorted sets of roots of the closed-form inversion (see `sign_flip`), per run; only
    the roots that a bound at two-sided level up to `max_alpha` can reach are kept."""
    x = np.asarray(d, dtype=float)
    x = np.atleast_2d(x)
    if not np.all(np.isfinite(x)):
        raise ValueError("sign_flip: the differences hold NaN or infinity (drop the items that were not scored)")
    runs, n = x.shape
    x = np.sort(x, axis=1)
    signs, exact = _signs(n, samples, seed)
    m = signs.shape[0]
    k = int(_order(np.asarray(max_alpha), m, exact))
    keep = min(m, k + int(math.ceil(math.sqrt(k))) + 1)
    flipped = _flipped_means(x, signs)
    sbar = signs.mean(axis=1, dtype=float)  # mean(s * (d - delta)) = flipped - delta * sbar
    mean = x.mean(axis=1)
    tol = (1e-9 * np.maximum(1.0, np.abs(x).max(axis=1)))[:, None]

    def share(hits: np.ndarray) -> np.ndarray:
        return np.minimum(hits / m if exact else (hits + 1) / (m + 1), 1.0)

    p = share((np.abs(flipped) >= np.abs(mean)[:, None] - tol).sum(axis=1))
    # Inverting the test in closed form: pattern s counts at shift delta when
    # (flipped_s - delta * sbar_s)**2 >= (mean - delta)**2, a concave quadratic in delta
    # (sbar_s**2 < 1) that holds between its two roots, always around the mean. So below
    # the mean the count of patterns grows with delta, and the interval's lower bound is
    # the K-th smallest lower root, K being the least count at which p > alpha; the upper
    # bound mirrors it. Patterns of one sign (sbar = +-1) count at every delta.
    qa = sbar**2 - 1
    qb = -2 * (flipped * sbar[None, :] - mean[:, None])
    qc = flipped**2 - mean[:, None] ** 2
    flat = np.isclose(qa, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.maximum(qb**2 - 4 * qa * qc, 0.0))
        r1, r2 = (-qb + root) / (2 * qa), (-qb - root) / (2 * qa)  # qa < 0: r1 <= r2
    r1 = np.where(flat[None, :], -np.inf, np.minimum(r1, mean[:, None]))
    r2 = -np.where(flat[None, :], np.inf, np.maximum(r2, mean[:, None]))
    if keep < m:  # only the `keep` smallest roots can be a bound: select them, then sort those
        r1 = np.partition(r1, keep - 1, axis=1)[:, :keep]
        r2 = np.partition(r2, keep - 1, axis=1)[:, :keep]
    return {
        "mean": mean,
        "span": x[:, -1] - x[:, 0],
        "m": m,
        "exact": exact,
        "p": p,
        "p_up": share((flipped >= mean[:, None] - tol).sum(axis=1)),
        "p_down": share((flipped <= mean[:, None] + tol).sum(axis=1)),
        "r1": np.sort(r1, axis=1),
        "r2": -np.sort(r2, axis=1),
    }


def _sign_flip_bounds(core: dict, confidence) -> dict:
    """The interval at `confidence` (one level, or one per run) from `_sign_flip_core`,
    with the Monte Carlo standard error of each bound (from the spread of the
    neighbouring order statistics; 0 when exact)."""
    mean, m, r1, r2 = core["mean"], core["m"], core["r1"], core["r2"]
    alpha = 1 - np.broadcast_to(np.asarray(confidence, dtype=float), mean.shape)
    k = _order(alpha, m, core["exact"])
    keep = r1.shape[1]
    if np.any(k + np.ceil(np.sqrt(k)) > keep) and keep < m:
        raise ValueError("sign_flip: a bound beyond the roots kept (pass max_alpha)")
    reach = core["span"] + 1.0
    lo = np.maximum(_kth(r1, k), mean - reach)
    hi = np.minimum(-_kth(-r2, k), mean + reach)
    if core["exact"]:
        return {"lo": lo, "hi": hi, "lo_se": np.zeros_like(lo), "hi_se": np.zeros_like(hi)}
    s = np.ceil(np.sqrt(k)).astype(int)
    below, above = np.clip(k - s, 1, keep), np.clip(k + s, 1, keep)
    lo_se = np.abs(np.minimum(_kth(r1, above), mean + reach) - np.maximum(_kth(r1, below), mean - reach)) / 2
    hi_se = np.abs(np.minimum(-_kth(-r2, below), mean + reach) - np.maximum(-_kth(-r2, above), mean - reach)) / 2
    return {"lo": lo, "hi": hi, "lo_se": lo_se, "hi_se": hi_se}


def sign_flip_levels(d, levels: dict, *, samples: int = 4000, seed: int = 0) -> dict:
    """`sign_flip` at several confidence levels at once ({name: level}), sharing the
    patterns and the inversion: {"diff", "p", "p_up", "p_down", "p_se", "at": {name:
    {"lo", "hi", "lo_se", "hi_se"}}}, arrays over runs."""
    x = np.atleast_2d(np.asarray(d, dtype=float))
    runs, n = x.shape
    if n == 0:
        nan, one = np.full(runs, np.nan), np.ones(runs)
        return {
            "diff": nan,
            "p": one,
            "p_up": one,
            "p_down": one,
            "p_se": nan,
            "at": {k: {"lo": nan, "hi": nan, "lo_se": nan, "hi_se": nan} for k in levels},
        }
    max_alpha = max(float(np.max(1 - np.asarray(v, dtype=float))) for v in levels.values())
    core = _sign_flip_core(x, samples=samples, seed=seed, max_alpha=max_alpha)
    p = core["p"]
    p_se = np.zeros(runs) if core["exact"] else np.sqrt(p * (1 - p) / core["m"])
    return {
        "diff": core["mean"],
        "p": p,
        "p_up": core["p_up"],
        "p_down": core["p_down"],
        "p_se": p_se,
        "at": {k: _sign_flip_bounds(core, level) for k, level in levels.items()},
    }


def bootstrap_t_bounds(d, levels: dict, *, samples: int = 2000, seed: int = 0) -> dict:
    """Studentized (bootstrap-t) bounds for mean(d) at each of `levels` ({name: two-sided
    confidence, one or one per run}), per run of d (runs, n): mean - q * se with q the
    bootstrap quantiles of (mean* - mean) / se*. Resamples index the sorted differences,
    so the bounds are functions of the multiset (order-invariant, like `sign_flip`).
    Used beside the sign-flip bounds, which assume the shifted differences symmetric: on
    skewed scores (token F1 with many zeros) one of their sides falls short, and this one
    corrects for the skew."""
    x = np.sort(np.atleast_2d(np.asarray(d, dtype=float)), axis=1)
    runs, n = x.shape
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    mean = x.mean(axis=1)
    se = x.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(runs)
    alphas = {k: 1 - np.broadcast_to(np.asarray(v, dtype=float), (runs,)) for k, v in levels.items()}
    out = {k: {"lo": np.empty(runs), "hi": np.empty(runs)} for k in levels}
    step = max(1, 4_000_000 // max(samples * n, 1))
    for i in range(0, runs, step):
        xb = x[i : i + step][:, idx]  # (chunk, samples, n)
        mb = xb.mean(axis=2)
        sb = xb.std(axis=2, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mb)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(sb > 0, (mb - mean[i : i + step, None]) / sb, 0.0)
        t.sort(axis=1)
        for k, a in alphas.items():
            lo_q = np.floor(a[i : i + step] / 2 * (samples - 1)).astype(int)
            hi_q = np.ceil((1 - a[i : i + step] / 2) * (samples - 1)).astype(int)
            rows = np.arange(t.shape[0])
            out[k]["lo"][i : i + step] = mean[i : i + step] - t[rows, hi_q] * se[i : i + step]
            out[k]["hi"][i : i + step] = mean[i : i + step] - t[rows, lo_q] * se[i : i + step]
    return out


def sign_flip(d, *, confidence=0.95, samples: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """Paired sign-flip permutation test of mean(d) = 0, with the interval that inverts it.

    `d` is one run's per-item differences (n,) or many runs' (runs, n); `confidence` is
    one level or one per run. Under the null each difference is as likely to have either
    sign, so the p-value is the share of sign patterns whose mean is at least as far from
    0 as the observed one: exact over all 2**n patterns for n <= EXACT_MAX_N; otherwise
    (b + 1) / (m + 1) over m random patterns (the observed pattern counts once, so p is
    never 0). The patterns are applied to each run's differences sorted, so p and the
    bounds are functions of the multiset of differences: shuffling or renaming the items
    changes nothing. `p_up` is the one-sided p against mean(d) > 0 (`p_down` mirrored).
    The interval is every shift delta that the same two-sided test does not reject at
    1 - confidence when applied to d - delta, in closed form, so that each bound is the
    one-sided bound at (1 + confidence) / 2 of the test that shares its patterns.
    Monte Carlo error: `p_se` is the standard error of p, `lo_se` / `hi_se` of each bound;
    0 when exact. Returns arrays diff, lo, hi, p, p_up, p_down, p_se, lo_se, hi_se
    ((runs,), or 0-d arrays for one run). Non-finite differences are an error: a score
    that failed is not a score."""
    one = np.asarray(d).ndim == 1
    r = sign_flip_levels(d, {"ci": confidence}, samples=samples, seed=seed)
    out = {**{k: v for k, v in r.items() if k != "at"}, **r["at"]["ci"]}
    return {k: v[0] for k, v in out.items()} if one else out


def _wilson_bounds(k: np.ndarray, n: np.ndarray, z) -> tuple[np.ndarray, np.ndarray]:
    """`wilson` on arrays (k successes of n, both broadcast) at normal quantile z."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.where(k == 0, 0.0, np.maximum(centre - half, 0.0)), np.where(k == n, 1.0, np.minimum(centre + half, 1.0))


def clopper_pearson_upper(k, n, alpha):
    """The exact one-sided upper bound at 1 - alpha for a proportion, k successes of n."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(k >= n, 1.0, beta.ppf(1 - np.asarray(alpha, dtype=float), k + 1, np.maximum(n - k, 1)))


# Newcombe's interval under-covers when a discordant cell is empty or holds a few items
# (measured exactly: a one-sided miss of 12.6% where 5% is meant at n = 40, with one
# pipeline never right alone). At RARE_CELL items or fewer in the cell against a bound,
# the bound is widened to the exact Clopper-Pearson bound on the other cell, which is
# valid on its own: P(b right alone) - P(a right alone) <= P(b right alone).
RARE_CELL = 5


def mcnemar_counts(only_a, only_b, n, *, both, confidence=0.95) -> dict[str, np.ndarray]:
    """Exact McNemar test and Newcombe's interval for the paired difference of two 0/1
    scores, from the counts of n items: only a right, only b right, `both` right; arrays
    broadcast, one entry per run; `confidence` one level or one per run.

    p: exact two-sided binomial test of only_b ~ Bin(only_a + only_b, 1/2) (the two-sided
    p of a symmetric binomial is 2 * the smaller tail); p_up, p_down: its one-sided
    tails (against b better, against a better). Interval for mean(b - a) =
    P(b right) - P(a right): Newcombe's hybrid score interval for paired proportions
    (Newcombe 1998, Stat Med 17:2635, method 10): Wilson intervals (l1, u1) for P(b right)
    and (l2, u2) for P(a right), combined as
        lo = diff - sqrt((p1 - l1)**2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)**2)
        hi = diff + sqrt((u1 - p1)**2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)**2)
    with phi the correlation of the two 0/1 scores over items, shrunk as Newcombe does
    (ad - bc reduced by n/2 when above it, 0 when between 0 and n/2, 0 when a margin is
    empty). Where the cell against a bound is rare (only_a <= RARE_CELL for hi, only_b
    for lo), the bound is at least the exact Clopper-Pearson bound of the other cell, at
    the same one-sided level. Newcombe's interval does not invert the exact test: 0 can
    lie inside it at p < 1 - confidence or outside it at p above. So a verdict asks for
    both a small p and a bound beyond the margin."""
    c, b, n, a = (np.asarray(v, dtype=float) for v in (only_a, only_b, n, both))
    disc = b + c
    conf = np.asarray(confidence, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(disc == 0, 1.0, np.minimum(1.0, 2 * binom.cdf(np.minimum(b, c), disc, 0.5)))
        p_up = np.where(disc == 0, 1.0, binom.sf(b - 1, disc, 0.5))
        p_down = np.where(disc == 0, 1.0, binom.cdf(b, disc, 0.5))
        d = n - a - disc  # both wrong
        p1, p2 = (a + b) / n, (a + c) / n  # P(b right), P(a right)
        z = norm.ppf(0.5 + conf / 2)
        l1, u1 = _wilson_bounds(a + b, n, z)
        l2, u2 = _wilson_bounds(a + c, n, z)
        margins = (a + b) * (c + d) * (a + c) * (b + d)
        cross = a * d - b * c
        shrunk = np.where(cross > n / 2, cross - n / 2, np.where(cross >= 0, 0.0, cross))
        phi = np.where(margins > 0, shrunk / np.sqrt(np.where(margins > 0, margins, 1.0)), 0.0)
        diff = p1 - p2
        lo = diff - np.sqrt(np.maximum((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
        hi = diff + np.sqrt(np.maximum((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
        tail = (1 - conf) / 2
        hi = np.where(c <= RARE_CELL, np.maximum(hi, clopper_pearson_upper(b, n, tail)), hi)
        lo = np.where(b <= RARE_CELL, np.minimum(lo, -clopper_pearson_upper(c, n, tail)), lo)
    empty = n <= 0
    nan = np.full(np.broadcast(diff, p).shape, np.nan)
    return {
        "diff": np.where(empty, nan, diff),
        "lo": np.where(empty, nan, np.maximum(lo, -1.0)),
        "hi": np.where(empty, nan, np.minimum(hi, 1.0)),
        "p": p,
        "p_up": p_up,
        "p_down": p_down,
    }


def finite_pairs(a, b) -> tuple[np.ndarray, np.ndarray, int]:
    """The items both scored: the pairs where a and b are finite, and how many were left
    out (a metric that could not score an item gives NaN there, which is no score)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.size} vs {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok], int(x.size - ok.sum())


def paired_test(a, b, *, kind: str, confidence: float = 0.95, samples: int = 4000, seed: int = 0) -> dict:
    """The paired test that fits the metric, for mean(b - a) over the same items: exact
    McNemar for 0/1 scores (kind "proportion"), the sign-flip permutation test for
    continuous ones; with its matching interval at `confidence` and what an items-needed
    calculation uses (`sd`: the per-item SD of the differences under no difference).
    Items either side did not score (NaN) are left out and counted (`dropped`)."""
    x, y, dropped = finite_pairs(a, b)
    n = int(x.size)
    if kind == "proportion":
        only_a, only_b = int(np.sum((x > 0.5) & (y <= 0.5))), int(np.sum((x <= 0.5) & (y > 0.5)))
        r = mcnemar_counts(only_a, only_b, n, both=int(np.sum((x > 0.5) & (y > 0.5))), confidence=confidence)
        # the SD of a paired 0/1 difference with no effect is sqrt(discordance rate);
        # one pseudo-count keeps it above 0 when no item is discordant
        extra = {
            "test": "mcnemar_exact",
            "only_a": only_a,
            "only_b": only_b,
            "sd": math.sqrt((only_a + only_b + 1) / (n + 2)),
        }
    else:
        r = sign_flip(y - x, confidence=confidence, samples=samples, seed=seed)
        exact = n <= EXACT_MAX_N
        extra = {
            "test": "sign_flip_exact" if exact else f"sign_flip_monte_carlo_{samples}",
            "sd": float(np.std(y - x, ddof=1)) if n > 1 else float("nan"),
        }
    return {
        "diff": float(r["diff"]),
        "n": n,
        "ci": [float(r["lo"]), float(r["hi"])],
        "confidence": confidence,
        "p": float(r["p"]),
        "dropped": dropped,
        **extra,
    }


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


def compare_all(
    per_pipeline: dict[str, dict[str, dict[str, float]]],
    kinds: dict[str, str],
    *,
    samples: int = 4000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict]:
    """Every pair of pipelines on every metric they share, on the items both scored: the
    paired difference (b - a) with the test that fits the metric (`paired_test`) and its
    95% interval. These are secondary comparisons: each p is unadjusted (no verdict
    uses them; the verdicts adjust their own declared families, see `decide`), and
    `significant` means unadjusted p < alpha. `ci95` is the matching 95% interval."""
    names = list(per_pipeline)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for metric in per_pipeline[a]:
                if metric not in per_pipeline[b]:
                    continue
                ids = sorted(set(per_pipeline[a][metric]) & set(per_pipeline[b][metric]))
                if not ids:
                    continue
                xa = [per_pipeline[a][metric][k] for k in ids]
                xb = [per_pipeline[b][metric][k] for k in ids]
                r = paired_test(xa, xb, kind=kinds[metric], samples=samples, seed=seed)
                rows.append(
                    {
                        "metric": metric,
                        "a": a,
                        "b": b,
                        "diff": r["diff"],
                        "n": r["n"],
                        "ci95": r["ci"],
                        "test": r["test"],
                        "p": r["p"],
                        "adjusted": False,
                        "significant": r["p"] < alpha,
                        **{k: r[k] for k in ("only_a", "only_b") if k in r},
                    }
                )
    return rows


def dev_test_split(ids, *, dev_fraction: float, seed: int) -> dict[str, str]:
    """Each id "dev" or "test": a seeded shuffle of the sorted ids, the first
    round(dev_fraction * n) to dev. The same ids and seed always split the same way."""
    import random

    order = sorted(ids)
    random.Random(seed).shuffle(order)
    k = round(dev_fraction * len(order))
    return {i: "dev" if j < k else "test" for j, i in enumerate(order)}


def benchmark_summary(
    scores: dict[str, dict[str, dict]], *, base: str = "base", samples: int = 2000, seed: int = 0
) -> dict:
    """Accuracy per (benchmark task, pipeline) with Wilson intervals, plus each other
    pipeline's paired change from `base` on the same items (forgetting when negative),
    with the exact McNemar p and the interval of the same paired test (Newcombe's), so
    that the interval excludes 0 only when the test says so (ties and discreteness aside).
    MMLU subjects are also pooled into "mmlu (all subjects)", weighted by item count as
    lm-eval's group average is. `scores` is {pipeline: {task label: score_tasks() entry}}."""
    pooled: dict[str, dict] = {}
    for pipe, tasks in scores.items():
        mmlu = {
            f"{label}:{k}": v for label, t in tasks.items() if label.startswith("mmlu/") for k, v in t["items"].items()
        }
        pooled[pipe] = dict(tasks)
        if len([t for t in tasks if t.startswith("mmlu/")]) > 1:
            pooled[pipe]["mmlu (all subjects)"] = {"items": mmlu}
    out: dict = {"accuracy": {}, "change_from_base": {}}
    for pipe, tasks in pooled.items():
        for label, t in tasks.items():
            for metric in next(iter(t["items"].values())).keys():
                values = [v[metric] for v in t["items"].values()]
                out["accuracy"].setdefault(label, {}).setdefault(pipe, {})[metric] = summarize(
                    values, kind="proportion"
                )
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
                    r = paired_test(a, b, kind="proportion")
                    out["change_from_base"].setdefault(label, {}).setdefault(pipe, {})[metric] = {
                        "diff": r["diff"],
                        "n": r["n"],
                        "ci95": r["ci"],
                        "ci_method": "newcombe",
                        "only_a": r["only_a"],
                        "only_b": r["only_b"],
                        "p": r["p"],
                    }
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
    out = {
        "n": int(n),
        "rag_gain": rag_gain,
        "finetuned_gain": ft_gain,
        "ratio": None,
        "ci95": [None, None],
        "samples_used": 0,
    }
    if n == 0 or rag_gain == 0:
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    den = r[idx].mean(axis=1) - b[idx].mean(axis=1)
    num = f[idx].mean(axis=1) - b[idx].mean(axis=1)
    ok = den != 0
    ratios = num[ok] / den[ok]
    lo, hi = np.percentile(ratios, [50 * (1 - confidence), 50 * (1 + confidence)]) if ratios.size else (None, None)
    return {
        **out,
        "ratio": ft_gain / rag_gain,
        "ci95": [None if lo is None else float(lo), None if hi is None else float(hi)],
        "samples_used": int(ok.sum()),
    }
