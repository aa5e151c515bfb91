"""The package's structure, read from its source (no server, no import of the code under test):
health.py reads only the snapshot the components publish, the modules import each other without
a cycle (that `station-bridge validate` loads an instance without rewriting the process
environment is test_stages.py's)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "station_bridge"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING")


def _top_level(body: list[ast.stmt]):
    """Module-level statements, those under a top-level if/try too (not `if TYPE_CHECKING:`)."""
    for node in body:
        if isinstance(node, ast.If) and not _type_checking(node):
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body + node.orelse + node.finalbody
                                  + [s for h in node.handlers for s in h.body])
        else:
            yield node


def _imports(name: str, path: Path, nodes) -> set[str]:
    """The package's modules that these import statements of module `name` load."""
    known = _modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        # A module's own packages are initialised before it (`from . import records` loads the module).
        found.update(t for t in targets if t in known and t != name and not name.startswith(f"{t}."))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path, _top_level(ast.parse(path.read_text()).body))
            for name, path in _modules().items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_the_packages_imports():
    graph = _graph()
    assert {"station_bridge.wiring", "station_bridge.loop", "station_bridge.stop"} <= graph["station_bridge.app"]
    assert "station_bridge.journal.segments" in graph["station_bridge.journal"]  # from .segments import
    assert "station_bridge.journal.records" in graph["station_bridge.journal"]  # from . import records
    assert graph["station_bridge.journal.segments"] >= {"station_bridge.lineproto"}  # from ..lineproto import
    assert "station_bridge.app" not in graph["station_bridge.cli"]  # cmd_run's late import


def test_health_imports_no_module_of_the_package():
    """health.evaluate reads the snapshot the components publish (selfreport.py builds it): health.py
    imports nothing of the package, anywhere in the file (no cycle through a late import either)."""
    path = PACKAGE / "health.py"
    nodes = list(ast.walk(ast.parse(path.read_text())))
    relative = [ast.unparse(n) for n in nodes if isinstance(n, ast.ImportFrom) and n.level]
    named = [ast.unparse(n) for n in nodes if isinstance(n, ast.Import | ast.ImportFrom)
             and any(a == "station_bridge" or a.startswith("station_bridge.")
                     for a in ([n.module or ""] if isinstance(n, ast.ImportFrom) else [a.name for a in n.names]))]
    assert relative + named == []


def test_the_package_has_no_import_cycle():
    """Module-level imports only (a function's late import is the way out of a cycle)."""
    assert _cycles(_graph()) == []
