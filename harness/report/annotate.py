"""A blind side-by-side page for human annotators, written from a results folder.

`write_page(results_dir, pipelines=..., items=N, seed=S)` samples items (stratified by
task and by whether the automatic metrics already tell the two answers apart), pairs two
pipelines' answers per item with the left/right order drawn at random, and writes:

| file | what |
|---|---|
| `annotation/page-<id>.html` | the page: one self-contained file, no network; pipeline names are not in it |
| `annotation/page-<id>.json` | the key: which pipeline stood left and right on each item, and every item's hash |

The annotator picks the better answer (or tie, or both bad) and labels each answer
(correct / partly correct / wrong / invented detail; for style rewrites: fits the target
style or not), by mouse or keyboard; labels stay in the browser's storage while working
and are exported as `labels-<annotator>.json`, which `harness labels` (labels.py) checks
against the key and turns into statistics. With more than two pipelines, the items cycle
through every pair.

Pages are written only into a run's results folder that harness wrote
(results.check_results_folder); a key file already there for the same page is never
replaced by a different one. The page's data is embedded as JSON with `<`, `>`, `&` and
U+2028/2029 escaped (`script_safe_json`), so no item text can end or break its script.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import random
from pathlib import Path

from harness.report.run import item_outcome
from harness.store.results import atomic_write_json, atomic_write_text, check_results_folder, json_text, read_jsonl

LABELS_FORMAT = "harness-labels/1"
ANSWER_LABELS = {"qa": ("correct", "partly", "wrong", "invented"), "style": ("fits", "does_not_fit")}
ANSWER_LABEL_TEXT = {
    "correct": "correct",
    "partly": "partly correct",
    "wrong": "wrong",
    "invented": "invented detail",
    "fits": "fits the target style",
    "does_not_fit": "does not fit the style",
}
PREFERENCES = ("left", "right", "tie", "both_bad")
STYLE_TASKS = ("rewrite",)


class AnnotateError(ValueError):
    """A results folder or a request the page cannot be built from; the message names it."""


def run_hash(results_dir: Path) -> str:
    """What the labels belong to: the run's config hash and its exact predictions."""
    m = json.loads((results_dir / "metrics.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256((results_dir / "predictions.jsonl").read_bytes()).hexdigest()
    return hashlib.sha256(f"{m['config_hash']}:{digest}".encode()).hexdigest()[:24]


def item_hash(question_id: str, left_output: str, right_output: str) -> str:
    return hashlib.sha256(json.dumps([question_id, left_output, right_output]).encode()).hexdigest()[:16]


def label_set(task: str) -> str:
    return "style" if task in STYLE_TASKS else "qa"


def sample_items(
    by_q: dict[str, dict[str, dict]], *, pairs: list[tuple[str, str]], n: int, seed: int
) -> list[tuple[str, tuple[str, str], str]]:
    """(question id, pair, stratum) for up to `n` questions, spread over strata of
    (task, whether the automatic outcomes of the pipelines differ) in proportion to their
    size, at least one from each stratum while `n` allows; pairs assigned round robin
    over the chosen items, so every pair gets its share."""
    rng = random.Random(seed)
    names = list(dict.fromkeys(p for pair in pairs for p in pair))
    qids = [q for q in by_q if all(p in by_q[q] for p in names)]
    candidates = []
    for q in sorted(qids):
        rows = [by_q[q][p] for p in names]
        agree = "automatic metrics differ" if len({item_outcome(r)[0] for r in rows}) > 1 else "automatic metrics agree"
        candidates.append((q, f"{rows[0].get('task', 'qa')}, {agree}"))
    strata: dict[str, list] = {}
    for c in candidates:
        strata.setdefault(c[1], []).append(c)
    for members in strata.values():
        rng.shuffle(members)
    n = min(n, len(candidates))
    quota = {s: min(len(v), 1) for s, v in strata.items()} if n >= len(strata) else {}
    if not quota:  # fewer items than strata: the largest strata first
        for s in sorted(strata, key=lambda s: -len(strata[s]))[:n]:
            quota[s] = 1
    total = len(candidates)
    while sum(quota.values()) < n:  # the rest to the stratum furthest below its proportional share
        open_ = [s for s in strata if quota.get(s, 0) < len(strata[s])]
        s = max(open_, key=lambda s: n * len(strata[s]) / total - quota.get(s, 0))
        quota[s] = quota.get(s, 0) + 1
    chosen = [c for s, k in quota.items() for c in strata[s][:k]]
    rng.shuffle(chosen)
    return [(q, pairs[i % len(pairs)], stratum) for i, (q, stratum) in enumerate(chosen)]


def build_page(
    results_dir: str | Path, *, pipelines: list[str] | None = None, items: int = 40, seed: int = 0
) -> tuple[str, dict]:
    """The page's HTML and its key (see the module docstring)."""
    results_dir = Path(results_dir)
    if not (results_dir / "metrics.json").is_file() or not (results_dir / "predictions.jsonl").is_file():
        raise AnnotateError(f"{results_dir}: no metrics.json and predictions.jsonl (not a finished results folder)")
    predictions = read_jsonl(results_dir / "predictions.jsonl")
    by_q: dict[str, dict[str, dict]] = {}
    for row in predictions:
        by_q.setdefault(row["question_id"], {})[row["pipeline"]] = row
    present = list(dict.fromkeys(r["pipeline"] for r in predictions))
    if pipelines is None:
        pipelines = [p for p in ("rag", "finetuned") if p in present] or present[:2]
    unknown = [p for p in pipelines if p not in present]
    if unknown:
        raise AnnotateError(f"--pipelines: {', '.join(unknown)} not in {results_dir} (it has {', '.join(present)})")
    if len(set(pipelines)) < 2:
        raise AnnotateError("--pipelines: name at least two different pipelines to compare")
    if items < 1:
        raise AnnotateError("--items: must be at least 1")
    pairs = list(itertools.combinations(dict.fromkeys(pipelines), 2))
    rng = random.Random(seed + 1)
    rh = run_hash(results_dir)
    key_items, page_items = [], []
    for qid, pair, stratum in sample_items(by_q, pairs=pairs, n=items, seed=seed):
        left, right = pair if rng.random() < 0.5 else pair[::-1]
        a, b = by_q[qid][left], by_q[qid][right]
        h = item_hash(qid, a["output"], b["output"])
        evidence = list(dict.fromkeys(f"[{x['id']}] {x['text']}" for r in (a, b) for x in r.get("retrieved", [])))
        key_items.append(
            {"id": qid, "hash": h, "left": left, "right": right, "stratum": stratum, "task": a.get("task", "qa")}
        )
        page_items.append(
            {
                "id": qid,
                "hash": h,
                "question": a["question"],
                "gold": ", ".join(a["answers"]) or "(none: the question has no answer)",
                "left": a["output"],
                "right": b["output"],
                "evidence": evidence,
                "labels": list(ANSWER_LABELS[label_set(a.get("task", "qa"))]),
            }
        )
    page_id = hashlib.sha256(json.dumps([rh, key_items]).encode()).hexdigest()[:12]
    key = {
        "format": LABELS_FORMAT,
        "page_id": page_id,
        "run_hash": rh,
        "seed": seed,
        "pipelines": pipelines,
        "pairs": [list(p) for p in pairs],
        "items": key_items,
    }
    data = {
        "format": LABELS_FORMAT,
        "page_id": page_id,
        "run_hash": rh,
        "items": page_items,
        "label_text": ANSWER_LABEL_TEXT,
        "preferences": list(PREFERENCES),
    }
    m = json.loads((results_dir / "metrics.json").read_text(encoding="utf-8"))
    return _html(data, title=f"{m['experiment']}: which answer is better?"), key


def write_page(results_dir: str | Path, *, pipelines: list[str] | None = None, items: int = 40, seed: int = 0) -> Path:
    """Write the page and its key under `<results_dir>/annotation/`; returns the page."""
    results_dir = Path(results_dir)
    page, key = build_page(results_dir, pipelines=pipelines, items=items, seed=seed)
    check_results_folder(results_dir)
    folder = results_dir / "annotation"
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise AnnotateError(f"{folder}: is not a folder; harness writes the annotation pages there (move it)")
    key_file = folder / f"page-{key['page_id']}.json"
    if key_file.exists() and _read_key(key_file) != key:
        raise AnnotateError(
            f"{key_file}: differs from the key harness writes for this page (edited?); harness will "
            "not replace it, since exported labels are read through it (move it to write the page again)"
        )
    folder.mkdir(exist_ok=True)
    atomic_write_json(key_file, key)
    target = folder / f"page-{key['page_id']}.html"
    atomic_write_text(target, page)  # derived from the key and the run: replaced freely
    return target


def _read_key(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
.pair{display:flex;gap:1em}.answer{flex:1;border:1px solid #ccc;border-radius:6px;padding:.7em}
.answer h3{margin:.1em 0 .5em}.out{white-space:pre-wrap;min-height:3em;background:#fafafa;padding:.4em}
button{margin:.2em}button.on{background:#1f6feb;color:#fff}.keys{color:#666;font-size:12px}
#evidence{display:none;background:#f6f8fa;padding:.5em;font-size:13px}#evidence.shown{display:block}
#bar{display:flex;gap:1em;align-items:center;border-bottom:1px solid #ddd;padding-bottom:.5em}"""

# Plain DOM code, no libraries: the page must work from a file with no network.
_JS = r"""(function(){
var D=JSON.parse(document.getElementById('data').textContent),store='harness-labels-'+D.page_id,
S=JSON.parse(localStorage.getItem(store)||'{}'),i=0,$=function(id){return document.getElementById(id);};
S.labels=S.labels||{};
function save(){localStorage.setItem(store,JSON.stringify(S));}
function done(it){var l=S.labels[it.id];return l&&l.preference&&l.left&&l.right;}
function lab(it){return S.labels[it.id]=S.labels[it.id]||{item_hash:it.hash};}
function draw(){var it=D.items[i],l=S.labels[it.id]||{};
 $('pos').textContent='item '+(i+1)+' of '+D.items.length;
 $('progress').textContent=D.items.filter(done).length+' of '+D.items.length+' complete';
 $('question').textContent=it.question;$('gold').textContent=it.gold;
 $('left-out').textContent=it.left.trim()||'(empty answer)';$('right-out').textContent=it.right.trim()||'(empty answer)';
 $('evidence').textContent=it.evidence.length?it.evidence.join('\n\n'):'(no passages were retrieved)';
 ['left','right'].forEach(function(side){var box=$(side+'-labels');box.innerHTML='';
  it.labels.forEach(function(v,k){var b=document.createElement('button');b.textContent=D.label_text[v];
   b.dataset.value=v;if(l[side]===v)b.className='on';b.onclick=function(){setLabel(side,k);};box.appendChild(b);});});
 document.querySelectorAll('#prefs button').forEach(function(b){b.className=l.preference===b.dataset.value?'on':'';});}
function setLabel(side,k){var it=D.items[i];if(k>=it.labels.length)return;lab(it)[side]=it.labels[k];save();draw();}
function setPref(v){lab(D.items[i]).preference=v;save();draw();}
function go(d){i=Math.max(0,Math.min(D.items.length-1,i+d));draw();}
document.querySelectorAll('#prefs button').forEach(function(b){b.onclick=function(){setPref(b.dataset.value);};});
$('prev').onclick=function(){go(-1);};$('next').onclick=function(){go(1);};
$('show-evidence').onclick=function(){$('evidence').classList.toggle('shown');};
$('annotator').value=S.annotator||'';$('annotator').oninput=function(){S.annotator=this.value.trim();save();};
$('export').onclick=function(){var who=(S.annotator||'').replace(/[^A-Za-z0-9_.-]/g,'_');
 if(!who){$('annotator').focus();$('msg').textContent='Type your name first.';return;}
 var out={format:D.format,page_id:D.page_id,run_hash:D.run_hash,annotator:S.annotator,
  exported:new Date().toISOString(),labels:S.labels};
 var a=document.createElement('a');a.href=URL.createObjectURL(new Blob([JSON.stringify(out,null,1)],
  {type:'application/json'}));a.download='labels-'+who+'.json';document.body.appendChild(a);a.click();a.remove();
 $('msg').textContent='Exported '+Object.keys(S.labels).length+' items.';};
var keys={'1':function(){setPref('left');},'2':function(){setPref('right');},'3':function(){setPref('tie');},
 '4':function(){setPref('both_bad');},'j':function(){go(1);},'ArrowRight':function(){go(1);},
 'k':function(){go(-1);},'ArrowLeft':function(){go(-1);},'v':function(){$('show-evidence').click();}};
'qwer'.split('').forEach(function(c,k){keys[c]=function(){setLabel('left',k);};});
'asdf'.split('').forEach(function(c,k){keys[c]=function(){setLabel('right',k);};});
document.addEventListener('keydown',function(e){if(e.target.tagName==='INPUT'||e.ctrlKey||e.metaKey||e.altKey)return;
 var f=keys[e.key];if(f){f();e.preventDefault();}});
draw();document.body.dataset.ready='1';})();"""


# Characters of the embedded data that an HTML parser could read as markup (`</script>`
# ends the block; `<!--<script>` inside it makes the parser swallow the page's own script)
# or that old JavaScript engines end a line on: written as JSON escapes, which JSON.parse
# reads back to the same text.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def script_safe_json(data) -> str:
    """`data` as JSON text that no item text can end or break inside a
    `<script type="application/json">` block: no `<`, `>` or `&` anywhere in it."""
    return json_text(data).translate(_SCRIPT_SAFE)  # JSON.parse takes no NaN: json_text writes null


def _html(data: dict, *, title: str) -> str:
    payload = script_safe_json(data)
    prefs = "".join(
        f"<button data-value='{v}'>{t}</button>"
        for v, t in zip(PREFERENCES, ("left is better [1]", "right is better [2]", "tie [3]", "both bad [4]"))
    )
    answer = (
        "<div class='answer'><h3>{0}</h3><div class='out' id='{1}-out'></div><div id='{1}-labels'></div>"
        "<div class='keys'>keys: {2}</div></div>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<div id='bar'><strong>{html.escape(title)}</strong><span id='pos'></span><span id='progress'></span>"
        "<label>annotator <input id='annotator' size='12'></label><button id='export'>export labels</button>"
        "<span id='msg'></span></div>"
        "<p><strong>Question:</strong> <span id='question'></span><br><strong>Gold answer or reference:</strong> "
        "<span id='gold'></span></p><button id='show-evidence'>show retrieved evidence [v]</button>"
        "<pre id='evidence'></pre><div class='pair'>"
        + answer.format("Left answer", "left", "q w e r")
        + answer.format("Right answer", "right", "a s d f")
        + "</div>"
        f"<p id='prefs'>{prefs}</p><p><button id='prev'>previous [k / ←]</button>"
        "<button id='next'>next [j / →]</button></p><p class='keys'>The two answers come from two systems, "
        "in random order; their names are hidden. Labels are kept in this browser until you export them.</p>"
        f"<script type='application/json' id='data'>{payload}</script><script>{_JS}</script></body></html>\n"
    )
