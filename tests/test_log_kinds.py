"""Every kind of log entry is named once, in `audit/core/kinds.py`.

Parties write kinds and the regulator's cross-matching reads them; a kind spelled as a
literal in two places can drift apart silently (a renamed kind the regulator no longer
finds would look like a clean log). So no module of ours but `audit/core/kinds.py` holds
a string literal equal to a kind (docstrings aside), and every kind written by a party
is one the module lists.
"""

from __future__ import annotations

from harness.literals import ROOT, literals, our_modules

from audit.core import kinds
from audit.core.entries import KIND


def test_no_kind_is_spelled_outside_the_kinds_module() -> None:
    spelled = [
        f"{path.relative_to(ROOT)}:{literal.line}: {literal.value!r}"
        for path in our_modules()
        if path != ROOT / "audit/core/kinds.py"
        for literal in literals(path.read_text(encoding="utf-8"), kinds.ALL)
    ]
    assert spelled == []


def test_the_finder_sees_a_literal_but_not_a_docstring() -> None:
    source = '"""Writes "query_issued" entries."""\nlog.append_now("query_issued", {})\n'
    assert [(f.line, f.value) for f in literals(source, kinds.ALL)] == [(2, "query_issued")]


def test_every_kind_is_a_well_formed_distinct_name() -> None:
    names = [value for name, value in vars(kinds).items() if name.isupper() and name != "ALL"]
    assert sorted(names) == sorted(kinds.ALL) and len(set(names)) == len(names)
    assert all(KIND.fullmatch(kind) for kind in kinds.ALL)
