"""The artifact cache: where it lives, and how an entry is written and trusted.

Converted models, adapters, FAISS indexes, benchmark scores and memoised generations live
under `cache_dir()` (`~/.cache/harness`, or `$HARNESS_CACHE`). Nothing found there is
trusted as found: an entry is complete only when its manifest (each file's size and
sha256) is present and matches, and the manifest is written last, atomically, so a
process killed while writing leaves an entry without one. A damaged entry is logged,
discarded and computed again; it never fails a run.

    write_manifest(folder)             # after every file of a folder entry is in place
    if not verify_dir(folder): ...     # False (and logged) when missing or damaged
    write_bytes(path, data)            # a single-file entry and its manifest beside it
    data = read_bytes(path)            # None when missing or damaged (then discarded)

Every key is built by `content_key` (sha256 of an object's canonical JSON, then of any
file bytes that also decide the entry), and every file is hashed by `file_sha256`.

    key = content_key({"model": fp, "train": settings})   # hex; entries use a prefix
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from harness.results import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_ENV = "HARNESS_CACHE"
MANIFEST = "harness-manifest.json"
HASH_LIMIT = 64 << 20  # files up to this size are hashed; larger ones (model weights) are checked by size


# How an object becomes the JSON a key hashes. A key is built with one scheme for good:
# a new scheme gets a new number, so no existing key (and no cache built with it) changes.
KEY_SCHEMES = {
    1: {"sort_keys": True},  # adapters, adapter groups, FAISS indexes, benchmark subsets and scores
    2: {"sort_keys": True, "ensure_ascii": False},  # memoised generations (memo.content_key)
}


class CacheError(ValueError):
    """The cache folder cannot be used; the message names it and the variable."""


def cache_dir() -> Path:
    """Where converted models, adapters and indexes live; `HARNESS_CACHE` moves it."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "harness")


def content_key(obj, *, scheme: int = 1, files: tuple[bytes, ...] = ()) -> str:
    """sha256 (hex) of `obj`'s canonical JSON under KEY_SCHEMES[scheme], followed by the
    bytes in `files` (contents that decide the entry too, such as task templates)."""
    h = hashlib.sha256(json.dumps(obj, **KEY_SCHEMES[scheme]).encode())
    for data in files:
        h.update(data)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in blocks (model weights are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _describe(path: Path) -> dict:
    size = path.stat().st_size
    if size > HASH_LIMIT:
        return {"bytes": size}
    return {"bytes": size, "sha256": file_sha256(path)}


def write_manifest(folder: str | Path) -> None:
    """Record every file under `folder` (size, and sha256 up to HASH_LIMIT); call it
    after the last file is written."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): _describe(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    atomic_write_bytes(folder / MANIFEST, json.dumps({"files": files}, indent=1, sort_keys=True).encode())


def _mismatch(folder: Path) -> str | None:
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return "no manifest (written last, so the entry was never finished)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable manifest ({err})"
    for name, want in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        if _describe(path) != want:
            return f"{name} differs from its manifest (truncated or changed)"
    return None


def verify_dir(folder: str | Path) -> bool:
    """True when `folder` exists and every file its manifest lists matches; otherwise
    False, with the reason logged (a folder that does not exist is simply False)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    reason = _mismatch(folder)
    if reason:
        log.warning("cache entry %s is damaged: %s; discarding it, it will be computed again", folder, reason)
    return reason is None


def discard(path: str | Path) -> None:
    """Remove a damaged entry: renamed aside first, so no reader sees it half-deleted."""
    path = Path(path)
    aside = path.with_name(f".{path.name}.discarded-{os.getpid()}")
    try:
        path.rename(aside)
    except FileNotFoundError:
        return
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def write_bytes(path: str | Path, data: bytes) -> None:
    """A single-file entry: the file atomically, then its manifest beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    atomic_write_bytes(_sidecar(path), json.dumps({"bytes": len(data),
                                              "sha256": hashlib.sha256(data).hexdigest()}).encode())


def read_bytes(path: str | Path) -> bytes | None:
    """A single-file entry's bytes when it and its manifest agree; None when it is
    missing, or damaged (then logged and discarded)."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        want = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        ok = want == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        reason = "differs from its manifest (truncated or changed)"
    except FileNotFoundError:
        ok, reason = False, "no manifest (written last, so the entry was never finished)"
    except (OSError, ValueError) as err:
        ok, reason = False, f"unreadable manifest ({err})"
    if not ok:
        log.warning("cache entry %s is damaged: %s; discarding it, it will be computed again", path, reason)
        discard(path)
        discard(_sidecar(path))
        return None
    return data


def writable_problem(folder: str | Path) -> str | None:
    """Why files cannot be created under `folder` (or under the folders it would be made
    in), or None. Tries a real file, since permission bits do not tell (root, read-only
    mounts); creates nothing that stays."""
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return "no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".harness-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        return f"{probe} is not writable ({err.strerror})"
    return None


def check_cache_dir() -> Path:
    """The cache folder, or CacheError when it cannot hold files (checked before any work,
    so a bad HARNESS_CACHE is found before minutes of model conversion)."""
    folder = cache_dir()
    problem = writable_problem(folder)
    if problem:
        where = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the cache folder"
        raise CacheError(f"{where}: {folder}: {problem}")
    return folder
