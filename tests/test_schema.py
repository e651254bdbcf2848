"""metrics.json's typed schema (harness/store/schema.py): the committed JSON Schema is the
export, a file written before schema versions reads as version 1, another version or a
file that does not validate fails with one line naming the versions, and a record
survives the round trip through the models unchanged."""

import json
from pathlib import Path

import pytest

from harness.store.schema import SCHEMA_VERSION, Aggregate, MetricsError, json_schema_text, load_metrics

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "data" / "metrics_v1_demo.json"  # make demo's metrics.json (8e0efa6), lists cut short
MINIMAL = ROOT / "tests" / "data" / "metrics_v1_minimal.json"


def _write(tmp_path: Path, m: dict) -> Path:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(m))
    return path


def test_the_committed_json_schema_is_the_export():
    committed = (ROOT / "results" / "metrics.schema.json").read_text(encoding="utf-8")
    assert committed == json_schema_text(), "run: python -m harness.store.schema > results/metrics.schema.json"
    schema = json.loads(committed)
    assert schema["required"][:4] == ["experiment", "status", "config_hash", "seed"]
    assert schema["properties"]["schema_version"]["default"] == SCHEMA_VERSION == 1
    assert schema["additionalProperties"] is False


def test_a_file_from_before_schema_versions_reads_as_version_1_with_its_values_typed():
    m = load_metrics(DEMO)
    assert m.schema_version == 1 and "schema_version" not in m.raw()
    rag = m.pipelines["rag"]["mc_accuracy"]
    assert isinstance(rag, Aggregate) and rag.n == 76 and rag.ci_method == "wilson"
    assert rag.mean == pytest.approx(59 / 76) and rag.ci95 == pytest.approx([0.67065, 0.85539], abs=1e-5)
    assert m.comparisons[0].only_b == 9 and m.comparisons[2].only_b is None  # McNemar counts on 0/1 metrics only
    assert m.metric_definitions["hallucination_unanswerable"].direction == "lower"
    assert m.costs.index.dim == 384 and m.costs.pipelines["rag"].batches == {"reused": 6, "computed": 0}
    assert m.benchmarks.change_from_base["hellaswag"]["finetuned"]["acc"].n == 50
    assert m.provenance.git.commit == "8e0efa696803f5bda232a7e9ab5bc60e92daa375"


@pytest.mark.parametrize("source", [DEMO, MINIMAL], ids=["demo", "minimal"])
def test_a_record_survives_the_round_trip_byte_for_byte(source):
    """raw() is what the report renders: the file's own keys and values, no default added,
    no int turned into a float (json.dumps tells 0 from 0.0)."""
    original = json.loads(source.read_text(encoding="utf-8"))
    again = load_metrics(source).raw()
    assert json.dumps(again, sort_keys=True) == json.dumps(original, sort_keys=True)


def test_another_version_fails_in_one_line_naming_both(tmp_path):
    m = json.loads(MINIMAL.read_text()) | {"schema_version": 2}
    with pytest.raises(MetricsError) as err:
        load_metrics(_write(tmp_path, m))
    assert str(err.value) == (
        f"{tmp_path / 'metrics.json'}: schema version 2; this harness reads version 1 "
        "(regenerate with the harness version that wrote it, or run again)"
    )
    assert load_metrics(_write(tmp_path, m | {"schema_version": 1})).schema_version == 1


def test_an_unversioned_file_that_does_not_validate_names_the_version_it_was_read_as(tmp_path):
    m = json.loads(MINIMAL.read_text())
    m["data"]["documents"] = "many"
    m["protocol"]["top_k"] = "three"
    with pytest.raises(MetricsError) as err:
        load_metrics(_write(tmp_path, m))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"{tmp_path / 'metrics.json'}: no schema_version (written before versions; read as "
        "version 1), does not validate as version 1: data.documents: Input should be a valid "
        "integer"
    )
    assert message.endswith("(and 1 more)")


def test_a_key_the_schema_does_not_name_is_rejected(tmp_path):
    """A run that writes something new fails until the schema (and its version) says so."""
    m = json.loads(MINIMAL.read_text()) | {"surprise": 1}
    with pytest.raises(MetricsError, match=r"surprise: Extra inputs are not permitted"):
        load_metrics(_write(tmp_path, m))
    m = json.loads(DEMO.read_text())
    m["pipelines"]["rag"]["contains"]["median"] = 0.5
    with pytest.raises(MetricsError, match=r"pipelines\.rag\.contains\.median: Extra inputs"):
        load_metrics(_write(tmp_path, m))


def test_a_missing_top_level_field_is_named_before_anything_else(tmp_path):
    with pytest.raises(MetricsError, match=r"metrics\.json: incomplete, no status, config_hash, seed \(not a "):
        load_metrics(_write(tmp_path, {"experiment": "x", "schema_version": 9}))
    with pytest.raises(MetricsError, match=r"incomplete, no \(an object\)"):
        load_metrics(_write(tmp_path, [1, 2]))
    (tmp_path / "metrics.json").write_text('{"experiment": "x", "st')
    with pytest.raises(MetricsError, match=r"not readable as JSON, truncated or damaged"):
        load_metrics(tmp_path / "metrics.json")


def test_shapes_written_by_earlier_harness_versions_still_load(tmp_path):
    """Before declared verdict families a comparison carried a BH-adjusted `p_adj` and no
    `adjusted`; before permutation tests and chunk statistics the protocol and the index
    lacked those fields. The report has always read such files."""
    m = json.loads(DEMO.read_text())
    for c in m["comparisons"]:
        del c["adjusted"]
        c["p_adj"] = c["p"]
    del m["protocol"]["permutation_samples"], m["costs"]["index"]["chunk_tokens"]
    for key in ("chance", "splits", "recovery", "by_knowledge", "seed_spread", "adapter_group"):
        del m[key]
    loaded = load_metrics(_write(tmp_path, m))
    assert loaded.comparisons[0].adjusted is None and loaded.comparisons[0].p_adj == m["comparisons"][0]["p"]
    assert loaded.splits is None and loaded.chance == {} and loaded.protocol.permutation_samples is None
    assert json.dumps(loaded.raw(), sort_keys=True) == json.dumps(m, sort_keys=True)


def test_the_json_writers_write_null_for_nan_and_infinity(tmp_path):
    import numpy as np

    from harness.store.results import atomic_write_json, atomic_write_jsonl

    def no_constant(name):
        raise AssertionError(f"{name} written")

    nan, inf = float("nan"), float("inf")
    data = {"a": nan, "b": [np.float64(inf), 1.5, (2, -inf)], "c": {"d": np.nan}, "e": None, "f": "NaN"}
    want = {"a": None, "b": [None, 1.5, [2, None]], "c": {"d": None}, "e": None, "f": "NaN"}
    atomic_write_json(tmp_path / "x.json", data)
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=no_constant) == want
    atomic_write_jsonl(tmp_path / "x.jsonl", [data, {"g": nan}])
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert [json.loads(line, parse_constant=no_constant) for line in lines] == [want, {"g": None}]
