"""The package's import graph: no cycles, and library modules import siblings at the top."""

import ast
from pathlib import Path

import cardlink_lite

PACKAGE = Path(cardlink_lite.__file__).parent
FACES = ("cardlink_lite.cli", "cardlink_lite.pytest_plugin")  # may defer loading the library


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("cardlink_lite",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _targets(name: str, path: Path, node, mods) -> list[str]:
    if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
    else:
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        found = [module] + [f"{module}.{alias.name}" for alias in node.names]
    return [t for t in found if t in mods and t != name]


def _graph():
    mods = _modules()
    edges, lazy = {}, []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = _targets(name, path, node, mods)
                edges.setdefault(name, set()).update(targets)
                if targets and id(node) not in top and not name.startswith(FACES):
                    lazy.append(f"{name} -> {', '.join(targets)} (line {node.lineno})")
    return edges, lazy


def _cycle(edges) -> list[str] | None:
    """One import cycle (the package's own __init__, a re-export hub, left out), or None."""
    graph = {k: {t for t in v if t != "cardlink_lite"} for k, v in edges.items()
             if k != "cardlink_lite"}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_no_import_cycle():
    edges, _lazy = _graph()
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_library_modules_import_siblings_at_the_top():
    _edges, lazy = _graph()
    assert lazy == []


def test_the_checks_see_a_cycle_and_a_lazy_import(tmp_path):
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("def f():\n    from .db import get_manager\n")
    node = tree.body[0].body[0]
    mods = {"cardlink_lite.x": tmp_path / "x.py", "cardlink_lite.db": tmp_path / "db.py"}
    assert _targets("cardlink_lite.x", tmp_path / "x.py", node, mods) == ["cardlink_lite.db"]


def test_no_exec_in_the_package():
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                assert getattr(node.func, "id", None) not in ("exec", "eval"), path
