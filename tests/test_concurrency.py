"""Real processes on one results folder and one cache: a second run on a folder another
live process holds is refused; two processes that need the same adapter leave one whole
copy of it in the cache, trained once. And the lock's heartbeat lease: a holder that died
on another host is taken over once its lease runs out, a live one never."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from harness.store.cache import verify_dir
from harness.store.results import RunLockedError, run_lock

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


def _lock_file(final: Path, **holder) -> Path:
    lock = final.parent / f".{final.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": 4242, "started": "2026-01-01T00:00:00", "token": "theirs", **holder}))
    return lock


def test_a_lock_whose_holder_died_on_another_host_is_taken_over_after_its_lease(tmp_path):
    """A Slurm requeue or a restarted pod runs under a new hostname: the dead holder's
    pid means nothing here, its stopped heartbeat does."""
    final = tmp_path / "results" / "requeued"
    lock = _lock_file(final, host="node-that-died", heartbeat=time.time() - 300, lease_seconds=120)
    with run_lock(final, lease=60) as held:
        mine = json.loads(held.read_text())
        assert (mine["pid"], mine["host"], mine["lease_seconds"]) == (os.getpid(), platform.node(), 60)
        assert mine["token"] != "theirs"
    assert not lock.exists()


@pytest.mark.timeout(60)  # a lease rule that never expires would wait forever
def test_a_lock_alive_on_another_host_is_refused_and_waited_for_until_its_lease_runs_out(tmp_path):
    final = tmp_path / "results" / "busy"
    lock = _lock_file(final, host="node-alive", heartbeat=time.time(), lease_seconds=120)
    before = lock.read_text()
    with pytest.raises(RunLockedError, match=r"pid 4242 on node-alive, .*after its lease, 120 s"):
        with run_lock(final):
            pass
    assert lock.read_text() == before  # a live holder's lock is left alone
    _lock_file(final, host="node-alive", heartbeat=time.time(), lease_seconds=1.0)
    start = time.monotonic()
    with run_lock(final, wait=True, poll_seconds=0.05):
        waited = time.monotonic() - start
    assert 0.8 < waited < 10


def test_a_live_holders_heartbeat_keeps_its_lock_past_the_lease(tmp_path):
    """The holder's thread rewrites the heartbeat: 3 leases later its lock is still its own."""
    final = tmp_path / "results" / "long"
    with run_lock(final, lease=0.4) as held:
        first = json.loads(held.read_text())["heartbeat"]
        time.sleep(1.2)
        assert json.loads(held.read_text())["heartbeat"] > first + 0.5
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on "):
            with run_lock(final):
                pass


def test_a_lock_taken_over_is_not_removed_by_the_stalled_holder(tmp_path):
    """A holder that stalled past its lease and was taken over leaves the new holder's lock."""
    final = tmp_path / "results" / "stalled"
    with run_lock(final, lease=60) as held:
        _lock_file(final, host="node-new", heartbeat=time.time(), lease_seconds=60)
    assert json.loads(held.read_text())["token"] == "theirs"


def test_an_invalid_lease_setting_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOCK_LEASE_SECONDS", "soon")
    with pytest.raises(RunLockedError, match="HARNESS_LOCK_LEASE_SECONDS: 'soon' is not a positive number"):
        with run_lock(tmp_path / "x"):
            pass
