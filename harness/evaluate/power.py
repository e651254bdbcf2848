"""How many paired items the verdict rule needs: the sample size at which a question's
deciding comparison resolves with a chosen probability (80% by default), at a chosen
true difference, from the run's own pilot numbers or a stated assumption.

    power.items_for(effect=0.10, kind="proportion", discordance=0.45, min_effect=0.05, alpha=0.05)

A true difference of 0 asks for "within the margin" (both bounds inside +-min_effect);
a difference beyond min_effect asks for a winner (the lower bound at or above
min_effect). A difference at or inside the margin but not 0 cannot be shown either way
with certainty at any n and gets None. Continuous scores use the normal approximation of
the sign-flip interval, n = ((z + z_power) * sd / gap)**2; 0/1 scores search n by
simulating the exact counts through Newcombe's interval (`verdicts.compare`'s kernel),
since its width at small n depends on more than the discordance. The later steps of the
sequence (the winner against base, rag_finetuned against the arms) are assumed to pass:
the plan is for the comparison that decides.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from harness.evaluate import stats

DEFAULT_EFFECTS = (0.0, 0.10, 0.20)  # no difference, 10 and 20 points
ASSUMED = {"proportion": {"discordance": 0.5}, "mean": {"sd": 0.35}}  # when there is no pilot
MAX_ITEMS = 10**6


def _normal_items(gap: float, sd: float, *, z_claim: float, z_power: float) -> int:
    return max(2, math.ceil(((z_claim + z_power) * sd / gap) ** 2))


def _resolves(
    n: int,
    *,
    effect: float,
    discordance: float,
    min_effect: float,
    alpha: float,
    power: float,
    rng: np.random.Generator,
    runs: int = 4000,
) -> bool:
    """Whether the deciding comparison at n items resolves the right way in at least
    `power` of simulated runs (exact counts; Newcombe's interval as the rule reads it)."""
    psi = max(discordance, abs(effect))
    only_b_rate, only_a_rate = (psi + effect) / 2, (psi - effect) / 2
    counts = rng.multinomial(n, [only_b_rate, only_a_rate, (1 - psi) / 2, (1 - psi) / 2], size=runs)
    r = stats.mcnemar_counts(counts[:, 1], counts[:, 0], n, both=counts[:, 2], confidence=1 - 2 * alpha)
    if effect == 0:
        ok = (r["lo"] > -min_effect) & (r["hi"] < min_effect)
    else:
        ok = (r["lo"] >= min_effect) & (r["p"] < alpha)
    return bool(ok.mean() >= power)


def items_for(
    *,
    effect: float,
    kind: str,
    min_effect: float,
    alpha: float,
    power: float = 0.8,
    sd: float | None = None,
    discordance: float | None = None,
    seed: int = 0,
) -> int | None:
    """Paired items at which the deciding comparison resolves with probability `power`
    when the true difference is `effect` (oriented: positive favours the first
    pipeline): "within the margin" for 0, a winner beyond min_effect, None between."""
    effect = abs(effect)
    if effect and effect <= min_effect or (effect == 0 and min_effect == 0) or not 0 < alpha < 1:
        return None
    z_claim = norm.isf(alpha)
    z_power = norm.isf((1 - power) / 2) if effect == 0 else norm.isf(1 - power)
    gap = min_effect if effect == 0 else effect - min_effect
    if kind != "proportion":
        sd = ASSUMED["mean"]["sd"] if sd is None or not math.isfinite(sd) or sd <= 0 else sd
        return _normal_items(gap, sd, z_claim=z_claim, z_power=z_power)
    psi = ASSUMED["proportion"]["discordance"] if discordance is None else max(discordance, effect)
    guess = _normal_items(gap, math.sqrt(max(psi - effect**2, 1e-6)), z_claim=z_claim, z_power=z_power)
    rng = np.random.default_rng(seed)

    def ok(n: int) -> bool:
        return _resolves(n, effect=effect, discordance=psi, min_effect=min_effect, alpha=alpha, power=power, rng=rng)

    lo, hi = max(1, guess // 2), max(2, guess)
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_ITEMS:
            return None
    while hi - lo > max(1, hi // 100):  # to 1%: the simulation's own error is about that
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def plan_for(
    *,
    effect: float,
    kind: str,
    sd: float,
    discordance: float | None,
    min_effect: float,
    alpha_win: float,
    alpha_tie: float,
    power: float = 0.8,
) -> dict:
    """What would settle an inconclusive comparison: the items needed if the true
    difference is the one observed (when it lies beyond the margin: a winner, at the
    winner branch's level) and if it is 0 ("within the margin", at the tie branch's),
    from this run's own SD or discordance."""
    observed = (
        items_for(
            effect=effect,
            kind=kind,
            sd=sd,
            discordance=discordance,
            min_effect=min_effect,
            alpha=alpha_win,
            power=power,
        )
        if abs(effect) > min_effect
        else None
    )
    none = items_for(
        effect=0.0, kind=kind, sd=sd, discordance=discordance, min_effect=min_effect, alpha=alpha_tie, power=power
    )
    return {
        "power": power,
        "observed_effect": effect,
        "items_if_observed": observed,
        "items_if_none": none,
        "from": "this run's discordance" if kind == "proportion" else "this run's SD of the differences",
    }


def plan_table(
    *,
    kind: str,
    min_effect: float,
    alpha_win: float,
    alpha_tie: float,
    power: float = 0.8,
    sd: float | None = None,
    discordance: float | None = None,
    effects=DEFAULT_EFFECTS,
) -> list[dict]:
    """Items needed at each of `effects` (and at min_effect, which no n can show: None),
    from a pilot's SD / discordance or, without one, the stated assumption (ASSUMED): a
    difference of 0 asks for "within the margin" at the tie branch's level, the others
    for a winner at the winner branch's."""
    source = "pilot" if (sd is not None or discordance is not None) else "assumed"
    rows = []
    for e in dict.fromkeys((0.0, min_effect, *effects)):
        rows.append(
            {
                "effect": e,
                "claim": "within the margin" if e == 0 else "a winner",
                "items": items_for(
                    effect=e,
                    kind=kind,
                    sd=sd,
                    discordance=discordance,
                    min_effect=min_effect,
                    alpha=alpha_tie if e == 0 else alpha_win,
                    power=power,
                ),
                "source": source,
            }
        )
    return rows


def questions_plan(
    *,
    verdicts: dict | None,
    min_effect: float,
    alpha_win: float,
    alpha_tie: float,
    power: float = 0.8,
    effects=DEFAULT_EFFECTS,
) -> list[dict]:
    """`plan_table` for each question a run decides: from a pilot run's verdicts (each
    question's deciding comparison, rag vs finetuned: its discordance or SD), or, with no
    pilot, for multiple choice (0/1) under the stated assumption."""
    out = []
    if not verdicts:
        for row in plan_table(
            kind="proportion",
            min_effect=min_effect,
            alpha_win=alpha_win,
            alpha_tie=alpha_tie,
            power=power,
            effects=effects,
        ):
            out.append({"question": "facts (multiple choice)", **row})
        return out
    for question, v in verdicts.items():
        first = next((c for c in v.get("family") or () if (c["x"], c["y"]) == ("rag", "finetuned")), None)
        if first is None or v["verdict"] in ("uninformative", "undecidable with this model"):
            continue
        kind = "proportion" if first["test"] == "mcnemar_exact" else "mean"
        for row in plan_table(
            kind=kind,
            min_effect=min_effect,
            alpha_win=alpha_win,
            alpha_tie=alpha_tie,
            power=power,
            effects=effects,
            sd=first["sd"] if kind == "mean" else None,
            discordance=first.get("discordance") if kind == "proportion" else None,
        ):
            out.append({"question": question, **row})
    return out
