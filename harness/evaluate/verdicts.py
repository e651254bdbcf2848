"""The verdict rule: one question's answer ("RAG", "fine-tuning", "both", "no practical
difference", "inconclusive", ...) from the per-item scores of its deciding metric, by a
fixed sequence of paired comparisons that spends the whole error budget `alpha`.

    v = decide({pipeline: {item id: score}}, metric="mc_accuracy", kind="proportion",
               direction="higher", min_effect=0.05, alpha=0.05)

The sequence (each step reached only when the one before it made its claim):

1. rag vs finetuned, the deciding comparison. "rag better" when the exact two-sided p
   of the paired test is below alpha and the lower bound clears min_effect; the bound
   is one-sided at 1 - alpha_1, where alpha_1 (a little below alpha) makes the test of
   "the arms differ by less than min_effect" exactly level alpha even though it can
   reject in either direction (`partition_alpha`). "finetuned better" mirrored.
   "Equivalent" when both bounds at 1 - alpha (one-sided; TOST) lie inside
   +-min_effect. Otherwise the rule stops: inconclusive.
2. After a winner W: W vs base at alpha (one-sided). Not better: inconclusive.
3. Then rag_finetuned vs W at alpha: better gives "both", else W's verdict.
2'. After equivalent arms: rag_finetuned vs each arm at alpha. Better than both: go on;
   no better than either (both upper bounds below min_effect): "no practical
   difference"; else inconclusive.
3'. Then each arm vs base at alpha / 2: either better gives "both", else inconclusive.

Every claim is "better by at least min_effect" (or its mirror "within min_effect"),
tested by the bound of the interval that fits the metric (Newcombe's for 0/1 scores,
the sign-flip interval for continuous ones, see stats.py) together with the exact p of
the same paired test. A step's claim can only be made when every claim before it was,
so the first false claim a run could make is tested at its own level: that is the
fixed-sequence (gatekeeping) argument. README's "How verdicts are decided" states it
and benchmarks/verdict_simulation.py measures it.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from harness.evaluate import metrics, stats

PIPES = ("base", "finetuned", "rag", "rag_finetuned")
VERDICTS = (
    "RAG",
    "fine-tuning",
    "both",
    "no practical difference",
    "inconclusive",
    "uninformative",
    "undecidable with this model",
)
RULE = "fixed-sequence@1"
# The comparisons a verdict may use, as (y, x): the difference x - y. In the order of the
# sequence: the deciding comparison, each arm against base, rag_finetuned against each arm.
FAMILY = (
    ("finetuned", "rag"),
    ("base", "rag"),
    ("base", "finetuned"),
    ("rag", "rag_finetuned"),
    ("finetuned", "rag_finetuned"),
)
ARM_NAMES = {"rag": "RAG", "finetuned": "fine-tuning"}
FLOOR_CEILING = 0.03  # a metric within 3 points (or min_effect, if larger) of 0 or 1 for every pipeline cannot move
# The share of alpha the tie branch spends ("no practical difference", and "both" when
# the arms are tied); the winner branch spends the rest. See `sequence` for why a share.
TIE_SHARE = 0.2
MAX_PATTERNS = 64_000
BOOTSTRAP_T = 2000  # resamples of the bootstrap-t bound beside each sign-flip bound  # sign patterns drawn at most when a p or a bound sits near its threshold
INTERVALS = (
    "95%: Wilson for proportions, percentile bootstrap for means. Differences: exact McNemar with "
    "Newcombe's hybrid score interval, widened to the exact bound where a discordant cell is rare "
    "(0/1 metrics), or a paired sign-flip permutation test with the interval that inverts it "
    "(continuous); a verdict's comparisons form a fixed sequence at alpha {alpha:g}, each bound "
    "one-sided {bound:.0f}%; other comparisons are unadjusted"
)


def partition_alpha(u, alpha: float):
    """The one-sided level alpha_1 of the bound that declares a winner at step 1, for
    u = min_effect / (standard error of the difference), one per run.

    The claim "the arms differ by at least min_effect" can go either way, so under a true
    difference inside +-min_effect both tails can err; at the edge of that region the
    chance of either is Phi(-c) + Phi(-c - 2u) for bounds at normal quantile c. c solves
    that = alpha (by bisection between z_alpha and z_alpha/2): alpha_1 = alpha / 2 when
    min_effect is 0, approaching alpha as the margin grows against the standard error
    (at the demo's n = 76 and 5 points it is about 0.048)."""
    u = np.asarray(u, dtype=float)
    lo, hi = np.full(u.shape, norm.isf(alpha)), np.full(u.shape, norm.isf(alpha / 2))
    for _ in range(50):
        c = (lo + hi) / 2
        over = norm.sf(c) + norm.sf(c + 2 * np.where(np.isfinite(u), u, 1e6)) > alpha
        lo, hi = np.where(over, c, lo), np.where(over, hi, c)
    return norm.sf(hi)


def _settled_sign_flip(
    d: np.ndarray, *, levels: dict, samples: int, seed: int, margins: tuple[float, ...], p_levels: tuple[float, ...]
) -> dict:
    """stats.sign_flip_levels, with more patterns drawn (4x at a time, up to MAX_PATTERNS)
    for the runs whose p sits within two Monte Carlo standard errors of a level in
    `p_levels` or whose bound sits that close to one of `margins`: a verdict must not
    turn on the draw of the patterns."""
    runs = d.shape[0]
    levels = {k: np.broadcast_to(np.asarray(v, dtype=float), (runs,)).copy() for k, v in levels.items()}
    r = stats.sign_flip_levels(d, levels, samples=samples, seed=seed)
    m, stage = samples, 0
    while m < MAX_PATTERNS and d.shape[1] > stats.EXACT_MAX_N:
        near = np.zeros(runs, dtype=bool)
        for level in p_levels:
            for key in ("p", "p_up", "p_down"):
                near |= np.abs(r[key] - level) < 2 * r["p_se"]
        for b in r["at"].values():
            for t in margins:
                near |= (np.abs(b["lo"] - t) < 2 * b["lo_se"]) | (np.abs(b["hi"] - t) < 2 * b["hi_se"])
        if not near.any():
            break
        m, stage = min(4 * m, MAX_PATTERNS), stage + 1
        again = stats.sign_flip_levels(d[near], {k: v[near] for k, v in levels.items()}, samples=m, seed=seed + stage)
        for k in ("diff", "p", "p_up", "p_down", "p_se"):
            r[k][near] = again[k]
        for name, b in r["at"].items():
            for k in b:
                b[k][near] = again["at"][name][k]
    r["patterns"] = m
    return r


def compare(
    values: dict[str, np.ndarray],
    y: str,
    x: str,
    *,
    kind: str,
    sign: float,
    levels: dict,
    samples: int,
    seed: int,
    margins: tuple[float, ...] = (),
    p_levels: tuple[float, ...] = (),
) -> dict:
    """One paired comparison x - y on aligned (runs, n) values, oriented so that positive
    favours x: diff, p (two-sided), p_up (one-sided, for x better), p_down, sd (per-item
    SD of the difference), and for each of `levels` ({name: confidence, one or one per
    run}) its interval in `at[name]` (lo, hi)."""
    a, b = np.atleast_2d(values[y]), np.atleast_2d(values[x])
    runs, n = a.shape
    if kind == "proportion":
        only_a = ((a > 0.5) & (b <= 0.5)).sum(axis=1)
        only_b = ((a <= 0.5) & (b > 0.5)).sum(axis=1)
        both = ((a > 0.5) & (b > 0.5)).sum(axis=1)
        at = {k: stats.mcnemar_counts(only_a, only_b, n, both=both, confidence=v) for k, v in levels.items()}
        first = next(iter(at.values()))
        r = {"diff": first["diff"], "p": first["p"], "p_up": first["p_up"], "p_down": first["p_down"]}
        r["at"] = {k: {"lo": v["lo"], "hi": v["hi"]} for k, v in at.items()}
        disc = (only_a + only_b + 1) / (n + 2)  # one pseudo-count keeps the SD above 0
        sd = np.sqrt(np.maximum(disc - ((only_b - only_a) / max(n, 1)) ** 2, 1 / (n + 2)))
        test, extra = "mcnemar_exact", {"discordance": disc}
    else:
        r = _settled_sign_flip(b - a, levels=levels, samples=samples, seed=seed, margins=margins, p_levels=p_levels)
        # Each bound is the more cautious of the sign-flip bound (exact for symmetric
        # differences) and the bootstrap-t bound (which follows a skew): a sign-flip
        # upper bound on zero-heavy token-F1 differences missed 6-13% where 4% is meant.
        boot = stats.bootstrap_t_bounds(b - a, levels, samples=BOOTSTRAP_T, seed=seed)
        for k, v in r["at"].items():
            v["lo"], v["hi"] = np.minimum(v["lo"], boot[k]["lo"]), np.maximum(v["hi"], boot[k]["hi"])
        sd = (b - a).std(axis=1, ddof=1) if n > 1 else np.full(runs, np.nan)
        test = "sign_flip_exact" if n <= stats.EXACT_MAX_N else f"sign_flip_monte_carlo_{samples}"
        extra = {"patterns": r["patterns"]}

    def arr(v) -> np.ndarray:
        return np.broadcast_to(np.asarray(v, dtype=float), (runs,))

    out = {
        "diff": sign * arr(r["diff"]),
        "p": arr(r["p"]),
        "p_up": arr(r["p_up" if sign > 0 else "p_down"]),
        "p_down": arr(r["p_down" if sign > 0 else "p_up"]),
        "sd": sd,
        "n": n,
        "test": test,
        **extra,
        "at": {
            k: {"lo": arr(v["lo"] if sign > 0 else -v["hi"]), "hi": arr(v["hi"] if sign > 0 else -v["lo"])}
            for k, v in r["at"].items()
        },
    }
    return out


def _view(c: dict, level: str) -> dict:
    """A comparison with the interval of one of its levels as its lo and hi."""
    return {**c, **c["at"][level], "level": level}


def _better(c: dict, *, min_effect: float, alpha, p_key: str = "p_up", lo=None) -> np.ndarray:
    """x better than y by at least min_effect: p below alpha and the lower bound at or
    above min_effect (and above 0, for min_effect 0)."""
    lo = c["lo"] if lo is None else lo
    return (c[p_key] < alpha) & (lo >= min_effect) & (lo > 0)


def _within(c: dict, *, min_effect: float) -> np.ndarray:
    """Both bounds strictly inside +-min_effect: the two one-sided tests of TOST reject."""
    return (c["lo"] > -min_effect) & (c["hi"] < min_effect)


def sequence(
    values: dict[str, np.ndarray],
    *,
    kind: str,
    direction: str,
    min_effect: float,
    alpha: float,
    samples: int,
    seed: int,
) -> dict:
    """The rule on many runs at once ({pipeline: (runs, n)}): both branches' comparisons
    and each step's claim, as arrays over runs (`_verdict_of_run` reads one run).

    alpha is split: the winner branch gets (1 - TIE_SHARE) * alpha, the tie branch the
    rest. Their claims can be false together (arms exactly min_effect apart, the winner
    a hair under min_effect above base: "no practical difference" and "RAG" both wrong),
    so only the sum of the two levels bounds the chance of a wrong verdict."""
    sign = 1.0 if direction == "higher" else -1.0
    a_win, a_tie = round(alpha * (1 - TIE_SHARE), 12), round(alpha * TIE_SHARE, 12)
    common = {
        "kind": kind,
        "sign": sign,
        "samples": samples,
        "seed": seed,
        "margins": (min_effect, -min_effect) if min_effect else (0.0,),
        "p_levels": (a_win, a_tie, a_tie / 2),
    }
    w, t, h = {"w": 1 - 2 * a_win}, {"t": 1 - 2 * a_tie}, {"h": 1 - a_tie}
    d = sign * (np.atleast_2d(values["rag"]) - np.atleast_2d(values["finetuned"]))
    n = d.shape[1]
    if kind == "proportion":  # the SD of a paired 0/1 difference, one pseudo-count keeping it above 0
        sd = np.sqrt(np.maximum((np.abs(d).sum(axis=1) + 1) / (n + 2) - d.mean(axis=1) ** 2, 1 / (n + 2)))
    else:
        sd = d.std(axis=1, ddof=1) if n > 1 else np.full(d.shape[0], np.nan)
    u = min_effect * np.sqrt(n) / np.where(sd > 0, sd, np.nan)
    alpha1 = partition_alpha(np.where(np.isfinite(u), u, np.inf), a_win)
    first = compare(values, "finetuned", "rag", levels=w | t | {"win": 1 - 2 * alpha1}, **common)
    rows = {("rag", "finetuned"): first}
    for arm in ("rag", "finetuned"):
        rows[(arm, "base")] = compare(values, "base", arm, levels=w | h, **common)
        rows[("rag_finetuned", arm)] = compare(values, arm, "rag_finetuned", levels=w | t | h, **common)
    win = _view(first, "win")
    step1_rag = (first["p"] < a_win) & (win["lo"] >= min_effect) & (win["lo"] > 0)
    step1_ft = (first["p"] < a_win) & (win["hi"] <= -min_effect) & (win["hi"] < 0)
    arms = ("rag", "finetuned")
    ok_base = {a: _better(_view(rows[(a, "base")], "w"), min_effect=min_effect, alpha=a_win) for a in arms}
    over = {a: _better(_view(rows[("rag_finetuned", a)], "w"), min_effect=min_effect, alpha=a_win) for a in arms}
    # The tie branch, at a_tie: equivalent arms (TOST), then rag_finetuned against both
    # arms (better than both; or not better than both, rejecting "better than both" by
    # either arm's bound at a_tie / 2), then an arm against base at a_tie / 2 each.
    equivalent = ~step1_rag & ~step1_ft & _within(_view(first, "t"), min_effect=min_effect)
    tie_over = {a: _better(_view(rows[("rag_finetuned", a)], "t"), min_effect=min_effect, alpha=a_tie) for a in arms}
    tie_not_over = {a: rows[("rag_finetuned", a)]["at"]["h"]["hi"] < min_effect for a in arms}
    tie_base = {a: _better(_view(rows[(a, "base")], "h"), min_effect=min_effect, alpha=a_tie / 2) for a in arms}
    return {
        "rows": rows,
        "alpha1": alpha1,
        "step1": np.select([step1_rag, step1_ft, equivalent], ["rag", "finetuned", "equivalent"], "inconclusive"),
        "ok_base": ok_base,
        "over": over,
        "tie_over": tie_over,
        "tie_not_over": tie_not_over,
        "tie_base": tie_base,
        "levels": {"winner": a_win, "tie": a_tie},
    }


def _verdict_of_run(s: dict, i: int) -> tuple[str, str, str, str, dict]:
    """(verdict, x, y, note, read) of run i from `sequence`'s arrays: x vs y is the
    comparison the verdict stands on; `read` maps each comparison the rule reached, as
    (x, y), to (step, branch, what it showed)."""
    first = str(s["step1"][i])
    shown = {"rag": "rag better", "finetuned": "finetuned better", "equivalent": "within the margin (tie branch)"}
    read = {("rag", "finetuned"): ("1", "winner", shown.get(first, "inconclusive"))}
    if first == "inconclusive":
        return "inconclusive", "rag", "finetuned", "the arms are neither separated nor shown within the margin", read
    if first == "equivalent":
        read[("rag", "finetuned")] = ("1'", "tie", "within the margin")
        over = {a: bool(s["tie_over"][a][i]) for a in ("rag", "finetuned")}
        not_over = {a: bool(s["tie_not_over"][a][i]) for a in ("rag", "finetuned")}
        for a in ("rag", "finetuned"):
            read[("rag_finetuned", a)] = (
                "2'",
                "tie",
                "better" if over[a] else "not better (alpha/2)" if not_over[a] else "inconclusive",
            )
        if all(over.values()):
            winners = [a for a in ("rag", "finetuned") if s["tie_base"][a][i]]
            for a in ("rag", "finetuned"):
                read[(a, "base")] = ("3'", "tie", "better (alpha/2)" if a in winners else "not shown better (alpha/2)")
            weaker = min(("rag", "finetuned"), key=lambda a: s["rows"][("rag_finetuned", a)]["at"]["t"]["lo"][i])
            if winners:
                return (
                    "both",
                    "rag_finetuned",
                    weaker,
                    (f"the arms are within the margin; {' and '.join(winners)} beat{'s' * (len(winners) == 1)} base"),
                    read,
                )
            return (
                "inconclusive",
                "rag_finetuned",
                weaker,
                ("rag_finetuned is better than both arms, but no arm is shown better than base"),
                read,
            )
        if any(not_over.values()):
            return (
                "no practical difference",
                "rag",
                "finetuned",
                ("rag_finetuned is not better than both arms by the margin"),
                read,
            )
        return (
            "inconclusive",
            "rag_finetuned",
            "rag",
            ("the arms are within the margin, but rag_finetuned is neither shown better than both nor not better"),
            read,
        )
    winner, loser = first, "finetuned" if first == "rag" else "rag"
    if not s["ok_base"][winner][i]:
        read[(winner, "base")] = ("2", "winner", "not shown better")
        return "inconclusive", winner, "base", f"{winner} is better than {loser} but not shown better than base", read
    read[(winner, "base")] = ("2", "winner", "better")
    better = bool(s["over"][winner][i])
    read[("rag_finetuned", winner)] = ("3", "winner", "better" if better else "not shown better")
    if better:
        return "both", "rag_finetuned", winner, f"{winner} beats base", read
    return ARM_NAMES[winner], winner, loser, f"{winner} beats base", read


def flat(means, min_effect: float) -> str | None:
    """ "floor" or "ceiling" when every mean is within max(FLOOR_CEILING, min_effect) of 0
    or of 1: then no two pipelines differ by more than min_effect, so no interval bound
    can clear it and the metric cannot decide."""
    edge = max(FLOOR_CEILING, min_effect)
    if means and all(v <= edge for v in means):
        return "floor"
    if means and all(v >= 1 - edge for v in means):
        return "ceiling"
    return None


def simulate_verdicts(
    values: dict[str, np.ndarray],
    *,
    kind: str,
    direction: str = "higher",
    min_effect: float = 0.05,
    alpha: float = 0.05,
    samples: int = 4000,
    seed: int = 0,
) -> np.ndarray:
    """The verdict of each of many runs ({pipeline: (runs, n) per-item values}) by the same
    rule as `decide`: the simulation tests and benchmarks/verdict_simulation.py measure
    the rule through this."""
    s = sequence(values, kind=kind, direction=direction, min_effect=min_effect, alpha=alpha, samples=samples, seed=seed)
    means = {p: np.atleast_2d(v).mean(axis=1) for p, v in values.items()}
    out = []
    for i in range(len(s["step1"])):
        if flat([means[p][i] for p in means], min_effect):
            out.append("uninformative")
        else:
            out.append(_verdict_of_run(s, i)[0])
    return np.array(out)


def _row(c: dict, x: str, y: str, *, outcome: str, read: tuple[str, str, str] | None, confidence: float) -> dict:
    """One comparison for metrics.json: its interval at `confidence`, its p-values, its
    outcome on its own, and the step of the sequence that read it (None: not reached)."""
    return {
        "x": x,
        "y": y,
        "n": c["n"],
        "test": c["test"],
        "diff": float(c["diff"][0]),
        "ci": [float(c["lo"][0]), float(c["hi"][0])],
        "confidence": confidence,
        "p": float(c["p"][0]),
        "p_one_sided": float(c["p_up"][0]),
        "step": read[0] if read else None,
        "branch": read[1] if read else None,
        "showed": read[2] if read else None,
        "outcome": outcome,
        "sd": float(c["sd"][0]),
        "discordance": float(c["discordance"][0]) if "discordance" in c else None,
    }


def _outcome(c: dict, *, min_effect: float, alpha: float) -> str:
    """A comparison's outcome on its own, at one-sided alpha per bound (descriptive for the
    comparisons the sequence did not read)."""
    if _better(c, min_effect=min_effect, alpha=alpha)[0]:
        return "better"
    if (c["p_down"][0] < alpha) and c["hi"][0] <= -min_effect and c["hi"][0] < 0:
        return "worse"
    return "equivalent" if _within(c, min_effect=min_effect)[0] else "inconclusive"


def canonical_ids(values: dict[str, dict[str, float]]) -> tuple[list, int]:
    """The items every pipeline scored with a finite value, in a canonical order that
    ignores their ids (by their scores), and how many shared items were dropped as NaN.
    Every sum then runs in the same order whatever the items are called, so the numbers
    agree bit for bit."""
    shared = set.intersection(*(set(values[p]) for p in PIPES))
    ids = sorted(
        (i for i in shared if all(np.isfinite(values[p][i]) for p in PIPES)),
        key=lambda i: tuple(values[p][i] for p in PIPES),
    )
    return ids, len(shared) - len(ids)


def _family(s: dict, read: dict, *, min_effect: float) -> list[dict]:
    """Every comparison of the family, each viewed at the level the sequence read it at
    (the arms against base at a_tie / 2, the tie branch at a_tie, else a_win)."""
    a_win, a_tie = s["levels"]["winner"], s["levels"]["tie"]
    family = []
    for yy, xx in FAMILY:
        entry = read.get((xx, yy))
        if entry and entry[0] == "3'":
            c, level = _view(s["rows"][(xx, yy)], "h"), a_tie / 2
        elif entry and entry[1] == "tie":
            c, level = _view(s["rows"][(xx, yy)], "t"), a_tie
        else:
            c, level = _view(s["rows"][(xx, yy)], "w"), a_win
        outcome = _outcome(c, min_effect=min_effect, alpha=level)
        family.append(_row(c, xx, yy, outcome=outcome, read=entry, confidence=1 - 2 * level))
    return family


def decide(
    values: dict[str, dict[str, float]],
    *,
    metric: str,
    kind: str,
    direction: str,
    min_effect: float = 0.05,
    alpha: float = 0.05,
    samples: int = 4000,
    seed: int = 0,
) -> dict:
    """The verdict for one question from the per-item values of its deciding metric
    ({pipeline: {item id: value}} for base, finetuned, rag and rag_finetuned), on the
    items all four scored (an item a metric could not score, NaN, counts as not scored).

    Items are taken in an order of their scores, and every test is a function of the
    multiset of differences, so neither the order nor the names of the items can change
    a verdict or any number in it.
    "inconclusive" carries the plan of the items that would settle it (`power.plan`);
    "uninformative" means the metric sits within max(FLOOR_CEILING, min_effect) of 0 or 1
    for every pipeline."""
    from harness.evaluate import power

    ids, dropped = canonical_ids(values)
    arrays = {p: np.array([[values[p][i] for i in ids]], dtype=float) for p in PIPES}
    s = sequence(arrays, kind=kind, direction=direction, min_effect=min_effect, alpha=alpha, samples=samples, seed=seed)
    means = {p: float(arrays[p].mean()) if ids else float("nan") for p in PIPES}
    a_win, a_tie = s["levels"]["winner"], s["levels"]["tie"]
    floor = flat(list(means.values()), min_effect)
    if floor:
        verdict, x, y, read = "uninformative", "rag", "finetuned", {}
        note = f"every pipeline is at the {floor} of this metric"
    else:
        verdict, x, y, note, read = _verdict_of_run(s, 0)
    family = _family(s, read, min_effect=min_effect)
    table = {(c["x"], c["y"]): c for c in family}
    c = table.get((x, y)) or table[(y, x)]
    flipped = (x, y) not in table
    out = {
        "metric": metric,
        "verdict": verdict,
        "rule": RULE,
        "comparison": f"{x} vs {y}",
        "effect": -c["diff"] if flipped else c["diff"],
        "ci": [-c["ci"][1], -c["ci"][0]] if flipped else c["ci"],
        "confidence": c["confidence"],
        "p": c["p"],
        "test": c["test"],
        "n": c["n"],
        "dropped": dropped,
        "min_effect": min_effect,
        "alpha": alpha,
        "correction": "fixed sequence",
        "levels": {"winner": a_win, "tie": a_tie},
        "winner_bound": {
            "alpha": float(s["alpha1"][0]),
            "ci": [
                float(s["rows"][("rag", "finetuned")]["at"]["win"]["lo"][0]),
                float(s["rows"][("rag", "finetuned")]["at"]["win"]["hi"][0]),
            ],
        },
        "family": family,
        "means": means,
        "beats_base": [a for a in ("rag", "finetuned") if bool(s["ok_base"][a][0])],
        "note": note,
        "uninformative": floor,
        "plan": None,
    }
    if verdict == "inconclusive":
        out["plan"] = power.plan_for(
            effect=out["effect"],
            kind=kind,
            sd=c["sd"],
            discordance=c["discordance"],
            min_effect=min_effect,
            alpha_win=a_win,
            alpha_tie=a_tie,
        )
    return out


def verdict_on(
    per_item: dict[str, dict[str, dict[str, float]]],
    metric: str,
    *,
    min_effect: float,
    alpha: float,
    samples: int,
    seed: int,
) -> dict | None:
    """The one verdict producer, for the run's questions and the scenario rows alike: the
    fixed sequence on `metric` (decide), or None when not all four pipelines scored it.
    A verdict at floor or ceiling names a metric that would inform; a hallucination
    question on which no pipeline ever abstains is undecidable with this model."""
    if not all(p in per_item and metric in per_item[p] for p in PIPES):
        return None
    _, direction, kind = metrics.METRICS[metric]
    v = decide(
        {p: per_item[p][metric] for p in PIPES},
        metric=metric,
        kind=kind,
        direction=direction,
        min_effect=min_effect,
        alpha=alpha,
        samples=samples,
        seed=seed,
    )
    if v["verdict"] != "uninformative":
        return v
    if metric == "hallucination_unanswerable" and v["uninformative"] == "ceiling":
        v["verdict"] = "undecidable with this model"
        v["note"] = (
            "no pipeline abstains on questions with no answer, so none can be shown to "
            'hallucinate less; this model does not say "I don\'t know" here'
        )
    else:
        v["informative"] = metrics.informative_metric(
            {p: per_item[p] for p in PIPES}, exclude=metric, floor_ceiling=max(FLOOR_CEILING, min_effect)
        )
    return v
