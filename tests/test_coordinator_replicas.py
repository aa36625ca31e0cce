"""Two coordinator replicas on one PostgreSQL database, behind gRPC's own round_robin over
the two addresses the registry lists: one replica is killed with SIGKILL under load, and
no query is answered twice, no token use is lost, the coordinator's one log has no gap,
and the regulator's audit is clean."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy import create_engine, text

from fedscore.apps import client
from fedscore.apps.authority import Authority
from fedscore.apps.custodian import sign_draft
from fedscore.apps.demo_data import generate
from fedscore.apps.federation import CUSTODIANS, free_ports, init_federation
from fedscore.apps.processes import FederationProcesses
from fedscore.errors import FedscoreError
from fedscore.runtime.org_paths import FederationPaths, OrgPaths
from fedscore.runtime.party import load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.consent_pb2 import ConsentToken

pytestmark = pytest.mark.integration

PURPOSE = "ptt-fuel-discount"
QUESTIONS = 160
CONCURRENCY = 8
KILL_AFTER = 50


def _move_coordinator(workdir: Path, endpoint: str) -> None:
    """The authority lists the coordinator at two addresses; every organisation follows."""
    paths = FederationPaths(workdir)
    authority = Authority(paths.authority)
    authority.set_endpoint("coordinator", endpoint)
    for name in CUSTODIANS[:2]:
        sign_draft(paths.custodian(name), authority.paths.draft)
    link = authority.publish()
    for org in paths.orgs.iterdir():
        shutil.copyfile(
            authority.paths.version(link.version), OrgPaths(org).registry_version(link.version)
        )


async def _healthy(prober: object, address: str) -> bool:
    async with secure_channel(address, prober.tls, "coordinator") as channel:  # type: ignore[attr-defined]
        try:
            answer = await call_unary(
                channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest(),
                health_pb2.HealthCheckResponse, 1.0,
            )  # fmt: skip
        except FedscoreError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_replica_killed_under_load_loses_and_repeats_nothing(
    tmp_path: Path, postgres: object
) -> None:
    workdir = tmp_path / "federation"
    layout = init_federation(workdir, 3, fast_kdf=True)
    paths = FederationPaths(workdir)
    host = layout.endpoints["coordinator"].rsplit(":", 1)[0]
    first, second = (f"{host}:{port}" for port in free_ports(host, 2))
    _move_coordinator(workdir, f"{first},{second}")
    url = postgres.fresh_database()  # type: ignore[attr-defined]
    config = paths.org("coordinator").config
    text_ = config.read_text("utf-8").replace('database_url = ""', f'database_url = "{url}"')
    config.write_text(
        text_.replace(f'listen = "{layout.endpoints["coordinator"]}"', f'listen = "{first}"')
    )
    policy = load_party(workdir, "regulator").policy
    data = generate(workdir / "data", policy, layout.agencies, 40, seed=13)
    processes = FederationProcesses(workdir)
    replica: subprocess.Popen[bytes] | None = None

    async def scenario() -> dict[str, object]:
        nonlocal replica
        prober = load_party(workdir, "regulator")
        await processes.start_all(prober)
        log = (paths.org("coordinator").root / "serve-replica-2.log").open("ab")
        replica = subprocess.Popen(
            [sys.executable, "-m", "fedscore.apps.cli.main", "serve", "--config", str(config),
             "--bind", second, "--migrate"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(300):
            if await _healthy(prober, second):
                break
            await asyncio.sleep(0.1)
        portal, ptt = load_party(workdir, "citizen-portal"), load_party(workdir, "ptt")
        tokens = [
            (await client.grant(portal, c, PURPOSE, "ptt", 30)).token for c in data.citizens[:20]
        ]
        # A revocation reaches every replica at once (pushed to each address).
        revoked = await client.grant(portal, data.citizens[21], PURPOSE, "ptt", 30)
        token_id = ConsentToken.FromString(revoked.token.payload).token_id
        await client.revoke(portal, data.citizens[21], token_id)
        for address in (first, second):
            async with secure_channel(address, ptt.tls, "coordinator") as direct:
                query = client.signed_score_query(ptt, revoked.token, PURPOSE)
                with pytest.raises(FedscoreError) as refused:
                    await client.send_score_query(ptt, query, direct)
                assert refused.value.reason == "CONSENT_REVOKED", address
        outcomes: list[str] = []
        done = asyncio.Event()
        async with client.channel_to(ptt, "coordinator") as channel:

            async def ask(number: int) -> None:
                query = client.signed_score_query(ptt, tokens[number % len(tokens)], PURPOSE)
                try:
                    await client.send_score_query(ptt, query, channel)
                    outcomes.append("OK")
                except FedscoreError as error:
                    outcomes.append(error.reason)
                if len(outcomes) == KILL_AFTER:
                    done.set()

            async def killer() -> None:
                await done.wait()
                assert replica is not None
                os.kill(replica.pid, signal.SIGKILL)

            queue = list(range(QUESTIONS))

            async def worker() -> None:
                while queue:
                    await ask(queue.pop())

            await asyncio.gather(killer(), *(worker() for _ in range(CONCURRENCY)))
        return {"outcomes": outcomes}

    try:
        result = asyncio.run(scenario())
        second_log = (paths.org("coordinator").root / "serve-replica-2.log").read_text("utf-8")
        audit = subprocess.run(
            [sys.executable, "-m", "fedscore.apps.cli.main", "audit", "verify", "--workdir",
             str(workdir), "--json"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    finally:
        if replica is not None and replica.poll() is None:
            replica.kill()
        processes.stop_all()
    outcomes: list[str] = result["outcomes"]  # type: ignore[assignment]
    answered = outcomes.count("OK")
    # Both replicas answered (round_robin), and the survivor answered after the kill.
    assert "CoordinatorService/Score from ptt: OK" in second_log
    assert answered >= QUESTIONS - 3 * CONCURRENCY, outcomes
    engine = create_engine(url.replace("postgresql+psycopg", "postgresql+psycopg", 1))
    with engine.connect() as connection:
        indexes = [
            row[0] for row in connection.execute(text('SELECT "index" FROM audit_entry ORDER BY 1'))
        ]
        bodies = [
            (kind, json.loads(body))
            for kind, body in connection.execute(text("SELECT kind, body FROM audit_entry"))
        ]
        uses = connection.execute(
            text("SELECT COALESCE(SUM(uses), 0) FROM coordinator_token_use")
        ).scalar_one()
    engine.dispose()
    assert indexes == list(range(len(indexes)))  # one log, no gap
    issued = [b["query_id"] for kind, b in bodies if kind == "query_issued"]
    released = [b["query_id"] for kind, b in bodies if kind == "result_released"]
    assert len(issued) == len(set(issued)) and len(released) == len(set(released))  # none twice
    assert set(released) <= set(issued) and len(released) >= answered
    assert uses == len(issued)  # every use counted, with its query, and none else
    report = json.loads(audit.stdout.strip().splitlines()[-1])
    assert report["consistent"] is True and report["anomalies"] == [], audit.stdout[-2000:]
    print(
        f"{QUESTIONS} questions, replica 2 killed after {KILL_AFTER}: {answered} answered, "
        f"{len(outcomes) - answered} failed ({sorted(set(outcomes) - {'OK'})}); "
        f"{len(issued)} issued, {len(released)} released, {uses} token uses, "
        f"log of {len(indexes)} entries without a gap"
    )
