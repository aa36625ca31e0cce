"""Start and stop the consent registry's gRPC server.

Invariants:
- The server binds the endpoint the trust registry lists for this party (unless a test
  or operator gives another), with mutual TLS from the federation CA only.
- State lives in the party's database (grants, status list, audit log in one file), so a
  restarted registry serves the same grants, sequence and log.
- What it trusts follows the party's `LiveTrust`, swapped whole when it changes: the view
  (who may call, every agency's box key a token is sealed to), the newest policy (what a
  grant is checked against and issued under), the signing key (once the registry lists
  the one in `next.key`), the push targets (every agency and coordinator the view lists,
  at the endpoint it lists), the audit service's registry and key.
- It serves `fedscore.v1.TrustService` to anyone of the federation and follows the
  registry chain from its config's `fetch_registry_from` in the background; removed from
  the registry, it keeps doing both and refuses every call of its own (PARTY_REMOVED).
- Push channels are opened here, follow the registry, and are closed on stop.
- Every call is rate limited per caller and method (`fedscore.runtime.rpc`); calls refused for
  their rate are counted into one "refusals_summarised" entry per caller per interval
  (`audit.store.refusals`), written by a periodic task and on stop, never one by one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine

from audit.servicer import AuditEndpoint, start_audit
from audit.store.log import EventLog
from audit.store.refusals import DEFAULT_REFUSAL_ALLOWANCE, RefusalAllowance, RefusalRecorder
from consent.push import DEFAULT_PUSH_TIMEOUT_SECONDS, RevocationPusher, push_targets
from consent.registry import DEFAULT_STATUS_TTL_SECONDS, ConsentRegistry
from consent.service import SERVICE_NAME, Clock, consent_handlers
from consent.store import open_engine
from fedscore.runtime.live_trust import LiveTrust, open_live_trust
from fedscore.runtime.party import Party
from fedscore.runtime.ratelimit import DEFAULT_RATE_LIMITS, RateLimits
from fedscore.runtime.rpc import RunningServer, start_server
from fedscore.runtime.trust_follower import TrustFollower
from fedscore.runtime.trust_service import acting_only, follow_audit, trust_handlers
from keys.registry import TrustView
from policies.model import Policy


@dataclass
class Running:
    """A started consent registry."""

    port: int
    registry: ConsentRegistry
    pusher: RevocationPusher
    server: RunningServer
    engine: Engine
    audit: AuditEndpoint
    refusals: RefusalRecorder
    live: LiveTrust
    trust_follower: TrustFollower

    async def stop(self) -> None:
        await self.server.stop()
        await self.trust_follower.stop()
        await self.refusals.stop()
        await self.audit.stop()
        await self.pusher.close()
        self.engine.dispose()


def follow_trust(registry: ConsentRegistry, pusher: RevocationPusher, live: LiveTrust) -> None:
    """Keep the registry and its pushes on `live`, each swapped whole when it changes."""

    def apply(view: TrustView, policy: Policy) -> None:
        registry.follow(view, policy, live.signing_key)
        pusher.follow(push_targets(view))

    live.listen(apply)


async def start(
    party: Party,
    *,
    bind: str | None = None,
    status_ttl_seconds: int = DEFAULT_STATUS_TTL_SECONDS,
    push_timeout: float = DEFAULT_PUSH_TIMEOUT_SECONDS,
    clock: Clock = time.time,
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
    passphrase: str | None = None,
) -> Running:
    """Open the registry's state and serve `fedscore.v1.ConsentService`, its AuditService
    and the TrustService.

    `rate_limits` bound each caller's calls of each method; calls refused for their rate
    are summarised per caller per `refusal_allowance.interval_seconds`. `passphrase`
    (else the party's own) is kept to open `next.key` when the registry lists it.
    """
    live = open_live_trust(party, passphrase=passphrase, clock=clock)
    view = live.view()
    engine = open_engine(party.db_url)
    log = EventLog(engine, party.id)
    registry = ConsentRegistry.for_party(party, engine, log, status_ttl_seconds=status_ttl_seconds)
    registry.follow(view, live.policy, live.signing_key)
    pusher = RevocationPusher(push_targets(view), party.tls, log, timeout=push_timeout)
    follow_trust(registry, pusher, live)
    refusals = RefusalRecorder(log, refusal_allowance)
    audit = start_audit(party, log)
    follow_audit(audit, live)
    try:
        server = await start_server(
            party.tls,
            bind or party.participant.endpoint,
            {
                **acting_only(live, {SERVICE_NAME: consent_handlers(registry, pusher, clock)}),
                **trust_handlers(live, on_rate_limited=refusals.rate_limited),
                **audit.services(),
            },
            rate_limits=rate_limits,
            on_rate_limited=refusals.rate_limited,
        )
    except BaseException:
        await audit.stop()
        await pusher.close()
        engine.dispose()
        raise
    refusals.start()
    trust_follower = TrustFollower.for_party(live, party.tls, party.config)
    trust_follower.start()
    return Running(
        port=server.port,
        registry=registry,
        pusher=pusher,
        server=server,
        engine=engine,
        audit=audit,
        refusals=refusals,
        live=live,
        trust_follower=trust_follower,
    )
