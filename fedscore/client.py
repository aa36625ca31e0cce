"""Client calls made by the citizen portal and by relying parties.

A relying party signs its whole `ScoreQuery` (type, token, purpose, fresh nonce, time);
the coordinator's signed `ScoreResult` is verified before anything in it is believed.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import grpc.aio

from fedscore.errors import Unauthenticated
from fedscore.party import Party
from fedscore.rpc import call_unary, secure_channel
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
from fedscore.v1.query_pb2 import ScoreQuery, ScoreRequest, ScoreResponse, ScoreResult
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message, verify_message

CALL_TIMEOUT = 10.0
REGISTRY_ID = "consent-registry"
COORDINATOR_ID = "coordinator"


def channel_to(party: Party, peer_id: str) -> grpc.aio.Channel:
    """A mutual-TLS channel from `party` to the listed endpoint of `peer_id`."""
    peer = party.trust.participant(peer_id)
    return secure_channel(peer.endpoint, party.tls, server_name=peer_id)


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
    keyring = party.trust.keyring(Role.ROLE_CONSENT_REGISTRY)
    return verify_message(envelope, ConsentReceipt, keyring).payload


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
    keyring = relying_party.trust.keyring(Role.ROLE_COORDINATOR)
    result = verify_message(response.result, ScoreResult, keyring).payload
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


async def score(
    relying_party: Party, token: Envelope, purpose_id: str, year: int = 0
) -> ScoreOutcome:
    return await send_score_query(
        relying_party, signed_score_query(relying_party, token, purpose_id, year)
    )
