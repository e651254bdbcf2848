"""A content-addressed store of computed values that survives a crash at any point.

Generations, choice log-likelihoods and chunk embeddings are keyed by exactly what
determines them (the model's fingerprint, the adapter's cache key, the prompts, the
decoding settings) and kept under `$HARNESS_CACHE/<kind>/`. A run that was killed and
started again, a grid cell that asks for what another cell computed, or an unchanged
re-run, reads them back instead of computing them again.

    memo = Memo("generations", namespace={"model": fp, "adapter": key, ...})
    value = memo.get(key)          # None when never computed
    value = memo.get(key, valid=lambda v: None if isinstance(v, str) else "not a string")
    memo.put(key, value)           # appended and fsynced before returning

    # the loop the pipelines and the knowledge tags share: one value per item, batch by batch
    outputs = compute_in_batches(lengths, batch_size=8, key=key_of_batch, compute=run_batch, memo=memo)

Each namespace is a folder; each writing process appends JSON lines to its own file in
it (`<host>-<pid>.jsonl`), so parallel workers and nodes sharing the cache never write
the same file. A process killed mid-write leaves at most one torn last line, which
readers skip: what was being computed then is computed again, nothing else.

Nothing read back is trusted as found. Each line carries the sha256 of its key and value
(`checksum`); a line whose checksum does not match (an answer edited by hand, a damaged
disk) or is missing is logged and skipped, so its value is computed again. A value whose
checksum matches but whose type is not what the reader expects (`get(key, valid=...)`;
`compute_in_batches` asks for a list of one value per item) is logged, dropped and
computed again; the new line then serves later runs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

from harness.store import cache
from harness.store.cache import cache_dir
from harness.store.results import atomic_write_text, jsonl_rows

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the stored values change meaning (2: every line carries its checksum)


def content_key(obj) -> str:
    """sha256 of the canonical JSON of `obj`: the cache's key under the memo's scheme 2."""
    return cache.content_key(obj, scheme=2)


def checksum(key: str, value) -> str:
    """What a line stores beside its key and value: the sha256 of both, as JSON."""
    return content_key({"key": key, "value": value})


def _line_problem(row: dict) -> str | None:
    """Why a memo line cannot be used, or None."""
    if "key" not in row or "value" not in row:
        return "no 'key' and 'value'"
    if not isinstance(row["key"], str):
        return "'key' is not a string"
    if "sha256" not in row:
        return "no checksum"
    if row["sha256"] != checksum(row["key"], row["value"]):
        return "checksum does not match its key and value (edited or damaged)"
    return None


class Memo:
    """Values under one namespace: read all at open, appended one line per `put`.
    `values` holds each key's readable values in the order read (normally one)."""

    def __init__(self, kind: str, *, namespace: dict, root: str | Path | None = None):
        self.namespace = {"format": FORMAT, **namespace}
        ns = content_key(self.namespace)
        self.folder = Path(root or cache_dir()) / kind / ns[:2] / ns
        self.values: dict[str, list] = {}
        self.hits = self.computed = 0
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*.jsonl")):
                self._read(path)

    def _read(self, path: Path) -> None:
        # a line torn by a killed writer (even inside a UTF-8 character) is skipped: its
        # value is simply computed again
        with open(path, "rb") as f:
            for lineno, row in jsonl_rows(f, str(path), skip_damaged=True):
                problem = _line_problem(row)
                if problem is None:
                    self.values.setdefault(row["key"], []).append(row["value"])
                else:
                    log.warning("skipped %s:%d: %s; its value is computed again", path, lineno, problem)

    def get(self, key: str, *, valid=None):
        """The value stored under `key`, or None when there is none, or none that
        `valid(value)` (why it is not usable, or None) accepts: those are dropped, and
        logged as a warning when the value must be computed again."""
        found, dropped = None, []
        for value in self.values.get(key, ()):
            problem = "null" if value is None else valid(value) if valid is not None else None
            if problem is None:
                found = value
                break
            dropped.append(problem)
        if dropped:
            self.values[key] = [] if found is None else [found]
            level = logging.WARNING if found is None else logging.INFO
            log.log(
                level,
                "memo %s: dropped a stored value under key %s: %s%s",
                self.folder,
                key[:16],
                "; ".join(dropped),
                "; computing it again" if found is None else "",
            )
        if found is not None:
            self.hits += 1
        return found

    def put(self, key: str, value) -> None:
        self.computed += 1
        self.values[key] = [value]
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder / "namespace.json", json.dumps(self.namespace, indent=1, sort_keys=True))
        path = self.folder / f"{platform.node()}-{os.getpid()}.jsonl"
        row = {"key": key, "value": value, "sha256": checksum(key, value)}
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with open(path, "ab+") as f:  # bytes: a torn last line may end inside a UTF-8 character
            end = f.seek(0, os.SEEK_END)
            if end > 0:  # after a torn line (a reused pid), start a fresh line
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def counts(self) -> dict:
        return {"reused": self.hits, "computed": self.computed}


def _batch_problem(value, n: int) -> str | None:
    """Why `value` is not a batch's values (a list of `n` non-null values), or None."""
    if not isinstance(value, list):
        return f"a {type(value).__name__}, not a list of {n} values"
    if len(value) != n:
        return f"{len(value)} values for a batch of {n}"
    if any(v is None for v in value):
        return "a null among the batch's values"
    return None


def batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Item indices in batches of similar length (longest first). A batch is the unit of
    work that is computed, stored and resumed as one: its members' outputs depend
    (through padding) on each other, so it is never split."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def compute_in_batches(
    lengths: list[int], *, batch_size: int, key, compute, memo: Memo | None = None, progress=None
) -> list:
    """One value per item, computed batch by batch (`batches(lengths, batch_size)`):
    `compute(batch)` takes a batch's item indices and returns their values in that order.
    With a `memo`, each batch is looked up first under `key(batch)` (a content key of
    everything that determines its values) and stored as soon as it is computed, so a
    killed run loses at most the batch in flight. A stored value that is not a list of one
    value per item is dropped and computed again. `progress(n)` is told of every batch."""
    out: list = [None] * len(lengths)
    for batch in batches(lengths, batch_size):
        k = key(batch) if memo is not None else None
        values = memo.get(k, valid=lambda v, n=len(batch): _batch_problem(v, n)) if memo is not None else None
        if values is None:
            values = compute(batch)
            if memo is not None:
                memo.put(k, values)
        for i, v in zip(batch, values):
            out[i] = v
        if progress is not None:
            progress(len(batch))
    return out
