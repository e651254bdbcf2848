"""The command line (harness/cli.py): `validate`, `run` and `report` exit with a one-line
message and a meaningful code on bad input, and the report module never imports torch."""

import subprocess
import sys
from pathlib import Path

import pytest
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
    cfg.write_text(
        yaml.safe_dump(
            {"name": "x", "model": {"name": str(tmp_path / "missing")}, "output_dir": str(tmp_path / "results")}
        )
    )
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: model.name:") and "\n" not in err
    assert not (tmp_path / "results" / "x").exists()


def test_report_on_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_report_module_never_imports_torch():
    code = "import sys, harness.report.run, harness.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _tiny_adapter(folder: Path) -> Path:
    """A PEFT LoRA of one layer's q_proj, shaped for the embedded SmolLM2 GGUF."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from harness.models.gguf_lora import read_base
    from harness.models.local import embedded_gguf

    base = read_base(embedded_gguf("smollm2"))
    hidden, out = base.shapes["blk.0.attn_q.weight"][:2]
    rng = np.random.default_rng(0)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    folder.mkdir(parents=True)
    save_file(
        {
            f"{prefix}.lora_A.weight": rng.standard_normal((2, hidden)).astype(np.float32),
            f"{prefix}.lora_B.weight": rng.standard_normal((out, 2)).astype(np.float32),
        },
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]})
    )
    return folder


def test_export_lora_replaces_its_own_file_but_not_someone_elses(tmp_path, capsys):
    from harness.models.local import embedded_gguf

    adapter, out = _tiny_adapter(tmp_path / "ad"), tmp_path / "ad.gguf"
    argv = ["export-lora", str(adapter), "--base", str(embedded_gguf("smollm2")), "--out", str(out)]
    out.write_bytes(b"GGUF my own adapter, converted by hand")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "ad.gguf exists and was not written by harness export-lora" in err and "\n" not in err
    assert out.read_bytes() == b"GGUF my own adapter, converted by hand"
    assert main([*argv, "--force"]) == 0
    capsys.readouterr()
    assert [b.read_bytes() for b in tmp_path.glob("ad.gguf.backup-*")] == [b"GGUF my own adapter, converted by hand"]
    exported = out.read_bytes()
    assert exported.startswith(b"GGUF") and len(exported) > 1000
    assert main(argv) == 0  # its own export: replaced without --force, no new backup
    capsys.readouterr()
    assert out.read_bytes() == exported and len(list(tmp_path.glob("ad.gguf.backup-*"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ad.gguf.backup-")) == ["ad", "ad.gguf"]


def test_run_with_set_overrides_records_them_in_the_results(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """`harness run cfg.yaml --set train.epochs=1 --set retrieval.top_k=2`: the results'
    config.yaml holds both values (not the file's), and provenance the command line."""
    from conftest import tiny_config
    from harness.store.schema import load_metrics

    raw = tiny_config(tiny_model_dir, name="over", output_dir=str(tmp_path / "results"))
    raw["train"]["epochs"], raw["retrieval"]["top_k"] = 2, 3
    raw["eval"].update(pipelines=["base", "finetuned"], known_samples=0)
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(raw))
    argv = ["run", str(tmp_path / "over.yaml"), "--set", "train.epochs=1", "--set", "retrieval.top_k=2"]
    monkeypatch.setattr(sys, "argv", ["harness", *argv])
    assert main(argv) == 0
    out = tmp_path / "results" / "over"
    snapshot = yaml.safe_load((out / "config.yaml").read_text())
    assert (snapshot["train"]["epochs"], snapshot["retrieval"]["top_k"]) == (1, 2)
    m = load_metrics(out / "metrics.json")
    assert m.protocol.top_k == 2
    assert m.provenance.argv[-4:] == ["--set", "train.epochs=1", "--set", "retrieval.top_k=2"]
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out


def test_validate_with_a_bad_override_names_it_in_one_line(capsys):
    demo = str(ROOT / "experiments" / "demo.yaml")
    assert main(["validate", demo, "--set", "retrieval.top_k=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"harness: error: {demo} (--set retrieval.top_k=0): retrieval.top_k: Input should be greater than or equal to 1"
    )
    assert main(["validate", demo, "--set", "retrieval.top_k=1"]) == 0
    assert "ok" in capsys.readouterr().out


def _every_parser():
    """The top-level parser and each subcommand's, with their names."""
    import argparse

    from harness.cli import build_parser

    top = build_parser()
    yield "harness", top
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    yield from sub.choices.items()


def test_every_argument_of_every_command_has_help():
    import argparse

    missing = [
        f"{name} {a.dest}"
        for name, parser in _every_parser()
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and (not a.help or a.help == argparse.SUPPRESS)
    ]
    assert missing == []
    assert len(dict(_every_parser())) == 12  # harness and its eleven commands


def test_fixed_values_are_choices_kept_equal_to_their_registries(capsys):
    from harness import cli
    from harness.questions.build import GENERATORS
    from harness.run.executors import EXECUTORS

    assert cli.EXECUTOR_NAMES == tuple(EXECUTORS) and cli.GENERATOR_NAMES == tuple(GENERATORS)
    parsers = dict(_every_parser())
    choices = {a.dest: a.choices for name in ("run", "questions") for a in parsers[name]._actions if a.choices}
    assert choices == {
        "executor": cli.EXECUTOR_NAMES,
        "generator": cli.GENERATOR_NAMES,
        "cloze_style": ["blank", "complete"],
    }
    with pytest.raises(SystemExit) as info:
        main(["run", str(ROOT / "experiments" / "demo.yaml"), "--executor", "slurm"])
    assert info.value.code == 2 and "invalid choice: 'slurm'" in capsys.readouterr().err


def test_version_and_the_epilog_name_the_exit_codes_every_environment_variable_and_examples(capsys):
    import re

    from harness import __version__
    from harness.cli import EPILOG
    from harness.evaluate.benchmarks import DATA_ENV
    from harness.run.executors import FORWARDED_ENV
    from harness.store.cache import CACHE_ENV

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"harness {__version__}\n"
    read = set()  # every variable harness reads by a literal name
    for path in (ROOT / "harness").rglob("*.py"):
        read |= set(re.findall(r"os\.environ(?:\.get\(|\[)\"([A-Z_]+)\"", path.read_text()))
    assert {"RANK", "WORLD_SIZE", "HF_HUB_OFFLINE"} <= read
    for name in read | set(FORWARDED_ENV) | {CACHE_ENV, DATA_ENV}:
        assert name in EPILOG, name
    assert "model.api_key_env" in EPILOG
    assert re.search(r"^  0  success$", EPILOG, re.M) and re.search(r"^  2  a problem with the input", EPILOG, re.M)
    examples = [line.strip() for line in EPILOG.split("examples:\n")[1].splitlines() if line.strip()]
    assert len(examples) == 2 and all(e.startswith("harness ") for e in examples)
    for example in examples:  # each parses as written
        from harness.cli import build_parser

        assert build_parser().parse_args(example.split()[1:]).func


@pytest.mark.parametrize(
    "flags, level", [([], "INFO"), (["-v"], "DEBUG"), (["-q"], "WARNING"), (["--log-level", "ERROR"], "ERROR")]
)
def test_quiet_verbose_and_log_level_set_the_root_logger(flags, level, capsys):
    import logging

    before = logging.getLogger().level
    try:
        assert main([*flags, "validate", str(ROOT / "experiments" / "demo.yaml")]) == 0
        assert logging.getLogger().level == getattr(logging, level)
    finally:
        logging.getLogger().setLevel(before)
    with pytest.raises(SystemExit):
        main(["-q", "-v", "validate", "x.yaml"])  # one of them
    assert "not allowed with argument" in capsys.readouterr().err
