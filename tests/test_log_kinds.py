"""Every kind of log entry is named once, in `audit/core/kinds.py`.

Parties write kinds and the regulator's cross-matching reads them; a kind spelled as a
literal in two places can drift apart silently (a renamed kind the regulator no longer
finds would look like a clean log). So no module of ours but `audit/core/kinds.py` holds
a string literal equal to a kind (docstrings aside), and every kind written by a party
is one the module lists.
"""

from __future__ import annotations

import ast
from pathlib import Path

from audit.core import kinds
from audit.core.entries import KIND

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fedscore", "keys", "policies", "audit", "node", "consent", "coordinator")


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


def _kind_literals(source: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in kinds.ALL
        and id(node) not in docstrings
    ]


def test_no_kind_is_spelled_outside_the_kinds_module() -> None:
    spelled = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "v1" not in path.relative_to(ROOT).parts and path != ROOT / "audit/core/kinds.py"
        for line, value in _kind_literals(path.read_text(encoding="utf-8"))
    ]
    assert spelled == []


def test_the_finder_sees_a_literal_but_not_a_docstring() -> None:
    source = '"""Writes "query_issued" entries."""\nlog.append_now("query_issued", {})\n'
    assert _kind_literals(source) == [(2, "query_issued")]


def test_every_kind_is_a_well_formed_distinct_name() -> None:
    names = [value for name, value in vars(kinds).items() if name.isupper() and name != "ALL"]
    assert sorted(names) == sorted(kinds.ALL) and len(set(names)) == len(names)
    assert all(KIND.fullmatch(kind) for kind in kinds.ALL)
