"""A content-addressed store of computed values that survives a crash at any point.

Generations, choice log-likelihoods and chunk embeddings are keyed by exactly what
determines them (the model's fingerprint, the adapter's cache key, the prompts, the
decoding settings) and kept under `$HARNESS_CACHE/<kind>/`. A run that was killed and
started again, a grid cell that asks for what another cell computed, or an unchanged
re-run, reads them back instead of computing them again.

    memo = Memo("generations", namespace={"model": fp, "adapter": key, ...})
    value = memo.get(key)          # None when never computed
    memo.put(key, value)           # appended and fsynced before returning

Each namespace is a folder; each writing process appends JSON lines to its own file in
it (`<host>-<pid>.jsonl`), so parallel workers and nodes sharing the cache never write
the same file. A process killed mid-write leaves at most one torn last line, which
readers skip: what was being computed then is computed again, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from pathlib import Path

from harness.cache import cache_dir

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the stored values change meaning


def content_key(obj) -> str:
    """sha256 of the canonical JSON of `obj`."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Memo:
    """Values under one namespace: read all at open, appended one line per `put`."""

    def __init__(self, kind: str, *, namespace: dict, root: str | Path | None = None):
        self.namespace = {"format": FORMAT, **namespace}
        ns = content_key(self.namespace)
        self.folder = Path(root or cache_dir()) / kind / ns[:2] / ns
        self.values: dict[str, object] = {}
        self.hits = self.computed = 0
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*.jsonl")):
                self._read(path)

    def _read(self, path: Path) -> None:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    row = json.loads(raw.decode("utf-8"))
                    key, value = row["key"], row["value"]
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                    # a line torn by a killed writer (even inside a UTF-8 character): its value
                    # is simply computed again
                    log.warning("%s: skipped a torn line", path)
                    continue
                self.values.setdefault(key, value)

    def get(self, key: str):
        value = self.values.get(key)
        if value is not None:
            self.hits += 1
        return value

    def put(self, key: str, value) -> None:
        self.computed += 1
        self.values[key] = value
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "namespace.json").write_text(json.dumps(self.namespace, indent=1, sort_keys=True))
        path = self.folder / f"{platform.node()}-{os.getpid()}.jsonl"
        line = (json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n").encode("utf-8")
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
