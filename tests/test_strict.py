"""HARNESS_STRICT=1 (CI) turns the skips that mean "CI lacks what it should test" into
failures, at collection and at run time; other skips stay skips."""

from pathlib import Path

pytest_plugins = ["pytester"]

SKIPPING = {
    "test_needs_chromium": """
import pytest
@pytest.mark.skipif(True, reason="Chromium not installed (apt-get install chromium)")
def test_page(): pass
@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_gpu(): pass
def test_data():
    pytest.skip("../shared/data not present")
""",
    "test_needs_bnb": """
import pytest
pytest.skip("could not import 'bitsandbytes': No module named 'bitsandbytes'", allow_module_level=True)
def test_4bit(): pass
""",
}


def _run(pytester, monkeypatch, strict: str | None):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(**SKIPPING)
    if strict is None:
        monkeypatch.delenv("HARNESS_STRICT", raising=False)
    else:
        monkeypatch.setenv("HARNESS_STRICT", strict)
    # a failed collection stops a session; here the other outcomes are wanted too
    return pytester.runpytest("-p", "no:cacheprovider", "--continue-on-collection-errors")


def test_without_strict_they_skip(pytester, monkeypatch):
    _run(pytester, monkeypatch, None).assert_outcomes(skipped=4)


def test_under_strict_they_fail_but_the_gpu_skip_stays(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "1")
    result.assert_outcomes(failed=1, errors=2, skipped=1)  # a skipif fails in setup: an error
    result.stdout.fnmatch_lines(["*HARNESS_STRICT=1: this must run in CI, not skip*Chromium not installed*"])
