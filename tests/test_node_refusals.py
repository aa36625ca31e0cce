"""Table-driven refusals of a real agency node, over mutual TLS on 127.0.0.1.

Each row builds one bad request against a live federation (real consent registry, real
`trc` node with imported records, real coordinator and registry keys) and asserts:
the gRPC status code, the ErrorInfo reason, one new "query_refused" log entry with that
reason (naming the query id and purpose only when the envelope was authentic), and that
nothing stored changed (behaviour records, seen query ids, accepted request nonces, token
uses). Many rows are what a hostile coordinator, holding its real key, could try.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from test_node_service import (
    ALICE,
    CONTRIBUTE,
    DAY,
    PURPOSE,
    TIMEOUT,
    LiveFederation,
    assert_clean_log,
    live_federation,
    make_federation,
)

from fedscore.apps import client
from fedscore.errors import Code, FedscoreError
from fedscore.runtime.rpc import MAX_MESSAGE_BYTES, call_unary, error_from_rpc
from fedscore.v1.consent_pb2 import ConsentToken, RevocationNotice
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_HISTOGRAM,
    ContributeRequest,
    LogPromise,
    NotifyRevocationRequest,
    NotifyRevocationResponse,
)
from keys.envelope import sign_bytes, sign_message
from keys.national_id import with_check_digit
from keys.seal import seal_subject

AGENCY = "trc"
OTHER_POLICY = "sha256:" + "ab" * 32


@dataclass(frozen=True)
class Prepared:
    """The raw request bytes to send, and the facts its refusal entry must name."""

    raw: bytes
    logged: dict[str, str]


Prepare = Callable[[LiveFederation], Awaitable[Prepared]]


def _request(query: Envelope) -> bytes:
    return bytes(ContributeRequest(query=query).SerializeToString())


def _authentic(query: Envelope, spec_query_id: str) -> Prepared:
    """A request whose envelope the coordinator signed: its facts may be logged."""
    return Prepared(_request(query), {"query_id": spec_query_id, "purpose": PURPOSE})


def _forged(query: Envelope) -> Prepared:
    """A request whose envelope does not verify: nothing it says may reach the log."""
    return Prepared(_request(query), {})


async def unsigned(live: LiveFederation) -> Prepared:
    query = live.query(live.spec(live.signed_token()), AGENCY)
    query.signature = b""
    return _forged(query)


async def wrong_signer(live: LiveFederation) -> Prepared:
    query = live.query(live.spec(live.signed_token()), AGENCY, signer=live.parties["ptt"])
    return _forged(query)


async def wrong_payload_type(live: LiveFederation) -> Prepared:
    genuine = live.query(live.spec(live.signed_token()), AGENCY)
    query = sign_bytes("fedscore.v1.ScoreQuery", genuine.payload, live.coordinator.signing_key)
    return _forged(query)


async def bad_signature(live: LiveFederation) -> Prepared:
    query = live.query(live.spec(live.signed_token()), AGENCY)
    query.payload = query.payload[:-1] + bytes([query.payload[-1] ^ 1])
    return _forged(query)


async def wrong_agency(live: LiveFederation) -> Prepared:
    return _forged(live.query(live.spec(live.signed_token()), "dsd"))


async def unknown_policy(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token(), policy_hash=OTHER_POLICY)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def expired_query(live: LiveFederation) -> Prepared:
    now = int(time.time())
    spec = live.spec(live.signed_token(), issued_at=now - 120, expires_at=now - 60)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def query_from_the_future(live: LiveFederation) -> Prepared:
    now = int(time.time())
    spec = live.spec(live.signed_token(), issued_at=now + 600, expires_at=now + 660)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def promise_for_another_query(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token())
    promise = live.log_promise(b"a different spec")
    return _authentic(live.query(spec, AGENCY, promise=promise), spec.query_id)


async def promise_not_from_the_coordinator(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token())
    promise = LogPromise(
        origin="coordinator",
        query_hash=hashlib.sha256(spec.SerializeToString(deterministic=True)).digest(),
    )
    forged = sign_message(promise, live.parties["ptt"].signing_key)
    return _authentic(live.query(spec, AGENCY, promise=forged), spec.query_id)


async def missing_promise(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token())
    return _authentic(live.query(spec, AGENCY, promise=Envelope()), spec.query_id)


async def expired_token(live: LiveFederation) -> Prepared:
    now = int(time.time())
    token = live.signed_token(not_before=now - 2 * DAY, not_after=now - DAY)
    spec = live.spec(token)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def token_not_from_the_registry(live: LiveFederation) -> Prepared:
    token = live.signed_token()
    forged = sign_bytes(token.payload_type, token.payload, live.coordinator.signing_key)
    spec = live.spec(forged)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def revoked_token(live: LiveFederation) -> Prepared:
    """Granted and revoked through the real registry, which pushes the notice to the node."""
    token = await live.grant(ALICE)
    token_id = ConsentToken.FromString(token.payload).token_id
    await client.revoke(live.parties["citizen-portal"], ALICE, token_id)
    received = [e for e in live.log_entries(AGENCY) if e.kind == "revocation_received"]
    assert received and received[-1].fields["token_id"] == token_id
    spec = live.spec(token)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def token_for_another_purpose(live: LiveFederation) -> Prepared:
    token = live.signed_token(purpose_id="self-view", relying_party="citizen-portal")
    spec = live.spec(token)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def token_under_another_policy(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token(policy_hash=OTHER_POLICY))
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def token_not_naming_this_agency(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token(agencies=["dsd", "chuangpao"]))
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def token_without_this_agencys_domain(live: LiveFederation) -> Prepared:
    # TRC records only health indicators; the citizen consented to learning only.
    spec = live.spec(live.signed_token(domains=["learning"]))
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def participant_subset(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token(), participants=["trc", "dsd"])
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def participant_listed_twice(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token(), participants=["trc", "dsd", "chuangpao", "dsd"])
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def year_without_scores(live: LiveFederation) -> Prepared:
    token = live.signed_token()
    spec = live.spec(token, request=live.request(token, year=-5), year=-5)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def year_not_asked_by_the_relying_party(live: LiveFederation) -> Prepared:
    """The relying party asked about this year; the coordinator asks the node about last year."""
    spec = live.spec(live.signed_token())
    spec.year -= 1
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def year_beyond_the_purpose(live: LiveFederation) -> Prepared:
    """PTT may ask about this year and last year, not two years back."""
    token = live.signed_token()
    year = live.coordinator.policy.current_year(time.time()) - 2
    spec = live.spec(token, request=live.request(token, year=year), year=year)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def no_relying_party_request(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token())
    spec.ClearField("request")
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def request_signed_by_the_coordinator(live: LiveFederation) -> Prepared:
    """The coordinator writes a relying party's request itself: its key is not a party's."""
    token = live.signed_token()
    spec = live.spec(token, request=live.request(token, signer=live.coordinator))
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def request_signed_by_another_relying_party(live: LiveFederation) -> Prepared:
    token = live.signed_token()
    forged = live.request(token, signer=live.parties["citizen-portal"])
    spec = live.spec(token, request=forged)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def request_by_a_party_the_token_was_not_granted_to(live: LiveFederation) -> Prepared:
    token = live.signed_token()
    spec = live.spec(token, request=live.request(token, relying_party="citizen-portal"))
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def request_for_another_purpose(live: LiveFederation) -> Prepared:
    token = live.signed_token()
    spec = live.spec(token, request=live.request(token, purpose_id="self-view"))
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def stale_request(live: LiveFederation) -> Prepared:
    token = live.signed_token()
    spec = live.spec(token, request=live.request(token, issued_at=int(time.time()) - 3600))
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def request_served_twice(live: LiveFederation) -> Prepared:
    """One signed request, one query: a second query id with the same request is refused."""
    token = live.signed_token()
    request = live.request(token)
    first = live.spec(token, request=request)
    await live.contribute(AGENCY, live.query(first, AGENCY))
    again = live.spec(token, request=request)
    return _authentic(live.query(again, AGENCY), again.query_id)


async def token_used_up_at_this_node(live: LiveFederation) -> Prepared:
    """The token allows one use; the node counts it itself, whatever the coordinator says."""
    token = live.signed_token(max_uses=1)
    await live.contribute(AGENCY, live.query(live.spec(token), AGENCY))
    spec = live.spec(token)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def a_histogram_spec_on_the_score_path(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token(), kind=QUESTION_KIND_HISTOGRAM)
    return _authentic(live.query(spec, AGENCY), spec.query_id)


async def replayed_query(live: LiveFederation) -> Prepared:
    spec = live.spec(live.signed_token())
    query = live.query(spec, AGENCY)
    await live.contribute(AGENCY, query)  # answered once
    return _authentic(query, spec.query_id)


async def sealed_subject_of_another_token(live: LiveFederation) -> Prepared:
    other = ConsentToken.FromString(live.signed_token().payload)
    blob = next(s.blob for s in other.sealed_subjects if s.agency_id == AGENCY)
    spec = live.spec(live.signed_token())
    return _authentic(live.query(spec, AGENCY, sealed=blob), spec.query_id)


async def sealed_subject_chosen_by_the_coordinator(live: LiveFederation) -> Prepared:
    """Anyone can seal any ID to the node's public key, even under this token's id."""
    token = live.signed_token()
    token_id = ConsentToken.FromString(token.payload).token_id
    someone_else = with_check_digit("350010000017")
    blob = seal_subject(token_id, AGENCY, someone_else, live.registry.trust.box_public(AGENCY))
    spec = live.spec(token)
    return _authentic(live.query(spec, AGENCY, sealed=blob), spec.query_id)


async def malformed_protobuf(live: LiveFederation) -> Prepared:
    return Prepared(b"\xff\xff\xff", {})


async def oversized_message(live: LiveFederation) -> Prepared:
    query = live.query(live.spec(live.signed_token()), AGENCY)
    query.payload += b"\x00" * (MAX_MESSAGE_BYTES + 1)
    return _forged(query)


@dataclass(frozen=True)
class Row:
    prepare: Prepare
    code: Code
    reason: str

    @property
    def name(self) -> str:
        return self.prepare.__name__


S = Code
ROWS = [
    Row(unsigned, S.UNAUTHENTICATED, "UNSIGNED"),
    Row(wrong_signer, S.UNAUTHENTICATED, "UNKNOWN_SIGNER"),
    Row(wrong_payload_type, S.UNAUTHENTICATED, "WRONG_PAYLOAD_TYPE"),
    Row(bad_signature, S.UNAUTHENTICATED, "BAD_SIGNATURE"),
    Row(wrong_agency, S.PERMISSION_DENIED, "WRONG_AGENCY"),
    Row(unknown_policy, S.FAILED_PRECONDITION, "UNKNOWN_POLICY"),
    Row(expired_query, S.PERMISSION_DENIED, "QUERY_EXPIRED"),
    Row(query_from_the_future, S.PERMISSION_DENIED, "QUERY_EXPIRED"),
    Row(promise_for_another_query, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(promise_not_from_the_coordinator, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(missing_promise, S.UNAUTHENTICATED, "BAD_LOG_PROMISE"),
    Row(expired_token, S.PERMISSION_DENIED, "TOKEN_EXPIRED"),
    Row(token_not_from_the_registry, S.UNAUTHENTICATED, "UNKNOWN_SIGNER"),
    Row(revoked_token, S.PERMISSION_DENIED, "CONSENT_REVOKED"),
    Row(token_for_another_purpose, S.PERMISSION_DENIED, "PURPOSE_MISMATCH"),
    Row(token_under_another_policy, S.PERMISSION_DENIED, "POLICY_MISMATCH"),
    Row(token_not_naming_this_agency, S.PERMISSION_DENIED, "AGENCY_NOT_IN_TOKEN"),
    Row(token_without_this_agencys_domain, S.PERMISSION_DENIED, "DOMAIN_NOT_IN_TOKEN"),
    Row(participant_subset, S.PERMISSION_DENIED, "PARTICIPANT_SET_MISMATCH"),
    Row(participant_listed_twice, S.PERMISSION_DENIED, "PARTICIPANT_SET_MISMATCH"),
    Row(year_without_scores, S.INVALID_ARGUMENT, "BAD_YEAR"),
    Row(year_not_asked_by_the_relying_party, S.PERMISSION_DENIED, "YEAR_MISMATCH"),
    Row(year_beyond_the_purpose, S.PERMISSION_DENIED, "YEAR_NOT_ALLOWED"),
    Row(no_relying_party_request, S.UNAUTHENTICATED, "NO_RELYING_PARTY_REQUEST"),
    Row(request_signed_by_the_coordinator, S.UNAUTHENTICATED, "BAD_REQUEST_SIGNATURE"),
    Row(request_signed_by_another_relying_party, S.UNAUTHENTICATED, "SIGNER_MISMATCH"),
    Row(
        request_by_a_party_the_token_was_not_granted_to,
        S.PERMISSION_DENIED,
        "RELYING_PARTY_MISMATCH",
    ),
    Row(request_for_another_purpose, S.PERMISSION_DENIED, "PURPOSE_MISMATCH"),
    Row(stale_request, S.PERMISSION_DENIED, "REQUEST_EXPIRED"),
    Row(replayed_query, S.ALREADY_EXISTS, "REPLAYED_QUERY"),
    Row(request_served_twice, S.ALREADY_EXISTS, "REPLAYED_NONCE"),
    Row(token_used_up_at_this_node, S.RESOURCE_EXHAUSTED, "USE_LIMIT_REACHED"),
    Row(a_histogram_spec_on_the_score_path, S.PERMISSION_DENIED, "QUESTION_KIND_MISMATCH"),
    Row(sealed_subject_of_another_token, S.PERMISSION_DENIED, "SEALED_SUBJECT_MISMATCH"),
    Row(sealed_subject_chosen_by_the_coordinator, S.PERMISSION_DENIED, "SEALED_SUBJECT_MISMATCH"),
    Row(malformed_protobuf, S.INVALID_ARGUMENT, "MALFORMED_MESSAGE"),
    Row(oversized_message, S.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE"),
]


async def _send_raw(live: LiveFederation, raw: bytes) -> FedscoreError:
    """Send bytes as they are (no serializer), expecting a refusal."""
    call = live.channels[AGENCY].unary_unary(CONTRIBUTE)
    try:
        await call(raw, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return error_from_rpc(exc)
    raise AssertionError("the node answered a request it must refuse")


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_node_refuses(tmp_path: Path, row: Row) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, [AGENCY]) as live:
            prepared = await row.prepare(live)
            records, claims = live.record_count(AGENCY), live.claim_counts(AGENCY)
            log_before = live.log_size(AGENCY)
            assert records > 0

            error = await _send_raw(live, prepared.raw)

            assert (error.code, error.reason) == (row.code, row.reason), error.message
            new = live.log_entries(AGENCY, log_before)
            assert [(e.kind, e.fields) for e in new] == [
                ("query_refused", {"reason": row.reason, **prepared.logged})
            ]
            assert live.record_count(AGENCY) == records
            assert live.claim_counts(AGENCY) == claims
            assert_clean_log(live.log_entries(AGENCY))

    asyncio.run(scenario())


def test_a_revocation_notice_not_signed_by_the_registry_is_refused(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, [AGENCY]) as live:
            token = ConsentToken.FromString(live.signed_token().payload)
            notice = RevocationNotice(
                issuer="consent-registry",
                token_id=token.token_id,
                status_index=token.status_index,
                revoked_at=int(time.time()),
            )
            forged = sign_message(notice, live.coordinator.signing_key)
            log_before = live.log_size(AGENCY)
            with pytest.raises(FedscoreError) as refused:
                await _notify(live, forged)
            assert (refused.value.code, refused.value.reason) == (
                S.UNAUTHENTICATED,
                "UNKNOWN_SIGNER",
            )
            new = live.log_entries(AGENCY, log_before)
            assert [(e.kind, e.fields) for e in new] == [
                ("revocation_refused", {"reason": "UNKNOWN_SIGNER"})
            ]
            # The forged notice revoked nothing: a query with that token is answered.
            spec = live.spec(live.signed_token(status_index=token.status_index))
            await live.contribute(AGENCY, live.query(spec, AGENCY))

            genuine = sign_message(notice, live.registry.signing_key)
            await _notify(live, genuine)
            revoked = live.spec(live.signed_token(status_index=token.status_index))
            with pytest.raises(FedscoreError) as after:
                await live.contribute(AGENCY, live.query(revoked, AGENCY))
            assert after.value.reason == "CONSENT_REVOKED"

    asyncio.run(scenario())


async def _notify(live: LiveFederation, notice: Envelope) -> Any:
    return await call_unary(
        live.channels[AGENCY],
        "/fedscore.v1.NodeService/NotifyRevocation",
        NotifyRevocationRequest(notice=notice),
        NotifyRevocationResponse,
        TIMEOUT,
    )
