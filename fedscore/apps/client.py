"""Client calls made by the citizen portal and by relying parties.

A relying party signs its whole `ScoreQuery` (type, token, purpose, fresh nonce, time);
the coordinator's signed `ScoreResult` is verified before anything in it is believed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc.aio

from fedscore.errors import FedscoreError, Unauthenticated, Unavailable
from fedscore.protocol.signed import SignedReceipt, SignedScoreResult
from fedscore.runtime.live_trust import open_live_trust
from fedscore.runtime.party import Party, load_party, load_party_config
from fedscore.runtime.rpc import (
    call_unary,
    open_stream,
    secure_channel,
    stream_responses,
)
from fedscore.runtime.statuses import PEER_UNAVAILABLE, error_from_refusal
from fedscore.runtime.trust_follower import TrustFollower
from fedscore.v1.consent_pb2 import (
    ConsentReceipt,
    GrantRequest,
    GrantResponse,
    GrantSummary,
    ListGrantsRequest,
    ListGrantsResponse,
    RevokeRequest,
    RevokeResponse,
)
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    ScoreBatchOutcome,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreQuery,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message

_log = logging.getLogger(__name__)

CALL_TIMEOUT = 10.0
# A whole batch stream: thousands of queries at a time.
BATCH_TIMEOUT = 600.0
SCORE_BATCH_METHOD = "/fedscore.v1.CoordinatorService/ScoreBatch"
# Signed queries per ScoreBatch stream message (about 1.5 KB each).
QUERIES_PER_MESSAGE = 64
REGISTRY_ID = "consent-registry"
COORDINATOR_ID = "coordinator"


_UNAVAILABLE_REASONS = {
    Role.ROLE_CONSENT_REGISTRY: "REGISTRY_UNAVAILABLE",
    Role.ROLE_COORDINATOR: "COORDINATOR_UNAVAILABLE",
    Role.ROLE_AGENCY: "NODE_UNAVAILABLE",
}


async def up_to_date(party: Party) -> Party:
    """A client-only party first brings its registry chain and policy up to date.

    It asks the servers its config names (`fetch_registry_from`) for newer versions,
    verifies and stores them in its own folder (`fedscore.runtime.live_trust`), and is
    loaded again. If no server answers it acts on what it holds, which the servers check
    against their own, newer trust anyway.
    """
    if not party.config.fetch_registry_from:
        return party
    follower = TrustFollower.for_party(open_live_trust(party), party.tls, party.config)
    try:
        changed = await follower.refresh()
    except FedscoreError as error:
        _log.warning(
            "trust registry not refreshed (%s): acting on version %s",
            error.reason,
            party.chain.version,
        )
        return party
    finally:
        await follower.stop()
    return load_party_config(party.config.path) if changed else party


async def current_party(workdir: Path, party_id: str) -> Party:
    """`load_party`, then `up_to_date`: what every client command acts as."""
    return await up_to_date(load_party(workdir, party_id))


@asynccontextmanager
async def channel_to(party: Party, peer_id: str) -> AsyncIterator[grpc.aio.Channel]:
    """A mutual-TLS channel from `party` to the listed endpoint of `peer_id`.

    A call in the block that finds nobody answering names the party that is down
    (REGISTRY_UNAVAILABLE, COORDINATOR_UNAVAILABLE, NODE_UNAVAILABLE) and how to start it.
    """
    peer = party.trust.participant(peer_id)
    async with secure_channel(peer.endpoint, party.tls, server_name=peer_id) as channel:
        try:
            yield channel
        except FedscoreError as error:
            if error.reason != PEER_UNAVAILABLE:
                raise
            raise Unavailable(
                f"{peer_id} does not answer at {peer.endpoint}; is it running? "
                f"(fedscore serve --workdir DIR --party {peer_id})",
                reason=_UNAVAILABLE_REASONS.get(peer.role, PEER_UNAVAILABLE),
            ) from error


async def grant(
    portal: Party,
    national_id: str,
    purpose_id: str,
    relying_party: str,
    days: int,
    max_uses: int = 0,
) -> GrantResponse:
    now = int(time.time())
    request = GrantRequest(
        national_id=national_id,
        purpose_id=purpose_id,
        relying_party=relying_party,
        not_before=now - 60,
        not_after=now + days * 86400,
        max_uses=max_uses,
    )
    async with channel_to(portal, REGISTRY_ID) as channel:
        return await call_unary(
            channel, "/fedscore.v1.ConsentService/Grant", request, GrantResponse, CALL_TIMEOUT
        )


async def revoke(portal: Party, national_id: str, token_id: str) -> ConsentReceipt:
    request = RevokeRequest(national_id=national_id, token_id=token_id)
    async with channel_to(portal, REGISTRY_ID) as channel:
        response = await call_unary(
            channel, "/fedscore.v1.ConsentService/Revoke", request, RevokeResponse, CALL_TIMEOUT
        )
    return verify_receipt(portal, response.receipt)


async def list_grants(portal: Party, national_id: str) -> list[GrantSummary]:
    async with channel_to(portal, REGISTRY_ID) as channel:
        response = await call_unary(
            channel,
            "/fedscore.v1.ConsentService/ListGrants",
            ListGrantsRequest(national_id=national_id),
            ListGrantsResponse,
            CALL_TIMEOUT,
        )
    return list(response.grants)


def verify_receipt(party: Party, envelope: Envelope) -> ConsentReceipt:
    return SignedReceipt.verify(envelope, party.trust.registry_keys()).receipt


def signed_score_query(
    relying_party: Party, token: Envelope, purpose_id: str, year: int = 0
) -> Envelope:
    """The relying party's signed question; the nonce makes every query unique."""
    query = ScoreQuery(
        relying_party=relying_party.id,
        purpose_id=purpose_id,
        token=token,
        nonce=secrets.token_bytes(16),
        issued_at=int(time.time()),
        year=year,
    )
    return sign_message(query, relying_party.signing_key)


@dataclass(frozen=True)
class ScoreOutcome:
    result: ScoreResult
    release_kind: str
    release_value: int | str | bool


async def send_score_query(
    relying_party: Party, signed_query: Envelope, channel: grpc.aio.Channel | None = None
) -> ScoreOutcome:
    """Send a signed query; verify the coordinator's signed answer and its binding.

    Pass an open `channel` to the coordinator to reuse it across queries.
    """
    request = ScoreRequest(query=signed_query)
    method = "/fedscore.v1.CoordinatorService/Score"
    if channel is None:
        async with channel_to(relying_party, COORDINATOR_ID) as own_channel:
            response = await call_unary(own_channel, method, request, ScoreResponse, CALL_TIMEOUT)
    else:
        response = await call_unary(channel, method, request, ScoreResponse, CALL_TIMEOUT)
    return check_result(relying_party, response.result, signed_query)


def check_result(relying_party: Party, envelope: Envelope, signed_query: Envelope) -> ScoreOutcome:
    """Verify the coordinator's signed result and that it answers exactly `signed_query`."""
    result = SignedScoreResult.verify(envelope, relying_party.trust.coordinator_keys()).result
    sent = ScoreQuery.FromString(signed_query.payload)
    if result.request_nonce_hash != hashlib.sha256(sent.nonce).digest():
        raise Unauthenticated(
            "the coordinator's answer is not bound to this request", reason="ANSWER_NOT_BOUND"
        )
    kind = result.WhichOneof("release")
    if kind is None:
        raise Unauthenticated("the coordinator's answer releases nothing", reason="EMPTY_RESULT")
    value: int | str | bool = getattr(result, kind)
    return ScoreOutcome(result=result, release_kind=kind, release_value=value)


@dataclass(frozen=True)
class BatchOutcome:
    """What the coordinator answered to the `sequence`-th query of a batch: one of the two."""

    sequence: int
    outcome: ScoreOutcome | None = None
    refusal: FedscoreError | None = None


async def score_batch(
    relying_party: Party,
    signed_queries: Sequence[Envelope],
    channel: grpc.aio.Channel | None = None,
    timeout: float = BATCH_TIMEOUT,
) -> list[BatchOutcome]:
    """Send signed queries on one ScoreBatch stream; one verified outcome per query, in order.

    A refused query comes back with its reason; a result that does not verify, or that
    answers another request, counts as refused (ANSWER_NOT_BOUND, BAD_SIGNATURE, ...).
    """
    if channel is None:
        async with channel_to(relying_party, COORDINATOR_ID) as own_channel:
            return await score_batch(relying_party, signed_queries, own_channel, timeout)
    raw = await stream_batch(channel, signed_queries, timeout)
    outcomes: list[BatchOutcome | None] = [None] * len(signed_queries)
    for answered in raw:
        sequence = int(answered.sequence)
        if not 0 <= sequence < len(signed_queries) or outcomes[sequence] is not None:
            raise Unauthenticated(
                f"the coordinator answered query {sequence} unexpectedly", "ANSWER_NOT_BOUND"
            )
        outcomes[sequence] = batch_outcome(relying_party, answered, signed_queries[sequence])
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:
        raise Unavailable(f"no answer to {len(missing)} queries of the batch", "INCOMPLETE_BATCH")
    return [outcome for outcome in outcomes if outcome is not None]


async def stream_batch(
    channel: grpc.aio.Channel, signed_queries: Sequence[Envelope], timeout: float
) -> list[ScoreBatchOutcome]:
    """The raw outcomes of one ScoreBatch stream (unverified), in the order they came.

    Queries go QUERIES_PER_MESSAGE to a stream message; they are numbered in order from 0.
    """
    call = open_stream(channel, SCORE_BATCH_METHOD, ScoreBatchResponse, timeout)

    async def send() -> None:
        for start in range(0, len(signed_queries), QUERIES_PER_MESSAGE):
            group = signed_queries[start : start + QUERIES_PER_MESSAGE]
            await call.write(ScoreBatchRequest(queries=group))
        await call.done_writing()

    sender = asyncio.get_running_loop().create_task(send())
    try:
        outcomes = [
            outcome async for response in stream_responses(call) for outcome in response.outcomes
        ]
        await sender
    finally:
        sender.cancel()
    return outcomes


def batch_outcome(
    relying_party: Party, answered: ScoreBatchOutcome, signed_query: Envelope
) -> BatchOutcome:
    """Check what the coordinator answered to one query of a batch against that query."""
    sequence = int(answered.sequence)
    if answered.WhichOneof("outcome") == "refusal":
        return BatchOutcome(sequence, refusal=error_from_refusal(answered.refusal))
    try:
        return BatchOutcome(sequence, check_result(relying_party, answered.result, signed_query))
    except FedscoreError as error:
        return BatchOutcome(sequence, refusal=error)


async def score(
    relying_party: Party, token: Envelope, purpose_id: str, year: int = 0
) -> ScoreOutcome:
    return await send_score_query(
        relying_party, signed_score_query(relying_party, token, purpose_id, year)
    )
