"""Human labels back into the report: check the annotators' files, merge them, measure.

`merge_labels(results_dir, files)` reads the `labels-<annotator>.json` files exported by
the annotation page (annotate.py), refuses any that belong to another run or page or
whose items changed, and writes `human_labels.json` beside the run's results:

- agreement between annotators, on the preferred pipeline and on each answer's label:
  Cohen's kappa for two annotators (scikit-learn), Krippendorff's alpha (nominal, the
  `krippendorff` package) for more, each with a bootstrap 95% interval over items;
- human win rates per pipeline pair (per item, the annotators' majority preference):
  wins, ties, both bad, the net preference (wins minus losses over items) with a
  bootstrap interval, an exact two-sided sign test on wins against losses, and a verdict
  by the report's rule (the net preference clears `min_effect` and p < alpha);
- each pipeline's share of answers the annotators call correct (or fitting the style);
- how far each automatic metric agrees with the humans: per answer (metric >= 0.5 against
  "correct"/"fits", Cohen's kappa and accuracy) and per pair (the metric prefers the
  answer the humans preferred, on items where both take a side);
- position bias: how often the left answer wins among decided items, against 1/2.

`harness report` then adds a "Human evaluation" section from that file.

Votes are merged by pipeline, never by screen side: each annotator's "left" and "right"
are read through the key of the page they labelled (`pipeline_votes`), so pages of one
run drawn with different `--seed`s (a pipeline left on one, right on the other) merge.

The labels' run hash (annotate.run_hash) covers the config hash and every byte of
`predictions.jsonl`, so labels of a run whose predictions changed since are refused.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from harness.evaluate import stats
from harness.report.annotate import ANSWER_LABELS, LABELS_FORMAT, PREFERENCES, run_hash
from harness.store.results import atomic_write_json, check_results_folder, read_jsonl

POSITIVE = ("correct", "fits")  # the labels that count as a right answer
HUMAN_FILE = "human_labels.json"


class LabelsError(ValueError):
    """A label file that cannot be used for this run; the message names the file."""


def _wilson(k: int, n: int) -> list[float]:
    return list(stats.wilson(k, n))


def read_label_file(path: Path, keys: dict[str, dict], expected_run: str) -> dict:
    """One annotator's labels, checked against the page keys of this results folder."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelsError(f"{path}: not a readable JSON label file ({err.__class__.__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != LABELS_FORMAT:
        raise LabelsError(f'{path}: not a harness label file (expected "format": "{LABELS_FORMAT}")')
    if raw.get("run_hash") != expected_run:
        raise LabelsError(
            f"{path}: labels for another run (run hash {raw.get('run_hash')}, this folder's is "
            f"{expected_run}); annotate this run's page"
        )
    key = keys.get(raw.get("page_id"))
    if key is None:
        raise LabelsError(
            f"{path}: page {raw.get('page_id')!r} was not written for this folder "
            "(harness annotate writes annotation/page-<id>.json)"
        )
    annotator = raw.get("annotator")
    if not isinstance(annotator, str) or not annotator.strip():
        raise LabelsError(f"{path}: 'annotator' must be a non-empty string")
    items = {it["id"]: it for it in key["items"]}
    labels = raw.get("labels")
    if not isinstance(labels, dict):
        raise LabelsError(f"{path}: 'labels' must be an object of item id -> labels")
    out = {}
    for qid, lab in labels.items():
        it = items.get(qid)
        if it is None or not isinstance(lab, dict) or lab.get("item_hash") != it["hash"]:
            raise LabelsError(
                f"{path}: item {qid!r} is not on page {key['page_id']} as labelled (its id or "
                "answers changed); labels for another run are not used"
            )
        allowed = ANSWER_LABELS["style" if it["task"] == "rewrite" else "qa"]
        for field, values in (("preference", PREFERENCES), ("left", allowed), ("right", allowed)):
            if lab.get(field) is not None and lab[field] not in values:
                raise LabelsError(f"{path}: item {qid!r}: {field} {lab[field]!r} is not one of {', '.join(values)}")
        out[qid] = lab
    return {"annotator": annotator.strip(), "page_id": key["page_id"], "labels": out, "file": str(path)}


def _kappa_or_alpha(table: list[list[str | None]], seed: int, samples: int = 1000) -> dict | None:
    """Agreement over items (rows) between annotators (columns); None where fewer than two
    annotators labelled two or more items in common."""
    from sklearn.metrics import cohen_kappa_score

    rows = [r for r in table if sum(v is not None for v in r) >= 2]
    if len(rows) < 2:
        return None
    raters = len(table[0])
    values = sorted({v for r in rows for v in r if v is not None})
    if raters == 2:

        def stat(rs):
            a, b = [r[0] for r in rs], [r[1] for r in rs]
            return 1.0 if a == b else float(cohen_kappa_score(a, b, labels=values))

        name = "Cohen's kappa"
    else:
        import krippendorff

        def stat(rs):
            data = np.array([[values.index(v) if v is not None else np.nan for v in r] for r in rs], dtype=float).T
            if len({v for r in rs for v in r if v is not None}) < 2:
                return 1.0
            return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))

        name = "Krippendorff's alpha (nominal)"
    point = stat(rows)
    rng = np.random.default_rng(seed)
    boots = [stat([rows[i] for i in rng.integers(0, len(rows), len(rows))]) for _ in range(samples)]
    boots = [b for b in boots if b == b]
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (float("nan"), float("nan"))
    observed = float(np.mean([len({v for v in r if v is not None}) == 1 for r in rows]))
    return {
        "statistic": name,
        "value": point,
        "ci95": [float(lo), float(hi)],
        "n_items": len(rows),
        "raw_agreement": observed,
    }


def _majority(values: list[str]) -> str | None:
    """The most common value, or None on a tie between annotators."""
    counts = Counter(v for v in values if v is not None).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def pair_statistics(
    prefs: list[str], *, min_effect: float, alpha: float, names: tuple[str, str], seed: int, samples: int = 2000
) -> dict:
    """Win rates of names[0] ("a") over names[1] ("b") from per-item preferences "a", "b",
    "tie" or "both_bad"; sign test on wins against losses; the report's verdict rule."""
    from scipy.stats import binomtest

    n = len(prefs)
    wins, losses = prefs.count("a"), prefs.count("b")
    score = np.array([1.0 if p == "a" else -1.0 if p == "b" else 0.0 for p in prefs])
    net = float(score.mean()) if n else float("nan")
    rng = np.random.default_rng(seed)
    boots = score[rng.integers(0, n, (samples, n))].mean(axis=1) if n else np.array([np.nan])
    lo, hi = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    p = float(binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0
    if p < alpha and abs(net) >= min_effect and (lo > 0 or hi < 0):
        verdict = f"{names[0] if net > 0 else names[1]} better"
    else:
        verdict = "no clear winner"
    return {
        "a": names[0],
        "b": names[1],
        "n": n,
        "wins_a": wins,
        "wins_b": losses,
        "ties": prefs.count("tie"),
        "both_bad": prefs.count("both_bad"),
        "win_rate_a": wins / (wins + losses) if wins + losses else None,
        "win_rate_a_ci95": _wilson(wins, wins + losses),
        "net_preference_a": net,
        "net_ci95": [lo, hi],
        "p": p,
        "test": "exact two-sided sign test on wins against losses (ties and both-bad set aside)",
        "verdict": verdict,
        "min_effect": min_effect,
        "alpha": alpha,
    }


def _metric_agreement(
    human: dict[tuple[str, str], int],
    scores: dict[tuple[str, str], dict],
    decided: list[tuple[str, str, str]],
    seed: int,
) -> dict:
    """Per automatic metric: answer-level agreement with the human right/wrong label and
    pair-level agreement with the human preference (`decided`: question id, the pipeline
    people preferred, the other one)."""
    from sklearn.metrics import cohen_kappa_score

    metrics = sorted(
        {
            k
            for s in scores.values()
            for k, v in s.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
        }
    )
    out = {}
    rng = np.random.default_rng(seed)
    for metric in metrics:
        pairs = [
            (h, 1 if scores[key][metric] >= 0.5 else 0) for key, h in human.items() if metric in scores.get(key, {})
        ]
        if len(pairs) < 2:
            continue
        h, a = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        kappa = 1.0 if (h == a).all() else float(cohen_kappa_score(h, a, labels=[0, 1]))
        idx = rng.integers(0, len(h), (500, len(h)))
        acc_boot = (h[idx] == a[idx]).mean(axis=1)
        agree, n_decided = 0, 0
        for qid, winner, loser in decided:
            sw, sl = scores.get((qid, winner), {}).get(metric), scores.get((qid, loser), {}).get(metric)
            if sw is not None and sl is not None and sw != sl:
                n_decided += 1
                agree += sw > sl
        out[metric] = {
            "n": len(pairs),
            "accuracy": float((h == a).mean()),
            "accuracy_ci95": [float(x) for x in np.percentile(acc_boot, [2.5, 97.5])],
            "kappa": kappa,
            "pairs_decided": n_decided,
            "pair_agreement": agree / n_decided if n_decided else None,
        }
    return out


def pipeline_votes(annotators: list[dict], keys: dict[str, dict]) -> list[dict]:
    """Every label of every annotator in pipeline terms, read through the key of the page
    that annotator labelled (pages of one run drawn with different seeds put a pipeline
    on different sides): the pair, the preferred pipeline (or "tie", "both_bad", None),
    each pipeline's answer label, and the screen side preferred (for position bias)."""
    votes = []
    for i, a in enumerate(annotators):
        items = {it["id"]: it for it in keys[a["page_id"]]["items"]}
        for qid, lab in a["labels"].items():
            it = items[qid]
            side = lab.get("preference")
            votes.append(
                {
                    "annotator": i,
                    "question": qid,
                    "pair": tuple(sorted((it["left"], it["right"]))),
                    "winner": it[side] if side in ("left", "right") else side,
                    "answers": {it["left"]: lab.get("left"), it["right"]: lab.get("right")},
                    "side": side,
                }
            )
    return votes


def _by_unit(votes: list[dict], unit) -> dict:
    """unit(vote) -> {annotator: vote}, units in sorted order."""
    out: dict = {}
    for v in sorted(votes, key=unit):
        out.setdefault(unit(v), {})[v["annotator"]] = v
    return out


def _agreement(votes: list[dict], n_annotators: int, seed: int) -> dict:
    """Agreement between annotators on the preferred pipeline of each (question, pair) and
    on the label of each (question, pipeline) answer; None with one annotator."""
    if n_annotators < 2:
        return {"preference": None, "answer": None}
    prefs = _by_unit(votes, lambda v: (v["question"], v["pair"]))
    answers: dict = {}
    for v in votes:
        for pipe, label in v["answers"].items():
            answers.setdefault((v["question"], pipe), {})[v["annotator"]] = label
    return {
        "preference": _kappa_or_alpha(
            [[u.get(i, {}).get("winner") for i in range(n_annotators)] for u in prefs.values()], seed
        ),
        "answer": _kappa_or_alpha([[u.get(i) for i in range(n_annotators)] for _, u in sorted(answers.items())], seed),
    }


def _pipeline_answers(votes: list[dict]) -> tuple[dict[str, list[str]], dict[tuple[str, str], int]]:
    """Per pipeline, the majority label of each of its answers; and per (question,
    pipeline) whether people call the answer right (1) or not (0)."""
    labels: dict = {}
    for v in votes:
        for pipe, label in v["answers"].items():
            labels.setdefault((v["question"], pipe), []).append(label)
    correctness: dict[str, list[str]] = {}
    human_binary: dict[tuple[str, str], int] = {}
    for (qid, pipe), values in sorted(labels.items()):
        label = _majority(values)
        if label is not None:
            correctness.setdefault(pipe, []).append(label)
            human_binary[(qid, pipe)] = int(label in POSITIVE)
    return correctness, human_binary


def summarise(
    annotators: list[dict],
    keys: dict[str, dict],
    predictions: list[dict],
    *,
    min_effect: float,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Everything the report's human section shows, from checked label files; votes are
    merged by pipeline (pipeline_votes), never by screen side."""
    from scipy.stats import binomtest

    names = [a["annotator"] for a in annotators]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise LabelsError(
            f"annotator {dup!r} appears in two label files "
            f"({', '.join(a['file'] for a in annotators if a['annotator'] == dup)}); merge or rename them"
        )
    votes = pipeline_votes(annotators, keys)
    units = _by_unit(votes, lambda v: (v["question"], v["pair"]))
    pair_items: dict[tuple[str, str], list[str]] = {}
    decided_items = []
    for (qid, pair), by_annotator in units.items():
        pref = _majority([v["winner"] for v in by_annotator.values()])
        if pref is None:
            continue
        pair_items.setdefault(pair, []).append("a" if pref == pair[0] else "b" if pref == pair[1] else pref)
        if pref in pair:
            decided_items.append((qid, pref, pair[1] if pref == pair[0] else pair[0]))
    pairs = {
        f"{a} vs {b}": pair_statistics(prefs, min_effect=min_effect, alpha=alpha, names=(a, b), seed=seed)
        for (a, b), prefs in sorted(pair_items.items())
    }
    correctness, human_binary = _pipeline_answers(votes)
    per_pipeline = {
        p: {
            "n": len(v),
            "right": sum(x in POSITIVE for x in v),
            "rate": sum(x in POSITIVE for x in v) / len(v),
            "ci95": _wilson(sum(x in POSITIVE for x in v), len(v)),
            "labels": dict(Counter(v)),
        }
        for p, v in correctness.items()
    }
    sides = [v["side"] for v in votes if v["side"] in ("left", "right")]
    left_wins = sides.count("left")
    scores = {(r["question_id"], r["pipeline"]): r["scores"] for r in predictions}
    return {
        "annotators": [
            {"name": a["annotator"], "file": a["file"], "page_id": a["page_id"], "items": len(a["labels"])}
            for a in annotators
        ],
        "items_labelled": len(units),
        "agreement": _agreement(votes, len(annotators), seed),
        "pairs": pairs,
        "answers": per_pipeline,
        "metric_agreement": _metric_agreement(human_binary, scores, decided_items, seed),
        "position_bias": {
            "decided": len(sides),
            "left_wins": left_wins,
            "left_rate": left_wins / len(sides) if sides else None,
            "ci95": _wilson(left_wins, len(sides)),
            "p": float(binomtest(left_wins, len(sides)).pvalue) if sides else None,
        },
        "merge": "per item and pipeline pair, the annotators' majority, each annotator's sides read through the "
        "key of the page they labelled; a tie between annotators counts as no preference",
    }


def merge_labels(results_dir: str | Path, files: list[str | Path]) -> Path:
    """Check every label file against this folder's pages, merge, and write
    `human_labels.json`; returns its path."""
    results_dir = Path(results_dir)
    if not (results_dir / "metrics.json").is_file():
        raise LabelsError(f"{results_dir}: no metrics.json (not a finished results folder)")
    check_results_folder(results_dir)
    if (results_dir / HUMAN_FILE).is_symlink() or (results_dir / HUMAN_FILE).is_dir():
        raise LabelsError(f"{results_dir / HUMAN_FILE}: is not a file harness wrote; harness will not replace it")
    keys = {}
    for path in sorted((results_dir / "annotation").glob("page-*.json")):
        try:
            key = json.loads(path.read_text(encoding="utf-8"))
            keys[key["page_id"]] = key
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise LabelsError(
                f"{path}: not a page key harness wrote ({err.__class__.__name__}); run harness annotate again"
            ) from None
    if not keys:
        raise LabelsError(f"{results_dir}: no annotation page (run harness annotate {results_dir} first)")
    if not files:
        raise LabelsError("harness labels: name at least one label file")
    expected = run_hash(results_dir)
    annotators = [read_label_file(Path(f), keys, expected) for f in files]
    m = json.loads((results_dir / "metrics.json").read_text(encoding="utf-8"))
    verdicts = m.get("verdicts") or {}
    any_v = next(iter(verdicts.values()), {})
    summary = summarise(
        annotators,
        keys,
        read_jsonl(results_dir / "predictions.jsonl"),
        min_effect=any_v.get("min_effect", 0.05),
        alpha=any_v.get("alpha", 0.05),
        seed=m.get("seed", 0),
    )
    target = results_dir / HUMAN_FILE
    atomic_write_json(target, summary)
    return target
