"""Health that means something: SERVING only while the party can answer correctly.

A `Readiness` holds named checks; each returns None when its condition is met, or the
reason the party cannot answer correctly now (its database unreachable, its status list
stale, its registry frozen or the party removed, a migration pending). A task runs them
every `interval` seconds and sets the standard gRPC health status of every service the
server serves (and of "") to SERVING or NOT_SERVING; each change is logged once, with
the reasons. A check that raises counts as failing, with the exception as its reason.

`probe_server` serves the same health status, and nothing else, without TLS on a
local-only address, for a load balancer or an orchestrator that holds no federation
certificate (grpc_health_probe, kubelet's gRPC probe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedscore.errors import InvalidArgument

_log = logging.getLogger(__name__)

Check = Callable[[], "str | None"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass
class Readiness:
    """A party's checks, and the health servicer whose status they set."""

    servicer: health.aio.HealthServicer
    services: Sequence[str]
    checks: Mapping[str, Check]
    interval: float = 1.0
    failing: dict[str, str] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def evaluate(self) -> dict[str, str]:
        """The failing checks now, by name, with their reasons."""
        failing: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                reason = check()
            except Exception as exc:  # a check that cannot run is a check that fails
                reason = f"{type(exc).__name__}: {exc}"
            if reason:
                failing[name] = reason
        return failing

    async def apply(self) -> dict[str, str]:
        """Evaluate (off the event loop: a check may wait on a database) and set the status
        of every service; log a change once."""
        failing = await asyncio.to_thread(self.evaluate)
        if failing != self.failing:
            if failing:
                _log.warning(
                    "NOT_SERVING: %s", "; ".join(f"{n}: {r}" for n, r in sorted(failing.items()))
                )
            elif self.failing:
                _log.info("SERVING again: every readiness check passes")
        self.failing = failing
        status = NOT_SERVING if failing else SERVING
        for service in [*self.services, ""]:
            await self.servicer.set(service, status)
        return failing

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.apply()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def probe_server(servicer: health.aio.HealthServicer, bind: str) -> grpc.aio.Server:
    """A plaintext gRPC server on a local-only address serving only `servicer`."""
    host = bind.rsplit(":", 1)[0].strip("[]")
    if host not in LOCAL_HOSTS:
        raise InvalidArgument(
            f"the health probe port must be local-only (one of {', '.join(LOCAL_HOSTS)}), "
            f"not {bind}: it is served without TLS",
            "PROBE_NOT_LOCAL",
        )
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(bind)
    if port == 0:
        raise InvalidArgument(f"cannot listen on {bind} for health probes", "ADDRESS_IN_USE")
    await server.start()
    return server
