"""A model as judge: secondary numbers, printed beside how far the judge can be trusted.

`run_judge(cfg, rows_by_pipeline, by_id, per_item, ...)` grades a run's answers with the
model `eval.judge.model` (any backend: in-process or an endpoint):

- correctness: is the answer right, given the gold answer? (`judge_correctness`). On the
  short-answer items the exact label (`contains`, the harness's own fact-recall score)
  is known, so the judge's agreement with it is measured on the same run: accuracy and
  Cohen's kappa (scikit-learn), each with a 95% percentile-bootstrap interval over items.
- faithfulness of a retrieval pipeline's answer to its retrieved passages, as RAGAS
  defines it (Es et al. 2023; ragas `Faithfulness`): the answer is broken into
  standalone claims (`judge_claims`), each claim is checked against the passages
  (`judge_supported`), and faithfulness = supported claims / claims. RAGAS itself is not
  used: its prompts ask for structured JSON that small local judges do not produce, and
  it pulls in LangChain; this is the published definition, implemented here. Answers
  with no claim (an abstention) have no faithfulness and are left out, as in RAGAS.
- pairwise preference between two pipelines, asked in both orders (position swap): a
  verdict that changes with the order is a disagreement, and the disagreement rate is
  reported; the win rate counts only order-consistent verdicts.

How a verdict is read (`eval.judge.verdicts`): `loglikelihood` scores the prompt's two
reply words (yes/no, 1/2) as lm-evaluation-harness scores choices and
takes the likelier, so every item gets a verdict even from a judge that does not follow
the reply format (small local models mostly do not); `generate` lets the judge write a
reply and parses its first words, counting unreadable replies. `auto` (the default)
scores by log-likelihood wherever the judge can give one (in-process, or an endpoint
with completions and `mc_protocol: loglikelihood`).

Judged numbers never enter the verdicts: a judge is trusted only as far as its measured
agreement, and until it has been checked against human labels of the same run.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from harness.answer.pipelines import PIPELINES
from harness.answer.prompts import Template, continuation, render
from harness.evaluate import stats
from harness.models.local import generate, loglikelihood
from harness.store.memo import Memo, content_key

log = logging.getLogger(__name__)


def load_judge(model_cfg):
    """The judge model from its ModelConfig: in-process, or from an endpoint."""
    from harness.models.local import load_generator

    if model_cfg.backend == "endpoint":
        from harness.models import endpoint

        lm = endpoint.connect(
            base_url=model_cfg.base_url,
            served_model=model_cfg.served_model,
            tokenizer=None,
            name=model_cfg.name,
            api=model_cfg.api,
            mc_protocol=model_cfg.mc_protocol,
            api_key_env=model_cfg.api_key_env,
            concurrency=model_cfg.concurrency,
            timeout=model_cfg.timeout,
            retries=model_cfg.retries,
        )
        if model_cfg.api == "completions":
            lm.tokenizer = endpoint.local_tokenizer(model_cfg.name)
        return lm
    return load_generator(model_cfg.name, dtype=model_cfg.dtype, device=model_cfg.device)


# -- parsing the judge's replies ----------------------------------------------------------
def parse_verdict(text: str) -> int | None:
    """1 for a yes/correct/supported verdict, 0 for no/incorrect/unsupported, None when the
    reply's first words say neither."""
    words = re.findall(r"[a-z]+", text.lower())[:4]
    for w in words:
        if w in ("no", "incorrect", "wrong", "unsupported", "false"):
            return 0
        if w in ("yes", "correct", "right", "supported", "true"):
            return 1
    return None


def parse_claims(text: str, *, limit: int = 8) -> list[str]:
    """One claim per non-empty line, list markers stripped."""
    claims = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip()
        if len(line) > 2:
            claims.append(line)
    return claims[:limit]


def parse_choice(text: str) -> int | None:
    """1 or 2: the answer the pairwise judge prefers; None when it names neither first."""
    m = re.search(r"[12]", text)
    return int(m.group()) if m else None


# -- the numbers --------------------------------------------------------------------------
def _kappas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cohen's kappa of binary labels, row by row (NaN where chance agreement is 1)."""
    po = (a == b).mean(axis=-1)
    pa, pb = a.mean(axis=-1), b.mean(axis=-1)
    pe = pa * pb + (1 - pa) * (1 - pb)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pe < 1, (po - pe) / (1 - pe), np.nan)


def agreement(judge: dict[str, int], exact: dict[str, int], *, samples: int = 2000, seed: int = 0) -> dict:
    """The judge's agreement with exact labels on the items both labelled: accuracy and
    Cohen's kappa (scikit-learn's), each with a 95% percentile-bootstrap interval over
    items; resamples with one label only, where kappa is undefined, are left out."""
    from sklearn.metrics import cohen_kappa_score

    ids = sorted(set(judge) & set(exact))
    a = np.array([judge[i] for i in ids], dtype=int)
    b = np.array([exact[i] for i in ids], dtype=int)
    n = len(ids)
    if n == 0:
        return {"n": 0, "accuracy": None, "kappa": None}
    single = len(set(a.tolist()) | set(b.tolist())) < 2
    k = float("nan") if single else float(cohen_kappa_score(a, b))
    draws = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    accs = (a[draws] == b[draws]).mean(axis=1)
    kappas = _kappas(a[draws], b[draws])
    kappas = kappas[~np.isnan(kappas)]
    return {
        "n": n,
        "accuracy": {
            "value": float((a == b).mean()),
            "ci95": [float(np.quantile(accs, 0.025)), float(np.quantile(accs, 0.975))],
        },
        "kappa": {
            "value": k,
            "ci95": (
                [float(np.quantile(kappas, 0.025)), float(np.quantile(kappas, 0.975))]
                if kappas.size
                else [float("nan"), float("nan")]
            ),
        },
        "judge_positive_rate": float(a.mean()),
        "exact_positive_rate": float(b.mean()),
        "ci_method": "percentile bootstrap over items",
    }


def pairwise_summary(first: dict[str, int], swapped: dict[str, int]) -> dict:
    """Position-swap consistency. `first[id]` is the preferred position (1 or 2) with
    pipeline a shown first, `swapped[id]` with b shown first. A consistent verdict
    prefers the same pipeline both times; b's win rate is over consistent verdicts."""
    ids = sorted(set(first) & set(swapped))
    winners = {i: ("a" if first[i] == 1 else "b", "b" if swapped[i] == 1 else "a") for i in ids}
    consistent = [w[0] for w in winners.values() if w[0] == w[1]]
    n, k = len(ids), len(ids) - len(consistent)
    wins_b = sum(w == "b" for w in consistent)
    return {
        "n": n,
        "disagreement": {"mean": k / n if n else float("nan"), "ci95": list(stats.wilson(k, n))},
        "consistent": len(consistent),
        "b_win_rate": {
            "mean": wins_b / len(consistent) if consistent else float("nan"),
            "ci95": list(stats.wilson(wins_b, len(consistent))),
        },
        "first_position_preferred": (sum(first[i] == 1 for i in ids) + sum(swapped[i] == 1 for i in ids)) / (2 * n)
        if n
        else float("nan"),
    }


# -- running it ---------------------------------------------------------------------------
def _ask(lm, memo: Memo, template: Template, fields: list[dict], *, max_new_tokens: int, batch_size: int) -> list[str]:
    """The judge's reply to each rendered prompt, from the memo where asked before."""
    prompts = [render(lm.tokenizer, template, question=f["question"], passages=f.get("passages")) for f in fields]
    out: list[str | None] = [None] * len(prompts)
    todo = []
    for i, p in enumerate(prompts):
        out[i] = memo.get(content_key({"template": template.id, "prompt": p, "max_new_tokens": max_new_tokens}))
        if out[i] is None:
            todo.append(i)
    from tqdm import tqdm

    with tqdm(total=len(todo), desc=f"judge ({template.name})", unit="prompt", disable=not todo) as bar:
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            for i, g in zip(
                chunk, generate(lm, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens, batch_size=batch_size)
            ):
                out[i] = g.text
                memo.put(
                    content_key({"template": template.id, "prompt": prompts[i], "max_new_tokens": max_new_tokens}),
                    g.text,
                )
            bar.update(len(chunk))
    return out  # type: ignore[return-value]


# The reply words each verdict prompt asks for, in verdict order (index 0 = verdict 0).
REPLY_WORDS = {"correctness": ("no", "yes"), "supported": ("no", "yes"), "pairwise": ("1", "2")}
PARSERS = {
    "correctness": lambda text: parse_verdict(text),
    "supported": lambda text: parse_verdict(text),
    "pairwise": lambda text: None if (c := parse_choice(text)) is None else c - 1,
}


def verdict_protocol(cfg) -> str:
    """`loglikelihood` or `generate`: what `eval.judge.verdicts` comes to for this judge."""
    if cfg.verdicts != "auto":
        return cfg.verdicts
    m = cfg.model
    scorable = m.backend != "endpoint" or (m.api == "completions" and m.mc_protocol == "loglikelihood")
    return "loglikelihood" if scorable else "generate"


def reply_continuation(prompt: str, word: str) -> str:
    """The reply word as it follows `prompt` (prompts.continuation: after a space unless
    the prompt ends in whitespace, as lm-evaluation-harness places a choice)."""
    return continuation(prompt, word)


def _pick(
    lm, memo: Memo, template: Template, fields: list[dict], words: tuple[str, ...], *, batch_size: int
) -> list[int]:
    """For each rendered prompt, the index of the likelier reply word (summed
    log-likelihood of the word after the prompt), from the memo where scored before."""
    prompts = [render(lm.tokenizer, template, question=f["question"], passages=f.get("passages")) for f in fields]
    keys = [content_key({"template": template.id, "prompt": p, "reply_words": list(words)}) for p in prompts]
    out: list[int | None] = [memo.get(k) for k in keys]
    todo = [i for i, v in enumerate(out) if v is None]
    if todo:
        log.info("judge (%s): scoring %d replies by log-likelihood", template.name, len(todo))
        pairs = [(prompts[i], reply_continuation(prompts[i], w)) for i in todo for w in words]
        lengths = {len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) for _, c in pairs[: len(words)]}
        if len(lengths) > 1:  # a longer word sums more log-probabilities: the verdict leans to the shorter
            log.warning(
                "judge (%s): the reply words %s are not the same number of tokens for this judge",
                template.name,
                "/".join(words),
            )
        scores = loglikelihood(lm, pairs, batch_size=batch_size)
        for j, i in enumerate(todo):
            out[i] = int(np.argmax(scores[j * len(words) : (j + 1) * len(words)]))
            memo.put(keys[i], out[i])
    return out  # type: ignore[return-value]


def _verdicts(lm, memo: Memo, kind: str, fields: list[dict], *, protocol: str, kw: dict) -> list[int | None]:
    """The judge's verdict on each item for prompt `kind` (see REPLY_WORDS): by
    log-likelihood, or parsed from a generated reply (None where unreadable). `kw`:
    the generation settings (max_new_tokens, batch_size)."""
    template = JUDGE_PROMPTS[kind]
    if protocol == "loglikelihood":
        return _pick(lm, memo, template, fields, REPLY_WORDS[kind], batch_size=kw["batch_size"])
    return [PARSERS[kind](t) for t in _ask(lm, memo, template, fields, **kw)]


def run_judge(
    cfg, rows_by_pipeline: dict[str, list[dict]], by_id: dict, per_item: dict, *, samples: int, seed: int
) -> dict:
    """Correctness, faithfulness and pairwise judgements of a run's answers, with the
    judge's agreement with the exact labels (see the module docstring)."""
    lm = load_judge(cfg.model)
    memo = Memo("judgements", namespace={"judge": lm.fingerprint, "dtype": lm.dtype, "device": lm.device})
    protocol = verdict_protocol(cfg)
    kw = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    out = {
        "judge": {"model": cfg.model.name, "backend": cfg.model.backend, "fingerprint": lm.fingerprint},
        "prompts": {k: t.id for k, t in JUDGE_PROMPTS.items()},
        "verdicts": protocol,
        "correctness": {},
        "faithfulness": {},
        "pairwise": [],
        "note": "secondary: judged numbers are not in the verdicts",
    }

    judge_labels, exact_labels, unparsed = {}, {}, 0
    for name, rows in rows_by_pipeline.items():
        rows = [r for r in rows if by_id[r["question_id"]].answerable and by_id[r["question_id"]].task == "qa"]
        fields = [{"question": _correctness_text(by_id[r["question_id"]], r["output"])} for r in rows]
        verdicts = _verdicts(lm, memo, "correctness", fields, protocol=protocol, kw=kw)
        unparsed += sum(v is None for v in verdicts)
        got = {r["question_id"]: v for r, v in zip(rows, verdicts) if v is not None}
        out["correctness"][name] = {
            **stats.summarize(list(got.values()), kind="proportion"),
            "unparsed": sum(v is None for v in verdicts),
            "per_item": got,
        }
        exact = per_item.get(name, {}).get("contains", {})
        judge_labels.update({f"{name}/{q}": v for q, v in got.items()})
        exact_labels.update({f"{name}/{q}": int(exact[q]) for q in got if q in exact})
    out["agreement"] = {
        **agreement(judge_labels, exact_labels, samples=samples, seed=seed),
        "exact_label": "contains (the normalised gold answer occurs in the output)",
        "items": "answerable short-answer items of every judged pipeline",
        "unparsed": unparsed,
    }

    if cfg.faithfulness:
        for name, rows in rows_by_pipeline.items():
            if not PIPELINES[name].retrieval:  # faithfulness is to retrieved passages
                continue
            out["faithfulness"][name] = _faithfulness(lm, memo, rows, by_id, kw, protocol)

    for a, b in cfg.pairwise:
        out["pairwise"].append(
            {"a": a, "b": b, **_pairwise(lm, memo, rows_by_pipeline[a], rows_by_pipeline[b], by_id, kw, protocol)}
        )
    return out


def add_judged_scores(predictions: list[dict], judged: dict | None) -> None:
    """Put the judge's correct/incorrect verdict into each judged prediction's scores as
    `judge_correct`, so that human labels of the run (labels.py) measure the judge as
    they measure every other automatic metric."""
    if not judged:
        return
    for p in predictions:
        verdict = judged["correctness"].get(p["pipeline"], {}).get("per_item", {}).get(p["question_id"])
        if verdict is not None:
            p["scores"] = {**p["scores"], "judge_correct": verdict}


def _correctness_text(q, output: str) -> str:
    return f"Question: {q.question}\nGold answer: {' / '.join(q.answers)}\nAnswer to grade: {output}"


def _faithfulness(lm, memo, rows, by_id, kw, protocol: str) -> dict:
    from harness.evaluate.metrics import abstained

    rows = [r for r in rows if r["retrieved"] and not abstained(r["output"])]
    claims_text = _ask(
        lm,
        memo,
        JUDGE_PROMPTS["claims"],
        [{"question": f"Question: {by_id[r['question_id']].question}\nAnswer: {r['output']}"} for r in rows],
        **kw,
    )
    checks = []
    for r, text in zip(rows, claims_text):
        for c in parse_claims(text):
            checks.append((r, c))
    verdicts = _verdicts(
        lm,
        memo,
        "supported",
        [{"question": f"Claim: {c}", "passages": [h["text"] for h in r["retrieved"]]} for r, c in checks],
        protocol=protocol,
        kw=kw,
    )
    tally: dict[str, list[int]] = {}
    for (r, _), v in zip(checks, verdicts):
        tally.setdefault(r["question_id"], []).append(0 if v is None else v)  # an unreadable verdict: unsupported
    per_item = {q: sum(v) / len(v) for q, v in tally.items()}
    return {
        **stats.summarize(list(per_item.values()), kind="mean"),
        "answers": len(rows),
        "answers_without_claims": len(rows) - len(per_item),
        "claims": len(checks),
        "unparsed_verdicts": sum(v is None for v in verdicts),
        "per_item": per_item,
    }


def _pairwise(lm, memo, rows_a, rows_b, by_id, kw, protocol: str) -> dict:
    b_by_id = {r["question_id"]: r for r in rows_b}
    pairs = [
        (r, b_by_id[r["question_id"]])
        for r in rows_a
        if r["question_id"] in b_by_id and by_id[r["question_id"]].answerable
    ]

    def text(q, one, two):
        return f"Question: {q.question}\nGold answer: {' / '.join(q.answers)}\nAnswer 1: {one}\nAnswer 2: {two}"

    def ask(order):  # the answer each item's verdict prefers, 1 or 2 (None: unreadable)
        fields = [{"question": text(by_id[a["question_id"]], *order(a["output"], b["output"]))} for a, b in pairs]
        return [None if v is None else v + 1 for v in _verdicts(lm, memo, "pairwise", fields, protocol=protocol, kw=kw)]

    f = {a["question_id"]: v for (a, _), v in zip(pairs, ask(lambda x, y: (x, y)))}
    s = {a["question_id"]: v for (a, _), v in zip(pairs, ask(lambda x, y: (y, x)))}
    unparsed = [q for q in f if f[q] is None or s[q] is None]
    summary = pairwise_summary(
        {q: v for q, v in f.items() if q not in unparsed}, {q: v for q, v in s.items() if q not in unparsed}
    )
    return {**summary, "unparsed": len(unparsed)}


JUDGE_PROMPTS = {
    # v2: "yes"/"no" instead of "correct"/"incorrect", which many tokenizers split unevenly
    # ("incorrect" is two SmolLM2 tokens to one), biasing a log-likelihood verdict
    "correctness": Template(
        name="judge_correctness",
        version="v2",
        system='You grade answers. Given a question, its gold answer and an answer to grade, reply "yes" if '
        'the answer states the gold answer (other words or more detail are fine) and "no" otherwise. '
        "Reply with one word.",
        user="{question}",
    ),
    "claims": Template(
        name="judge_claims",
        version="v1",
        system="Break the answer into short standalone claims, one per line, each understandable without the "
        "question. Reply with the claims only.",
        user="{question}",
    ),
    "supported": Template(
        name="judge_supported",
        version="v1",
        system='Decide whether the claim can be inferred from the passages. Reply "yes" or "no".',
        user="Passages:\n{context}\n\n{question}",
    ),
    "pairwise": Template(
        name="judge_pairwise",
        version="v1",
        system='Two answers to the same question follow. Reply "1" if answer 1 is better (correct and faithful to '
        'the gold answer) and "2" if answer 2 is better. Reply with the number only.',
        user="{question}",
    ),
}
