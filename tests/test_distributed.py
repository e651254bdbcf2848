"""One adapter trained by several processes (data parallel through accelerate), as on a
multi-GPU machine: here two CPU processes under torchrun, talking over loopback."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import tiny_config
from harness.config import parse_config
from harness.run.runner import run_experiment

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed beside this Python")
def test_two_processes_train_one_adapter_that_a_run_then_reuses(tiny_model_dir, tmp_path, monkeypatch):
    raw = tiny_config(
        tiny_model_dir,
        name="ddp",
        eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 2, "bootstrap_samples": 200},
    )
    raw["train"].update(epochs=3, dev_fraction=0.0)
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    cache = tmp_path / "cache"
    env = {**os.environ, "HARNESS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "harness.cli", "train", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained by 2 process(es)" in done.stdout
    (record_path,) = cache.glob("adapters/*/harness-train.json")
    record = json.loads(record_path.read_text())
    assert record["world_size"] == 2 and not list(cache.glob("adapters/*.partial"))
    losses = [p["train_loss"] for p in record["loss_curve"] if "train_loss" in p]
    assert len(losses) == record["steps"] and losses[-1] < losses[0]

    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    m = json.loads((run_experiment(parse_config(raw), results_root=tmp_path / "results") / "metrics.json").read_text())
    assert m["costs"]["training"]["from_cache"] is True and m["costs"]["training"]["world_size"] == 2
