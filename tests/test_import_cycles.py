"""No import cycles in ``src/pixperfect``, ``data_sim`` or ``imageops``: between modules, and
between the packages that show the layers (``pixperfect.data``, ``pixperfect.shards``, ...).
Imports inside functions and under ``TYPE_CHECKING`` count too: an import deferred into a
function hides a cycle, it does not remove it.

And the layers' direction: ``imageops`` (the image operations both share) sits below the
simulator (``data_sim``) and the refiner (``pixperfect``) and imports neither; the refiner
(``pixperfect.inference`` and all it imports) imports nothing from the simulator."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGES = {
    "pixperfect": ROOT / "src" / "pixperfect",
    "data_sim": ROOT / "data_sim",
    "imageops": ROOT / "imageops",
}


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


def import_chains(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module that ``start`` (a module, or a package and all its modules) imports,
    directly or through others, each with one chain of imports that leads to it."""
    chains = {m: [m] for m in graph if m == start or m.startswith(f"{start}.")}
    todo = list(chains)
    while todo:
        module = todo.pop()
        for target in sorted(graph.get(module, ())):
            if target not in chains:
                chains[target] = [*chains[module], target]
                todo.append(target)
    return chains


def imports_from(graph: dict[str, set[str]], start: str, package: str) -> list[str]:
    """The import chains by which ``start`` reaches a module of ``package``, as text."""
    return [
        " -> ".join(chain)
        for module, chain in sorted(import_chains(graph, start).items())
        if module.split(".")[0] == package
    ]


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


def test_the_refiner_imports_nothing_from_the_simulator():
    """The shipped refiner (pixperfect.inference: the models, the export loader) must not need
    the artifact simulator: what both use lives in imageops."""
    graph = import_graph()
    assert "pixperfect.inference.refiner" in graph and "data_sim.simulator" in graph
    chains = imports_from(graph, "pixperfect.inference", "data_sim")
    assert not chains, "pixperfect.inference imports data_sim:\n" + "\n".join(chains[:10])


def test_importing_the_refiner_loads_no_simulator_module():
    """The same, as Python sees it: a fresh interpreter that imports pixperfect.inference has
    loaded no data_sim module (an import made by name at run time included)."""
    code = (
        "import sys, pixperfect.inference; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'data_sim'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_shared_image_operations_import_neither_the_simulator_nor_pixperfect():
    graph = import_graph()
    assert "imageops.morphology" in graph
    for package in ("data_sim", "pixperfect"):
        chains = imports_from(graph, "imageops", package)
        assert not chains, f"imageops imports {package}:\n" + "\n".join(chains[:10])


def test_the_layer_check_follows_imports_through_other_modules():
    graph = {"top.a": {"mid.b"}, "mid.b": {"low.c"}, "low.c": set(), "top.d": set()}
    assert imports_from(graph, "top", "low") == ["top.a -> mid.b -> low.c"]
    assert imports_from(graph, "top.d", "low") == []


def test_the_cycle_finder_sees_an_import_inside_a_function():
    a = ast.parse("def f():\n    from pixperfect.b import x\n")
    names = [n for node in ast.walk(a) for n in _imported(node, "pixperfect.a", False)]
    assert "pixperfect.b.x" in names
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
