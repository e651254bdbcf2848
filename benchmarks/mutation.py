"""Mutation testing of the guards users rely on (issue #22): each guard module is mutated
by mutmut and run against its own targeted test files only, and the table of mutants,
killed, survived, equivalent and % killed is printed (docs/mutation.md has the measured
table and every survivor's answer).

    PYTHONPATH=$PWD nice .venv/bin/python benchmarks/mutation.py                   # every guard, 40 a module
    PYTHONPATH=$PWD nice .venv/bin/python benchmarks/mutation.py --guard ingest --show   # survivors' diffs
    PYTHONPATH=$PWD nice .venv/bin/python benchmarks/mutation.py --guard ingest --survivors  # after a new test
    PYTHONPATH=$PWD nice .venv/bin/python benchmarks/mutation.py --guard verdicts --sample 0  # every mutant

Each guard runs in a copy of the working tree under `.mutation/<guard>/` (gitignored,
replaced on every run), with a `[tool.mutmut]` section naming its modules and its tests,
so mutmut learns which test covers which function from those tests alone, and runs only
those on a mutant. Where a module holds more than the guard, only the guard's functions
are mutated (`GUARDS` below). `--sample N` draws N mutants per module with a fixed seed
(0: all of them): a module has 100 to 1,500 mutants, and on the shared 2-core machine a
mutant costs 5-30 s, so every mutant of every guard would take most of a day. Results are
kept in `.mutation/<guard>.json`; `--survivors` runs only its survivors again. A timeout
counts as killed; a mutant no targeted test reaches counts as survived. % killed is
killed / (tried - equivalent); `EQUIVALENT` holds the survivors no test can kill, with the
reason. Needs the `mutation` extra (mutmut, pinned: the names in `EQUIVALENT` are its
numbering).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutation"

# name -> the modules mutated ({path: function names, None for all}) and the tests run.
GUARDS = {
    "verdicts": {
        "setup": 300,  # CPU seconds allowed beyond its tests' timed calls
        "modules": {"harness/evaluate/verdicts.py": None},
        "tests": ["tests/test_rule.py", "tests/test_verdicts.py", "tests/test_stats.py"],
    },
    "destination": {
        "setup": 300,  # CPU seconds allowed beyond its tests' timed calls
        # results.py also holds the atomic writers, the JSONL reader and provenance: only
        # the results folder's destination, marker, staging, lock and restore functions.
        "modules": {
            "harness/store/results.py": [
                "_files",
                "_regenerated",
                "_read_marker",
                "_legacy_kind",
                "_check_in_the_way",
                "check_destination",
                "check_results_folder",
                "checked_destination",
                "made_parents",
                "mark_folder",
                "recover_folder",
                "backup_path",
                "swap_folder",
                "staged_run_dir",
                "_sha256",
                "mark_own_folder",
                "_own_folder_problem",
                "check_own_folder",
                "own_folder",
                "staged_folder",
                "_pid_alive",
                "_mtime",
                "run_lock",
            ]
        },
        "tests": ["tests/test_destination.py", "tests/test_recovery.py", "tests/test_resume.py"],
    },
    "cache": {
        "setup": 300,  # CPU seconds allowed beyond its tests' timed calls
        "modules": {"harness/store/cache.py": None, "harness/store/memo.py": None},
        "tests": ["tests/test_cache.py", "tests/test_memo.py"],
    },
    "ingest": {
        "setup": 300,  # CPU seconds allowed beyond its tests' timed calls
        "modules": {"harness/data/ingest.py": None},
        "tests": ["tests/test_ingest.py", "tests/test_security.py"],
    },
    "labels": {
        "setup": 600,  # CPU seconds allowed beyond its tests' timed calls
        "modules": {"harness/report/labels.py": None, "harness/report/annotate.py": None},
        "tests": ["tests/test_human_eval.py"],
    },
    "escaping": {
        "setup": 600,  # CPU seconds allowed beyond its tests' timed calls
        # run.py builds the whole report: only its escaping and HTML rendering functions.
        "modules": {
            "harness/report/run.py": [
                "md_escape",
                "item_text",
                "_md_inert",
                "md_literal",
                "_md_text",
                "_md_cell",
                "to_markdown",
                "_md_inline",
                "_items_html",
                "_side_by_side_html",
                "content_security_policy",
                "to_html",
            ],
            "harness/report/tables.py": None,
        },
        "tests": ["tests/test_report.py", "tests/test_security.py"],
    },
}

# Surviving mutants that no test can kill, each with the reason (docs/mutation.md).
EQUIVALENT: dict[str, str] = {
    "harness.store.cache.x_writable_problem__mutmut_7": "the message of an unreachable branch: the walk up a path "
    "ends at / or ., which always exist",
    "harness.store.cache.x__remember__mutmut_11": "key order of VERIFIED, which is only read back as JSON and "
    "compared as a dict",
    "harness.store.cache.x_verified_files__mutmut_6": "keep's first value: it is replaced by _check_files' before "
    "any use, or never used (no manifest)",
    "harness.store.cache.x_write_manifest__mutmut_29": "key order of the manifest, which is only read back as JSON "
    "and compared as dicts",
    "harness.store.cache.x__check_files__mutmut_11": "the name of a key inside VERIFIED's records, which the same "
    "code writes and reads (a record under the old name is only hashed again)",
    "harness.store.cache.x__seen__mutmut_3": "VERIFIED is ASCII JSON (json.dumps), read the same in any locale",
    "harness.store.cache.x_discard__mutmut_11": "missing_ok on a file this process has just renamed to a name "
    "carrying its pid: it is there to unlink",
    "harness.store.results.x__read_marker__mutmut_3": "the marker is JSON that json.dumps wrote (ASCII), so any "
    "locale's default encoding reads it the same",
    "harness.store.results.x__legacy_kind__mutmut_8": '"UTF-8" and "utf-8" name the same codec',
    "harness.report.annotate.x_build_page__mutmut_175": 'the default task of an answer without one: "XXqaXX", '
    'like "qa", is no style task, so label_set gives "qa" either way',
    "harness.data.ingest.x__kind__mutmut_22": "the message of an unreachable branch: after resolve() a path that is "
    "neither a folder nor a regular file is a FIFO, socket or device (each named), or missing",
}

TIMEOUT = {36, -24, 24, 152, 255}  # over its time (SIGXCPU): a mutant that loops
KILLED = {1, 3, -11, -9} | TIMEOUT  # a failing test, pytest's internal error, a crash, a timeout
SURVIVED = {0, 5, 33}  # all tests passed, or no test reached the function
SKIP = {".git", ".venv", ".mutation", "__pycache__", ".pytest_cache", "results", "mutants"}


def _function(key: str) -> str:
    """The source name of a mutant's function: `harness.x.x_f__mutmut_3` -> `f`,
    `harness.x.xǁCǁm__mutmut_1` -> `C.m`."""
    name = key.rpartition(".")[2].partition("__mutmut_")[0]
    if name.startswith("xǁ"):
        return ".".join(name[2:].split("ǁ"))
    return name[2:] if name.startswith("x_") else name


def _copy(dest: Path, guard: dict) -> None:
    """The working tree (without git, venv or results) at `dest`, its pyproject.toml
    given the guard's [tool.mutmut] section."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(REPO, dest, ignore=lambda d, names: [n for n in names if n in SKIP])
    (dest / "results").mkdir()
    # mutmut runs the tests in dest/mutants/, where it copies the sources and tests/: the
    # rest of the tree (README, experiments, examples, notebooks) is what the tests read
    rest = sorted(p.name for p in dest.iterdir() if p.name not in ("harness", "tests", "pyproject.toml"))
    lines = [
        "",
        "[tool.mutmut]",
        'source_paths = ["harness"]',
        f"only_mutate = {json.dumps(sorted(guard['modules']))}",
        f"pytest_add_cli_args_test_selection = {json.dumps(guard['tests'])}",
        f"also_copy = {json.dumps(rest)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        # a mutant is stopped (a timeout, counted as killed) after twice the CPU time of its
        # tests' calls plus `setup`: mutmut times neither the fixtures' setup nor the CPU of
        # torch's and numpy's threads, and a tighter limit stopped mutants that did not loop
        "timeout_multiplier = 1.0",
        # each mutant forked from a server that has only imported the tests, not from
        # mutmut's own process, which has run them: a fork of a process whose torch threads
        # have run can hang on a lock no thread will release (mutants hung with no CPU)
        'process_isolation = "forkserver"',
        f"timeout_constant = {guard['setup']:.1f}",
        "",
    ]
    with open(dest / "pyproject.toml", "a") as f:
        f.write("\n".join(lines))


GENERATE = """
import os
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants
os.makedirs("mutants", exist_ok=True)
copy_src_dir(); copy_also_copy_files(); create_mutants(1)
"""


def _meta(dest: Path, module: str) -> dict:
    return json.loads((dest / "mutants" / (module + ".meta")).read_text())["exit_code_by_key"]


# mutmut's command line, less its clean run: the stats run just before it runs the same
# tests with no mutant active and must pass (mutmut stops when it does not), so the clean
# run would only repeat it, minutes a guard on the 2-core machine.
MUTMUT = """
import sys
from mutmut.workers.isolation import ForkRunner, ForkServerRunner
ForkRunner.run_clean_tests = ForkServerRunner.run_clean_tests = lambda self, tests: 0
from mutmut.__main__ import cli
sys.argv[0] = "mutmut"
cli()
"""


def _mutmut(dest: Path, args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(dest)}
    return subprocess.run([sys.executable, "-c", MUTMUT, *args], cwd=dest, env=env, text=True, **kw)


def chosen(dest: Path, guard: dict, *, sample: int, seed: int, only: list[str]) -> dict[str, list[str]]:
    """The mutants to run per module: those of the guard's functions, matching `only`
    (patterns), a seeded sample of `sample` per module (0: all)."""
    out = {}
    for module, functions in guard["modules"].items():
        keys = sorted(k for k in _meta(dest, module) if functions is None or _function(k) in functions)
        if only:
            keys = [k for k in keys if any(fnmatch.fnmatch(k, p) for p in only)]
        if sample and len(keys) > sample:
            keys = sorted(random.Random(f"{seed}:{module}").sample(keys, sample))
        out[module] = keys
    return out


def _rows(name: str, state: dict) -> list[dict]:
    """One row per module of a guard's stored state ({"picked", "total", "status"})."""
    rows = []
    for module, keys in state["picked"].items():
        keys = [k for k in keys if state["status"].get(k) is not None]  # a run stopped early judged the rest
        survived = [k for k in keys if state["status"].get(k) not in KILLED]
        equivalent = [k for k in survived if k in EQUIVALENT]
        rows.append(
            {
                "guard": name,
                "module": module,
                "mutants": state["total"][module],
                "tried": len(keys),
                "killed": len(keys) - len(survived),
                "timeouts": sum(state["status"].get(k) in TIMEOUT for k in keys),
                "survived": len(survived) - len(equivalent),
                "equivalent": len(equivalent),
                "survivors": {k: state["status"].get(k) for k in survived if k not in EQUIVALENT},
            }
        )
    return rows


def run_guard(
    name: str,
    *,
    sample: int,
    seed: int,
    jobs: int,
    only: list[str],
    survivors: bool,
    timeouts: bool,
    show: bool,
    tests=(),
):
    """Mutate one guard and run its tests on each chosen mutant (with `survivors`, only on
    the last run's survivors, the rest of its results kept: tests are only ever added);
    the results are kept in .mutation/<guard>.json. One row per module."""
    guard, dest, saved = GUARDS[name], WORK / name, WORK / f"{name}.json"
    if tests:  # a subset of the guard's tests: a mutant it kills, the whole set kills too
        guard = {**guard, "tests": tests}
    _copy(dest, guard)
    env = {**os.environ, "PYTHONPATH": str(dest)}
    subprocess.run([sys.executable, "-c", GENERATE], cwd=dest, env=env, check=True, capture_output=True)
    if survivors:
        state = json.loads(saved.read_text())
        names = [k for row in _rows(name, state) for k in row["survivors"]]
        if timeouts:
            names += [k for k, code in state["status"].items() if code in TIMEOUT]
    else:
        picked = chosen(dest, guard, sample=sample, seed=seed, only=only)
        total = {
            m: sum(1 for k in _meta(dest, m) if fs is None or _function(k) in fs) for m, fs in guard["modules"].items()
        }
        state = {"sample": sample, "seed": seed, "picked": picked, "total": total, "status": {}}
        names = [k for keys in picked.values() for k in keys]
    if names:
        with open(dest / "mutmut.log", "w") as log:
            done = _mutmut(dest, ["run", "--max-children", str(jobs), *names], stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:  # the clean tests failed, or mutmut did: no mutant was judged
            tail = (dest / "mutmut.log").read_text(errors="replace").replace("\r", "\n").splitlines()[-15:]
            raise SystemExit(
                f"{name}: mutmut exited {done.returncode}; {dest / 'mutmut.log'} ends:\n" + "\n".join(tail)
            )
        for module in guard["modules"]:
            codes = _meta(dest, module)
            state["status"].update({k: codes.get(k) for k in names if k in codes})
    saved.write_text(json.dumps(state, indent=1))
    rows = _rows(name, state)
    if show:
        for row in rows:
            for k in row["survivors"]:
                print(_mutmut(dest, ["show", k], capture_output=True).stdout)
    return rows


def table(rows: list[dict]) -> str:
    head = "| module | mutants | tried | killed (timeouts) | survived | equivalent | % killed |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        judged = r["tried"] - r["equivalent"]
        pct = f"{100 * r['killed'] / judged:.1f}" if judged else "-"
        lines.append(
            f"| `{r['module']}` | {r['mutants']} | {r['tried']} | {r['killed']} ({r['timeouts']}) | {r['survived']} | "
            f"{r['equivalent']} | {pct} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guard", action="append", choices=sorted(GUARDS), help="a guard (repeat; default all)")
    ap.add_argument("--sample", type=int, default=40, help="mutants per module, seeded (0: every mutant)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="mutmut's --max-children")
    ap.add_argument("--mutant", action="append", default=[], help="only mutants matching this pattern (repeat)")
    ap.add_argument("--survivors", action="store_true", help="run the last run's survivors again, keep the rest")
    ap.add_argument("--timeouts", action="store_true", help="with --survivors: the timeouts too")
    ap.add_argument("--tests", nargs="+", default=(), help="with --survivors: only these of the guard's tests")
    ap.add_argument("--show", action="store_true", help="print each survivor's diff")
    ap.add_argument("--table", action="store_true", help="only print the table of the results kept")
    args = ap.parse_args(argv)
    rows = []
    if args.table:
        for name in args.guard or list(GUARDS):
            if (WORK / f"{name}.json").exists():
                rows += _rows(name, json.loads((WORK / f"{name}.json").read_text()))
        print(table(rows))
        for r in rows:
            for k, code in r["survivors"].items():
                print(f"survived: {k} (exit {code})")
        return 0
    for name in args.guard or list(GUARDS):
        rows += run_guard(
            name,
            sample=args.sample,
            seed=args.seed,
            jobs=args.jobs,
            only=args.mutant,
            survivors=args.survivors,
            timeouts=args.timeouts,
            show=args.show,
            tests=args.tests,
        )
        print(table(rows[-len(GUARDS[name]["modules"]) :]), flush=True)
    print()
    print(table(rows))
    for r in rows:
        for k, code in r["survivors"].items():
            print(f"survived: {k} (exit {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
