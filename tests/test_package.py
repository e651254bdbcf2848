"""The package a user installs: pyproject.toml declares every module harness imports,
every install command a message or README names is this distribution with an extra it
has, and a wheel built from the checkout installs into a fresh venv and runs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # the standard library from Python 3.11
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"[A-Za-z0-9_.-]+", req).group(0))


def _third_party_imports() -> dict[str, str]:
    """Top-level module -> the first harness file importing it, for modules outside the
    standard library and harness."""
    found = {}
    for path in sorted((ROOT / "harness").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in ("harness", "__future__"):
                    found.setdefault(top, path.relative_to(ROOT).as_posix())
    return found


def test_every_module_harness_imports_is_a_declared_dependency():
    declared = {_requirement_name(r) for r in PROJECT["dependencies"]}
    declared |= {_requirement_name(r) for extra in PROJECT["optional-dependencies"].values() for r in extra}
    providers = importlib.metadata.packages_distributions()
    undeclared = {
        top: where
        for top, where in _third_party_imports().items()
        if not {_norm(d) for d in providers.get(top, [top])} & declared
    }
    assert undeclared == {}
    assert {"tqdm", "safetensors"} <= declared


def test_every_install_command_names_this_distribution_and_an_extra_it_has():
    pattern = re.compile(r"pip install\s+'([A-Za-z0-9_.-]+)\[([^\]]+)\]'")
    texts = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in (ROOT / "harness").rglob("*.py")}
    texts["README.md"] = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [(where, m.group(1), m.group(2)) for where, text in texts.items() for m in pattern.finditer(text)]
    assert len(commands) >= 4  # ray and qlora, in code and in README
    extras = set(PROJECT["optional-dependencies"])
    wrong = [c for c in commands if c[1] != PROJECT["name"] or not set(c[2].split(",")) <= extras]
    assert wrong == []
    assert PROJECT["name"] != "harness"  # an unrelated project on the package index
    assert {"ray", "qlora", "serve", "tracking"} <= extras


@pytest.mark.integration
def test_the_built_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    """`pip wheel` builds the checkout (no build isolation: setuptools from this venv, no
    index); the wheel goes into a new venv that reuses this venv's installed packages
    through a .pth line (their .pth hooks, the editable install among them, are not run),
    so the `harness` it runs is the wheel's."""
    pytest.importorskip("setuptools", reason="no setuptools to build the wheel with")
    # no PYTHONPATH (the checkout), home and cache in the test's folder, no hub access
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HARNESS_CACHE": str(tmp_path / "c")}
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            dist,
            ROOT,
        ],
        check=True,
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(PROJECT["name"].replace("-", "_") + "-")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"harness/evaluate/benchmark_tasks/mmlu.yaml", "harness/evaluate/benchmark_tasks/hellaswag.yaml"} <= set(
        names
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "reuse-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        check=True,
        cwd=tmp_path,
        env=env,
    )

    def harness(*args):
        return subprocess.run(
            [venv / "bin" / "harness", *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
        )

    where = subprocess.run(
        [python, "-c", "import harness; print(harness.__file__)"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert where.stdout.strip().startswith(site), where.stdout + where.stderr
    version = harness("--version")
    assert (version.returncode, version.stdout) == (0, f"harness {PROJECT['version']}\n"), version.stderr
    demo = str(ROOT / "experiments" / "demo.yaml")
    ok = harness("validate", demo)
    assert ok.returncode == 0 and ok.stdout.startswith(f"{demo}: ok (experiment 'demo'"), ok.stdout + ok.stderr


def test_the_python_api_is_re_exported_lazily():
    """`import harness` loads no torch or pydantic; each API name is the library's own
    function, imported on first use; a wrong name is an AttributeError."""
    code = (
        "import sys, harness; assert 'torch' not in sys.modules and 'pydantic' not in sys.modules, 'loaded'; "
        "import harness.config, harness.run.runner, harness.report.run, harness.store.schema; "
        "assert harness.parse_config is harness.config.parse_config; "
        "assert harness.load_config is harness.config.load_config; "
        "assert harness.run_experiment is harness.run.runner.run_experiment; "
        "assert harness.write_report is harness.report.run.write_report; "
        "assert harness.load_metrics is harness.store.schema.load_metrics; "
        "assert set(harness.__all__) <= set(dir(harness)); print(len(harness.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert (out.returncode, out.stdout) == (0, "6\n"), out.stderr
    import harness

    with pytest.raises(AttributeError, match="module 'harness' has no attribute 'run_experimnet'"):
        harness.run_experimnet
