"""The package's shape: imports flow one way, systems own what depends on the system, functions stay short."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trc_lib"
# imports point from the faces through the studies to the core (oracles included) and down to the systems
LAYERS = {"interfaces": 3, "studies": 2}
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path) -> set[str]:
    """The trc_lib modules `name` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("trc_lib"):
                target = node.module
            else:
                continue
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
            found.update(c for c in candidates if c in modules())
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules())
    return found - {name}


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.get(parts[1], 1) if len(parts) > 1 else 4  # the package root is the public facade


def test_no_import_cycles():
    graph = {name: imports(name, path) for name, path in modules().items() if name != "trc_lib"}
    visiting, done, cycles = set(), set(), []

    def visit(node, trail):
        if node in done or node not in graph:
            return
        if node in visiting:
            cycles.append(" -> ".join(trail[trail.index(node):] + [node]))
            return
        visiting.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert not cycles, cycles


def test_imports_point_from_the_faces_through_the_studies_to_the_core():
    upward = [f"{name} imports {other}" for name, path in modules().items() for other in imports(name, path)
              if other != "trc_lib" and layer(other) > layer(name)]
    assert not upward, upward


def test_only_the_tasks_know_whether_a_task_is_linear():
    users = sorted(name for name, path in modules().items() if "is_linear" in path.read_text())
    assert set(users) <= {"trc_lib.task", "trc_lib.tasks", "trc_lib.tasks.check"}, users


@pytest.mark.parametrize("name", sorted(modules()))
def test_functions_are_short(name):
    tree = ast.parse(modules()[name].read_text())
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")) + sorted((PACKAGE.parent / "benchmarks").glob("*.py")),
                         ids=lambda p: p.name)
def test_every_command_line_option_says_what_it_does(path):
    """--help describes each option: every add_argument of the trc command and the benchmarks has a help."""
    silent = [node.args[0].value for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
              and node.args and isinstance(node.args[0], ast.Constant)
              and not any(keyword.arg == "help" for keyword in node.keywords)]
    assert not silent, f"{path.name}: options without help: {silent}"
