"""The shape of the code outside tests/: no function or method longer than 80 lines, and no
file of the packages (src/, data_sim/, imageops/) longer than 450 lines.

A function that long does several jobs in one body; split it into named steps (a linear
entry point calling one function per step) so each can be read and tested alone. A file that
long holds several concerns; split it into modules with one job each, each saying its job in
its docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

MAX_LINES = 80
CHECKED = ("src", "data_sim", "imageops", "benchmarks", "scripts")
MAX_FILE_LINES = 450
PACKAGES = ("src", "data_sim", "imageops")


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


def long_files(root: Path, folders: tuple[str, ...], limit: int = MAX_FILE_LINES) -> list[str]:
    """``path: N lines`` for each Python file under ``folders`` of ``root`` longer than
    ``limit`` lines."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            lines = len(path.read_text().splitlines())
            if lines > limit:
                found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def test_no_file_of_the_packages_is_longer_than_450_lines():
    assert (ROOT / "src" / "pixperfect" / "training" / "train.py").is_file()  # the tree was read
    offenders = long_files(ROOT, PACKAGES)
    assert not offenders, (
        f"files longer than {MAX_FILE_LINES} lines (split them by concern, one job a file):\n"
        + "\n".join(offenders)
    )


def test_the_file_check_counts_lines_in_nested_folders(tmp_path):
    nested = tmp_path / "pkg" / "sub"
    nested.mkdir(parents=True)
    (nested / "long.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    (nested / "short.py").write_text("x = 1\n" * MAX_FILE_LINES)
    assert long_files(tmp_path, ("pkg",)) == [f"pkg/sub/long.py: {MAX_FILE_LINES + 1} lines"]


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
