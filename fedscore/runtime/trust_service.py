"""`fedscore.v1.TrustService` as raw-bytes handlers, and the guard of a party's other services.

Every server serves the registry chain and the signed policy it trusts (`GetTrust`) and
accepts newer ones from anyone (`OfferTrust`): what is offered verifies on its own
signatures (a threshold of root keys, the policy authority's key; `LiveTrust.offer`),
not on who sends it.

Invariants:
- Any caller with a certificate from the federation CA may call either method (mutual
  TLS admits no other); a caller the registry does not list (the federation authority's
  client) included.
- Both methods are rate limited per caller twice: by the server's limiter, as every method
  (`fedscore.runtime.rpc`), and by their own, tighter one (`TRUST_RATE_LIMITS`): an offer
  costs signature checks and disk writes. A call over either limit is RESOURCE_EXHAUSTED
  RATE_LIMITED with a retry hint, and the `on_rate_limited` hook counts it.
- A refused offer is a gRPC status with its reason (ROLLBACK, CHAIN_GAP, BELOW_THRESHOLD,
  CHAIN_BROKEN, WRONG_FEDERATION, REGISTRY_EXPIRED, BAD_SIGNATURE, UNKNOWN_SIGNER, a
  policy's reason...), logged at WARNING with the caller; nothing stored changed.
- `follow_audit` keeps a party's audit service on the current registry (who is the
  regulator, whose receipts count) and its checkpoints signed with the party's current
  key; `rekey_revocations` gives a party's revocation state the current registry keys.
  Both keep the objects (the log, the revocations already known) and swap only keys.
- `acting_only` wraps a party's own services so that each call first asks
  `LiveTrust.require_active()`: a party removed from the registry, or whose registry is
  frozen, refuses every such call (PARTY_REMOVED, REGISTRY_EXPIRED) but keeps serving
  this service and its audit log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import grpc.aio
from google.protobuf.message import Message

from audit.servicer import AuditEndpoint
from fedscore.errors import FedscoreError, RateLimited
from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.live_trust import LiveTrust
from fedscore.runtime.ratelimit import CallLimiter, RateLimits
from fedscore.runtime.rpc import (
    TRANSPORT_MAX_BYTES,
    BidiStream,
    Handler,
    RateLimitedHook,
    parse_request,
    peer_common_name,
)
from fedscore.v1.trust_pb2 import (
    GetTrustRequest,
    GetTrustResponse,
    OfferTrustRequest,
    OfferTrustResponse,
)
from keys.keyring import RegistryKeys
from keys.registry import TrustView
from policies.model import Policy

_log = logging.getLogger(__name__)

SERVICE_NAME = "fedscore.v1.TrustService"
# A follower polls every few seconds; an operator offers now and then.
TRUST_RATE_LIMITS = RateLimits(calls_per_second=20.0, burst=40)

Services = Mapping[str, Mapping[str, Handler | BidiStream]]


def trust_handlers(
    live: LiveTrust,
    *,
    limits: RateLimits = TRUST_RATE_LIMITS,
    on_rate_limited: RateLimitedHook | None = None,
) -> dict[str, dict[str, Handler | BidiStream]]:
    """`{SERVICE_NAME: {GetTrust, OfferTrust}}` for `fedscore.runtime.rpc.start_server`."""
    limiter = CallLimiter(limits)

    def admit(context: grpc.aio.ServicerContext, method: str) -> str:
        caller = peer_common_name(context)
        try:
            limiter.take(caller, method)
        except RateLimited:
            if on_rate_limited is not None:
                on_rate_limited(caller, f"/{SERVICE_NAME}/{method}")
            raise
        return caller

    async def get_trust(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        admit(context, "GetTrust")
        request = parse_request(raw, GetTrustRequest)
        return GetTrustResponse(update=live.update_since(request.since_version))

    async def offer_trust(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        caller = admit(context, "OfferTrust")
        # A chain of many versions may be large; the transport bounds it.
        request = parse_request(raw, OfferTrustRequest, limit=TRANSPORT_MAX_BYTES)
        try:
            live.offer(request.update)
        except FedscoreError as error:
            _log.warning("trust offered by %s refused: %s", caller or "(no name)", error)
            raise
        return OfferTrustResponse(
            registry_version=live.version, policy_hash=live.policy.content_hash
        )

    return {SERVICE_NAME: {"GetTrust": get_trust, "OfferTrust": offer_trust}}


def _guarded_unary(live: LiveTrust, handler: Handler) -> Handler:
    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        live.require_active()
        return await handler(raw, context)

    return call


def _guarded_stream(live: LiveTrust, method: BidiStream) -> BidiStream:
    async def stream(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Message]:
        live.require_active()
        async for response in method.handler(requests, context):
            yield response

    return BidiStream(stream)


def acting_only(live: LiveTrust, services: Services) -> dict[str, dict[str, Handler | BidiStream]]:
    """`services` with every method refusing first unless the party may act (see module)."""
    return {
        name: {
            method: _guarded_stream(live, handler)
            if isinstance(handler, BidiStream)
            else _guarded_unary(live, handler)
            for method, handler in methods.items()
        }
        for name, methods in services.items()
    }


def rekey_revocations(state: RevocationState, keys: RegistryKeys) -> None:
    """Verify the consent registry's lists and notices under `keys` from now on; what the
    state already knows (revoked tokens, the last list) is kept."""
    state.use_registry_keys(keys)


def follow_audit(audit: AuditEndpoint, live: LiveTrust) -> None:
    """Keep `audit` on the current registry and the party's current signing key."""

    def apply(view: TrustView, policy: Policy) -> None:
        audit.service.trust = view
        # Between two checkpoints: both run on the event loop.
        audit.signer.use_key(live.signing_key)

    live.listen(apply)
