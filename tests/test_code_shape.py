"""The shape of the code outside tests/: no function or method longer than 80 lines.

A function that long does several jobs in one body; split it into named steps (a linear
entry point calling one function per step) so each can be read and tested alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

MAX_LINES = 80
CHECKED = ("src", "data_sim", "benchmarks", "scripts")


def long_functions(path: Path, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """(qualified name, lines) of each function or method in ``path`` longer than ``limit``
    lines, counted from its ``def`` line to its last line (decorators not included)."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = child.end_lineno - child.lineno + 1
                    if lines > limit:
                        found.append((name, lines))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return found


def test_no_function_outside_tests_is_longer_than_80_lines():
    offenders = [
        f"{path.relative_to(ROOT)}: {name} is {lines} lines"
        for folder in CHECKED
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name, lines in long_functions(path)
    ]
    assert not offenders, (
        f"functions longer than {MAX_LINES} lines (split them into named steps):\n"
        + "\n".join(offenders)
    )


def _function(name: str, lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}(self=None):\n{body}"


def test_the_check_counts_methods_and_nested_functions(tmp_path):
    source = tmp_path / "shape.py"
    source.write_text(
        _function("short", MAX_LINES)
        + _function("long", MAX_LINES + 1)
        + "class C:\n"
        + _function("method", MAX_LINES + 1, "    ")
        + "def outer():\n"
        + _function("inner", MAX_LINES + 1, "    ")
    )
    found = dict(long_functions(source))
    assert found == {
        "long": MAX_LINES + 1,
        "C.method": MAX_LINES + 1,
        "outer": MAX_LINES + 2,
        "outer.inner": MAX_LINES + 1,
    }
