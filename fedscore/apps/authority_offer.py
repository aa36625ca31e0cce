"""The federation authority offers a published registry version to every server.

Servers accept it from anyone, since it verifies on its own signatures (a threshold of
root keys, the policy authority's key); the authority only saves them waiting for their
next poll of each other (`fedscore.runtime.trust_follower`).
"""

from __future__ import annotations

import time

from fedscore.apps.authority import Authority
from fedscore.errors import FedscoreError
from fedscore.runtime.party_config import SERVER_ROLES
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.trust_pb2 import (
    OfferTrustRequest,
    OfferTrustResponse,
    TrustRegistry,
    TrustUpdate,
)
from keys.registry import TrustView

OFFER_TRUST = "/fedscore.v1.TrustService/OfferTrust"


def _servers(view: TrustView) -> dict[str, str]:
    """Participant id -> endpoint of every server a view lists (one entry per id)."""
    return {p.id: p.endpoint for role in SERVER_ROLES for p in view.by_role(role) if p.endpoint}


async def offer_to_servers(
    authority: Authority, now: int | None = None, timeout: float = 5.0
) -> dict[str, str]:
    """Offer the whole published chain and policy to every server the newest version
    lists, and to those the version before listed (a removed server learns it at once).

    Returns, per participant id, the version it now trusts or the reason it refused or
    could not be reached. A server that is down catches up from its peers later.
    """
    published = authority.published()
    latest = authority.latest()
    if latest is None:
        return {}
    update = TrustUpdate(registries=published)
    if authority.paths.policy.exists():
        update.policy.ParseFromString(authority.paths.policy.read_bytes())
    tls = authority.client_tls()
    when = int(time.time()) if now is None else now
    targets = _servers(latest.view(when))
    if len(published) > 1:
        previous = TrustRegistry()
        previous.ParseFromString(published[-2].registry)
        targets = _servers(TrustView(previous, when)) | targets
    results: dict[str, str] = {}
    for participant_id, endpoint in sorted(targets.items()):
        async with secure_channel(endpoint, tls, server_name=participant_id) as channel:
            try:
                answer = await call_unary(
                    channel,
                    OFFER_TRUST,
                    OfferTrustRequest(update=update),
                    OfferTrustResponse,
                    timeout,
                )
                results[participant_id] = f"v{answer.registry_version}"
            except FedscoreError as error:
                results[participant_id] = error.reason
    return results
