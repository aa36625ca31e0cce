"""Start and stop an agency node's gRPC server.

Invariants:
- Keys, keyrings, the policy and the pairwise mask seeds are set up once here; answering
  a query reads no file and derives no key.
- The server binds the endpoint the trust registry lists for this agency (unless a test
  or operator gives another), with mutual TLS from the federation CA only.
- Revocation state follows the consent registry's signed status list from the start:
  one fetch before serving and then in the background. If the registry is not up yet,
  the node still starts and refuses every query with STATUS_LIST_STALE until a list
  arrives (fail closed).
- Every call is rate limited per caller and method (`fedscore.runtime.rpc`), and refusals beyond
  a caller's allowance are summarised (`audit.store.refusals`); the summaries' periodic task
  starts with the server, and `stop` writes every pending summary before the last
  checkpoint is signed, so a clean stop loses no count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc.aio

from audit.servicer import AuditEndpoint, start_audit
from audit.store.log import EventLog, LogFactory
from audit.store.refusals import DEFAULT_REFUSAL_ALLOWANCE, RefusalAllowance, RefusalRecorder
from fedscore.errors import FailedPrecondition
from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.party import Party
from fedscore.runtime.ratelimit import DEFAULT_RATE_LIMITS, RateLimits
from fedscore.runtime.rpc import RunningServer, secure_channel, start_server
from fedscore.runtime.status_follower import StatusListFollower, fetch_from_registry
from fedscore.v1.trust_pb2 import Role
from node.answer import derive_mask_seeds
from node.batch import batch_handlers
from node.question_checks import NodeTrust
from node.service import SERVICE_NAME, AgencyNode, Clock, revocation_handlers
from node.statistics import SERVICE_NAME as STATISTICS_SERVICE
from node.statistics import statistics_handlers
from node.store import NodeStore

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
    registry_channel: grpc.aio.Channel
    audit: AuditEndpoint

    async def stop(self) -> None:
        await self.server.stop()
        await self.node.refusals.stop()
        await self.audit.stop()
        await self.follower.stop()
        await self.registry_channel.close()
        self.node.hot.close()
        self.node.store.dispose()


def _registry_channel(party: Party) -> grpc.aio.Channel:
    registries = [p for p in party.trust.by_role(Role.ROLE_CONSENT_REGISTRY) if p.endpoint]
    if not registries:
        raise FailedPrecondition(
            "the trust registry lists no consent registry endpoint", reason="NO_REGISTRY"
        )
    return secure_channel(registries[0].endpoint, party.tls, server_name=registries[0].id)


def open_node(
    party: Party,
    clock: Clock = time.time,
    log_factory: LogFactory = EventLog,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
) -> AgencyNode:
    """The node's state and trust, derived once from its party folder."""
    if party.role != Role.ROLE_AGENCY:
        raise FailedPrecondition(f"{party.id} is not an agency of this federation", "WRONG_ROLE")
    store = NodeStore(party.db_url)
    trust = NodeTrust(
        agency_id=party.id,
        trust=party.trust,
        coordinator_keyring=party.trust.coordinator_keys(),
        policies={party.policy.content_hash: party.policy},
        revocations=RevocationState(party.trust.registry_keys()),
        request_keyring=party.trust.requester_keys(),
    )
    log = log_factory(store.engine, party.id)
    return AgencyNode(
        trust=trust,
        signing_key=party.signing_key,
        box=party.box,
        pseudonym_key=party.secrets.pseudonym_key,
        mask_seeds=derive_mask_seeds(party.id, party.box, party.trust),
        store=store,
        log=log,
        refusals=RefusalRecorder(log, refusal_allowance),
        clock=clock,
    )


async def start(
    party: Party,
    *,
    bind: str | None = None,
    status_refresh_seconds: float = STATUS_REFRESH_SECONDS,
    clock: Clock = time.time,
    log_factory: LogFactory = EventLog,
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
) -> Running:
    """Open the node's state and serve `fedscore.v1.NodeService` and its AuditService.

    `rate_limits` bound each caller's calls of each method; `refusal_allowance` how many
    of a caller's refusals per interval are logged one by one before they are summarised.
    """
    node = open_node(party, clock, log_factory, refusal_allowance)
    registry_channel = _registry_channel(party)
    follower = StatusListFollower(
        node.trust.revocations, fetch_from_registry(registry_channel), status_refresh_seconds
    )
    try:
        await follower.refresh()
    except Exception as exc:  # fail closed later (STATUS_LIST_STALE), not at start
        _log.warning("first status list fetch failed, retrying in background: %s", exc)
    follower.start()
    audit = start_audit(party, node.log)
    try:
        server = await start_server(
            party.tls,
            bind or party.participant.endpoint,
            {
                SERVICE_NAME: {**batch_handlers(node), **revocation_handlers(node)},
                STATISTICS_SERVICE: statistics_handlers(node),
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
    return Running(
        port=server.port,
        node=node,
        server=server,
        follower=follower,
        registry_channel=registry_channel,
        audit=audit,
    )
