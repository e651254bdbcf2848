"""The package's layout stays as the refactor left it: no private name used across
modules, no import cycle, no function over 80 lines, scenarios chosen only inside their
registry, and a docstring on every test module. Each failure names the file, the line and
the name that breaks the rule."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (`harness.run.runner`, `harness` for __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve_from(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module an ImportFrom reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(harness module imported from, name imported or None, line) for every import in the
    file, at module level or inside a function. `from harness import runner` imports the
    module harness.run.runner; `from harness.run.runner import x` imports x from harness.run.runner."""
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, path, node)
            for a in node.names:
                if f"{source}.{a.name}" in MODULES:
                    out.append((f"{source}.{a.name}", None, node.lineno))
                elif source in MODULES:
                    out.append((source, a.name, node.lineno))
    return out


def _module_aliases(module: str, path: Path, tree: ast.Module) -> dict[str, str]:
    """Local names bound to another harness module (`from harness import runner as r`,
    `import harness.run.runner as r`)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in MODULES:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, path, node)
            for a in node.names:
                if f"{source}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
    return aliases


def _dotted(node: ast.AST) -> str | None:
    """`harness.run.runner` for the expression harness.run.runner, None for anything but names."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def private_uses(module: str, path: Path) -> list[str]:
    """Where `module` imports a private name from another harness module, or reads
    `other_module._name`."""
    tree = _tree(path)
    found = [
        f"{_rel(path)}:{line}: imports {name} from {source}"
        for source, name, line in _imports(module, path)
        if name is not None and _is_private(name) and source != module
    ]
    aliases = _module_aliases(module, path, tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = _dotted(node.value)
            owner = aliases.get(owner, owner)
            if owner in MODULES and owner != module:
                found.append(f"{_rel(path)}:{node.lineno}: reads {owner}.{node.attr}")
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """harness module -> {harness module it imports: first line of such an import}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for target, _, line in _imports(module, path):
            if target != module:
                edges.setdefault(target, line)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One import cycle, as [a, b, ..., a], for every group of modules that import each
    other (each strongly connected component of more than one module); [] when none."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(_cycle_in(graph, group) for group in groups)


def _cycle_in(graph: dict[str, dict[str, int]], group: set[str]) -> list[str]:
    """A shortest cycle through the group's first module (breadth-first search)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target in group and target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions and methods (nested ones too) longer than `limit` lines, def to last line."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                lines = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and lines > limit:
                    found.append(f"{_rel(path)}:{child.lineno}: {name} is {lines} lines")
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(_tree(path), "")
    return found


def _is_scenario_name(node: ast.AST) -> bool:
    """`scenario.name`, `cfg.scenario.name`, ..."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "name"
        and (
            (isinstance(node.value, ast.Name) and node.value.id == "scenario")
            or (isinstance(node.value, ast.Attribute) and node.value.attr == "scenario")
        )
    )


def scenario_name_comparisons(path: Path) -> list[str]:
    """`scenario.name ==` / `!=` (either side) in the file."""
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:]):
                if isinstance(op, (ast.Eq, ast.NotEq)) and (_is_scenario_name(left) or _is_scenario_name(right)):
                    found.append(f"{_rel(path)}:{node.lineno}: {ast.unparse(node)}")
    return found


# --- the rules ---------------------------------------------------------------------------

# Each wing and the wings it may import (itself always). One floor each: a wing never
# imports a wing above it. `report/` stays a pure reader: results, statistics, no models.
BELOW_EVALUATE = {"answer", "models", "data", "store", "config"}
MAY_IMPORT = {
    "config": set(),
    "store": {"config"},
    "models": {"store", "config"},
    "data": {"store", "config"},
    "answer": {"models", "data", "store", "config"},
    "evaluate": BELOW_EVALUATE,
    "train": {"evaluate"} | BELOW_EVALUATE,
    "questions": {"evaluate"} | BELOW_EVALUATE,
    "report": {"evaluate", "store", "config"},
    "run": {"report", "train", "questions", "evaluate"} | BELOW_EVALUATE,
    # cli reads the package's __version__ (harness/__init__.py imports nothing at import time)
    "cli": {"run", "report", "train", "questions", "evaluate", "harness"} | BELOW_EVALUATE,
    "harness": {"config", "store", "run", "report"},  # the Python API: functions re-exported on first use
}


def wing_of(module: str) -> str:
    """`harness.store.cache` -> store; `harness.config` -> config; `harness` -> harness."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import from a wing into one it may not import, as `file:line: a imports b`."""
    found = []
    for module, edges in graph.items():
        wing = wing_of(module)
        for target, line in edges.items():
            other = wing_of(target)
            if other != wing and other not in MAY_IMPORT[wing]:
                found.append(f"{module} (line {line}, {wing}/) imports {target} ({other}/)")
    return sorted(found)


def test_every_wing_imports_only_the_wings_below_it():
    assert set(MAY_IMPORT) >= {wing_of(m) for m in MODULES}, "a wing with no rule in MAY_IMPORT"
    found = upward_imports(import_graph())
    assert not found, "imports against the layout (move the code down, or the import up):\n" + "\n".join(found)


def endpoint_reads(path: Path) -> list[str]:
    """Every `x.endpoint` attribute read in the file: the backend a LoadedModel answers
    from, which only harness/models/ may look at (the Generator seam)."""
    return [
        f"{_rel(path)}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Attribute) and node.attr == "endpoint" and _dotted(node) != "harness.models.endpoint"
    ]


def test_only_the_models_wing_tells_the_backends_apart():
    found = [hit for m, path in MODULES.items() if wing_of(m) != "models" for hit in endpoint_reads(path)]
    assert not found, "a backend branch outside harness/models/ (use harness.models.generator):\n" + "\n".join(found)


def test_report_imports_no_torch():
    """The report reads results folders on any machine: importing it loads no torch."""
    import subprocess
    import sys

    code = (
        "import sys; import harness.report.run, harness.report.labels, harness.report.annotate; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_no_module_uses_another_module_s_private_names():
    found = [hit for module, path in MODULES.items() for hit in private_uses(module, path)]
    assert not found, "private names used across modules (make them public, or move the code):\n" + "\n".join(found)


def test_no_import_cycle_among_harness_modules():
    graph = import_graph()
    cycles = find_cycles(graph)
    described = [" -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}" for c in cycles]
    assert not cycles, "import cycles (module-level and function-level imports both count):\n" + "\n".join(described)


def test_no_function_in_harness_is_over_80_lines():
    found = [hit for path in MODULES.values() for hit in long_functions(path)]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n" + "\n".join(found)


def test_scenarios_are_chosen_only_in_their_registry():
    found = [hit for path in MODULES.values() if path.name != "scenarios.py" for hit in scenario_name_comparisons(path)]
    assert not found, (
        "scenario.name compared outside harness/evaluate/scenarios.py (give the scenario entry the "
        "behaviour instead):\n" + "\n".join(found)
    )


def test_every_test_module_has_a_docstring():
    missing = [_rel(p) for p in sorted((ROOT / "tests").glob("*.py")) if not ast.get_docstring(_tree(p))]
    assert not missing, "test modules without a module docstring:\n" + "\n".join(missing)


# --- the checks catch what they are for (on small sources written here) -----------------


def _fake_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    folder = tmp_path / "harness"
    folder.mkdir()
    out = {}
    for name, text in files.items():
        (folder / f"{name}.py").write_text(text)
        out[f"harness.{name}"] = folder / f"{name}.py"
    return out


def test_the_checks_catch_each_kind_of_violation(tmp_path, monkeypatch):
    files = _fake_package(
        tmp_path,
        {
            "a": "from harness.b import _hidden, shown\nfrom harness import b as bee\n\ndef f():\n"
            "    from harness import c\n    return bee._other, c.ok\n",
            "b": "import harness.c\n\ndef g():\n    return harness.c._deep\n",
            "c": "def h(scenario, cfg):\n    from harness.a import f\n    return cfg.scenario.name != 'style' or 'facts' == scenario.name\n",
            "d": "def long():\n" + "    x = 1\n" * 80 + "\n\nclass K:\n    def short(self):\n        return 1\n",
            "e": "def f(lm):\n    return lm.endpoint\n",
        },
    )
    monkeypatch.setitem(globals(), "MODULES", files)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert private_uses("harness.a", files["harness.a"]) == [
        "harness/a.py:1: imports _hidden from harness.b",
        "harness/a.py:6: reads harness.b._other",
    ]
    assert private_uses("harness.b", files["harness.b"]) == ["harness/b.py:4: reads harness.c._deep"]
    graph = import_graph()
    assert graph["harness.a"] == {"harness.b": 1, "harness.c": 5}
    assert find_cycles(graph) == [["harness.a", "harness.c", "harness.a"]]  # the shortest of a->b->c->a, a->c->a
    assert long_functions(files["harness.d"]) == ["harness/d.py:1: long is 81 lines"]
    assert upward_imports(
        {
            "harness.store.x": {"harness.run.y": 3, "harness.config": 1},
            "harness.run.y": {"harness.store.x": 1},
            "harness.report.z": {"harness.models.w": 7},
        }
    ) == [
        "harness.report.z (line 7, report/) imports harness.models.w (models/)",
        "harness.store.x (line 3, store/) imports harness.run.y (run/)",
    ]
    assert endpoint_reads(files["harness.e"]) == ["harness/e.py:2: lm.endpoint"]
    assert scenario_name_comparisons(files["harness.c"]) == [
        "harness/c.py:3: cfg.scenario.name != 'style'",
        "harness/c.py:3: 'facts' == scenario.name",
    ]


def test_readme_layout_names_every_module_once():
    """README's Layout table has one line per module of harness/, and no line for a
    module that is gone (so the map a newcomer reads is the package as it is)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.find("\n## ", 3)] if "\n## " in layout[3:] else layout
    listed = [line.split("`")[1] for line in layout.splitlines() if line.startswith("| `") and ".py`" in line]
    modules = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
    assert sorted(listed) == modules
