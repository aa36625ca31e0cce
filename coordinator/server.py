"""Start and stop the coordinator's gRPC server.

Invariants:
- Keys, keyrings, the policy and the pairwise channels are set up once here; a query
  reads no file and opens no connection.
- Channels to every agency endpoint in the trust registry are opened once, with mutual
  TLS and the agency id as the expected certificate name.
- The revocation state follows the registry's signed status list from the start: one
  refresh before serving (if the registry is down, the coordinator still starts and
  refuses with STATUS_LIST_STALE until a list arrives) and then in the background.
- Every call is rate limited per caller and method (`fedscore.runtime.rpc`), and refusals beyond
  a caller's allowance are summarised (`audit.store.refusals`); the summaries' periodic task
  starts with the server, and `stop` writes every pending summary before the last
  checkpoint is signed, so a clean stop loses no count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc.aio
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
from fedscore.runtime.party import Party
from fedscore.runtime.ratelimit import DEFAULT_RATE_LIMITS, RateLimits
from fedscore.runtime.rpc import RunningServer, secure_channel, start_server
from fedscore.runtime.status_follower import StatusListFollower, fetch_from_registry
from fedscore.v1.trust_pb2 import Role

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
    registry_channels: list[grpc.aio.Channel]
    engine: Engine
    audit: AuditEndpoint

    async def stop(self) -> None:
        await self.server.stop()
        await self.coordinator.refusals.stop()
        await self.audit.stop()
        await self.follower.stop()
        await self.coordinator.channels.close()
        for channel in self.registry_channels:
            await channel.close()
        self.coordinator.store.hot.close()
        self.engine.dispose()


def _registry_channel(party: Party) -> grpc.aio.Channel:
    registries = [p for p in party.trust.by_role(Role.ROLE_CONSENT_REGISTRY) if p.endpoint]
    if not registries:
        raise OSError("the trust registry lists no consent registry endpoint")
    registry = registries[0]
    return secure_channel(registry.endpoint, party.tls, server_name=registry.id)


async def start(
    party: Party,
    *,
    bind: str | None = None,
    node_deadline: float = NODE_DEADLINE_SECONDS,
    status_refresh_seconds: float = STATUS_REFRESH_SECONDS,
    log_factory: LogFactory = EventLog,
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
) -> Running:
    """Open the coordinator's state and channels; serve CoordinatorService and AuditService.

    `rate_limits` bound each caller's calls of each method; `refusal_allowance` how many
    of a caller's refusals per interval are logged one by one before they are summarised.
    """
    engine = open_engine(party.db_url)
    store = CoordinatorStore(engine, log_factory(engine, party.id))
    revocations = RevocationState(party.trust.registry_keys())
    registry_channel = _registry_channel(party)
    follower = StatusListFollower(
        revocations, fetch_from_registry(registry_channel), status_refresh_seconds
    )
    try:
        await follower.refresh()
    except Exception as exc:  # fail closed later (STATUS_LIST_STALE), not at start
        _log.warning("first status list refresh failed, retrying in background: %s", exc)
    follower.start()
    coordinator = Coordinator(
        id=party.id,
        signing_key=party.signing_key,
        trust=party.trust,
        query_keyring=party.trust.requester_keys(),
        agency_keyring=party.trust.agency_keys(),
        policies={party.policy.content_hash: party.policy},
        revocations=revocations,
        store=store,
        channels=NodeChannels.open(party.trust, party.tls),
        refusals=RefusalRecorder(store.log, refusal_allowance),
        node_deadline=node_deadline,
        clock=unix_now,
    )
    audit = start_audit(party, store.log)
    try:
        server = await start_server(
            party.tls,
            bind or party.participant.endpoint,
            {**CoordinatorService(coordinator).handlers(), **audit.services()},
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
    return Running(
        port=server.port,
        coordinator=coordinator,
        server=server,
        follower=follower,
        registry_channels=[registry_channel],
        engine=engine,
        audit=audit,
    )
