"""The whole score path with real servers on 127.0.0.1 and mutual TLS.

A local federation of three agencies is made with `init_federation`; each agency's own
export file is ingested into its node; the consent registry, every node and the
coordinator run in-process as real gRPC servers (tests/harness/coordinator.py, shared
with tests/test_coordinator_batch.py). The citizen portal grants consent
through the registry, and relying parties ask the coordinator.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from harness.coordinator import (
    AGENCIES,
    CITIZEN,
    EXPECTED_TOTAL,
    OTHER_CITIZEN,
    Federation,
    entries,
    of_kind,
    running,
)

from fedscore.apps import client
from fedscore.errors import Code, FedscoreError
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary
from fedscore.v1.consent_pb2 import RevocationNotice
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    PushRevocationRequest,
    PushRevocationResponse,
    ScoreQuery,
    ScoreRequest,
    ScoreResponse,
)
from keys.envelope import sign_bytes, sign_message
from keys.signing import SigningKey
from node import server as node_server

pytestmark = pytest.mark.integration

SCORE = "/fedscore.v1.CoordinatorService/Score"
PUSH = "/fedscore.v1.CoordinatorService/PushRevocation"
TIMEOUT = 10.0


async def _send(party: Party, query: Envelope) -> ScoreResponse:
    async with client.channel_to(party, "coordinator") as channel:
        return await call_unary(channel, SCORE, ScoreRequest(query=query), ScoreResponse, TIMEOUT)


async def _refusal(party: Party, query: Envelope) -> FedscoreError:
    with pytest.raises(FedscoreError) as caught:
        await _send(party, query)
    return caught.value


def test_ptt_gets_the_band_and_the_citizen_the_full_score(coordinator_federation: Path) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            ptt_grant = await client.grant(fed.portal, CITIZEN, "ptt-fuel-discount", "ptt", 30)
            outcome = await client.score(fed.ptt, ptt_grant.token, "ptt-fuel-discount")
            assert (outcome.release_kind, outcome.release_value) == ("band", "3%")
            result = outcome.result
            assert result.relying_party == "ptt"
            assert result.year == datetime.now(ZoneInfo("Asia/Bangkok")).year
            assert result.policy_hash == fed.portal.policy.content_hash

            own_grant = await client.grant(fed.portal, CITIZEN, "self-view", "citizen-portal", 7)
            own = await client.score(fed.portal, own_grant.token, "self-view")
            assert (own.release_kind, own.release_value) == ("score", EXPECTED_TOTAL)

            # Another citizen's self-view: 300 body pledge + 3 x 30 skill standards.
            other_grant = await client.grant(
                fed.portal, OTHER_CITIZEN, "self-view", "citizen-portal", 7
            )
            other = await client.score(fed.portal, other_grant.token, "self-view")
            assert other.release_value == 390

            _check_log_before_act(fed, [result.query_id, own.result.query_id])
            _check_log_holds_only_releases(fed)
            await _check_forged_requests(fed, own_grant.token)

    asyncio.run(scenario())


def _check_log_before_act(fed: Federation, query_ids: list[str]) -> None:
    """Every node's answer follows the coordinator's "query_issued" for the same hash."""
    issued = {e.fields["query_id"]: e for e in of_kind(fed.coordinator_log, "query_issued")}
    released = {e.fields["query_id"]: e for e in of_kind(fed.coordinator_log, "result_released")}
    for query_id in query_ids:
        logged = issued[query_id]
        assert released[query_id].index > logged.index
        assert logged.fields["participants"] == list(AGENCIES)
        for agency in AGENCIES:
            answered = [
                e
                for e in of_kind(fed.node_log(agency), "query_answered")
                if e.fields["query_id"] == query_id
            ]
            assert len(answered) == 1
            assert answered[0].fields["query_hash"] == logged.fields["query_hash"]
            assert answered[0].logged_at >= logged.logged_at


def _check_log_holds_only_releases(fed: Federation) -> None:
    """The coordinator logs who asked and what was released, never a per-node value."""
    allowed = {
        "query_issued": {
            "query_id",
            "query_hash",
            "token_id",
            "purpose",
            "relying_party",
            "participants",
            "year",
            "kind",
            "request_nonce_hash",
        },
        "result_released": {"query_id", "released", "value"},
    }
    for entry in entries(fed.coordinator_log):
        if entry.kind in allowed:
            assert set(entry.fields) == allowed[entry.kind]
        assert CITIZEN not in entry.body and OTHER_CITIZEN not in entry.body
    values = [e.fields["value"] for e in of_kind(fed.coordinator_log, "result_released")]
    assert values == ["3%", EXPECTED_TOTAL, 390]
    # The coordinator's database never holds a national ID.
    database = (fed.root / "orgs" / "coordinator" / "state.db").read_bytes()
    assert CITIZEN.encode() not in database


async def _check_forged_requests(fed: Federation, token: Envelope) -> None:
    genuine = client.signed_score_query(fed.portal, token, "self-view")

    # Signed by an outsider's key but claiming the portal's key id.
    forged = sign_bytes(genuine.payload_type, genuine.payload, SigningKey.generate())
    forged.key_id = genuine.key_id
    refused = await _refusal(fed.portal, forged)
    assert (refused.code, refused.reason) == (Code.UNAUTHENTICATED, "BAD_SIGNATURE")

    # Signed by a key the trust registry does not list.
    unknown = sign_bytes(genuine.payload_type, genuine.payload, SigningKey.generate())
    refused = await _refusal(fed.portal, unknown)
    assert (refused.code, refused.reason) == (Code.UNAUTHENTICATED, "UNKNOWN_SIGNER")

    # PTT signing a query that names the citizen portal.
    in_other_name = sign_message(ScoreQuery.FromString(genuine.payload), fed.ptt.signing_key)
    refused = await _refusal(fed.ptt, in_other_name)
    assert (refused.code, refused.reason) == (Code.UNAUTHENTICATED, "SIGNER_MISMATCH")

    # The forgeries burnt nothing: the genuine request with the same nonce is answered once.
    outcome = await client.send_score_query(fed.portal, genuine)
    assert outcome.release_value == EXPECTED_TOTAL
    refused = await _refusal(fed.portal, genuine)
    assert (refused.code, refused.reason) == (Code.ALREADY_EXISTS, "REPLAYED_NONCE")

    reasons = [e.fields["reason"] for e in of_kind(fed.coordinator_log, "score_refused")]
    assert reasons[-4:] == ["BAD_SIGNATURE", "UNKNOWN_SIGNER", "SIGNER_MISMATCH", "REPLAYED_NONCE"]
    # A forged request names nobody in the log; the replay names who sent it.
    refusals = of_kind(fed.coordinator_log, "score_refused")
    assert "relying_party" not in refusals[-4].fields
    assert refusals[-1].fields["relying_party"] == "citizen-portal"


def test_revoked_consent_is_refused(coordinator_federation: Path) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            grant = await client.grant(fed.portal, CITIZEN, "ptt-fuel-discount", "ptt", 30)
            before = await client.score(fed.ptt, grant.token, "ptt-fuel-discount")
            assert before.release_value == "3%"
            token_id = before.result.token_id
            await client.revoke(fed.portal, CITIZEN, token_id)

            query = client.signed_score_query(fed.ptt, grant.token, "ptt-fuel-discount")
            refused = await _refusal(fed.ptt, query)
            assert (refused.code, refused.reason) == (
                Code.PERMISSION_DENIED,
                "CONSENT_REVOKED",
            )
            received = of_kind(fed.coordinator_log, "revocation_received")
            assert received[-1].fields["token_id"] == token_id
            last = of_kind(fed.coordinator_log, "score_refused")[-1]
            assert last.fields == {
                "reason": "CONSENT_REVOKED",
                "relying_party": "ptt",
                "purpose": "ptt-fuel-discount",
                "token_id": token_id,
            }
            # The revoked request spent nothing: its nonce is still unused.
            store = fed.coordinator.coordinator.store
            assert not store.nonce_seen(ScoreQuery.FromString(query.payload).nonce)

    asyncio.run(scenario())


def test_use_limit_and_forged_revocation_notice(coordinator_federation: Path) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            grant = await client.grant(
                fed.portal, CITIZEN, "ptt-fuel-discount", "ptt", 30, max_uses=1
            )
            await client.score(fed.ptt, grant.token, "ptt-fuel-discount")
            refused = await _refusal(
                fed.ptt, client.signed_score_query(fed.ptt, grant.token, "ptt-fuel-discount")
            )
            assert (refused.code, refused.reason) == (
                Code.RESOURCE_EXHAUSTED,
                "USE_LIMIT_REACHED",
            )

            # Only the consent registry can revoke: a notice signed by PTT is refused.
            notice = RevocationNotice(issuer="consent-registry", token_id="x", status_index=1)
            forged = PushRevocationRequest(notice=sign_message(notice, fed.ptt.signing_key))
            with pytest.raises(FedscoreError) as caught:
                async with client.channel_to(fed.ptt, "coordinator") as channel:
                    await call_unary(channel, PUSH, forged, PushRevocationResponse, TIMEOUT)
            assert caught.value.code == Code.UNAUTHENTICATED

    asyncio.run(scenario())


def test_a_stopped_node_fails_the_whole_query(coordinator_federation: Path) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            grant = await client.grant(fed.portal, CITIZEN, "self-view", "citizen-portal", 7)
            await fed.nodes["dsd"].stop()
            refused = await _refusal(
                fed.portal, client.signed_score_query(fed.portal, grant.token, "self-view")
            )
            assert (refused.code, refused.reason) == (
                Code.UNAVAILABLE,
                "NODE_UNAVAILABLE",
            )
            assert "dsd" in refused.message

            failed = of_kind(fed.coordinator_log, "query_failed")[-1]
            assert failed.fields["unavailable"] == ["dsd"]
            query_id = failed.fields["query_id"]
            issued = [
                e
                for e in of_kind(fed.coordinator_log, "query_issued")
                if e.fields["query_id"] == query_id
            ]
            assert len(issued) == 1 and issued[0].index < failed.index
            released = of_kind(fed.coordinator_log, "result_released")
            assert all(e.fields["query_id"] != query_id for e in released)
            # A node that is back is reached by the very next query.
            fed.nodes["dsd"] = await node_server.start(load_party(fed.root, "dsd"))
            again = await client.score(fed.portal, grant.token, "self-view")
            assert again.release_value == EXPECTED_TOTAL

    asyncio.run(scenario())


def test_nonce_too_short_and_stale_request(coordinator_federation: Path) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            grant = await client.grant(fed.portal, CITIZEN, "self-view", "citizen-portal", 7)
            base = ScoreQuery(
                relying_party="citizen-portal",
                purpose_id="self-view",
                token=grant.token,
                nonce=secrets.token_bytes(8),
                issued_at=int(time.time()),
            )
            short = sign_message(base, fed.portal.signing_key)
            refused = await _refusal(fed.portal, short)
            assert (refused.code, refused.reason) == (
                Code.INVALID_ARGUMENT,
                "BAD_NONCE",
            )
            base.nonce = secrets.token_bytes(16)
            base.issued_at -= 3600
            refused = await _refusal(fed.portal, sign_message(base, fed.portal.signing_key))
            assert (refused.code, refused.reason) == (
                Code.PERMISSION_DENIED,
                "REQUEST_EXPIRED",
            )
            assert not fed.coordinator.coordinator.store.nonce_seen(base.nonce)

    asyncio.run(scenario())
