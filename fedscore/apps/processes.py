"""Start and stop a federation's servers as separate processes (demo, tests, benchmarks).

Each party runs `fedscore serve --config` from its own folder, in its own process, with
its output in `orgs/<id>/serve.log`. Readiness is the gRPC health service answering
SERVING over mutual TLS, never a sleep.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from grpc_health.v1 import health_pb2

from fedscore.errors import Unavailable
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import Party, federation_view
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.trust_pb2 import Role

# The order servers start in: the helper aggregator is serving before the coordinator,
# which may publish a release (docs/adr/0019) as soon as it serves.
SERVER_ROLES = (
    Role.ROLE_CONSENT_REGISTRY,
    Role.ROLE_AGENCY,
    Role.ROLE_HELPER_AGGREGATOR,
    Role.ROLE_COORDINATOR,
)


def stop_on_signal() -> asyncio.Event:
    """For a server process that has just started: an event SIGTERM or SIGINT will set.

    What exists by now (keys, policy, compiled statements, channels) lives as long as the
    server, so it is moved out of the garbage collector's sight: collections stop
    re-scanning it (about 5 % less CPU per score in the batch benchmark). The benchmark's
    baseline servers call this too, so they are treated alike.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gc.collect()
    gc.freeze()
    return stop


def server_party_ids(workdir: Path) -> list[str]:
    """Registry first, then agencies, then the helper aggregator, then the coordinator: the
    order they start in."""
    trust = federation_view(workdir)
    return [p.id for role in SERVER_ROLES for p in trust.by_role(role)]


async def wait_serving(prober: Party, party_id: str, timeout: float = 30.0) -> None:
    """Wait until `party_id` answers SERVING to a health check over mutual TLS."""
    endpoint = prober.trust.participant(party_id).endpoint
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        async with secure_channel(endpoint, prober.tls, server_name=party_id) as channel:
            try:
                response = await call_unary(
                    channel,
                    "/grpc.health.v1.Health/Check",
                    health_pb2.HealthCheckRequest(service=""),
                    health_pb2.HealthCheckResponse,
                    1.0,
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except Exception as exc:
                last_error = str(exc)
        await asyncio.sleep(0.1)
    raise Unavailable(f"{party_id} did not become healthy: {last_error}", reason="NOT_SERVING")


class FederationProcesses:
    """The server processes of one federation folder."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.env = {**os.environ, **(env or {})}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start_party(self, party_id: str) -> subprocess.Popen[bytes]:
        log_path = FederationPaths(self.workdir).org(party_id).serve_log
        log = log_path.open("ab")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedscore.apps.cli.main",
                "serve",
                "--config",
                str(FederationPaths(self.workdir).org(party_id).config),
                # The local federation's operator asks for its databases to be brought
                # up to date; a production unit runs `fedscore db upgrade` as a step.
                "--migrate",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        self.processes[party_id] = process
        return process

    async def start_all(self, prober: Party, timeout: float = 60.0) -> None:
        """The consent registry, then every agency and helper aggregator at once, then the
        coordinator: each step serving before the next starts."""
        trust = federation_view(self.workdir)
        coordinators = [p.id for p in trust.by_role(Role.ROLE_COORDINATOR)]
        ids = server_party_ids(self.workdir)
        middle = [pid for pid in ids[1:] if pid not in coordinators]
        for step in ([ids[0]], middle, coordinators):
            for party_id in step:
                self.start_party(party_id)
            await asyncio.gather(*(wait_serving(prober, pid, timeout) for pid in step))

    def stop_party(self, party_id: str, timeout: float = 10.0) -> None:
        process = self.processes.pop(party_id, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for party_id in reversed(list(self.processes)):
            self.stop_party(party_id)
