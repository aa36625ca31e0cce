"""Start and stop an agency node's gRPC server.

Invariants:
- Keys, keyrings, the policies and the pairwise mask seeds are derived from the party's
  `LiveTrust` at start, and again, whole, whenever it changes (a new registry version, a
  window boundary, a new policy): the NodeTrust (keyrings of the view, every policy still
  held), the mask seeds (pairwise with every agency of the view), the signing key (once
  the registry lists the one in `next.key`), the revocation state's registry keys, the
  audit service's registry and key. Answering a query reads no file and derives no key.
- The server binds the endpoint the trust registry lists for this agency (unless a test
  or operator gives another), with mutual TLS from the federation CA only. It serves
  `fedscore.v1.TrustService` to anyone of the federation, and follows the registry chain
  from its config's `fetch_registry_from` in the background; a node removed from the
  registry keeps doing both and refuses every question (PARTY_REMOVED).
- Revocation state follows the consent registry's signed status list from the start:
  one fetch before serving and then in the background, at the endpoint the current
  registry lists. If the registry is not up yet, the node still starts and refuses every
  query with STATUS_LIST_STALE until a list arrives (fail closed).
- Every call is rate limited per caller and method (`fedscore.runtime.rpc`), and refusals beyond
  a caller's allowance are summarised (`audit.store.refusals`); the summaries' periodic task
  starts with the server, and `stop` writes every pending summary before the last
  checkpoint is signed, so a clean stop loses no count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from audit.servicer import AuditEndpoint, start_audit
from audit.store.log import EventLog, LogFactory
from audit.store.refusals import DEFAULT_REFUSAL_ALLOWANCE, RefusalAllowance, RefusalRecorder
from fedscore.errors import FailedPrecondition
from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.live_trust import LiveTrust, open_live_trust
from fedscore.runtime.party import Party
from fedscore.runtime.ratelimit import DEFAULT_RATE_LIMITS, RateLimits
from fedscore.runtime.rpc import RunningServer, start_server
from fedscore.runtime.status_follower import StatusListFollower, fetch_from_registry
from fedscore.runtime.trust_follower import PeerChannel, TrustFollower
from fedscore.runtime.trust_service import (
    acting_only,
    follow_audit,
    rekey_revocations,
    trust_handlers,
)
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Role
from keys.registry import TrustView
from keys.shares import RandomShares, ShareSource
from node.answer import derive_mask_seeds
from node.batch import batch_handlers
from node.question_checks import NodeTrust
from node.service import SERVICE_NAME, AgencyNode, Clock, revocation_handlers
from node.statistics import SERVICE_NAME as STATISTICS_SERVICE
from node.statistics import statistics_handlers
from node.store import NodeStore
from policies.model import Policy

_log = logging.getLogger(__name__)

# Well inside the registry's status list TTL, so a healthy node never goes stale.
STATUS_REFRESH_SECONDS = 15.0


@dataclass
class Running:
    """A started agency node."""

    port: int
    node: AgencyNode
    server: RunningServer
    follower: StatusListFollower
    registry_channel: PeerChannel
    audit: AuditEndpoint
    live: LiveTrust
    trust_follower: TrustFollower

    async def stop(self) -> None:
        await self.server.stop()
        await self.trust_follower.stop()
        await self.node.refusals.stop()
        await self.audit.stop()
        await self.follower.stop()
        await self.registry_channel.close()
        self.node.hot.close()
        self.node.store.dispose()


def follow_trust(node: AgencyNode, live: LiveTrust) -> None:
    """Keep `node` on `live`: a new view or policy rebuilds what the node trusts, whole."""

    def apply(view: TrustView, policy: Policy) -> None:
        revocations = node.trust.revocations
        rekey_revocations(revocations, view.registry_keys())
        node.follow(
            trust=NodeTrust.of(node.agency_id, view, live.policies, revocations),
            signing_key=live.signing_key,
            box=live.box,
            mask_seeds=derive_mask_seeds(node.agency_id, live.box, view),
        )

    live.listen(apply)


def open_node(
    party: Party,
    clock: Clock = time.time,
    log_factory: LogFactory = EventLog,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
    live: LiveTrust | None = None,
    share_source: ShareSource | None = None,
) -> AgencyNode:
    """The node's state and trust, derived from its party folder and following `live`."""
    if party.role != Role.ROLE_AGENCY:
        raise FailedPrecondition(f"{party.id} is not an agency of this federation", "WRONG_ROLE")
    live = live if live is not None else open_live_trust(party, clock=clock)
    view = live.view()
    store = NodeStore(party.db_url)
    trust = NodeTrust.of(party.id, view, live.policies, RevocationState(view.registry_keys()))
    log = log_factory(store.engine, party.id)
    node = AgencyNode(
        trust=trust,
        signing_key=live.signing_key,
        box=live.box,
        pseudonym_key=party.secrets.pseudonym_key,
        mask_seeds=derive_mask_seeds(party.id, live.box, view),
        store=store,
        log=log,
        refusals=RefusalRecorder(log, refusal_allowance),
        clock=clock,
        share_source=share_source or RandomShares(),
    )
    follow_trust(node, live)
    return node


async def start(
    party: Party,
    *,
    bind: str | None = None,
    status_refresh_seconds: float = STATUS_REFRESH_SECONDS,
    clock: Clock = time.time,
    log_factory: LogFactory = EventLog,
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
    passphrase: str | None = None,
    share_source: ShareSource | None = None,
) -> Running:
    """Open the node's state and serve `fedscore.v1.NodeService`, its statistics service,
    its AuditService and the TrustService.

    `rate_limits` bound each caller's calls of each method; `refusal_allowance` how many
    of a caller's refusals per interval are logged one by one before they are summarised.
    `passphrase` (else the party's own) is kept to open `next.key` when the registry lists it.
    `share_source` is for tests only (a seeded `keys.shares.SeededShares`, docs/adr/0019);
    `fedscore serve` never passes one, and a node draws its shares from the OS's CSPRNG.
    """
    live = open_live_trust(party, passphrase=passphrase, clock=clock)
    node = open_node(party, clock, log_factory, refusal_allowance, live, share_source)
    registry_channel = PeerChannel(live.view(), Role.ROLE_CONSENT_REGISTRY, party.tls)
    live.listen(lambda view, policy: registry_channel.follow(view))

    async def fetch_status() -> Envelope:
        return await fetch_from_registry(registry_channel.channel)()

    follower = StatusListFollower(node.trust.revocations, fetch_status, status_refresh_seconds)
    try:
        await follower.refresh()
    except Exception as exc:  # fail closed later (STATUS_LIST_STALE), not at start
        _log.warning("first status list fetch failed, retrying in background: %s", exc)
    follower.start()
    audit = start_audit(party, node.log)
    follow_audit(audit, live)
    own = {
        SERVICE_NAME: {**batch_handlers(node), **revocation_handlers(node)},
        STATISTICS_SERVICE: statistics_handlers(node),
    }
    try:
        server = await start_server(
            party.tls,
            bind or party.participant.endpoint,
            {
                **acting_only(live, own),
                **trust_handlers(live, on_rate_limited=node.refusals.rate_limited),
                **audit.services(),
            },
            rate_limits=rate_limits,
            on_rate_limited=node.refusals.rate_limited,
        )
    except BaseException:
        await audit.stop()
        await follower.stop()
        await registry_channel.close()
        node.store.dispose()
        raise
    node.refusals.start()
    trust_follower = TrustFollower.for_party(live, party.tls, party.config)
    trust_follower.start()
    return Running(
        port=server.port,
        node=node,
        server=server,
        follower=follower,
        registry_channel=registry_channel,
        audit=audit,
        live=live,
        trust_follower=trust_follower,
    )
