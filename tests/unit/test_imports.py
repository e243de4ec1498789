"""The core's modules import one another without a cycle.

A cycle works only while every module of it is first imported from the right end, which the
tests' import order may happen to give and a Lambda's handler not: one made the assemble
function fail to import on Python 3.12 while every in-process test passed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import m5flow

CORE = Path(m5flow.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The m5flow modules `path` imports when it runs (imports under `if TYPE_CHECKING:`,
    which never run, left out)."""
    tree = ast.parse(path.read_text())
    checking_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in checking_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("m5flow")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("m5flow"):
            assert node.module is not None
            # `from m5flow import schema` imports the module m5flow.schema
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    return {name: _imports(path) & modules.keys() - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph`, as the modules along it, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            found = visit(imported, [*path, name])
            if found:
                return found
        done.add(name)
        return None

    for name in sorted(graph):
        found = visit(name, [])
        if found:
            return found
    return None


def test_the_core_has_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 20 and "m5flow.schema" in graph["m5flow.features"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_a_cycle_would_be_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
