"""Cached artifacts are verified when read: each one truncated is logged, discarded and
computed again, never used and never fatal (harness/store/cache.py)."""

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from harness.answer.retrieve import HashingEmbedder, build_retriever
from harness.config import parse_config
from harness.data.items import Document
from harness.store import cache
from harness.store.memo import Memo


def _truncate(path, keep: int = 10) -> None:
    data = path.read_bytes()
    assert len(data) > keep
    path.write_bytes(data[:keep])


def test_single_file_entry_round_trips_and_a_truncated_one_is_discarded(tmp_path, caplog):
    path = tmp_path / "scores" / "x.json"
    cache.write_bytes(path, b'{"acc": 0.5, "n": 20}')
    assert cache.read_bytes(path) == b'{"acc": 0.5, "n": 20}'
    _truncate(path)
    with caplog.at_level(logging.WARNING):
        assert cache.read_bytes(path) is None
    assert (
        "damaged" in caplog.text and not path.exists() and not (tmp_path / "scores" / "x.json.manifest.json").exists()
    )


def test_a_file_without_its_manifest_is_not_trusted(tmp_path):
    path = tmp_path / "x.faiss"
    path.write_bytes(b"written by a process killed before its manifest")
    assert cache.read_bytes(path) is None and not path.exists()


def test_folder_entry_verifies_and_a_truncated_file_fails_it(tmp_path, caplog):
    folder = tmp_path / "models" / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 1000)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    assert not cache.verify_dir(folder)  # no manifest yet: never finished
    cache.write_manifest(folder)
    assert cache.verify_dir(folder)
    _truncate(folder / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        assert not cache.verify_dir(folder)
    assert "model.safetensors differs" in caplog.text
    cache.discard(folder)
    assert not folder.exists() and not list((tmp_path / "models").iterdir())


def _sparse(path, size: int):
    """A file of `size` zero bytes that takes no disk (and hashes at memory speed)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _poke(path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place: the file keeps its size."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_a_same_size_change_to_a_large_file_fails_its_entry(tmp_path, caplog):
    """Model weights are hundreds of MiB: one changed byte in the middle, at the same size,
    is a damaged entry (it was checked by size only above 64 MiB)."""
    folder = tmp_path / "m"
    folder.mkdir()
    weights = _sparse(folder / "model.safetensors", 80 << 20)
    cache.write_manifest(folder)
    listed = json.loads((folder / cache.MANIFEST).read_text())["files"]["model.safetensors"]
    assert listed == {"bytes": 80 << 20, "sha256": hashlib.sha256(bytes(80 << 20)).hexdigest()}
    assert cache.verify_dir(folder)
    _poke(weights, 40 << 20, b"\x01")
    assert weights.stat().st_size == 80 << 20
    with caplog.at_level(logging.WARNING):
        assert not cache.verify_dir(folder)
    assert "model.safetensors differs from its manifest" in caplog.text


def test_an_entry_whose_manifest_has_sizes_only_is_not_trusted(tmp_path, caplog):
    """Manifests written while large files were checked by size carry no sha256 for them:
    such an entry cannot be verified, so it is rebuilt."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"x" * 100)
    (folder / cache.MANIFEST).write_text(json.dumps({"files": {"w.bin": {"bytes": 100}}}))
    with caplog.at_level(logging.WARNING):
        assert not cache.verify_dir(folder)
    assert "w.bin has no sha256" in caplog.text


def _counting_hashes(monkeypatch) -> list:
    real, hashed = cache.file_sha256, []
    monkeypatch.setattr(cache, "file_sha256", lambda p: (hashed.append(Path(p).name), real(p))[1])
    return hashed


def test_a_verified_hash_is_reused_while_the_file_is_untouched_and_any_write_rehashes(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"w" * 4096)
    cache.write_manifest(folder)
    monkeypatch.setattr(cache, "RACY_SECONDS", 0.0)  # else a file this new is hashed every time
    hashed = _counting_hashes(monkeypatch)
    assert cache.verify_dir(folder) and hashed == ["model.safetensors"]
    assert cache.verify_dir(folder) and hashed == ["model.safetensors"]  # remembered: not read again
    before = weights.stat()
    time.sleep(0.05)  # past the filesystem's timestamp tick, so the write below moves the ctime
    _poke(weights, 100, b"W")  # same size, and the mtime set back as it was
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_mtime_ns == before.st_mtime_ns and weights.stat().st_size == before.st_size
    assert not cache.verify_dir(folder) and hashed == ["model.safetensors"] * 2


def test_a_file_changed_just_before_a_check_is_hashed_again_at_the_next(tmp_path, monkeypatch):
    """Within the filesystem's timestamp tick a write can leave size, mtime and ctime as
    they were: what changed less than RACY_SECONDS before a check is not remembered."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"x" * 100)
    cache.write_manifest(folder)
    hashed = _counting_hashes(monkeypatch)
    assert cache.verify_dir(folder) and cache.verify_dir(folder) and hashed == ["w.bin", "w.bin"]
    assert not (folder / cache.VERIFIED).exists()
    _poke(folder / "w.bin", 0, b"y")  # possibly in the same tick as the write above
    assert not cache.verify_dir(folder)


def test_a_tampered_verified_record_does_not_vouch_for_a_changed_file(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"x" * 100)
    cache.write_manifest(folder)
    monkeypatch.setattr(cache, "RACY_SECONDS", 0.0)
    assert cache.verify_dir(folder)
    (folder / "w.bin").write_bytes(b"y" * 100)  # a new inode or ctime: the record no longer matches
    (folder / cache.VERIFIED).write_text("not json")
    assert not cache.verify_dir(folder)


def _fake_gguf_conversion(monkeypatch, model_dir):
    """`converted_from_gguf` on a stand-in .gguf file: transformers' GGUF reader replaced
    by loading the tiny Llama, so the cache entry's handling runs for real in seconds."""
    import transformers

    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained
    conversions = []

    def model(_, *, gguf_file, **kw):
        conversions.append(gguf_file)
        m = real_model(model_dir, **kw)
        m.config.quantization_config = {}  # what a GGUF load carries, and the converter drops
        return m

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda _, *, gguf_file: real_tok(model_dir))
    return conversions


def _files_digest(folder) -> str:
    """The fingerprint computed here, not with harness's helper: sha256 over each top-level
    model file's name and the sha256 of its bytes, harness's own notes left out."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.suffix in (".safetensors", ".json", ".jinja", ".model", ".bin") and not p.name.startswith("harness-"):
            h.update(p.name.encode() + hashlib.sha256(p.read_bytes()).hexdigest().encode())
    return h.hexdigest()


def test_a_converted_model_damaged_at_its_size_is_converted_again_and_fingerprinted_as_loaded(
    tiny_model_dir, tmp_path, monkeypatch, caplog
):
    from harness.models.local import converted_from_gguf

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    conversions = _fake_gguf_conversion(monkeypatch, tiny_model_dir)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    target, fingerprint = converted_from_gguf(gguf)
    clean = (target / "model.safetensors").read_bytes()
    assert fingerprint == _files_digest(target) and len(conversions) == 1
    assert converted_from_gguf(gguf) == (target, fingerprint) and len(conversions) == 1  # from the cache
    _poke(target / "model.safetensors", len(clean) // 2, bytes(4096))  # zeros in the weights, same size
    with caplog.at_level(logging.WARNING):
        again, fingerprint2 = converted_from_gguf(gguf)
    assert "model.safetensors differs from its manifest" in caplog.text and len(conversions) == 2
    assert again == target and (target / "model.safetensors").read_bytes() == clean
    assert fingerprint2 == fingerprint == _files_digest(target)


def test_a_truncated_faiss_index_is_rebuilt_not_read(tmp_path, caplog):
    docs = [Document(id=f"d{i}", text=f"Person {i} lives in town {i}. They work at shop {i}.") for i in range(6)]
    kw = dict(embedder=HashingEmbedder(), chunk_size=16, chunk_overlap=0, cache=tmp_path, embedder_id="hash")
    first = build_retriever(docs, **kw)
    (index_file,) = tmp_path.glob("*.faiss")
    assert build_retriever(docs, **kw).from_cache
    _truncate(index_file, keep=40)
    with caplog.at_level(logging.WARNING):
        again = build_retriever(docs, **kw)
    assert not again.from_cache and "damaged" in caplog.text
    q = ["Where does person 3 live?"]
    assert [h.chunk.id for h in again.search(q, 3)[0]] == [h.chunk.id for h in first.search(q, 3)[0]]
    assert cache.read_bytes(index_file) is not None  # rewritten whole, with its manifest
    np.testing.assert_array_equal(
        again.index.reconstruct_n(0, again.index.ntotal), first.index.reconstruct_n(0, first.index.ntotal)
    )


def test_memo_line_torn_inside_a_utf8_character_is_skipped(tmp_path):
    memo = Memo("generations", namespace={"model": "m"}, root=tmp_path)
    memo.put("a", "café")
    line = json.dumps({"key": "b", "value": "naïve Zürich"}, ensure_ascii=False).encode()
    cut = line.index("ï".encode()) + 1  # inside the two bytes of ï
    with open(next(memo.folder.glob("*.jsonl")), "ab") as f:
        f.write(line[:cut])
    again = Memo("generations", namespace={"model": "m"}, root=tmp_path)
    assert again.get("a") == "café" and again.get("b") is None
    again.put("c", "ok")  # appends on a fresh line after the torn one
    assert Memo("generations", namespace={"model": "m"}, root=tmp_path).get("c") == "ok"


def test_a_truncated_adapter_is_trained_again(tiny_lm, tmp_path, monkeypatch, caplog):
    from harness.run.runner import load_dataset
    from harness.train.adapters import obtain_adapter

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    cfg = parse_config(
        tiny_config(
            tiny_lm.source,
            train={"objective": "sft", "rank": 4, "alpha": 8, "max_steps": 2, "batch_size": 8, "max_length": 96},
        )
    )
    data = load_dataset(cfg)
    record, cached = obtain_adapter(tiny_lm, data, cfg, seed=0)
    assert not cached and record["steps"] == 2
    weights = next((tmp_path / "adapters").glob("*/adapter_model.safetensors"))
    _truncate(weights, keep=100)
    with caplog.at_level(logging.WARNING):
        record2, cached2 = obtain_adapter(tiny_lm, data, cfg, seed=0, name="again")
    assert not cached2 and "damaged" in caplog.text
    assert cache.verify_dir(weights.parent) and record2["cache_key"] == record["cache_key"]


@pytest.fixture
def small_grid(tiny_model_dir, tmp_path):
    raw = tiny_config(
        tiny_model_dir,
        name="g",
        eval={"pipelines": ["base"], "max_new_tokens": 4, "bootstrap_samples": 100},
        data={
            "world": {
                "seed": 0,
                "n_people": 2,
                "n_organisations": 1,
                "n_places": 1,
                "paraphrases": 0,
                "n_unanswerable": 2,
            },
            "max_questions": 4,
        },
        grid={"axes": {"eval.max_new_tokens": [4, 5]}},
    )
    return parse_config(raw)


def test_a_damaged_cell_metrics_is_recomputed_and_the_grid_finishes(small_grid, tmp_path, caplog):
    from harness.run.executors import run_grid

    root = run_grid(small_grid, results_root=tmp_path)
    cells = sorted(p.parent for p in root.glob("*/metrics.json"))
    assert len(cells) == 2
    good = json.loads((cells[0] / "metrics.json").read_text())
    _truncate(cells[0] / "metrics.json", keep=50)
    untouched = (cells[1] / "metrics.json").read_text()
    with caplog.at_level(logging.WARNING):
        run_grid(small_grid, results_root=tmp_path)
    assert "will be run again" in caplog.text
    again = json.loads((cells[0] / "metrics.json").read_text())
    assert again["pipelines"] == good["pipelines"] and again["config_hash"] == good["config_hash"]
    assert (cells[1] / "metrics.json").read_text() == untouched  # the sound cell was not run again


def test_keys_are_the_ones_the_cache_was_built_with():
    """cache.content_key builds every key; these values were computed by the code that
    built each key inline before, so a cache filled then is still found (a changed key
    would retrain every adapter and re-embed every index)."""
    from types import SimpleNamespace

    from harness.store.memo import content_key as memo_key
    from harness.train.adapters import adapter_group, adapter_key
    from harness.train.material import Example

    cfg = parse_config({"name": "k", "train": {"objective": "sft", "rank": 4}, "scenario": {"name": "style"}})
    lm = SimpleNamespace(fingerprint="fp", dtype="float32", device="cpu")
    examples, dev = [Example(prompt="Où est Paris?", completion=" En France")], [Example(prompt="q", completion=" a")]
    assert adapter_group(cfg) == "fc433c0b10a2b490ea74d4704f88bfecba790b76d523567a8d7712d801a87a62"
    assert adapter_key(lm, examples, cfg, 3, dev) == "335cbcafccff0b80bde9b2126a61bf145b473c7c816c76bd2649139240f10b15"
    # a changed dev split rule (sft's split_by_fact) gives new keys: old adapters are not reused
    assert adapter_key(lm, examples, cfg, 3, dev, "by-fact") != adapter_key(lm, examples, cfg, 3, dev)
    index = ["emb", "flat", 8, ["Zoë's café", "b"]]  # retrieve.build_retriever's index key
    assert cache.content_key(index) == "2ac6829a14e4eb026fc21c91ae1ae0cfb3d90b547bdb309d32181b591b887b48"
    # the memo's generation keys (before: sha256 of json.dumps(obj, sort_keys=True, ensure_ascii=False))
    assert memo_key(index) == "450375487f01e18f2d21fe9a26fb7c025cfd93d30c74c9d285974dc8bc4a5b54"
    assert cache.content_key(["x"], files=(b"ab", b"c")) == cache.content_key(["x"], files=(b"abc",))


def test_a_cache_folder_is_checked_by_a_real_file_and_a_bad_one_named(tmp_path, monkeypatch):
    # a folder still to be made is judged by the first existing folder above it
    assert cache.writable_problem(tmp_path / "a" / "b" / "c") is None
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    assert cache.writable_problem(tmp_path / "f" / "sub") == f"{tmp_path / 'f'} is a file, not a folder"
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "f" / "sub"))
    with pytest.raises(cache.CacheError) as err:
        cache.check_cache_dir()
    assert str(err.value) == f"$HARNESS_CACHE: {tmp_path / 'f' / 'sub'}: {tmp_path / 'f'} is a file, not a folder"
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "new"))
    assert cache.check_cache_dir() == tmp_path / "new"


def test_an_unwritable_cache_folder_is_named_with_the_reason(tmp_path, monkeypatch):
    # root writes through permission bits, so the refusal a read-only mount gives is simulated
    def refuse(**kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache.tempfile, "mkstemp", refuse)
    assert cache.writable_problem(tmp_path) == f"{tmp_path} is not writable (Permission denied)"
    monkeypatch.delenv("HARNESS_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(cache.CacheError, match=r"^the cache folder: .*\.cache/harness: .* is not writable"):
        cache.check_cache_dir()


def test_a_damaged_single_file_entry_is_logged_with_its_path_and_reason(tmp_path, caplog):
    path = tmp_path / "x.json"
    cases = [
        (lambda: path.write_bytes(b"changed"), "differs from its manifest (truncated or changed)"),
        (
            lambda: (tmp_path / "x.json.manifest.json").unlink(),
            "no manifest (written last, so the entry was never finished)",
        ),
        (lambda: (tmp_path / "x.json.manifest.json").write_text("{"), "unreadable manifest (Expecting"),
    ]
    for damage, reason in cases:
        cache.write_bytes(path, b"stored")
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert cache.read_bytes(path) is None
        assert caplog.messages[0].startswith(f"cache entry {path} is damaged: {reason}"), caplog.messages
        assert caplog.messages[0].endswith("; discarding it, it will be computed again")
        assert sorted(tmp_path.iterdir()) == []


def test_the_write_probe_is_a_hidden_harness_file_and_is_removed(tmp_path, monkeypatch):
    made = []
    real = cache.tempfile.mkstemp

    def spy(**kw):
        fd, name = real(**kw)
        made.append(Path(name))
        return fd, name

    monkeypatch.setattr(cache.tempfile, "mkstemp", spy)
    assert cache.writable_problem(tmp_path) is None
    assert [p.parent for p in made] == [tmp_path] and made[0].name.startswith(".harness-probe-")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_folder_entry_is_logged_with_its_reason(tmp_path, caplog):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"weights")
    manifest = folder / cache.MANIFEST
    cases = [
        (lambda: manifest.unlink(), "no manifest (written last, so the entry was never finished)"),
        (lambda: manifest.write_text("{"), "unreadable manifest (Expecting property name"),
        (lambda: manifest.write_text('{"files": []}'), "unreadable manifest (no file list)"),
        (lambda: manifest.write_text('{"files": {"w.bin": {"bytes": 7}}}'), "w.bin has no sha256 in its manifest"),
        (lambda: (folder / "w.bin").rename(folder / "v.bin"), "w.bin missing"),
    ]
    for damage, reason in cases:
        cache.write_manifest(folder)
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert cache.verified_files(folder) is None
        assert caplog.messages[0].startswith(f"cache entry {folder} is damaged: {reason}"), caplog.messages
        assert caplog.messages[0].endswith("; discarding it, it will be computed again")
        if (folder / "v.bin").exists():
            (folder / "v.bin").rename(folder / "w.bin")


def test_hashes_that_cannot_be_remembered_are_logged_and_the_entry_still_verifies(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"weights")
    cache.write_manifest(folder)

    def refuse(path, data):
        raise PermissionError(13, "read-only")

    monkeypatch.setattr(cache, "atomic_write_bytes", refuse)
    now = time.time_ns
    monkeypatch.setattr(cache.time, "time_ns", lambda: now() + 10**10)  # 10 s on: past RACY_SECONDS
    with caplog.at_level(logging.INFO):
        assert cache.verified_files(folder) == {"w.bin": hashlib.sha256(b"weights").hexdigest()}
    assert caplog.messages == [
        f"cache entry {folder}: hashes not remembered ([Errno 13] read-only); they are computed again next time"
    ]


def test_a_damaged_folder_that_cannot_be_removed_is_still_out_of_the_way(tmp_path, monkeypatch):
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"weights")

    def refuse(*args, **kw):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(os, "unlink", refuse)  # what rmtree removes files with
        cache.discard(folder)  # never fails a run: the entry is renamed aside, then removed as far as can be
    assert not folder.exists()
    (aside,) = (tmp_path / "models").iterdir()
    assert aside.name == f".m.discarded-{os.getpid()}" and (aside / "w.bin").read_bytes() == b"weights"
