"""The command line (harness/cli.py): `validate`, `run` and `report` exit with a one-line
message and a meaningful code on bad input, and the report module never imports torch."""

import subprocess
import sys
from pathlib import Path

import yaml

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_validate_ok_and_bad(tmp_path, capsys):
    assert main(["validate", str(ROOT / "experiments" / "demo.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "retrieval": {"top_kk": 3}}))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "retrieval.top_kk" in err and str(bad) in err


def test_run_with_a_missing_model_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "model": {"name": str(tmp_path / "missing")},
                                   "output_dir": str(tmp_path / "results")}))
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: model.name:") and "\n" not in err
    assert not (tmp_path / "results" / "x").exists()


def test_report_on_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_report_module_never_imports_torch():
    code = "import sys, harness.report, harness.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
