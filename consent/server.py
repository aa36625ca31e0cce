"""Start and stop the consent registry's gRPC server.

Invariants:
- The server binds the endpoint the trust registry lists for this party (unless a test
  or operator gives another), with mutual TLS from the federation CA only.
- State lives in the party's database (grants, status list, audit log in one file), so a
  restarted registry serves the same grants, sequence and log.
- Push channels are opened once here and closed on stop.
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
from fedscore.runtime.party import Party
from fedscore.runtime.ratelimit import DEFAULT_RATE_LIMITS, RateLimits
from fedscore.runtime.rpc import RunningServer, start_server


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

    async def stop(self) -> None:
        await self.server.stop()
        await self.refusals.stop()
        await self.audit.stop()
        await self.pusher.close()
        self.engine.dispose()


async def start(
    party: Party,
    *,
    bind: str | None = None,
    status_ttl_seconds: int = DEFAULT_STATUS_TTL_SECONDS,
    push_timeout: float = DEFAULT_PUSH_TIMEOUT_SECONDS,
    clock: Clock = time.time,
    rate_limits: RateLimits = DEFAULT_RATE_LIMITS,
    refusal_allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
) -> Running:
    """Open the registry's state and serve `fedscore.v1.ConsentService`.

    `rate_limits` bound each caller's calls of each method; calls refused for their rate
    are summarised per caller per `refusal_allowance.interval_seconds`.
    """
    engine = open_engine(party.db_url)
    log = EventLog(engine, party.id)
    registry = ConsentRegistry.for_party(party, engine, log, status_ttl_seconds=status_ttl_seconds)
    pusher = RevocationPusher(push_targets(party.trust), party.tls, log, timeout=push_timeout)
    refusals = RefusalRecorder(log, refusal_allowance)
    audit = start_audit(party, log)
    try:
        server = await start_server(
            party.tls,
            bind or party.participant.endpoint,
            {SERVICE_NAME: consent_handlers(registry, pusher, clock), **audit.services()},
            rate_limits=rate_limits,
            on_rate_limited=refusals.rate_limited,
        )
    except BaseException:
        await audit.stop()
        await pusher.close()
        engine.dispose()
        raise
    refusals.start()
    return Running(
        port=server.port,
        registry=registry,
        pusher=pusher,
        server=server,
        engine=engine,
        audit=audit,
        refusals=refusals,
    )
