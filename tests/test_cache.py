"""Cached artifacts are verified when read: each one truncated is logged, discarded and
computed again, never used and never fatal (harness/cache.py)."""

import json
import logging

import numpy as np
import pytest

from conftest import tiny_config
from harness import cache
from harness.config import parse_config
from harness.data import Document
from harness.memo import Memo
from harness.retrieve import HashingEmbedder, build_retriever


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
    assert "damaged" in caplog.text and not path.exists() and not (tmp_path / "scores" / "x.json.manifest.json").exists()


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


def test_large_files_are_checked_by_size(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "HASH_LIMIT", 10)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"x" * 100)
    cache.write_manifest(folder)
    assert json.loads((folder / cache.MANIFEST).read_text())["files"]["w.bin"] == {"bytes": 100}
    (folder / "w.bin").write_bytes(b"x" * 99)
    assert not cache.verify_dir(folder)


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
    np.testing.assert_array_equal(again.index.reconstruct_n(0, again.index.ntotal),
                                  first.index.reconstruct_n(0, first.index.ntotal))


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
    from harness.adapters import obtain_adapter
    from harness.runner import load_dataset

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    cfg = parse_config(tiny_config(tiny_lm.source, train={"objective": "sft", "rank": 4, "alpha": 8, "max_steps": 2,
                                                          "batch_size": 8, "max_length": 96}))
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
    raw = tiny_config(tiny_model_dir, name="g", eval={"pipelines": ["base"], "max_new_tokens": 4,
                                                      "bootstrap_samples": 100},
                      data={"world": {"seed": 0, "n_people": 2, "n_organisations": 1, "n_places": 1,
                                      "paraphrases": 0, "n_unanswerable": 2}, "max_questions": 4},
                      grid={"axes": {"eval.max_new_tokens": [4, 5]}})
    return parse_config(raw)


def test_a_damaged_cell_metrics_is_recomputed_and_the_grid_finishes(small_grid, tmp_path, caplog):
    from harness.executors import run_grid

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

    from harness.adapters import adapter_group, adapter_key
    from harness.memo import content_key as memo_key
    from harness.train import Example

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
