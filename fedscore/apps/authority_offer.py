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
from fedscore.v1.trust_pb2 import OfferTrustRequest, OfferTrustResponse, TrustUpdate
from keys.registry import TrustView

OFFER_TRUST = "/fedscore.v1.TrustService/OfferTrust"


async def offer_to_servers(
    authority: Authority, now: int | None = None, timeout: float = 5.0
) -> dict[str, str]:
    """Offer the whole published chain and policy to every server the newest version lists.

    Returns, per participant id, the version it now trusts or the reason it refused or
    could not be reached. A server that is down catches up from its peers later.
    """
    latest = authority.latest()
    if latest is None:
        return {}
    update = TrustUpdate(registries=authority.published())
    if authority.paths.policy.exists():
        update.policy.ParseFromString(authority.paths.policy.read_bytes())
    tls = authority.client_tls()
    view = latest.view(int(time.time()) if now is None else now)
    servers = [p for p in view.registry.participants if p.endpoint and p.id in _ids(view)]
    results: dict[str, str] = {}
    for participant in servers:
        async with secure_channel(participant.endpoint, tls, server_name=participant.id) as channel:
            try:
                answer = await call_unary(
                    channel,
                    OFFER_TRUST,
                    OfferTrustRequest(update=update),
                    OfferTrustResponse,
                    timeout,
                )
                results[participant.id] = f"v{answer.registry_version}"
            except FedscoreError as error:
                results[participant.id] = error.reason
    return results


def _ids(view: TrustView) -> set[str]:
    return {p.id for role in SERVER_ROLES for p in view.by_role(role)}
