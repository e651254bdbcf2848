"""A run never destroys what harness did not write: a user's folder, a file, another
experiment's results or a grid's folder in the way of `<output_dir>/<name>` is refused
before any work, with one line and exit 2, and a failed run removes the folders it made."""

import json
import os

import pytest
import yaml

from conftest import tiny_config
from harness.cli import main
from harness.config import parse_config
from harness.run.runner import run_experiment
from harness.store.results import MARKER, ResultsFolderError, check_destination, mark_folder, staged_run_dir


def _users_folder(root):
    """A folder with someone's work in it, as the review found deleted."""
    (root / "sub").mkdir(parents=True)
    (root / "thesis.txt").write_text("years of work")
    (root / "sub" / "notes.md").write_text("more")
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


def _contents(root):
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


def _config(tmp_path, raw) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_output_dir_on_a_users_folder_is_refused_and_kept(tiny_model_dir, tmp_path, capsys):
    before = _users_folder(tmp_path / "victim" / "precious")
    raw = tiny_config(tiny_model_dir, name="precious", output_dir=str(tmp_path / "victim"))
    for command in (["validate"], ["run"]):
        assert main([*command, _config(tmp_path, raw)]) == 2
        err = _one_line_error(capsys)
        assert str(tmp_path / "victim" / "precious") in err and "not written by a harness run" in err
    assert _contents(tmp_path / "victim" / "precious") == before
    assert sorted(os.listdir(tmp_path / "victim")) == ["precious"]  # no lock, no staging folder left


def test_results_dir_dot_with_a_matching_name_is_refused(tiny_model_dir, tmp_path, capsys, monkeypatch):
    before = _users_folder(tmp_path / "work" / "thesis")
    monkeypatch.chdir(tmp_path / "work")
    raw = tiny_config(tiny_model_dir, name="thesis")
    assert main(["run", _config(tmp_path, raw), "--results-dir", "."]) == 2
    assert "thesis" in _one_line_error(capsys)
    assert _contents(tmp_path / "work" / "thesis") == before


def test_a_file_in_the_way_is_refused_before_any_work(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run1").write_text("a file, not a folder")
    raw = tiny_config(tiny_model_dir, name="run1", output_dir=str(tmp_path / "out"))
    assert main(["run", _config(tmp_path, raw)]) == 2
    assert "is a file" in _one_line_error(capsys)
    assert (tmp_path / "out" / "run1").read_text() == "a file, not a folder"
    raw = tiny_config(tiny_model_dir, name="run1", output_dir=str(tmp_path / "out" / "run1" / "deeper"))
    assert main(["run", _config(tmp_path, raw)]) == 2
    assert "is a file" in _one_line_error(capsys)


def test_a_failed_run_removes_the_folders_it_created(tmp_path, capsys):
    raw = {
        "name": "x",
        "model": {"name": str(tmp_path / "no-such-model")},
        "embedder": {"name": "hashing"},
        "output_dir": str(tmp_path / "new" / "deep" / "results"),
    }
    assert main(["run", _config(tmp_path, raw)]) == 2
    _one_line_error(capsys)
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]


def test_another_experiments_results_and_grid_folders_are_refused(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"experiment": "other"}))
    with pytest.raises(ResultsFolderError, match="not written by a harness run of experiment 'a'"):
        check_destination(run, experiment="a", kind="run")
    grid = tmp_path / "g"
    grid.mkdir()
    (grid / MARKER).write_text(json.dumps({"experiment": "g", "kind": "grid", "files": []}))
    with pytest.raises(ResultsFolderError, match="grid's results"):
        check_destination(grid, experiment="g", kind="run")
    check_destination(grid, experiment="g", kind="grid")  # a grid may fill its own folder again
    check_destination(tmp_path / "missing", experiment="g", kind="run")
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", experiment="g", kind="run")  # nothing in it to lose


def test_a_run_replaces_its_own_results_but_not_a_file_added_to_them(tiny_model_dir, tmp_path, capsys):
    cfg = parse_config(tiny_config(tiny_model_dir, name="mine"))
    out = run_experiment(cfg, results_root=tmp_path)
    marker = json.loads((out / MARKER).read_text())
    assert marker["experiment"] == "mine" and marker["kind"] == "run" and "metrics.json" in marker["files"]
    (out / "metrics.json").write_text((out / "metrics.json").read_text().replace('"complete"', '"complete" '))
    assert run_experiment(cfg, results_root=tmp_path) == out  # its own folder: replaced whole
    assert '"complete" ' not in (out / "metrics.json").read_text()
    (out / "my-notes.txt").write_text("mine")
    with pytest.raises(ResultsFolderError, match="my-notes.txt"):
        run_experiment(cfg, results_root=tmp_path)
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "metrics.json").is_file()


def test_a_grid_on_a_users_folder_is_refused(tiny_model_dir, tmp_path, capsys):
    before = _users_folder(tmp_path / "victim" / "sweep")
    raw = tiny_config(
        tiny_model_dir,
        name="sweep",
        output_dir=str(tmp_path / "victim"),
        grid={"mode": "cross", "axes": {"retrieval.top_k": [1, 2]}},
    )
    for command in (["validate"], ["run"], ["run", "--executor", "processes"]):
        assert main([*command, _config(tmp_path, raw)]) == 2
        assert "not written by a harness run" in _one_line_error(capsys)
    assert _contents(tmp_path / "victim" / "sweep") == before


# --- each guard of the results destination has a test that fails when it breaks (#22) --------


def test_a_folder_marked_by_another_experiment_is_refused(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"experiment": "other"}))
    mark_folder(folder, experiment="other", kind="run")  # a finished run of experiment "other", in "a"
    with pytest.raises(ResultsFolderError, match="not written by a harness run of experiment 'a'"):
        check_destination(folder, experiment="a", kind="run")
    with pytest.raises(ResultsFolderError, match="not written by a harness run of experiment 'a'"):
        with staged_run_dir(folder, experiment="a") as stage:
            (stage / "metrics.json").write_text("{}")
    assert _contents(folder) == {
        "metrics.json": json.dumps({"experiment": "other"}),
        MARKER: (folder / MARKER).read_text(),
    }
    check_destination(folder, experiment="other", kind="run")  # its own experiment may replace it


def test_what_appears_in_the_destination_during_a_run_is_never_replaced(tmp_path):
    final = tmp_path / "r"
    with pytest.raises(ResultsFolderError, match="r: exists and was not written by a harness run"):
        with staged_run_dir(final, experiment="x") as stage:
            (stage / "metrics.json").write_text("the new run")
            final.mkdir()  # while the run worked, someone put their notes where its results go
            (final / "notes.txt").write_text("mine")
    assert _contents(final) == {"notes.txt": "mine"}
    assert sorted(os.listdir(tmp_path)) == ["r"]  # no staging folder left either


def test_results_moved_aside_by_a_killed_run_are_restored_not_deleted(tmp_path):
    final = tmp_path / "r"
    old = tmp_path / ".r.old-4242"  # a run killed between moving the previous results aside and renaming its own in
    old.mkdir()
    (old / "metrics.json").write_text("the previous run")
    mark_folder(old, experiment="x", kind="run")
    with pytest.raises(RuntimeError, match="the next run fails"):
        with staged_run_dir(final, experiment="x"):
            raise RuntimeError("the next run fails")
    assert (final / "metrics.json").read_text() == "the previous run"
    assert sorted(os.listdir(tmp_path)) == ["r"]
    with staged_run_dir(final, experiment="x") as stage:  # and a run that succeeds replaces them as usual
        (stage / "metrics.json").write_text("the new run")
    assert (final / "metrics.json").read_text() == "the new run" and sorted(os.listdir(tmp_path)) == ["r"]


def test_the_results_folder_check_of_annotate_and_labels(tmp_path):
    from harness.store.results import LEGACY_FILES, check_results_folder

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"experiment": "e"}))
    mark_folder(run, experiment="e", kind="run")
    check_results_folder(run)  # its marker
    grid = tmp_path / "grid"
    grid.mkdir()
    mark_folder(grid, experiment="e", kind="grid")
    old = tmp_path / "old"  # an older harness's run: exactly its files, naming the experiment
    old.mkdir()
    for name in LEGACY_FILES:
        (old / name).write_text("{}")
    (old / "metrics.json").write_text(json.dumps({"experiment": "e"}))
    check_results_folder(old)
    (old / "notes.txt").write_text("mine")
    for folder in (grid, old, tmp_path / "empty"):
        with pytest.raises(ResultsFolderError) as err:
            check_results_folder(folder)
        assert str(err.value) == (
            f"{folder}: not a run's results folder written by harness (no {MARKER} of a run); "
            "harness adds annotation pages and labels to its own results only"
        )


def test_a_marker_that_is_not_an_object_marks_nothing_and_figures_are_regenerated(tmp_path):
    final = tmp_path / "r"
    final.mkdir()
    (final / "metrics.json").write_text("{}")
    mark_folder(final, experiment="e", kind="run")
    (final / "figures").mkdir()
    (final / "figures" / "loss.png").write_bytes(b"png")  # written by `harness report`
    check_destination(final, experiment="e", kind="run")
    (final / "figures" / "notes.txt").write_text("mine")
    with pytest.raises(ResultsFolderError, match="holds 'figures/notes.txt', which no harness run wrote"):
        check_destination(final, experiment="e", kind="run")
    (final / "figures" / "notes.txt").unlink()
    (final / MARKER).write_text('["e", "run"]')
    with pytest.raises(ResultsFolderError, match="exists and was not written by a harness run of experiment 'e'"):
        check_destination(final, experiment="e", kind="run")


def test_a_killed_writers_staging_folder_is_removed(tmp_path):
    from harness.store.results import recover_folder

    final = tmp_path / "r"
    final.mkdir()
    (tmp_path / ".r.partial-123").mkdir()
    (tmp_path / ".r.partial-123" / "metrics.json").write_text("{}")
    recover_folder(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_backup_names_are_dated_and_numbered_when_taken(tmp_path):
    import re

    from harness.store.results import backup_path

    first = backup_path(tmp_path / "q")
    assert re.fullmatch(r"q\.backup-\d{8}-\d{6}", first.name) and first.parent == tmp_path
    first.mkdir()
    assert backup_path(tmp_path / "q") == tmp_path / f"{first.name}-2"
    (tmp_path / f"{first.name}-2").symlink_to("nowhere")
    assert backup_path(tmp_path / "q") == tmp_path / f"{first.name}-3"


def test_an_own_folder_is_replaced_only_while_no_file_in_it_was_added_or_edited(tmp_path):
    import hashlib

    from harness.store.results import FolderRule, check_own_folder, mark_own_folder

    rule = FolderRule(kind="questions", what="a question set", legacy=("questions.jsonl",))
    final = tmp_path / "q"
    final.mkdir()
    (final / "questions.jsonl").write_bytes(b"x" * 3_000_000)  # over one read block
    mark_own_folder(final, rule)
    marker = json.loads((final / MARKER).read_text())
    assert marker == {"kind": "questions", "files": {"questions.jsonl": hashlib.sha256(b"x" * 3_000_000).hexdigest()}}
    assert check_own_folder(final, rule) is False  # as written: replaced without --force
    (final / "questions.jsonl").write_bytes(b"x" * 2_999_999 + b"y")
    with pytest.raises(ResultsFolderError, match=r"questions\.jsonl: edited since harness wrote it; harness will not"):
        check_own_folder(final, rule)
    assert check_own_folder(final, rule, force=True) is True
    (final / MARKER).write_text(json.dumps({**marker, "kind": "other"}))
    with pytest.raises(ResultsFolderError, match=r"exists and is not a question set harness wrote"):
        check_own_folder(final, rule, force=True)
    (final / MARKER).unlink()
    with pytest.raises(ResultsFolderError, match=r"written by an older harness, which kept no record"):
        check_own_folder(final, rule)


def test_a_lock_holder_is_alive_while_its_process_is_and_is_not_signalled(monkeypatch):
    import signal
    import subprocess

    from harness.store.results import _pid_alive

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert _pid_alive(child.pid) is True
        with pytest.raises(subprocess.TimeoutExpired):  # asked with signal 0: still running
            child.wait(timeout=0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _pid_alive(child.pid) is False

    def other_users(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", other_users)
    assert _pid_alive(1) is True


def test_a_run_and_a_grid_of_one_experiment_never_overwrite_each_other(tmp_path):
    for kind, other, words in [("run", "grid", ("single run", "grid")), ("grid", "run", ("grid", "single run"))]:
        final = tmp_path / kind
        final.mkdir()
        (final / "metrics.json").write_text("{}")
        mark_folder(final, experiment="e", kind=kind)
        with pytest.raises(ResultsFolderError) as err:
            check_destination(final, experiment="e", kind=other)
        assert str(err.value) == (
            f"{final}: holds a {words[0]}'s results of 'e'; a {words[1]} would overwrite them "
            "(choose another name or output_dir)"
        )
