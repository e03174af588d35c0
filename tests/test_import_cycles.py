"""No import cycles in ``src/pixperfect`` or ``data_sim``: between modules, and between the
packages that show the layers (``pixperfect.data``, ``pixperfect.shards``, ...). Imports
inside functions and under ``TYPE_CHECKING`` count too: an import deferred into a function
hides a cycle, it does not remove it."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = {"pixperfect": ROOT / "src" / "pixperfect", "data_sim": ROOT / "data_sim"}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load (``from a import b``: ``a.b``, which is
    a module or else a name in ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            anchor = anchor.rpartition(".")[0]
        base = f"{anchor}.{base}" if base else anchor
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = _imported(node, module, path.name == "__init__.py")
            targets.update(t for n in names if (t := known(n)))
        targets.discard(module)
        graph[module] = targets
    return graph


def layer(module: str) -> str:
    """``pixperfect.shards.reader`` -> ``pixperfect.shards``; ``pixperfect.config`` stays."""
    return ".".join(module.split(".")[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_another_in_a_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "pixperfect.training.train" in graph  # the tree was read
    assert cycles(graph) == []


def test_no_package_imports_another_in_a_cycle():
    layers: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        layers.setdefault(layer(module), set()).update(
            layer(t) for t in targets if layer(t) != layer(module)
        )
    assert cycles(layers) == []


def test_the_cycle_finder_sees_an_import_inside_a_function():
    a = ast.parse("def f():\n    from pixperfect.b import x\n")
    names = [n for node in ast.walk(a) for n in _imported(node, "pixperfect.a", False)]
    assert "pixperfect.b.x" in names
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
