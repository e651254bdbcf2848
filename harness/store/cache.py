"""The artifact cache: where it lives, and how an entry is written and trusted.

Converted models, adapters, FAISS indexes, benchmark scores and memoised generations live
under `cache_dir()` (`~/.cache/harness`, or `$HARNESS_CACHE`). Nothing found there is
trusted as found: an entry is complete only when its manifest (each file's size and
sha256) is present and matches, and the manifest is written last, atomically, so a
process killed while writing leaves an entry without one. A damaged entry is logged,
discarded and computed again; it never fails a run.

    write_manifest(folder)             # after every file of a folder entry is in place
    if not verify_dir(folder): ...     # False (and logged) when missing or damaged
    files = verified_files(folder)     # {name: sha256} of a sound entry, else None (logged)
    write_bytes(path, data)            # a single-file entry and its manifest beside it
    data = read_bytes(path)            # None when missing or damaged (then discarded)

Every key is built by `content_key` (sha256 of an object's canonical JSON, then of any
file bytes that also decide the entry), and every file is hashed by `file_sha256`.

    key = content_key({"model": fp, "train": settings})   # hex; entries use a prefix

Every file of an entry is hashed, whatever its size (a same-size change to model weights
is a change). So that a converted model's gigabytes are not read twice on every load, a
folder entry keeps a second file beside its manifest, VERIFIED: for each file whose hash
last matched, its size, mtime, inode and ctime then. A file whose four are unchanged is
not hashed again; any write, replacement, `touch` or `chmod` changes its ctime, which no
user call can set back, so it is hashed again. A file changed within the filesystem's
timestamp granularity of the check could keep all four, so files changed less than
RACY_SECONDS before a check are not recorded (git's "racy" rule) and are hashed again next
time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from harness.store.results import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_ENV = "HARNESS_CACHE"
MANIFEST = "harness-manifest.json"
VERIFIED = "harness-verified.json"  # the stat of each file whose hash last matched (see the docstring)
RACY_SECONDS = 2.0  # a file changed this recently is hashed again at the next check


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


def write_manifest(folder: str | Path) -> None:
    """Record every file under `folder` (size and sha256); call it after the last file is
    written."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, VERIFIED)
    }
    atomic_write_bytes(folder / MANIFEST, json.dumps({"files": files}, indent=1, sort_keys=True).encode())


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _seen(folder: Path) -> dict:
    """VERIFIED's records; {} when it is missing or unreadable (then every file is hashed)."""
    try:
        seen = json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return seen if isinstance(seen, dict) else {}


def _check_files(folder: Path, listed: dict) -> tuple[str | None, dict]:
    """(why `folder` does not match its manifest's `listed` files or None, the VERIFIED
    records to keep). A file is hashed unless VERIFIED holds its unchanged stat."""
    seen, now, keep = _seen(folder), time.time_ns(), {}
    for name, want in listed.items():
        if not (isinstance(want, dict) and isinstance(want.get("sha256"), str)):
            return f"{name} has no sha256 in its manifest (written by a version that checked large files by size)", {}
        path = folder / name
        if not path.is_file():
            return f"{name} missing", {}
        st = path.stat()
        record = {"stat": _stamp(st), "sha256": want["sha256"]}
        if seen.get(name) != record and (st.st_size != want.get("bytes") or file_sha256(path) != want["sha256"]):
            return f"{name} differs from its manifest (truncated or changed)", {}
        if now - st.st_ctime_ns > RACY_SECONDS * 1e9:
            keep[name] = record
    return None, keep


def _remember(folder: Path, keep: dict) -> None:
    """Write VERIFIED when it changed; a folder that cannot take it (read-only) only means
    its files are hashed again next time."""
    if keep == _seen(folder):
        return
    try:
        atomic_write_bytes(folder / VERIFIED, json.dumps(keep, sort_keys=True).encode())
    except OSError as err:
        log.info("cache entry %s: hashes not remembered (%s); they are computed again next time", folder, err)


def _listed(folder: Path) -> tuple[dict | None, str | None]:
    """The manifest's {name: {"bytes", "sha256"}}, or None and why it cannot be had."""
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return None, "no manifest (written last, so the entry was never finished)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"unreadable manifest ({err})"
    return (listed, None) if isinstance(listed, dict) else (None, "unreadable manifest (no file list)")


def verified_files(folder: str | Path) -> dict[str, str] | None:
    """{relative name: sha256} of every file in `folder`'s manifest when each one is there
    and its bytes hash to it; None when the folder does not exist, or (logged) when its
    manifest is missing or unreadable or a file does not match."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    listed, reason = _listed(folder)
    keep = {}
    if listed is not None:
        reason, keep = _check_files(folder, listed)
    if reason:
        log.warning("cache entry %s is damaged: %s; discarding it, it will be computed again", folder, reason)
        return None
    _remember(folder, keep)
    return {name: want["sha256"] for name, want in listed.items()}


def verify_dir(folder: str | Path) -> bool:
    """True when `folder` exists and every file its manifest lists matches; otherwise
    False, with the reason logged (a folder that does not exist is simply False)."""
    return verified_files(folder) is not None


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
    atomic_write_bytes(
        _sidecar(path), json.dumps({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}).encode()
    )


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
