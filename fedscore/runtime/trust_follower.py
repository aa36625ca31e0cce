"""Following the registry chain and the signed policy from peers, in the background.

Every server runs one `TrustFollower`: every `interval` seconds (and at the moment the
current version's next window boundary passes) it ticks its `LiveTrust`, then asks the
endpoints of its config's `fetch_registry_from` in order for what came after the version
it trusts (`TrustService.GetTrust`); the first that answers with something that verifies
wins, and `LiveTrust.offer` applies it (and logs each applied version at INFO).

Invariants:
- Peers are dialled with mutual TLS (`fedscore.runtime.rpc.secure_channel`); the name the
  peer's certificate must carry is the participant id the trusted registry lists at that
  endpoint. An endpoint the registry does not list, and the party's own, are not asked.
- What a peer sends is believed only as far as it verifies (`LiveTrust.offer`); a peer
  that sends something that does not is skipped like one that is down.
- An outage (no peer answered with something usable) is logged once when it starts and
  once when it ends, with its length and the failed attempts, never every retry.
- A channel that failed is closed and dialled afresh next time, so a peer that is back
  is not left behind gRPC's reconnect backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc.aio

from fedscore.errors import FailedPrecondition, FedscoreError, Unavailable
from fedscore.runtime.live_trust import Clock, LiveTrust
from fedscore.runtime.party_config import PartyConfig
from fedscore.runtime.rpc import TlsMaterial, call_unary, secure_channel
from fedscore.v1.trust_pb2 import GetTrustRequest, GetTrustResponse, Role, TrustUpdate
from keys.registry import TrustView

_log = logging.getLogger(__name__)

GET_TRUST_METHOD = "/fedscore.v1.TrustService/GetTrust"
DEFAULT_TIMEOUT_SECONDS = 2.0
# A failed round is retried this soon at most (sooner if the interval is shorter).
RETRY_SECONDS = 1.0

# (endpoint, the participant id it belongs to, the version trusted) -> what came after it
Fetch = Callable[[str, str, int], Awaitable[TrustUpdate]]


class TrustFollower:
    """Keeps one party's `LiveTrust` current from its peers."""

    def __init__(
        self,
        live: LiveTrust,
        sources: Sequence[str],
        interval: float,
        *,
        tls: TlsMaterial | None = None,
        fetch: Fetch | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Clock = time.time,
    ) -> None:
        if fetch is None and tls is None:
            raise ValueError("a follower needs TLS material or a fetch function")
        self.live = live
        self.sources = tuple(sources)
        self.interval = interval
        self._tls = tls
        self._fetch = fetch if fetch is not None else self._get_trust
        self._timeout = timeout
        self._clock = clock
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._task: asyncio.Task[None] | None = None
        # When the current run of failed rounds began (None while rounds succeed).
        self.failing_since: float | None = None
        self.failures = 0

    @classmethod
    def for_party(cls, live: LiveTrust, tls: TlsMaterial, config: PartyConfig) -> TrustFollower:
        """The follower of a server: its config's sources and refresh interval."""
        return cls(live, config.fetch_registry_from, config.trust_refresh_seconds, tls=tls)

    def peers(self) -> list[tuple[str, str]]:
        """(endpoint, participant id) of each source the trusted registry lists, in order."""
        owners: dict[str, str] = {}
        for participant in self.live.chain.registry.participants:
            if participant.endpoint:
                owners[participant.endpoint] = participant.id
        return [
            (endpoint, owners[endpoint])
            for endpoint in self.sources
            if endpoint in owners and owners[endpoint] != self.live.party_id
        ]

    async def refresh(self) -> bool:
        """One round: tick, then the first peer that answers usably wins.

        True if something new was applied; raises `Unavailable TRUST_UNAVAILABLE` naming
        every peer's failure if none answered usably.
        """
        self.live.tick()
        failures: list[str] = []
        for endpoint, owner in self.peers():
            try:
                update = await self._fetch(endpoint, owner, self.live.version)
            except Exception as exc:
                failures.append(f"{owner} at {endpoint}: {exc}")
                await self._forget(endpoint, owner)
                continue
            try:
                return self.live.offer(update)
            except FedscoreError as error:
                failures.append(f"{owner} at {endpoint} sent what does not verify: {error}")
        if failures:
            raise Unavailable("; ".join(failures), reason="TRUST_UNAVAILABLE")
        return False

    async def _get_trust(self, endpoint: str, owner: str, since: int) -> TrustUpdate:
        key = (endpoint, owner)
        channel = self._channels.get(key)
        if channel is None:
            assert self._tls is not None
            channel = self._channels[key] = secure_channel(endpoint, self._tls, owner)
        response = await call_unary(
            channel,
            GET_TRUST_METHOD,
            GetTrustRequest(since_version=since),
            GetTrustResponse,
            self._timeout,
        )
        return response.update

    async def _forget(self, endpoint: str, owner: str) -> None:
        channel = self._channels.pop((endpoint, owner), None)
        if channel is not None:
            await channel.close()

    def _delay(self) -> float:
        """Until the next round: the interval, or less if a window boundary comes first."""
        delay = self.interval if self.failing_since is None else min(self.interval, RETRY_SECONDS)
        boundary = self.live.next_change()
        if boundary is not None:
            delay = min(delay, max(0.0, boundary - self._clock()) + 0.01)
        return delay

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
                self._recovered()
            except Exception as exc:  # keep following; never let the task die
                self._failed(exc)
            await asyncio.sleep(self._delay())

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            _log.warning(
                "trust refresh failed: %s; retrying every %g s",
                exc,
                min(self.interval, RETRY_SECONDS),
            )

    def _recovered(self) -> None:
        if self.failing_since is not None:
            _log.warning(
                "trust refresh recovered after %.1f s and %d failed attempts",
                time.monotonic() - self.failing_since,
                self.failures,
            )
        self.failing_since = None
        self.failures = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        channels = list(self._channels.values())
        self._channels.clear()
        await asyncio.gather(*(channel.close() for channel in channels))


class PeerChannel:
    """A mutual-TLS channel to the one party of a role (the consent registry, the helper
    aggregator; the first by id if the registry lists several), following the endpoint the
    registry lists for it: when a new view names another endpoint or party, the next call
    dials that one and the old channel is closed after `grace` seconds (a call already
    under way on it finishes). Call `follow(view)` from a trust listener. With no such
    party listed, `FailedPrecondition` with `missing_reason`."""

    def __init__(
        self,
        view: TrustView,
        role: Role,
        tls: TlsMaterial,
        grace: float = 5.0,
        missing_reason: str = "NO_REGISTRY",
    ) -> None:
        self.role = role
        self._tls = tls
        self._grace = grace
        self._missing_reason = missing_reason
        self._target = self._listed(view)
        self.channel = secure_channel(self._target[1], tls, server_name=self._target[0])
        # Channels replaced but not closed yet, each with the task that will close it.
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}

    def _listed(self, view: TrustView) -> tuple[str, str]:
        listed = [p for p in view.by_role(self.role) if p.endpoint]
        if not listed:
            raise FailedPrecondition(
                f"the trust registry lists no {Role.Name(self.role)} endpoint",
                reason=self._missing_reason,
            )
        return listed[0].id, listed[0].endpoint

    @property
    def party_id(self) -> str:
        """The participant id of the party dialled now."""
        return self._target[0]

    def follow(self, view: TrustView) -> None:
        try:
            target = self._listed(view)
        except FailedPrecondition as error:
            _log.error("%s; keeping the channel to %s", error, self._target[1])
            return
        if target == self._target:
            return
        old, self._target = self.channel, target
        self.channel = secure_channel(target[1], self._tls, server_name=target[0])
        _log.info("%s is now dialled at %s", target[0], target[1])
        task = asyncio.get_running_loop().create_task(self._close_later(old))
        self._retiring[task] = old
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def _close_later(self, channel: grpc.aio.Channel) -> None:
        await asyncio.sleep(self._grace)
        await channel.close()

    async def close(self) -> None:
        retiring = list(self._retiring.items())
        self._retiring.clear()
        for task, _ in retiring:
            task.cancel()
        await asyncio.gather(self.channel.close(), *(old.close() for _, old in retiring))
