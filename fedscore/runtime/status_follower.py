"""Following the consent registry's signed status list over the network.

A party pulls the list in the background and applies it to its `RevocationState`
(`fedscore.protocol.status_list`), which verifies it. A failed pull is retried sooner;
the state's TTL makes a party that cannot refresh fail closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import grpc.aio

from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.rpc import call_unary
from fedscore.v1.consent_pb2 import GetStatusListRequest, GetStatusListResponse
from fedscore.v1.envelope_pb2 import Envelope

_log = logging.getLogger(__name__)

StatusFetch = Callable[[], Awaitable[Envelope]]


class StatusListFollower:
    """Pulls the registry's signed status list in the background, every `interval` seconds."""

    def __init__(self, state: RevocationState, fetch: StatusFetch, interval: float) -> None:
        self._state = state
        self._fetch = fetch
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        # When the current run of failed refreshes began (None while refreshes succeed):
        # an outage is logged once when it starts and once when it ends, not every retry.
        self.failing_since: float | None = None
        self.failures = 0

    async def refresh(self) -> None:
        envelope = await self._fetch()
        self._state.apply_status_list(envelope, int(time.time()))

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
                delay = self._interval
                self._recovered()
            except Exception as exc:  # keep following; the TTL makes staleness fail closed
                self._failed(exc)
                delay = min(self._interval, 1.0)
            await asyncio.sleep(delay)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            retry = min(self._interval, 1.0)
            _log.warning("status list refresh failed: %s; retrying every %g s", exc, retry)

    def _recovered(self) -> None:
        if self.failing_since is not None:
            down = time.monotonic() - self.failing_since
            _log.warning(
                "status list refresh recovered after %.1f s and %d failed attempts",
                down,
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


def fetch_from_registry(channel: grpc.aio.Channel, timeout: float = 2.0) -> StatusFetch:
    """A fetch function pulling the signed status list from the consent registry."""

    async def fetch() -> Envelope:
        response = await call_unary(
            channel,
            "/fedscore.v1.ConsentService/GetStatusList",
            GetStatusListRequest(),
            GetStatusListResponse,
            timeout,
        )
        return response.status_list

    return fetch
