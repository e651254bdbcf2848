"""The integration list in conftest.py names only test files and tests that exist, so a
renamed test cannot drop out of the integration run or, worse, into no run at all; and
plain `pytest` (the unit tests) selects none of them."""

import ast
from pathlib import Path

import conftest

TESTS = Path(__file__).resolve().parent


def _test_names() -> set[str]:
    names = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_every_integration_module_exists():
    missing = sorted(m for m in conftest.INTEGRATION_MODULES if not (TESTS / m).is_file())
    assert not missing, f"conftest.INTEGRATION_MODULES names files that are gone: {missing}"


def test_every_integration_test_exists():
    missing = sorted(conftest.INTEGRATION_TESTS - _test_names())
    assert not missing, f"conftest.INTEGRATION_TESTS names tests that are gone: {missing}"


def test_the_default_selection_leaves_integration_out():
    addopts = next(
        line for line in (TESTS.parent / "pyproject.toml").read_text().splitlines() if line.startswith("addopts")
    )
    assert "not integration" in addopts
    make = (TESTS.parent / "Makefile").read_text()
    assert "-m 'not slow and not gpu'" in make  # make test (and so CI) runs the integration tests too
