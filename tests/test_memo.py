"""The memo of computed values (harness/store/memo.py): a hit reads back what was stored, a
miss is None, any change to a key or namespace is a miss, damaged, edited and wrong-typed
entries are logged, dropped and computed again, and `compute_in_batches` computes each
batch once."""

import hashlib
import json
import logging

import pytest

from harness.store.memo import Memo, batches, compute_in_batches, content_key


def checksum(key, value) -> str:
    """What a memo line must carry, computed here: sha256 of {key, value} as canonical JSON."""
    return hashlib.sha256(
        json.dumps({"key": key, "value": value}, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def _memo(root, **namespace):
    return Memo("generations", namespace=namespace or {"model": "m"}, root=root)


def test_a_stored_value_is_a_hit_in_a_later_process_and_counted(tmp_path):
    first = _memo(tmp_path)
    first.put("k1", {"output": "Ostrow", "scores": [0.5, -1.0]})
    first.put("k2", ["a", "b"])
    assert first.counts() == {"reused": 0, "computed": 2}
    again = _memo(tmp_path)  # reads the folder anew, as a restarted run does
    assert again.get("k1") == {"output": "Ostrow", "scores": [0.5, -1.0]} and again.get("k2") == ["a", "b"]
    assert again.counts() == {"reused": 2, "computed": 0}
    ns = json.loads((again.folder / "namespace.json").read_text())
    assert ns == {"format": 2, "model": "m"}


def test_a_miss_is_none_and_not_counted_as_reused(tmp_path):
    memo = _memo(tmp_path)
    memo.put("k1", "v")
    assert _memo(tmp_path).get("other") is None
    assert _memo(tmp_path).counts() == {"reused": 0, "computed": 0}


def test_a_changed_key_or_namespace_misses(tmp_path):
    key = content_key({"prompts": ["Where was Ana born?"], "max_new_tokens": 6})
    _memo(tmp_path, model="m", adapter="a1").put(key, "Ostrow")
    assert _memo(tmp_path, model="m", adapter="a1").get(key) == "Ostrow"
    assert _memo(tmp_path, model="m", adapter="a2").get(key) is None  # another adapter: another folder
    assert _memo(tmp_path, model="m2", adapter="a1").get(key) is None
    changed = content_key({"prompts": ["Where was Ana born?"], "max_new_tokens": 7})
    assert changed != key and _memo(tmp_path, model="m", adapter="a1").get(changed) is None
    # the key is of the content, not of how the dict was written
    assert content_key({"max_new_tokens": 6, "prompts": ["Where was Ana born?"]}) == key


def test_damaged_lines_are_skipped_and_the_rest_kept(tmp_path, caplog):
    memo = _memo(tmp_path)
    memo.put("a", 1)
    path = next(memo.folder.glob("*.jsonl"))
    with open(path, "ab") as f:
        f.write(b'{"key": "b"}\n')  # no value
        f.write(b'["key", "c"]\n')  # not an object
        f.write(b'{"key": "d", "value": "caf\xe9"}\n')  # not UTF-8
        f.write(json.dumps({"key": "e", "value": 5, "sha256": checksum("e", 5)}).encode() + b"\n")
        f.write(b'{"key": "f", "val')  # torn by a killed writer
    again = _memo(tmp_path)
    assert {k: again.get(k) for k in "abcdef"} == {"a": 1, "b": None, "c": None, "d": None, "e": 5, "f": None}
    skipped = [r.getMessage().split(".jsonl")[-1] for r in caplog.records if r.getMessage().startswith("skipped")]
    assert skipped == [
        ":2: no 'key' and 'value'; its value is computed again",
        ":3: expected a JSON object, got list",
        ":4: not UTF-8 text (byte 26: 0xe9)",
        ":6: invalid JSON (Unterminated string starting at)",
    ]
    again.put("f", 6)  # appended on a fresh line after the torn one
    assert _memo(tmp_path).get("f") == 6 and _memo(tmp_path).get("e") == 5


def _lines(memo) -> list[dict]:
    return [json.loads(line) for p in sorted(memo.folder.glob("*.jsonl")) for line in p.read_text().splitlines()]


def _rewrite(memo, edit) -> None:
    """Apply `edit(row)` to every stored line, as a person with an editor would."""
    for path in memo.folder.glob("*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(edit(r)) + "\n" for r in rows))


def test_each_line_carries_the_sha256_of_its_key_and_value(tmp_path):
    memo = _memo(tmp_path)
    memo.put("k", ["Ostrow", {"p": 0.5}])
    (row,) = _lines(memo)
    assert row == {"key": "k", "value": ["Ostrow", {"p": 0.5}], "sha256": checksum("k", ["Ostrow", {"p": 0.5}])}


def test_an_edited_answer_is_logged_dropped_and_computed_again(tmp_path, caplog):
    values = ["zero", "one"]
    compute, calls = _counting(values)
    compute_in_batches([1, 1], batch_size=2, key=lambda b: "k", compute=compute, memo=_memo(tmp_path))
    _rewrite(_memo(tmp_path), lambda r: {**r, "value": ["zero", "Paris"]})  # the answer changed, its checksum not
    compute, calls = _counting(values)
    with caplog.at_level(logging.WARNING):
        out = compute_in_batches([1, 1], batch_size=2, key=lambda b: "k", compute=compute, memo=_memo(tmp_path))
    assert out == ["zero", "one"] and calls == [[0, 1]]
    (path,) = _memo(tmp_path).folder.glob("*.jsonl")
    assert (
        f"skipped {path}:1: checksum does not match its key and value (edited or damaged); its value is computed again"
        in caplog.messages
    )
    compute, calls = _counting(values)  # the recomputed line serves later runs
    again = _memo(tmp_path)
    assert compute_in_batches([1, 1], batch_size=2, key=lambda b: "k", compute=compute, memo=again) == out
    assert calls == [] and again.counts() == {"reused": 1, "computed": 0}


def test_lines_without_a_checksum_are_not_trusted(tmp_path, caplog):
    memo = _memo(tmp_path)
    memo.put("k", "v")
    _rewrite(memo, lambda r: {"key": r["key"], "value": r["value"]})  # as format 1 wrote them
    with caplog.at_level(logging.WARNING):
        assert _memo(tmp_path).get("k") is None
    assert "no checksum; its value is computed again" in caplog.text


@pytest.mark.parametrize(
    "stored, why",
    [
        ("oops", "a str, not a list of 2 values"),
        (["only one"], "1 values for a batch of 2"),
        ({"output": "x"}, "a dict, not a list of 2 values"),
        (["zero", None], "a null among the batch's values"),
    ],
)
def test_a_wrong_typed_entry_is_logged_dropped_and_computed_again(tmp_path, caplog, stored, why):
    """A line whose checksum matches (written by harness) but whose value is not a
    batch's values: before, zip() over it failed the run, or served characters of a string."""
    _memo(tmp_path).put("k", stored)
    compute, calls = _counting(["zero", "one"])
    with caplog.at_level(logging.WARNING):
        out = compute_in_batches([1, 1], batch_size=2, key=lambda b: "k", compute=compute, memo=_memo(tmp_path))
    assert out == ["zero", "one"] and calls == [[0, 1]]
    assert f"dropped a stored value under key k: {why}; computing it again" in caplog.text
    compute, calls = _counting(["zero", "one"])
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the good line after the bad one serves, without a warning
        assert compute_in_batches([1, 1], batch_size=2, key=lambda b: "k", compute=compute, memo=_memo(tmp_path)) == out
    assert calls == [] and "dropped" not in caplog.text


def test_get_drops_what_its_reader_rejects(tmp_path):
    _memo(tmp_path).put("k", 3)
    memo = _memo(tmp_path)
    assert memo.get("k", valid=lambda v: None if isinstance(v, str) else "not a string") is None
    assert memo.get("k") is None and memo.counts() == {"reused": 0, "computed": 0}  # dropped for this process
    assert _memo(tmp_path).get("k", valid=lambda v: None if isinstance(v, int) else "not an int") == 3


def test_batches_are_of_similar_length_longest_first():
    assert batches([3, 1, 2, 5, 2], 2) == [[3, 0], [2, 4], [1]]
    assert batches([], 4) == []


def _counting(values_of):
    calls = []

    def compute(batch):
        calls.append(list(batch))
        return [values_of[i] for i in batch]

    return compute, calls


def test_compute_in_batches_returns_values_in_item_order_and_reports_progress():
    compute, calls = _counting(["zero", "one", "two", "three"])
    seen = []
    out = compute_in_batches(
        [1, 4, 2, 3], batch_size=2, key=lambda b: pytest.fail("no memo, no key"), compute=compute, progress=seen.append
    )
    assert out == ["zero", "one", "two", "three"]
    assert calls == [[1, 3], [2, 0]] and seen == [2, 2]


def test_compute_in_batches_computes_only_the_batches_the_memo_lacks(tmp_path):
    values = ["zero", "one", "two", "three"]

    def key(batch):
        return content_key({"items": [values[i] for i in batch]})

    compute, calls = _counting(values)
    memo = _memo(tmp_path)
    memo.put(key([1, 3]), ["one (stored)", "three (stored)"])  # as a killed run left it
    out = compute_in_batches([1, 4, 2, 3], batch_size=2, key=key, compute=compute, memo=_memo(tmp_path))
    assert out == ["zero", "one (stored)", "two", "three (stored)"]
    assert calls == [[2, 0]]
    compute, calls = _counting(values)
    again = compute_in_batches([1, 4, 2, 3], batch_size=2, key=key, compute=compute, memo=_memo(tmp_path))
    assert again == out and calls == []
    # a changed key (here: another batch size, so other batches) computes again
    compute, calls = _counting(values)
    assert compute_in_batches([1, 4, 2, 3], batch_size=4, key=key, compute=compute, memo=_memo(tmp_path)) == values
    assert calls == [[1, 3, 2, 0]]


def test_a_stored_null_is_dropped_once_and_logged_as_null(tmp_path, caplog):
    _memo(tmp_path).put("k", None)
    memo = _memo(tmp_path)
    with caplog.at_level(logging.INFO):
        assert memo.get("k") is None
    assert caplog.messages == [f"memo {memo.folder}: dropped a stored value under key k: null; computing it again"]
    caplog.clear()
    with caplog.at_level(logging.INFO):  # dropped for good: not read, nor logged, again
        assert memo.get("k") is None
    assert caplog.messages == [] and memo.values["k"] == []


def test_a_rejected_value_before_a_good_one_is_logged_as_info_and_the_good_one_served(tmp_path, caplog):
    _memo(tmp_path).put("k", "bad")
    _memo(tmp_path).put("k", "good")
    memo = _memo(tmp_path)
    assert memo.values["k"] == ["bad", "good"]
    with caplog.at_level(logging.INFO):
        assert memo.get("k", valid=lambda v: "rejected" if v == "bad" else None) == "good"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"memo {memo.folder}: dropped a stored value under key k: rejected")
    ]
    assert memo.values["k"] == ["good"] and memo.counts() == {"reused": 1, "computed": 0}


def test_a_line_after_a_torn_one_byte_line_starts_on_a_line_of_its_own(tmp_path):
    import os
    import platform

    memo = _memo(tmp_path)
    memo.put("a", "first")
    path = memo.folder / f"{platform.node()}-{os.getpid()}.jsonl"
    path.write_bytes(b"{")  # a writer killed after one byte
    memo.put("k", "v")
    memo.put("k2", "v2")
    data = path.read_bytes()
    assert data.startswith(b"{\n") and data.count(b"\n") == 3 and b"\n\n" not in data
    again = _memo(tmp_path)
    assert again.get("k") == "v" and again.get("k2") == "v2"


def test_the_namespace_is_written_beside_the_values_for_people_to_read(tmp_path):
    memo = _memo(tmp_path, model="m", seed=3)
    memo.put("k", "v")
    text = (memo.folder / "namespace.json").read_text()
    assert text == json.dumps({"format": 2, "model": "m", "seed": 3}, indent=1, sort_keys=True)
