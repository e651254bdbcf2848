"""Grids: expansion, never redoing a finished cell, sharing adapters, plan; GPUs per lane
(Ray, processes), a job array's lanes and shards (plan --json, run --lane, report GRID_DIR,
submitit), and each folder's run.log."""

import json

import pytest

from conftest import tiny_config
from harness.config import ConfigError, expand_grid, parse_config
from harness.run import executors, grid, runner


def _cfg(grid, **kw):
    return parse_config({"name": "g", "grid": grid, **kw})


def test_cross_zip_include_exclude():
    cells = expand_grid(
        _cfg(
            {
                "axes": {"train.rank": [4, 8], "retrieval.top_k": [1, 3]},
                "exclude": [{"train.rank": 8, "retrieval.top_k": 1}],
                "include": [{"train.rank": 2}],
            }
        )
    )
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
    raw = tiny_config(
        tiny_model_dir,
        name="grid",
        eval={"pipelines": ["base", "finetuned", "rag"], "max_new_tokens": 2, "bootstrap_samples": 200},
    )
    raw["grid"] = {"axes": {"retrieval.top_k": [1, 2]}}
    root = executors.run_grid(parse_config(raw), results_root=tmp_path)
    assert computed == ["top_k=1", "top_k=2"]
    second = json.loads((root / "top_k=2" / "metrics.json").read_text())
    assert second["costs"]["training"]["from_cache"] is True  # top_k does not touch the adapter
    assert "## fact recall" in (root / "grid.md").read_text() and "best for `rag`" in (root / "grid.md").read_text()
    figure = root / "figures" / "effect-top_k-mc_accuracy.png"
    assert (
        figure.read_bytes()[:4] == b"\x89PNG"
        and "](figures/effect-top_k-mc_accuracy.png)" in (root / "grid.md").read_text()
    )

    for cell, other in (("top_k=1", "top_k=2"), ("top_k=2", "top_k=1")):  # each cell's own log, listed
        log = (root / cell / "run.log").read_text()
        assert f"into {root / cell}" in log and f"into {root / other}" not in log and " INFO harness." in log
        assert json.loads((root / cell / "metrics.json").read_text())["provenance"]["log"] == "run.log"
        assert "run.log" in json.loads((root / cell / ".harness-results.json").read_text())["files"]

    computed.clear()
    executors.run_grid(parse_config(raw), results_root=tmp_path)
    assert computed == []
    grid_log = (root / "run.log").read_text()  # the grid's own log, appended to by each run of it
    assert grid_log.count("2 of 2 cells to run") == 1 and grid_log.count("0 of 2 cells to run") == 1

    raw["grid"] = {"axes": {"retrieval.top_k": [1, 2, 3]}}
    plan = {r["cell"]: r for r in grid.plan_grid(parse_config(raw), results_root=tmp_path)}
    assert [plan[c]["status"] for c in ("top_k=1", "top_k=2", "top_k=3")] == ["done", "done", "to run"]
    assert plan["top_k=3"]["adapter"] == "cached" and plan["top_k=3"]["estimate_seconds"] > 0
    executors.run_grid(parse_config(raw), results_root=tmp_path)
    assert computed == ["top_k=3"]
    assert json.loads((root / "top_k=3" / "metrics.json").read_text())["costs"]["training"]["from_cache"] is True


def _cells(root):
    """Each cell's conclusions, without timings or cache bookkeeping."""
    out = {}
    for folder in sorted(p for p in root.iterdir() if (p / "metrics.json").is_file()):
        m = json.loads((folder / "metrics.json").read_text())
        out[folder.name] = {k: m[k] for k in ("pipelines", "comparisons", "verdicts", "config_hash")}
    return out


def _two_lane_grid(tiny_model_dir):
    raw = tiny_config(
        tiny_model_dir,
        name="lanes",
        eval={"pipelines": ["base", "finetuned", "rag"], "max_new_tokens": 3, "bootstrap_samples": 200},
    )
    raw["grid"] = {"axes": {"train.rank": [2, 4], "retrieval.top_k": [1, 2]}}
    return raw


def test_lanes_group_cells_by_adapter(tiny_model_dir, tmp_path):
    cfg = parse_config(_two_lane_grid(tiny_model_dir))
    lanes = grid.grid_lanes(expand_grid(cfg), tmp_path)
    assert [[cell for cell, _ in lane] for lane in lanes] == [
        ["rank=2,top_k=1", "rank=2,top_k=2"],
        ["rank=4,top_k=1", "rank=4,top_k=2"],
    ]


LANE_CELLS = (("rank=2,top_k=1", "rank=2,top_k=2"), ("rank=4,top_k=1", "rank=4,top_k=2"))


def _devices(root) -> list[set]:
    """The CUDA_VISIBLE_DEVICES each lane's cells saw (their provenance)."""
    return [
        {json.loads((root / c / "metrics.json").read_text())["provenance"]["cuda_visible_devices"] for c in lane}
        for lane in LANE_CELLS
    ]


def test_parallel_processes_give_the_sequential_metrics_each_worker_on_its_own_gpu(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Two workers on a machine that shows two GPUs (the count faked here): each pinned
    to its own through CUDA_VISIBLE_DEVICES; the model is on the CPU, so the metrics are
    the sequential run's."""
    raw = _two_lane_grid(tiny_model_dir)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache-seq"))
    seq = executors.run_grid(parse_config(raw), results_root=tmp_path / "seq")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache-par"))
    monkeypatch.setattr(executors, "visible_gpus", lambda: ["0", "1"])
    par = executors.run_grid(
        parse_config(raw), results_root=tmp_path / "par", executor="processes", workers=2, gpus_per_cell=1
    )
    assert len(_cells(seq)) == 4 and _cells(par) == _cells(seq)
    trained = [
        json.loads((par / c / "metrics.json").read_text())["costs"]["training"]["from_cache"]
        for lane in LANE_CELLS
        for c in lane
    ]
    assert trained == [False, True, False, True]  # each lane trained its adapter once
    assert sorted(_devices(par), key=str) == [{"0"}, {"1"}]  # one GPU a lane, each its own
    assert _devices(seq) == [{None}, {None}]
    for lane, other in (LANE_CELLS, LANE_CELLS[::-1]):  # a worker's log lines only in its own cells' logs
        log = (par / lane[0] / "run.log").read_text()
        assert f"into {par / lane[0]}" in log and f"into {par / other[0]}" not in log


def test_gpus_per_cell_by_default_and_as_given(tiny_model_dir, monkeypatch):
    """The default asks for a GPU whenever the model is on CUDA, or on device auto where
    GPUs exist (Ray's cluster, this machine); never for a CPU or endpoint model."""
    raw = tiny_config(tiny_model_dir)
    for device, available, want in (("auto", 2, 1), ("auto", 0, 0), ("cuda", 0, 1), ("cpu", 8, 0)):
        raw["model"]["device"] = device
        assert grid.cell_gpus(parse_config(raw), requested=None, available=available) == want, device
    assert grid.cell_gpus(parse_config(raw), requested=0.5, available=0) == 0.5
    gpus = ["0", "1", "2", "3"]
    assert executors.gpu_slots(gpus, 2) == ["0,1", "2,3"] and executors.gpu_slots(gpus, 3) == ["0,1,2"]
    assert executors.gpu_slots(gpus[:2], 0.5) == ["0", "1", "0", "1"] and executors.gpu_slots(gpus, 0) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert executors.visible_gpus() == ["2", "5"]
    for bad in (1.5, -1, float("nan")):
        with pytest.raises(executors.ExecutorError, match="--gpus-per-cell: .* is not 0, a fraction"):
            executors.check_gpus_per_cell(bad)


def test_lanes_and_shards_are_numbered_over_every_cell(tiny_model_dir, tmp_path):
    cells = expand_grid(parse_config(_two_lane_grid(tiny_model_dir)))
    assert [[c.id for c in g] for g in grid.lane_groups(cells)] == [list(lane) for lane in LANE_CELLS]
    assert [[c for c, _ in lane] for lane in grid.grid_lanes(cells, tmp_path, select=[1])] == [list(LANE_CELLS[1])]
    assert executors.select_lanes(5, shard="1/2") == [1, 3] and executors.select_lanes(5, lane=4) == [4]
    assert executors.select_lanes(5) is None and executors.select_lanes(1, shard="1/3") == []
    assert executors.parse_submitit(["slurm_partition=gpu", "timeout_min=240"]) == {
        "slurm_partition": "gpu",
        "timeout_min": 240,
    }
    with pytest.raises(executors.ExecutorError, match="--submitit 'gpu': give KEY=VALUE"):
        executors.parse_submitit(["gpu"])
    for kw, message in (
        ({"lane": 2}, "--lane 2: the grid has 2 lanes"),
        ({"shard": "2/2"}, "--shard '2/2': give I/N"),
        ({"shard": "a"}, "--shard 'a': give I/N"),
        ({"lane": 0, "shard": "0/2"}, "give one of them"),
    ):
        with pytest.raises(executors.ExecutorError, match=message):
            executors.select_lanes(2, **kw)


def test_an_unknown_executor_is_named(tiny_model_dir, tmp_path):
    from harness.run.executors import ExecutorError

    with pytest.raises(ExecutorError, match="'slurm' is not one of sequential, processes, ray"):
        executors.run_grid(parse_config(_two_lane_grid(tiny_model_dir)), results_root=tmp_path, executor="slurm")


def _without_training_times(grid_md: str) -> str:
    """grid.md less its training-cost table, whose seconds and memory differ run to run."""
    out, skipping = [], False
    for line in grid_md.splitlines():
        if line.startswith("## "):
            skipping = line.startswith("## Training cost")
        if not skipping:
            out.append(line)
    return "\n".join(out)


def test_a_grid_run_lane_by_lane_in_separate_processes_gives_the_single_runs_grid_md(
    tiny_model_dir, tmp_path, monkeypatch
):
    """A job array's jobs: `plan --json` lists the lanes, `run --lane 1` then `--lane 0`
    in separate processes, `report GRID_DIR` names the missing cells until both are done;
    the grid.md is the single run's, and so is the one submitit's local executor gives."""
    import os
    import subprocess
    import sys

    import yaml

    raw = _two_lane_grid(tiny_model_dir)
    raw["grid"] = {"axes": {"train.rank": [2, 4]}}  # two lanes of one cell each
    lanes = [["rank=2"], ["rank=4"]]
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache-whole"))
    whole = executors.run_grid(parse_config(raw), results_root=tmp_path / "whole")
    config, jobs = tmp_path / "lanes.yaml", tmp_path / "jobs"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache-jobs"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}

    def harness(*argv):
        command = [sys.executable, "-m", "harness.cli", *argv]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    first = harness("run", str(config), "--results-dir", str(jobs), "--lane", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "1 cell(s) of the grid not finished yet; when they are: harness report" in first.stdout
    assert not (jobs / "lanes" / "grid.md").exists() and "(lanes 1)" in (jobs / "lanes" / "run.log").read_text()
    plan = json.loads(harness("plan", str(config), "--results-dir", str(jobs), "--json").stdout)
    assert [lane["cells"] for lane in plan["lanes"]] == lanes
    assert [lane["to_run"] for lane in plan["lanes"]] == [lanes[0], []]
    assert plan["lanes"][0]["estimate_seconds"] > 0 and [lane["gpus_per_cell"] for lane in plan["lanes"]] == [0, 0]
    assert plan["lanes"][0]["adapter_group"] != plan["lanes"][1]["adapter_group"]
    early = harness("report", str(jobs / "lanes"))
    errors = [line for line in early.stderr.splitlines() if line.startswith("harness: error")]
    assert early.returncode == 2 and len(errors) == 1 and "Traceback" not in early.stderr
    assert "1 of 2 cells not finished (rank=2)" in errors[0]
    second = harness("run", str(config), "--results-dir", str(jobs), "--lane", "0")
    assert second.returncode == 0 and f"grid report: {jobs / 'lanes' / 'grid.md'}" in second.stdout
    assert _cells(jobs / "lanes") == _cells(whole)
    expected = _without_training_times((whole / "grid.md").read_text())
    assert _without_training_times((jobs / "lanes" / "grid.md").read_text()) == expected
    (jobs / "lanes" / "grid.md").unlink()
    again = harness("report", str(jobs / "lanes"))
    assert again.returncode == 0 and _without_training_times((jobs / "lanes" / "grid.md").read_text()) == expected

    pytest.importorskip("submitit")  # the same grid as a job array through submitit's local executor
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache-submitit"))
    array = executors.run_grid(
        parse_config(raw),
        results_root=tmp_path / "submitit",
        executor="submitit",
        submitit_params={"cluster": "local", "timeout_min": 20},
    )
    assert _cells(array) == _cells(whole) and _without_training_times((array / "grid.md").read_text()) == expected
    assert "lanes as a local job array" in (array / "run.log").read_text()


def test_a_lane_out_of_range_is_refused_before_any_work(tiny_model_dir, tmp_path, capsys):
    import yaml

    from harness.cli import main

    config = tmp_path / "lanes.yaml"
    config.write_text(yaml.safe_dump(_two_lane_grid(tiny_model_dir), sort_keys=False))
    assert main(["run", str(config), "--results-dir", str(tmp_path / "r"), "--lane", "2"]) == 2
    assert "harness: error: --lane 2: the grid has 2 lanes (0 to 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _loopback_only() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _loopback_only(), reason="needs `unshare -n` to keep Ray off every network but loopback")
def test_a_local_ray_instance_gives_the_sequential_metrics_each_lane_on_its_own_gpu(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Ray on a node that declares two GPUs (RAY_OVERRIDE_RESOURCES; none exist here): the
    default config (device auto) asks one GPU a cell, so Ray gives each lane its own
    CUDA_VISIBLE_DEVICES; the model finds no CUDA and runs on the CPU, so the metrics are
    the sequential run's. Ray starts only inside a loopback-only network namespace: on
    start it probes a cloud metadata address and DNS, and no traffic may leave loopback
    here."""
    import os
    import shlex
    import shutil
    import subprocess
    import sys
    import tempfile

    import yaml

    pytest.importorskip("ray")
    raw = _two_lane_grid(tiny_model_dir)
    raw["model"]["device"] = "auto"
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache-seq"))
    seq = executors.run_grid(parse_config(raw), results_root=tmp_path / "seq")
    config = tmp_path / "lanes.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    command = " ".join(
        shlex.quote(a)
        for a in [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(config),
            "--results-dir",
            str(tmp_path / "ray"),
            "--executor",
            "ray",
        ]
    )
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    env = {
        **os.environ,
        "HARNESS_CACHE": str(tmp_path / "cache-ray"),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": ray_tmp,
        "RAY_OVERRIDE_RESOURCES": json.dumps({"GPU": 2}),
    }
    try:
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", f"ip link set lo up && {command}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 lanes as Ray tasks (1 CPUs, 1.0 GPUs each; 2 GPUs in the cluster)" in done.stderr
    assert len(_cells(tmp_path / "ray" / "lanes")) == 4 and _cells(tmp_path / "ray" / "lanes") == _cells(seq)
    assert sorted(_devices(tmp_path / "ray" / "lanes"), key=str) == [{"0"}, {"1"}]  # each lane its own GPU


@pytest.mark.parametrize(
    "experiment, texts_per_cell",
    [("ovadia.yaml", None), ("ovadia_fictional_knowledge.yaml", (1, 2)), ("ovadia_tofu.yaml", (1, 1))],
)
def test_the_paraphrase_sweep_runs_on_each_data_source(tiny_model_dir, tmp_path, experiment, texts_per_cell):
    """experiments/ovadia*.yaml as shipped (data, grid axis), on the tiny model and a
    small slice of the data: training text grows with the paraphrase count where the
    source has restatements, and the grid report draws accuracy against it."""
    from pathlib import Path

    import yaml

    from conftest import SHARED_DATA

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments" / experiment).read_text())
    if "external" in raw["data"]:
        if not SHARED_DATA.is_dir():
            pytest.skip("../shared/data not present")
        raw["data"]["external"].update(
            path=str(SHARED_DATA / Path(raw["data"]["external"]["path"]).name), max_entities=1
        )
    else:
        raw["data"]["world"].update(n_people=2, n_organisations=1, n_places=1)
    small = tiny_config(tiny_model_dir)
    raw.update(model=small["model"], embedder=small["embedder"])
    raw["train"].update(epochs=1, rank=2, max_length=96)
    raw["eval"].update(max_new_tokens=2, bootstrap_samples=200)
    raw["grid"] = {"axes": {"data.paraphrases": [0, 1]}}
    root = executors.run_grid(parse_config(raw), results_root=tmp_path)
    cells = {c: json.loads((root / c / "metrics.json").read_text()) for c in ("paraphrases=0", "paraphrases=1")}
    n0, n1 = (cells[c]["data"]["train_texts"] for c in ("paraphrases=0", "paraphrases=1"))
    n_docs = cells["paraphrases=0"]["data"]["documents"]
    if texts_per_cell is None:  # the world: one restatement per fact
        assert n0 == n_docs and n1 == n_docs + cells["paraphrases=0"]["data"]["answerable"]
    else:
        assert (n0 // n_docs, n1 // n_docs) == texts_per_cell
    same_adapter = cells["paraphrases=1"]["costs"]["training"]["from_cache"]
    assert same_adapter == (n0 == n1)  # TOFU: identical training text, one adapter
    assert (root / "figures" / "effect-paraphrases-contains.png").is_file()


def test_report_of_a_grid_folder_names_the_cells_not_finished(tmp_path, capsys):
    """A cell counts as finished only with a complete run of the config hash grid.json
    records: a missing folder, a run still going or one of another config does not."""
    from harness.cli import main
    from harness.report import run as report

    root = tmp_path / "g"
    cells = [{"id": f"c{i}", "values": {}, "hash": f"h{i}"} for i in range(4)]
    root.mkdir()
    (root / "grid.json").write_text(json.dumps({"experiment": "g", "config_hash": "x", "cells": cells}))
    for cid, status, config in (("c0", "complete", "h0"), ("c1", "running", "h1"), ("c2", "complete", "old")):
        (root / cid).mkdir()
        (root / cid / "metrics.json").write_text(json.dumps({"status": status, "config_hash": config}))
    assert report.missing_cells(root) == ["c1", "c2", "c3"]
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"harness: error: {root}: 3 of 4 cells not finished (c1, c2, c3); run them" in err[0]
    assert not (root / "grid.md").exists()
    (root / "grid.json").write_text("{")
    assert main(["report", str(root)]) == 2
    assert f"{root / 'grid.json'}: not a grid's record" in capsys.readouterr().err
