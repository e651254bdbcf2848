"""Real processes on one results folder and one cache: a second run on a folder another
live process holds is refused; two processes that need the same adapter leave one whole
copy of it in the cache, trained once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import tiny_config
from harness.store.cache import verify_dir

ROOT = Path(__file__).resolve().parents[1]


def _harness() -> list[str]:
    from test_bad_inputs import _harness_script

    return _harness_script()


def _env(cache: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HARNESS_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }


def test_a_second_run_on_a_locked_folder_is_refused(tiny_model_dir, tmp_path):
    results = tmp_path / "results"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_model_dir, name="busy", output_dir=str(results))))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from harness.store.results import run_lock\n"
            f"with run_lock({str(results / 'busy')!r}):\n    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(tmp_path / "cache"),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(
            _harness() + ["run", str(cfg)], capture_output=True, text=True, env=_env(tmp_path / "cache"), timeout=300
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    errors = [line for line in second.stderr.splitlines() if line.startswith("harness: error")]
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert len(errors) == 1 and f"another run is writing it (pid {holder.pid} " in errors[0]
    assert sorted(p.name for p in results.iterdir()) == []  # the holder's lock is gone; nothing else was made


def test_two_processes_needing_one_adapter_leave_one_whole_copy(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            tiny_config(
                tiny_model_dir,
                name="twins",
                output_dir=str(tmp_path / "results"),
                train={"objective": "sft", "rank": 4, "alpha": 8, "max_steps": 6, "batch_size": 8, "max_length": 96},
            )
        )
    )
    procs = [
        subprocess.Popen(
            _harness() + ["train", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(cache)
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    said = sorted(out.strip() for out, _ in outs)
    assert sum("trained by" in s for s in said) == 1 and sum("(cached" in s for s in said) == 1, said
    entries = sorted((cache / "adapters").iterdir())
    assert len(entries) == 1 and verify_dir(entries[0]), [p.name for p in entries]
    record = json.loads((entries[0] / "harness-train.json").read_text())
    assert record["steps"] == 6
