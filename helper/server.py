"""Start and stop the helper aggregator's gRPC server (docs/adr/0019).

Invariants:
- Keys, keyrings and the policies are derived from the party's `LiveTrust` at start and
  again, whole, whenever it changes: the coordinator's and agencies' keyrings of the view,
  every policy still held, the signing key (once the registry lists the one in
  `next.key`), the box key its shares are sealed to, the audit service's registry and key.
  Answering an order reads no file and opens no connection.
- The server binds the endpoint the trust registry lists for this party (unless a test or
  operator gives another), with mutual TLS from the federation CA only. It serves
  `fedscore.v1.HelperService`, its AuditService (the regulator audits its log as every
  other party's) and the TrustService, and follows the registry chain from its config's
  `fetch_registry_from`; removed from the registry, it refuses every order (PARTY_REMOVED).
- Every call is rate limited per caller and method, and refusals beyond a caller's
  allowance are summarised; `stop` writes every pending summary before the last checkpoint.
- Its database holds its own privacy ledger, its `helper_noised` table and its log: no
  record, no count, no share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from audit.servicer import AuditEndpoint, start_audit
from audit.store.log import EventLog, LogFactory
from audit.store.refusals import DEFAULT_REFUSAL_ALLOWANCE, RefusalAllowance, RefusalRecorder
from fedscore.errors import FailedPrecondition
from fedscore.runtime.db import open_engine
from fedscore.runtime.live_trust import LiveTrust, open_live_trust
from fedscore.runtime.party import Party
from fedscore.runtime.ratelimit import DEFAULT_RATE_LIMITS, RateLimits
from fedscore.runtime.rpc import RunningServer, start_server
from fedscore.runtime.trust_follower import TrustFollower
from fedscore.runtime.trust_service import acting_only, follow_audit, trust_handlers
from fedscore.v1.trust_pb2 import Role
from helper.noising import HelperAggregator
from helper.service import SERVICE_NAME, helper_handlers
from helper.store import HelperStore
from keys.registry import TrustView
from policies.model import Policy


@dataclass
class Running:
    """A started helper aggregator."""

    port: int
    helper: HelperAggregator
    server: RunningServer
    engine: Engine
    audit: AuditEndpoint
    live: LiveTrust
    trust_follower: TrustFollower

    async def stop(self) -> None:
        await self.server.stop()
        await self.trust_follower.stop()
        await self.helper.refusals.stop()
        await self.audit.stop()
        self.engine.dispose()


def open_helper(
    party: Party,
    live: LiveTrust,
    engine: Engine,
    *,
    clock: Callable[[], float] = time.time,
    log_factory: LogFactory = EventLog,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
) -> HelperAggregator:
    """The helper's state, following `live`."""
    if party.role != Role.ROLE_HELPER_AGGREGATOR:
        raise FailedPrecondition(f"{party.id} is not a helper aggregator", "WRONG_ROLE")
    view = live.view()
    log = log_factory(engine, party.id)
    helper = HelperAggregator(
        id=party.id,
        signing_key=live.signing_key,
        box=live.box,
        coordinator_keyring=view.coordinator_keys(),
        agency_keyring=view.agency_keys(),
        policies=live.policies,
        store=HelperStore(engine),
        log=log,
        refusals=RefusalRecorder(log, refusal_allowance),
        clock=clock,
    )

    def apply(view: TrustView, policy: Policy) -> None:
        helper.follow(
            view.coordinator_keys(),
            view.agency_keys(),
            live.policies,
            live.signing_key,
            live.box,
        )

    live.listen(apply)
    return helper


async def start(
    party: Party,
    *,
    bind: str | None = None,
    clock: Callable[[], float] = time.time,
    log_factory: LogFactory = EventLog,
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
    passphrase: str | None = None,
) -> Running:
    """Open the helper's state and serve HelperService, AuditService and TrustService.

    `passphrase` (else the party's own) is kept to open `next.key` when the registry lists it.
    """
    live = open_live_trust(party, passphrase=passphrase, clock=clock)
    engine = open_engine(party.db_url)
    helper = open_helper(
        party,
        live,
        engine,
        clock=clock,
        log_factory=log_factory,
        refusal_allowance=refusal_allowance,
    )
    audit = start_audit(party, helper.log)
    follow_audit(audit, live)
    try:
        server = await start_server(
            party.tls,
            bind or party.participant.endpoint,
            {
                **acting_only(live, {SERVICE_NAME: helper_handlers(helper)}),
                **trust_handlers(live, on_rate_limited=helper.refusals.rate_limited),
                **audit.services(),
            },
            rate_limits=rate_limits,
            on_rate_limited=helper.refusals.rate_limited,
        )
    except BaseException:
        await audit.stop()
        engine.dispose()
        raise
    helper.refusals.start()
    trust_follower = TrustFollower.for_party(live, party.tls, party.config)
    trust_follower.start()
    return Running(
        port=server.port,
        helper=helper,
        server=server,
        engine=engine,
        audit=audit,
        live=live,
        trust_follower=trust_follower,
    )
