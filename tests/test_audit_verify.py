"""`fedscore audit verify`, run as its own process against a live federation.

The attacker here has disk access: it rewrites, deletes, reorders or truncates rows of
a party's SQLite file directly, or forks a party's history and wipes its memory of what
it signed. Every case must be reported naming the party and the entry index, and the
command must exit non-zero. Cross-matching is also tested on its own, as a pure function.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from harness.audit import (
    BOB,
    Live,
    audit_verify,
    live_federation,
    tamper,
)

from audit.client.crossmatch import cross_match
from audit.client.crossmatch_entries import Anomaly, VerifiedLogs
from audit.core import merkle
from audit.core.entries import LogEntry, canonical_json, leaf_data
from fedscore.errors import FedscoreError
from fedscore.runtime.party import load_party
from node import server as node_server
from policies.defaults import default_policy_document
from policies.loader import parse_policy


def _found(report: dict[str, Any]) -> set[tuple[str, int | None, str]]:
    return {(a["party"], a["index"], a["reason"]) for a in report["anomalies"]}


async def _busy_federation(live: Live) -> None:
    """Three answered queries: every node logs entries 0-2, the coordinator 0-5."""
    grant = await live.grant()
    for _ in range(3):
        await live.score(grant)


async def _clean_first(live: Live) -> dict[str, Any]:
    code, report, stderr = await audit_verify(live.root)
    assert code == 0, stderr
    assert report["consistent"] is True and report["anomalies"] == []
    return report


@pytest.mark.integration
def test_a_clean_federation_verifies_and_the_regulator_remembers_it(audit_federation: Path) -> None:
    root = audit_federation

    async def scenario() -> None:
        async with live_federation(root) as live:
            await _busy_federation(live)
            first = await _clean_first(live)
            assert first["parties"] == 6  # the helper aggregator's log is audited too
            sizes = {party: log["size"] for party, log in first["logs"].items()}
            assert sizes["coordinator"] == 6
            assert all(sizes[a] == 3 for a in ("trc", "dsd", "chuangpao"))
            assert first["entries"] == sum(sizes.values())
            assert (root / "orgs" / "regulator" / "state.db").exists()

            # More happens; the next run proves the logs only grew.
            await live.score(await live.grant(BOB))
            second = await _clean_first(live)
            assert second["logs"]["coordinator"]["size"] == 8
            assert second["entries"] > first["entries"]

    asyncio.run(scenario())


SWAP_0_AND_2 = (
    'update audit_entry set "index" = -1 where "index" = 0',
    'update audit_entry set "index" = 0 where "index" = 2',
    'update audit_entry set "index" = 2 where "index" = -1',
)
TAMPERING = {
    "rewrite": (
        "trc",
        (
            "update audit_entry set body = replace(body, 'ptt-fuel-discount', 'self-view') "
            'where "index" = 1',
        ),
        {("trc", 1, "ENTRY_REWRITTEN")},
    ),
    "delete": (
        "coordinator",
        ('delete from audit_entry where "index" = 2',),
        {("coordinator", 2, "ENTRY_MISSING")},
    ),
    "reorder": (
        "dsd",
        SWAP_0_AND_2,
        {("dsd", 0, "ENTRY_REWRITTEN"), ("dsd", 2, "ENTRY_REWRITTEN")},
    ),
    "truncate": (
        "chuangpao",
        ('delete from audit_entry where "index" >= 1',),
        {("chuangpao", 1, "LOG_TRUNCATED")},
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_with_a_log_file_is_reported_with_party_and_index(
    audit_federation: Path, case: str
) -> None:
    party, statements, expected = TAMPERING[case]
    root = audit_federation

    async def scenario() -> None:
        async with live_federation(root) as live:
            await _busy_federation(live)
            await _clean_first(live)
            tamper(live.db(party), *statements)
            code, report, stderr = await audit_verify(root)
            assert code == 2
            assert "AUDIT_FAILED" in stderr
            assert report["consistent"] is False
            assert expected <= _found(report), report["anomalies"]
            assert report["logs"][party]["consistent"] is False
            # Every other party's log still verifies.
            assert all(log["consistent"] for p, log in report["logs"].items() if p != party)
            # The regulator did not accept the damage: the next run reports it again.
            code, again, _ = await audit_verify(root)
            assert code == 2 and expected <= _found(again)

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_checkpoint_inconsistent_with_one_the_regulator_saw_is_reported(
    audit_federation: Path,
) -> None:
    """A party rewrites its history, fixes the leaf hash and forgets what it signed."""
    root = audit_federation

    async def scenario() -> None:
        async with live_federation(root) as live:
            await _busy_federation(live)
            seen = await _clean_first(live)
            await live.nodes["trc"].stop()
            entry = live.log("trc").entries(1, 2)[0]
            body = entry.body.replace("ptt-fuel-discount", "self-view")
            leaf = merkle.leaf_hash(leaf_data("trc", 1, entry.kind, body, entry.logged_at))
            tamper(
                live.db("trc"),
                (
                    'update audit_entry set body = ?, leaf_hash = ? where "index" = 1',
                    (body, leaf.hex()),
                ),
                "delete from audit_checkpoint",
            )
            live.nodes["trc"] = await node_server.start(load_party(root, "trc"))
            forked = await live.checkpoint("trc")  # the party signs its new history
            assert forked.size == seen["logs"]["trc"]["size"]
            assert forked.root.hex() != seen["logs"]["trc"]["root"]

            code, report, _ = await audit_verify(root)
            assert code == 2
            found = _found(report)
            assert ("trc", 1, "CHECKPOINT_INCONSISTENT") in found
            assert ("trc", 1, "ENTRY_REWRITTEN") in found
            # A different history, not a prefix of the verified one (tests/test_audit_restored.py).
            assert "LOG_BEHIND_VERIFIED_CHECKPOINT" not in {reason for _, _, reason in found}

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_node_answer_the_coordinator_never_logged_is_reported(audit_federation: Path) -> None:
    """The coordinator's key signs queries that skip its log: nodes answer, the regulator sees."""
    root = audit_federation

    async def scenario() -> None:
        async with live_federation(root) as live:
            grant = await live.grant()
            await live.score(grant)
            await _clean_first(live)
            await live.contribute_as_coordinator("trc", live.unlogged_query(grant.token, "trc"))
            answered = live.log("trc").size() - 1
            subset = live.unlogged_query(grant.token, "dsd", participants=["dsd", "trc"])
            with pytest.raises(FedscoreError):
                await live.contribute_as_coordinator("dsd", subset)
            refused = live.log("dsd").size() - 1

            code, report, _ = await audit_verify(root)
            assert code == 2
            assert report["consistent"] is True  # every log is intact; the parties disagree
            assert _found(report) == {
                ("trc", answered, "ANSWER_WITHOUT_QUERY"),
                ("trc", answered, "PROMISE_NOT_INCLUDED"),
                ("dsd", refused, "QUERY_NOT_LOGGED"),
            }

    asyncio.run(scenario())


# --- cross-matching as a pure function ----------------------------------------------------

POLICY = parse_policy(default_policy_document(3))
TOKEN = "ab" * 16
QUERY_HASH = "cd" * 32


def _log(party: str, *events: tuple[str, dict[str, Any], int]) -> list[LogEntry]:
    entries = []
    for index, (kind, fields, at) in enumerate(events):
        body = canonical_json(fields)
        leaf = merkle.leaf_hash(leaf_data(party, index, kind, body, at))
        entries.append(LogEntry(index, kind, body, leaf, at))
    return entries


def _issued(query_id: str = "q1", **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "query_id": query_id,
        "query_hash": QUERY_HASH,
        "token_id": TOKEN,
        "purpose": "ptt-fuel-discount",
        "relying_party": "ptt",
        "participants": ["trc", "dsd", "chuangpao"],
        "year": 2025,
    }
    return {**fields, **changes}


GRANTED = (
    "consent_granted",
    {
        "token_id": TOKEN,
        "purpose": "ptt-fuel-discount",
        "relying_party": "ptt",
        "not_before": 1000,
        "not_after": 9000,
    },
    1000,
)


def _match(
    coordinator: list[LogEntry], registry: list[LogEntry]
) -> set[tuple[str, int | None, str]]:
    logs = VerifiedLogs(
        coordinators={"coordinator": coordinator},
        registries={"consent-registry": registry},
        leaves={"coordinator": [e.leaf_hash for e in coordinator]},
    )
    return {(a.party, a.index, a.reason) for a in cross_match(logs, POLICY)}


def test_consistent_logs_cross_match_without_anomalies() -> None:
    coordinator = _log("coordinator", ("query_issued", _issued(), 2000))
    answer = {
        "query_id": "q1",
        "query_hash": QUERY_HASH,
        "purpose": "ptt-fuel-discount",
        "token_id": TOKEN,
        "coordinator": "coordinator",
        "promise_index": 0,
        "promise_leaf_hash": coordinator[0].leaf_hash.hex(),
    }
    logs = VerifiedLogs(
        coordinators={"coordinator": coordinator},
        agencies={"trc": _log("trc", ("query_answered", answer, 2001))},
        registries={"consent-registry": _log("consent-registry", GRANTED)},
        leaves={"coordinator": [e.leaf_hash for e in coordinator]},
    )
    assert cross_match(logs, POLICY) == []
    # The same answer, promised a leaf that is not the query's, is caught.
    answer["promise_leaf_hash"] = "00" * 32
    logs.agencies["trc"] = _log("trc", ("query_answered", answer, 2001))
    assert [a.reason for a in cross_match(logs, POLICY)] == ["PROMISE_NOT_INCLUDED"]


@pytest.mark.parametrize(
    ("coordinator_events", "registry_events", "expected"),
    [
        pytest.param(
            [("query_issued", _issued(participants=["trc", "dsd"]), 2000)],
            [GRANTED],
            {("coordinator", 0, "PARTICIPANT_SUBSET")},
            id="subset of the purpose's participants",
        ),
        pytest.param(
            [("query_issued", _issued(participants=["trc", "dsd", "chuangpao", "trc"]), 2000)],
            [GRANTED],
            {("coordinator", 0, "PARTICIPANT_SET_MISMATCH")},
            id="a participant asked twice",
        ),
        pytest.param(
            [("query_issued", _issued(), 2000)],
            [],
            {("coordinator", 0, "QUERY_WITHOUT_GRANT")},
            id="no grant",
        ),
        pytest.param(
            [("query_issued", _issued(relying_party="someone-else"), 2000)],
            [GRANTED],
            {("coordinator", 0, "GRANT_MISMATCH")},
            id="grant for another relying party",
        ),
        pytest.param(
            [("query_issued", _issued(), 9500)],
            [GRANTED],
            {("coordinator", 0, "GRANT_NOT_ACTIVE")},
            id="after the grant expired",
        ),
        pytest.param(
            [
                ("revocation_received", {"token_id": TOKEN, "status_index": 1}, 3000),
                ("query_issued", _issued(), 3000),
            ],
            [GRANTED, ("consent_revoked", {"token_id": TOKEN, "revoked_at": 3000}, 3000)],
            {("coordinator", 1, "QUERY_AFTER_REVOCATION")},
            id="after the coordinator heard of the revocation",
        ),
        pytest.param(
            [("query_issued", _issued(), 5000)],
            [GRANTED, ("consent_revoked", {"token_id": TOKEN, "revoked_at": 3000}, 3000)],
            {("coordinator", 0, "QUERY_AFTER_REVOCATION")},
            id="long after the revocation",
        ),
        pytest.param(
            [("result_released", {"query_id": "q9", "released": "band", "value": "3%"}, 2000)],
            [GRANTED],
            {("coordinator", 0, "OUTCOME_WITHOUT_QUERY")},
            id="release without a query",
        ),
        pytest.param(
            [],
            [("consent_revoked", {"token_id": TOKEN, "revoked_at": 3000}, 3000)],
            {("consent-registry", 0, "REVOCATION_WITHOUT_GRANT")},
            id="revocation without a grant",
        ),
    ],
)
def test_cross_matching_finds_what_one_log_cannot_show(
    coordinator_events: list[tuple[str, dict[str, Any], int]],
    registry_events: list[tuple[str, dict[str, Any], int]],
    expected: set[tuple[str, int | None, str]],
) -> None:
    coordinator = _log("coordinator", *coordinator_events)
    registry = _log("consent-registry", *registry_events)
    assert _match(coordinator, registry) == expected


def test_checks_needing_an_unverified_log_are_skipped_not_guessed() -> None:
    answer = {"query_id": "q1", "query_hash": QUERY_HASH, "token_id": TOKEN}
    logs = VerifiedLogs(
        agencies={"trc": _log("trc", ("query_answered", answer, 2001))},
        unverified={"coordinator": "coordinator"},
    )
    assert cross_match(logs, POLICY) == []
    logs.unverified = {}
    logs.coordinators = {"coordinator": []}
    assert {a.reason for a in cross_match(logs, POLICY)} == {
        "ANSWER_WITHOUT_QUERY",
        "PROMISE_MISSING",
    }
    assert Anomaly("trc", 0, "X", "y").to_json() == {
        "party": "trc",
        "index": 0,
        "reason": "X",
        "detail": "y",
    }
