"""Every field of a log body that code reads back is named once, in `audit/core/fields.py`.

Parties write the fields and the regulator's cross-matching, the citizen's history and
the servicer's access-history filter read them; a field spelled as a literal on both
sides can drift apart silently (a renamed field the regulator no longer finds would look
like a clean log). So no module of ours but `audit/core/fields.py` holds a string
literal equal to such a field (docstrings aside), except where the same word names
something that is not a log field: those places are listed in `NOT_LOG_FIELDS`, each
with why, as narrowly as the module allows (a class or function where the module also
writes or reads log bodies, the whole module where it never does). An exemption that
no longer covers any literal fails too, so the list cannot go stale.
"""

from __future__ import annotations

import ast

from harness.literals import MODULE_LEVEL, ROOT, Literal, literals, our_modules

from audit.core import fields

WHOLE_MODULE = "*"
_ROLE = "a role name (whether that role's logs verified), not the promise's coordinator"
_PARTY_ID = "the coordinator's participant id in a federation"
_CLI_JSON = "the CLI's JSON output, whose keys are its own"
_POLICY = "keys of the policy document"

# Module -> {where (a class or function's qualified name, which covers what it encloses;
# MODULE_LEVEL; or WHOLE_MODULE): why its literals there are not log fields}.
NOT_LOG_FIELDS: dict[str, dict[str, str]] = {
    "audit/client/crossmatch.py": {"cross_match": _ROLE},
    "audit/client/crossmatch_statistics.py": {"statistics_checks": _ROLE},
    "audit/client/crossmatch_helper.py": {"helper_checks": _ROLE},
    "audit/client/crossmatch_entries.py": {
        "Anomaly.to_json": "an anomaly's JSON (its own reason code)",
        "VerifiedLogs.verified": _ROLE,
    },
    "audit/client/history.py": {
        "HistoryEntry.to_json": "the citizen's history as JSON",
        "Access.to_json": "the citizen's history as JSON",
    },
    "audit/client/verifier.py": {MODULE_LEVEL: _ROLE, "audit_federation": _ROLE},
    "coordinator/bundle.py": {WHOLE_MODULE: "the release CSV's columns and document's keys"},
    "coordinator/chart.py": {WHOLE_MODULE: "the release document's keys; a chart legend"},
    "coordinator/statistics.py": {
        "PublishedRelease.summary": "the publish summary the CLI prints",
    },
    "coordinator/release_document.py": {
        WHOLE_MODULE: "the release document (fedscore.release.v1) and its budget block"
    },
    "coordinator/store.py": {
        MODULE_LEVEL: "an issued query's outcome in the query table",
        "QueryIssue.row": "columns of the coordinator_query table",
        "CoordinatorStore.spend": "columns of the coordinator_nonce table",
    },
    "node/claims.py": {WHOLE_MODULE: "columns of the node's claim tables"},
    "fedscore/apps/cli/commands.py": {WHOLE_MODULE: _CLI_JSON},
    "fedscore/apps/cli/consent_commands.py": {WHOLE_MODULE: _CLI_JSON},
    "fedscore/apps/cli/main.py": {WHOLE_MODULE: "command-line argument names"},
    "fedscore/apps/cli/stats_commands.py": {
        WHOLE_MODULE: f"{_PARTY_ID}; the release document; {_CLI_JSON}"
    },
    "fedscore/apps/client.py": {WHOLE_MODULE: f"{_PARTY_ID}; a protobuf oneof"},
    "fedscore/apps/demo.py": {WHOLE_MODULE: f"reading {_CLI_JSON}"},
    "fedscore/apps/federation.py": {WHOLE_MODULE: _PARTY_ID},
    "fedscore/apps/demo_live.py": {WHOLE_MODULE: f"{_POLICY}; {_PARTY_ID}"},
    "fedscore/apps/insider.py": {"HostileCoordinator.open": _PARTY_ID},
    "fedscore/protocol/signed.py": {"SignedScoreResult.verify": "a protobuf oneof"},
    "fedscore/runtime/party_config.py": {WHOLE_MODULE: "role names in a party's config file"},
    "fedscore/runtime/schema.py": {WHOLE_MODULE: "names of the kinds of party's migrations"},
    "fedscore/runtime/metrics.py": {WHOLE_MODULE: "Prometheus label names"},
    "fedscore/apps/party_metrics.py": {WHOLE_MODULE: "kinds of party; Prometheus label names"},
    "fedscore/apps/readiness_checks.py": {WHOLE_MODULE: "kinds of party"},
    **{
        f"fedscore/runtime/migrations/{kind}/0001_initial.py": {WHOLE_MODULE: "column names"}
        for kind in ("agency", "consent-registry", "coordinator", "helper")
    },
    "fedscore/runtime/budget.py": {WHOLE_MODULE: "columns of the privacy ledger"},
    "fedscore/runtime/db.py": {WHOLE_MODULE: "columns of the token-use table"},
    "keys/keyring.py": {WHOLE_MODULE: "an attribute name (a keyring's purpose)"},
    "keys/shares.py": {"Aggregator": "the name of who receives a share"},
    "policies/defaults.py": {WHOLE_MODULE: _POLICY},
    "policies/loader.py": {WHOLE_MODULE: _POLICY},
    "policies/releases.py": {WHOLE_MODULE: "a statistics bin's dimension"},
    "policies/statistics.py": {WHOLE_MODULE: _POLICY},
}
# Modules that read log bodies back: between them they read every field listed.
READERS = (
    "audit/client/crossmatch.py",
    "audit/client/crossmatch_entries.py",
    "audit/client/crossmatch_helper.py",
    "audit/client/crossmatch_identity.py",
    "audit/client/crossmatch_statistics.py",
    "audit/client/history.py",
    "audit/servicer.py",
)


def _covers(where: str, literal: Literal) -> bool:
    return where in (WHOLE_MODULE, literal.scope) or literal.scope.startswith(where + ".")


def _field_literals() -> dict[str, list[Literal]]:
    """Module -> the field literals it holds (the fields module itself aside)."""
    found = {
        str(path.relative_to(ROOT)): literals(path.read_text(encoding="utf-8"), fields.ALL)
        for path in our_modules()
        if path != ROOT / "audit/core/fields.py"
    }
    return {module: spelled for module, spelled in found.items() if spelled}


def _unexempted(found: dict[str, list[Literal]]) -> list[str]:
    return [
        f"{module}:{literal.line} ({literal.scope}): {literal.value!r}"
        for module, spelled in sorted(found.items())
        for literal in spelled
        if not any(_covers(where, literal) for where in NOT_LOG_FIELDS.get(module, {}))
    ]


def test_no_log_field_is_spelled_outside_the_fields_module() -> None:
    assert _unexempted(_field_literals()) == []


def test_every_exemption_still_covers_a_literal() -> None:
    found = _field_literals()
    stale = [
        f"{module}: {where}"
        for module, places in sorted(NOT_LOG_FIELDS.items())
        for where in places
        if not any(_covers(where, literal) for literal in found.get(module, []))
    ]
    assert stale == []


def test_a_reintroduced_literal_is_named() -> None:
    source = (
        '"""Logs "query_id"."""\n'
        "class Row:\n"
        "    def row(self):\n"
        '        return {"query_id": 1}\n'
        "def log_fields(q):\n"
        '    return {"query_id": q, "kind": "score"}\n'
    )
    found = {"coordinator/store.py": literals(source, fields.ALL)}
    assert [(f.line, f.scope) for f in found["coordinator/store.py"]] == [
        (4, "Row.row"),
        (6, "log_fields"),
    ]
    assert _unexempted(found) == [
        "coordinator/store.py:4 (Row.row): 'query_id'",
        "coordinator/store.py:6 (log_fields): 'query_id'",
    ]


def test_every_field_is_a_distinct_name_that_a_reader_reads() -> None:
    names = [value for name, value in vars(fields).items() if name.isupper() and name != "ALL"]
    assert sorted(names) == sorted(fields.ALL) and len(set(names)) == len(names)
    imported = {
        alias.name
        for module in READERS
        for node in ast.walk(ast.parse((ROOT / module).read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module == "audit.core.fields"
        for alias in node.names
    }
    assert {getattr(fields, name) for name in imported} == fields.ALL
