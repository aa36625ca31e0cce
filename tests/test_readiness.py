"""Health that means something: NOT_SERVING while a party cannot answer correctly, SERVING
when it can, on its mutual-TLS port and on a local probe port that serves nothing else."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedscore.apps.authority import Authority
from fedscore.apps.authority_offer import offer_to_servers
from fedscore.apps.custodian import sign_draft
from fedscore.apps.federation import CUSTODIANS, free_port, init_federation
from fedscore.apps.processes import FederationProcesses
from fedscore.apps.readiness_checks import database, status_list
from fedscore.errors import InvalidArgument
from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.db import open_engine
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import load_party
from fedscore.runtime.readiness import NOT_SERVING, SERVING, Readiness, probe_server
from fedscore.runtime.rpc import call_unary, secure_channel
from keys.keyring import RegistryKeys


async def _status(servicer: health.aio.HealthServicer, service: str = "") -> int:
    response = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
    return int(response.status)


def test_a_failing_check_sets_not_serving_for_every_service_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> list[int]:
        servicer = health.aio.HealthServicer()
        broken: list[str] = []
        readiness = Readiness(
            servicer,
            ("fedscore.v1.NodeService",),
            {"database": lambda: broken[0] if broken else None},
        )
        seen = [await _status(servicer, "")]
        await readiness.apply()
        seen.append(await _status(servicer, "fedscore.v1.NodeService"))
        broken.append("unreachable")
        for _ in range(3):
            await readiness.apply()
        seen.append(await _status(servicer, "fedscore.v1.NodeService"))
        seen.append(await _status(servicer, ""))
        broken.clear()
        await readiness.apply()
        seen.append(await _status(servicer, ""))
        return seen

    with caplog.at_level(logging.INFO, logger="fedscore.runtime.readiness"):
        seen = asyncio.run(scenario())
    assert seen[1:] == [SERVING, NOT_SERVING, NOT_SERVING, SERVING]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "NOT_SERVING: database: unreachable",
        "SERVING again: every readiness check passes",
    ]


def test_an_unreachable_database_and_a_missing_status_list_fail_their_checks() -> None:
    # A real engine to a PostgreSQL address where nothing listens.
    port = free_port("127.0.0.1")
    engine = open_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none?connect_timeout=2")
    try:
        with pytest.raises(Exception, match=r"Connection refused|connection failed"):
            database(engine)()
    finally:
        engine.dispose()
    state = RevocationState(RegistryKeys([], purpose="test"))
    assert "no consent status list has arrived yet" in (status_list(lambda: state)() or "")


def test_the_probe_port_must_be_local() -> None:
    async def scenario() -> None:
        await probe_server(health.aio.HealthServicer(), "0.0.0.0:7801")

    with pytest.raises(InvalidArgument) as refused:
        asyncio.run(scenario())
    assert refused.value.reason == "PROBE_NOT_LOCAL"


def _set_probe(config: Path, bind: str) -> None:
    text = config.read_text("utf-8")
    config.write_text(text.replace('health_probe = ""', f'health_probe = "{bind}"'), "utf-8")


async def _probe(bind: str) -> int:
    async with grpc.aio.insecure_channel(bind) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        return int(response.status)


async def _until(bind: str, wanted: int, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await _probe(bind) == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"health did not become {wanted} within {timeout} s")


@pytest.mark.integration
def test_a_node_reports_what_stops_it_answering_correctly(tmp_path: Path) -> None:
    workdir = tmp_path / "federation"
    init_federation(workdir, 3, fast_kdf=True)
    paths = FederationPaths(workdir)
    probe = f"127.0.0.1:{free_port('127.0.0.1')}"
    _set_probe(paths.org("trc").config, probe)
    processes = FederationProcesses(workdir)

    async def scenario() -> dict[str, float]:
        prober = load_party(workdir, "regulator")
        await processes.start_all(prober)
        timings: dict[str, float] = {}
        assert await _probe(probe) == SERVING
        # The probe port serves health and nothing else.
        async with grpc.aio.insecure_channel(probe) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await channel.unary_unary("/fedscore.v1.NodeService/ContributeBatch")(b"")
            assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # A schema that is not the code's: NOT_SERVING until it is put back.
        database_file = paths.org("trc").database
        with sqlite3.connect(database_file) as connection:
            (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            connection.execute("UPDATE alembic_version SET version_num = 'elsewhere'")
        timings["schema"] = await _until(probe, NOT_SERVING)
        # The same status over mutual TLS, for a federation client.
        endpoint = prober.trust.participant("trc").endpoint
        async with secure_channel(endpoint, prober.tls, "trc") as ch:
            checked = await call_unary(
                ch, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest(),
                health_pb2.HealthCheckResponse, 2.0,
            )  # fmt: skip
            assert checked.status == NOT_SERVING
        with sqlite3.connect(database_file) as connection:
            connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        timings["schema_back"] = await _until(probe, SERVING)
        # Removed from the federation: the node refuses to act, and says so.
        authority = Authority(paths.authority)
        authority.remove("trc")
        for name in CUSTODIANS[:2]:
            sign_draft(paths.custodian(name), authority.paths.draft)
        authority.publish()
        await offer_to_servers(authority)
        timings["removed"] = await _until(probe, NOT_SERVING)
        return timings

    try:
        timings = asyncio.run(scenario())
    finally:
        processes.stop_all()
    log = paths.org("trc").serve_log.read_text("utf-8")
    assert "NOT_SERVING: schema: migration pending" in log
    assert "SERVING again" in log
    assert "PARTY_REMOVED" in log
    print("health followed in " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
