"""The citizen's access history: every access to their grants, each entry proven, nobody else's.

Two citizens use the same live federation; Alice's history must list exactly her
accesses (and Bob's exactly his), every entry proven included in its party's signed
checkpoint; a tampered entry or an entry about another token is refused, naming where.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness.audit import (
    ALICE,
    BOB,
    PURPOSE,
    Live,
    fedscore_cli,
    live_federation,
    tamper,
)

from audit.client.history import HistoryEntry, accesses_of, citizen_history, verify_history
from fedscore.apps import client
from fedscore.errors import Code, FedscoreError
from fedscore.v1.audit_pb2 import GetAccessHistoryRequest, GetAccessHistoryResponse
from fedscore.v1.consent_pb2 import ConsentReceipt, GrantResponse


def _query_ids(live: Live, token_ids: set[str]) -> set[str]:
    """The coordinator's own record of which queries used these tokens."""
    log = live.log("coordinator")
    return {
        e.fields["query_id"]
        for e in log.entries(0, log.size())
        if e.kind == "query_issued" and e.fields["token_id"] in token_ids
    }


def _token_id(grant: GrantResponse) -> str:
    return str(ConsentReceipt.FromString(grant.receipt.payload).token_id)


async def _two_citizens(live: Live) -> tuple[list[GrantResponse], list[GrantResponse]]:
    """Alice: a PTT grant used twice then revoked (and refused), and a self-view used once.
    Bob: a PTT grant used once."""
    alice_ptt = await live.grant(ALICE)
    alice_self = await live.grant(ALICE, "self-view")
    bob_ptt = await live.grant(BOB)
    await live.score(alice_ptt)
    await live.score(bob_ptt)
    await live.score(alice_self, "self-view")
    await live.score(alice_ptt)
    await client.revoke(live.party("citizen-portal"), ALICE, _token_id(alice_ptt))
    with pytest.raises(FedscoreError):
        await live.score(alice_ptt)
    return [alice_ptt, alice_self], [bob_ptt]


@pytest.mark.integration
def test_history_shows_exactly_the_citizens_own_accesses(audit_federation: Path) -> None:
    root = audit_federation

    async def scenario() -> None:
        async with live_federation(root) as live:
            alice, bob = await _two_citizens(live)
            portal = live.party("citizen-portal")
            for own, other in ((alice, bob), (bob, alice)):
                mine = {_token_id(g) for g in own}
                history = await citizen_history(portal, [g.receipt for g in own])
                assert set(history.tokens) == mine
                assert {e.token_id for e in history.entries} == mine
                issued = {a.query_id for a in history.accesses if a.query_id}
                assert issued == _query_ids(live, mine)
                assert not issued & _query_ids(live, {_token_id(g) for g in other})
                assert {e.fields.get("token_id") for e in history.entries} - {None} <= mine
                for access in history.accesses:
                    if access.query_id:
                        assert access.outcome.startswith("released")
                        assert sorted(access.agencies) == ["chuangpao", "dsd", "trc"]
                assert set(history.checkpoints) == {
                    "consent-registry",
                    "coordinator",
                    "trc",
                    "dsd",
                    "chuangpao",
                }

            history = await citizen_history(portal, [g.receipt for g in alice])
            outcomes = sorted((a.purpose, a.relying_party, a.outcome) for a in history.accesses)
            assert outcomes == [
                (PURPOSE, "ptt", "refused: CONSENT_REVOKED"),
                (PURPOSE, "ptt", "released band: none"),
                (PURPOSE, "ptt", "released band: none"),
                ("self-view", "citizen-portal", "released score: 0"),
            ]
            kinds = {e.kind for e in history.entries if e.party == "consent-registry"}
            assert kinds == {"consent_granted", "consent_revoked", "revocation_push"}

    asyncio.run(scenario())


@pytest.mark.integration
def test_history_command_lists_the_accesses_of_the_receipts_given(audit_federation: Path) -> None:
    root = audit_federation

    async def scenario() -> None:
        async with live_federation(root) as live:
            alice, bob = await _two_citizens(live)
            wallet = root / "wallet"
            wallet.mkdir()
            receipts = []
            for grant in alice:
                path = wallet / f"{_token_id(grant)}.receipt"
                path.write_bytes(grant.receipt.SerializeToString())
                receipts += ["--receipt", str(path)]
            code, shown, stderr = await asyncio.to_thread(
                fedscore_cli, "audit", "history", "--workdir", str(root), *receipts, "--json"
            )
            assert code == 0, stderr
            mine = {_token_id(g) for g in alice}
            assert set(shown["tokens"]) == mine
            listed = {a["query_id"] for a in shown["accesses"] if a["query_id"]}
            assert listed == _query_ids(live, mine)
            assert shown["entries"] > len(listed)
            assert {e["kind"] for e in shown["consent_events"]} == {
                "consent_granted",
                "consent_revoked",
            }

            not_a_receipt = wallet / "x.receipt"
            not_a_receipt.write_bytes(bob[0].token.SerializeToString())
            code, _, stderr = await asyncio.to_thread(
                fedscore_cli,
                "audit",
                "history",
                "--workdir",
                str(root),
                "--receipt",
                str(not_a_receipt),
            )
            assert code == 2
            assert stderr.startswith("fedscore: error: WRONG_PAYLOAD_TYPE")

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_rewritten_entry_or_another_citizens_entry_is_refused(audit_federation: Path) -> None:
    root = audit_federation

    async def scenario() -> None:
        async with live_federation(root) as live:
            alice, bob = await _two_citizens(live)
            portal = live.party("citizen-portal")
            ask = GetAccessHistoryRequest(receipt=bob[0].receipt)
            bobs = await live.call(
                "citizen-portal", "coordinator", "GetAccessHistory", ask, GetAccessHistoryResponse
            )
            # Bob's proven entries are not about Alice's token: shown as hers, they are refused.
            with pytest.raises(FedscoreError) as refused:
                verify_history("coordinator", portal.trust, _token_id(alice[0]), bobs)
            assert refused.value.reason == "FOREIGN_ENTRY"

            # The coordinator's disk is edited: Alice's query now claims another relying party.
            target = next(
                e
                for e in live.log("coordinator").entries(0, live.log("coordinator").size())
                if e.kind == "query_issued" and e.fields["token_id"] == _token_id(alice[0])
            )
            tamper(
                live.db("coordinator"),
                (
                    "update audit_entry set body = replace(body, '\"ptt\"', '\"other\"') "
                    'where "index" = ?',
                    (target.index,),
                ),
            )
            with pytest.raises(FedscoreError) as refused:
                await citizen_history(portal, [alice[0].receipt])
            assert refused.value.code == Code.UNAUTHENTICATED
            assert refused.value.reason == "BAD_INCLUSION_PROOF"
            assert f"coordinator entry {target.index}" in refused.value.message

    asyncio.run(scenario())


def test_accesses_group_entries_by_query_whatever_order_they_arrive_in() -> None:
    def entry(party: str, index: int, kind: str, at: int, **fields: object) -> HistoryEntry:
        return HistoryEntry(party, index, kind, at, "t", fields)

    entries = [
        # A node's answer logged in the same second as, and sorting before, the query.
        entry("chuangpao", 0, "query_answered", 100, query_id="q", token_id="t"),
        entry(
            "coordinator", 0, "query_issued", 100, query_id="q", relying_party="ptt", purpose="p"
        ),
        entry("coordinator", 1, "query_failed", 101, query_id="q", reason="NODE_UNAVAILABLE"),
        entry("coordinator", 2, "score_refused", 102, reason="USE_LIMIT_REACHED", purpose="p"),
    ]
    accesses = accesses_of(entries)
    assert [(a.query_id, a.outcome, a.agencies) for a in accesses] == [
        ("q", "failed: NODE_UNAVAILABLE", ["chuangpao"]),
        ("", "refused: USE_LIMIT_REACHED", []),
    ]
