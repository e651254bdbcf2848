"""Grids: expansion, never redoing a finished cell, sharing adapters, plan."""

import json

import pytest

from conftest import tiny_config
from harness import runner
from harness.config import ConfigError, expand_grid, parse_config


def _cfg(grid, **kw):
    return parse_config({"name": "g", "grid": grid, **kw})


def test_cross_zip_include_exclude():
    cells = expand_grid(_cfg({"axes": {"train.rank": [4, 8], "retrieval.top_k": [1, 3]},
                              "exclude": [{"train.rank": 8, "retrieval.top_k": 1}], "include": [{"train.rank": 2}]}))
    assert [c.id for c in cells] == ["rank=4,top_k=1", "rank=4,top_k=3", "rank=8,top_k=3", "rank=2"]
    assert [(c.config.train.rank, c.config.retrieval.top_k) for c in cells] == [(4, 1), (4, 3), (8, 3), (2, 3)]
    assert len({c.hash for c in cells}) == 4 and all(c.config.grid is None for c in cells)
    zipped = expand_grid(_cfg({"mode": "zip", "axes": {"train.rank": [4, 8], "train.alpha": [8, 16]}}))
    assert [(c.config.train.rank, c.config.train.alpha) for c in zipped] == [(4, 8.0), (8, 16.0)]


def test_grid_errors_name_the_problem():
    with pytest.raises(ConfigError, match="'train.rnak' is not a config field"):
        expand_grid(_cfg({"axes": {"train.rnak": [4]}}))
    with pytest.raises(ConfigError, match="same number of values"):
        _cfg({"mode": "zip", "axes": {"train.rank": [4, 8], "train.alpha": [8]}})
    with pytest.raises(ConfigError, match=r"grid cell .*train\.rank"):
        expand_grid(_cfg({"axes": {"train.rank": [0]}}))
    with pytest.raises(ConfigError, match="every cell is excluded"):
        expand_grid(_cfg({"axes": {"train.rank": [4]}, "exclude": [{"train.rank": 4}]}))


def test_unchanged_rerun_computes_nothing_and_an_extension_only_the_new_cell(tiny_model_dir, tmp_path, monkeypatch):
    computed = []
    real = runner.run_experiment

    def counting(cfg, **kw):
        computed.append(kw["folder"])
        return real(cfg, **kw)

    monkeypatch.setattr(runner, "run_experiment", counting)
    raw = tiny_config(tiny_model_dir, name="grid", eval={"pipelines": ["base", "finetuned", "rag"],
                                                         "max_new_tokens": 2, "bootstrap_samples": 200})
    raw["grid"] = {"axes": {"retrieval.top_k": [1, 2]}}
    root = runner.run_grid(parse_config(raw), results_root=tmp_path)
    assert computed == ["top_k=1", "top_k=2"]
    second = json.loads((root / "top_k=2" / "metrics.json").read_text())
    assert second["costs"]["training"]["from_cache"] is True  # top_k does not touch the adapter
    assert "## fact recall" in (root / "grid.md").read_text() and "best for `rag`" in (root / "grid.md").read_text()

    computed.clear()
    runner.run_grid(parse_config(raw), results_root=tmp_path)
    assert computed == []

    raw["grid"] = {"axes": {"retrieval.top_k": [1, 2, 3]}}
    plan = {r["cell"]: r for r in runner.plan_grid(parse_config(raw), results_root=tmp_path)}
    assert [plan[c]["status"] for c in ("top_k=1", "top_k=2", "top_k=3")] == ["done", "done", "to run"]
    assert plan["top_k=3"]["adapter"] == "cached" and plan["top_k=3"]["estimate_seconds"] > 0
    runner.run_grid(parse_config(raw), results_root=tmp_path)
    assert computed == ["top_k=3"]
    assert json.loads((root / "top_k=3" / "metrics.json").read_text())["costs"]["training"]["from_cache"] is True
