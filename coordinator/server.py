"""Start and stop the coordinator's gRPC server.

Invariants:
- Keys, keyrings, the policies and the node channels are derived from the party's
  `LiveTrust` at start, and again, whole, whenever it changes (a new registry version, a
  window boundary, a new policy): the relying parties' and agencies' keyrings of the
  view, every policy still held, the signing key (once the registry lists the one in
  `next.key`), a channel opened for a new agency or a changed endpoint and closed for a
  removed one, the revocation state's registry keys, the audit service's registry and
  key. A query reads no file and opens no connection.
- Channels to every agency endpoint in the trust registry carry mutual TLS and the agency
  id as the expected certificate name.
- It serves `fedscore.v1.TrustService` to anyone of the federation and follows the
  registry chain from its config's `fetch_registry_from` in the background; removed from
  the registry, it keeps doing both and refuses every call of its own (PARTY_REMOVED).
- The revocation state follows the registry's signed status list from the start: one
  refresh before serving (if the registry is down, the coordinator still starts and
  refuses with STATUS_LIST_STALE until a list arrives) and then in the background, at
  the endpoint the current registry lists.
- Every call is rate limited per caller and method (`fedscore.runtime.rpc`), and refusals beyond
  a caller's allowance are summarised (`audit.store.refusals`); the summaries' periodic task
  starts with the server, and `stop` writes every pending summary before the last
  checkpoint is signed, so a clean stop loses no count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from audit.servicer import AuditEndpoint, start_audit
from audit.store.log import EventLog, LogFactory
from audit.store.refusals import DEFAULT_REFUSAL_ALLOWANCE, RefusalAllowance, RefusalRecorder
from coordinator.fanout import NODE_DEADLINE_SECONDS, NodeChannels
from coordinator.scoring import Coordinator, unix_now
from coordinator.service import CoordinatorService
from coordinator.store import CoordinatorStore
from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.db import open_engine
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
from policies.model import Policy

_log = logging.getLogger(__name__)

# Well inside the registry's status list TTL, so a healthy coordinator never goes stale.
STATUS_REFRESH_SECONDS = 15.0


@dataclass
class Running:
    """A started coordinator."""

    port: int
    coordinator: Coordinator
    server: RunningServer
    follower: StatusListFollower
    registry_channel: PeerChannel
    engine: Engine
    audit: AuditEndpoint
    live: LiveTrust
    trust_follower: TrustFollower

    async def stop(self) -> None:
        await self.server.stop()
        await self.trust_follower.stop()
        await self.coordinator.refusals.stop()
        await self.audit.stop()
        await self.follower.stop()
        await self.coordinator.channels.close()
        await self.registry_channel.close()
        self.coordinator.store.hot.close()
        self.engine.dispose()


def follow_trust(coordinator: Coordinator, live: LiveTrust) -> None:
    """Keep `coordinator` on `live`: a new view or policy rebuilds what it trusts, whole."""

    def apply(view: TrustView, policy: Policy) -> None:
        rekey_revocations(coordinator.revocations, view.registry_keys())
        coordinator.follow(view, live.policies, live.signing_key)

    live.listen(apply)


async def start(
    party: Party,
    *,
    bind: str | None = None,
    node_deadline: float = NODE_DEADLINE_SECONDS,
    status_refresh_seconds: float = STATUS_REFRESH_SECONDS,
    log_factory: LogFactory = EventLog,
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
    passphrase: str | None = None,
) -> Running:
    """Open the coordinator's state and channels; serve CoordinatorService, AuditService
    and TrustService.

    `rate_limits` bound each caller's calls of each method; `refusal_allowance` how many
    of a caller's refusals per interval are logged one by one before they are summarised.
    `passphrase` (else the party's own) is kept to open `next.key` when the registry lists it.
    """
    live = open_live_trust(party, passphrase=passphrase, clock=unix_now)
    view = live.view()
    engine = open_engine(party.db_url)
    store = CoordinatorStore(engine, log_factory(engine, party.id))
    revocations = RevocationState(view.registry_keys())
    registry_channel = PeerChannel(view, Role.ROLE_CONSENT_REGISTRY, party.tls)
    live.listen(lambda view, policy: registry_channel.follow(view))

    async def fetch_status() -> Envelope:
        return await fetch_from_registry(registry_channel.channel)()

    follower = StatusListFollower(revocations, fetch_status, status_refresh_seconds)
    try:
        await follower.refresh()
    except Exception as exc:  # fail closed later (STATUS_LIST_STALE), not at start
        _log.warning("first status list refresh failed, retrying in background: %s", exc)
    follower.start()
    coordinator = Coordinator(
        id=party.id,
        signing_key=live.signing_key,
        trust=view,
        query_keyring=view.requester_keys(),
        agency_keyring=view.agency_keys(),
        policies=live.policies,
        revocations=revocations,
        store=store,
        channels=NodeChannels.open(view, party.tls),
        refusals=RefusalRecorder(store.log, refusal_allowance),
        node_deadline=node_deadline,
        clock=unix_now,
    )
    follow_trust(coordinator, live)
    audit = start_audit(party, store.log)
    follow_audit(audit, live)
    try:
        server = await start_server(
            party.tls,
            bind or party.participant.endpoint,
            {
                **acting_only(live, CoordinatorService(coordinator).handlers()),
                **trust_handlers(live, on_rate_limited=coordinator.refusals.rate_limited),
                **audit.services(),
            },
            rate_limits=rate_limits,
            on_rate_limited=coordinator.refusals.rate_limited,
        )
    except BaseException:
        await audit.stop()
        await follower.stop()
        await coordinator.channels.close()
        await registry_channel.close()
        engine.dispose()
        raise
    coordinator.refusals.start()
    trust_follower = TrustFollower.for_party(live, party.tls, party.config)
    trust_follower.start()
    return Running(
        port=server.port,
        coordinator=coordinator,
        server=server,
        follower=follower,
        registry_channel=registry_channel,
        engine=engine,
        audit=audit,
        live=live,
        trust_follower=trust_follower,
    )
