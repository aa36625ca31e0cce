"""gRPC handlers of `fedscore.v1.ConsentService`: authorize the caller, decode, call, encode.

Invariants:
- The caller is who its verified mutual-TLS certificate says (its common name is a party
  id); it is checked before the request is even parsed. Grant, Revoke and ListGrants are
  served only to the citizen portal, ConsentStatus and GetStatusList to any participant.
- Handlers hold no logic of their own: everything they decide is in `consent.registry`,
  and errors become gRPC statuses only in `fedscore.runtime.rpc`.
- A revocation is committed before it is pushed, and its reply waits for the push (each
  party bounded by the push timeout), so when Revoke returns every reachable party knows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc.aio
from google.protobuf.message import Message

from consent.push import RevocationPusher
from consent.registry import (
    ConsentRegistry,
    consent_status,
    grant,
    list_grants,
    require_citizen_portal,
    require_participant,
    revoke,
)
from consent.status_list import publish_status_list
from fedscore.runtime.rpc import Handler, parse_request, peer_common_name
from fedscore.v1.consent_pb2 import (
    ConsentStatusRequest,
    ConsentStatusResponse,
    GetStatusListRequest,
    GetStatusListResponse,
    GrantRequest,
    GrantResponse,
    ListGrantsRequest,
    ListGrantsResponse,
    RevokeRequest,
    RevokeResponse,
)

SERVICE_NAME = "fedscore.v1.ConsentService"

Clock = Callable[[], float]


def consent_handlers(
    registry: ConsentRegistry, pusher: RevocationPusher, clock: Clock = time.time
) -> dict[str, Handler]:
    """The ConsentService methods, ready for `fedscore.runtime.rpc.start_server`."""

    def now() -> int:
        return int(clock())

    async def grant_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        require_citizen_portal(registry.trust, peer_common_name(context))
        request = parse_request(raw, GrantRequest)
        issued = grant(
            registry,
            national_id=request.national_id,
            purpose_id=request.purpose_id,
            relying_party=request.relying_party,
            not_before=request.not_before,
            not_after=request.not_after,
            max_uses=request.max_uses,
            now=now(),
        )
        return GrantResponse(token=issued.token, receipt=issued.receipt)

    async def revoke_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        require_citizen_portal(registry.trust, peer_common_name(context))
        request = parse_request(raw, RevokeRequest)
        revocation = revoke(
            registry, national_id=request.national_id, token_id=request.token_id, now=now()
        )
        if revocation.notice is not None:
            await pusher.push(revocation.token_id, revocation.notice)
        return RevokeResponse(receipt=revocation.receipt)

    async def status_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        require_participant(registry.trust, peer_common_name(context))
        request = parse_request(raw, ConsentStatusRequest)
        status = consent_status(registry, token_id=request.token_id, now=now())
        return ConsentStatusResponse(token_id=request.token_id, status=status)

    async def list_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        require_citizen_portal(registry.trust, peer_common_name(context))
        request = parse_request(raw, ListGrantsRequest)
        grants = list_grants(registry, national_id=request.national_id, now=now())
        return ListGrantsResponse(grants=grants)

    async def status_list_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        require_participant(registry.trust, peer_common_name(context))
        parse_request(raw, GetStatusListRequest)
        return GetStatusListResponse(status_list=publish_status_list(registry, now=now()))

    return {
        "Grant": grant_handler,
        "Revoke": revoke_handler,
        "ConsentStatus": status_handler,
        "ListGrants": list_handler,
        "GetStatusList": status_list_handler,
    }
