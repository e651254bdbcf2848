"""The cloze generator against Fictional Knowledge's shipped probes on the same passages
(SmolLM2 and MiniLM; marked slow: tens of minutes on a CPU)."""

import importlib.util
from pathlib import Path

import pytest

from conftest import SHARED_DATA

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (SHARED_DATA / "fictional_knowledge").is_dir(), reason="needs ../shared/data")
def test_probe_style_cloze_set_lands_within_5_points_of_the_probes(tmp_path):
    """Asked as the probes ask (--cloze-style complete), the cloze set measures what the
    probes measure; the blank style is only reported (it is easier with retrieval)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fk_cloze.py"
    spec = importlib.util.spec_from_file_location("bench_fk_cloze", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = bench.compare(out=tmp_path / "fk", results=tmp_path / "results")
    n = table.pop("_n")
    assert n["cloze"] <= n["probes"] and 0 < n["cloze_complete"] <= n["probes"]
    for pipeline, row in table.items():
        assert abs(row["cloze_complete"] - row["probes"]) <= 0.05, (pipeline, row)
