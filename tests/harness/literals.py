"""Where our modules spell a name as a string literal (docstrings aside).

`tests/test_log_kinds.py` and `tests/test_log_fields.py` ask the same question of
different names: a log kind or a log body field spelled as a literal in two places can
drift apart silently, so each must be spelled only in the module that names it.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("fedscore", "keys", "policies", "audit", "node", "consent", "coordinator")
MODULE_LEVEL = "<module>"


@dataclass(frozen=True)
class Literal:
    """A string literal: its line, the qualified name of the class or function holding it
    (`MODULE_LEVEL` outside any), and its value."""

    line: int
    scope: str
    value: str


def our_modules() -> Iterator[Path]:
    """Every module of ours, generated wire code aside."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "v1" not in path.relative_to(ROOT).parts:
                yield path


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [
        tree,
        *(
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ),
    ]
    found = set()
    for node in nodes:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            found.add(id(body[0].value))
    return found


def literals(source: str, names: Collection[str]) -> list[Literal]:
    """Every string literal of `source` equal to one of `names`, docstrings aside."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found: list[Literal] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name if scope == MODULE_LEVEL else f"{scope}.{child.name}"
            elif (
                isinstance(child, ast.Constant)
                and isinstance(child.value, str)
                and child.value in names
                and id(child) not in docstrings
            ):
                found.append(Literal(child.lineno, scope, child.value))
            visit(child, inner)

    visit(tree, MODULE_LEVEL)
    return sorted(found, key=lambda literal: literal.line)
