"""The PostgreSQL score scenarios of `make bench`: nodes and coordinator on PostgreSQL, and
the coordinator as two replicas on one database.

One federation of 5 agencies (`prepare_postgres`): every node and the coordinator keep
their state in a database of their own on one PostgreSQL server (bench.postgres; the
consent registry and the helper aggregator, off the score path, stay on SQLite), with
the same demo records as the SQLite federation (same seed). The coordinator is listed
in the trust registry at two addresses (`Authority.set_endpoint("coordinator", "a,b")`,
signed by the custodians and installed at every organisation, as an operator would)
and runs twice on its one database, the second started with `--bind` (as
tests/test_coordinator_replicas.py does).

`postgres_scenario` measures three targets in turns (`measure_interleaved`, the same
plan as the other score scenarios), all running at once: the SQLite federation of the
5-agency score scenario; the PostgreSQL federation asked at the first replica's address
only (one coordinator; the second replica idles); and the same federation asked at both
addresses through gRPC's `round_robin` (each client channel spreads its calls over the
two replicas). Server CPU per query includes the PostgreSQL server's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from grpc_health.v1 import health_pb2

from bench import scenarios
from bench.loadgen import CpuSampler, measure_interleaved, process_cpu_seconds
from bench.postgres import Server, postgres_server, unavailable_reason
from bench.scenarios import Federation, LoadPlan
from fedscore.apps.authority import Authority
from fedscore.apps.client import COORDINATOR_ID
from fedscore.apps.custodian import sign_draft
from fedscore.apps.demo_data import generate
from fedscore.apps.federation import CUSTODIANS, free_ports, init_federation
from fedscore.apps.processes import FederationProcesses
from fedscore.errors import FedscoreError
from fedscore.runtime.org_paths import FederationPaths, OrgPaths
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from node.ingest import ingest_file
from node.store import NodeStore

SCENARIO = "score_5_agencies_postgres"
REPLICAS_SCENARIO = "score_5_agencies_postgres_2_replicas"
URL_ENV = "FEDSCORE_BENCH_POSTGRES_URL"


def move_coordinator(workdir: Path, endpoint: str) -> None:
    """The authority lists the coordinator at `endpoint`; every organisation installs it."""
    paths = FederationPaths(workdir)
    authority = Authority(paths.authority)
    authority.set_endpoint(COORDINATOR_ID, endpoint)
    for name in CUSTODIANS[:2]:
        sign_draft(paths.custodian(name), authority.paths.draft)
    link = authority.publish()
    for org in paths.orgs.iterdir():
        shutil.copyfile(
            authority.paths.version(link.version), OrgPaths(org).registry_version(link.version)
        )


def _configure(config: Path, url: str, listen: str = "") -> None:
    text = config.read_text("utf-8")
    assert 'database_url = ""' in text, config
    text = text.replace('database_url = ""', f'database_url = "{url}"')
    if listen:
        text = "\n".join(
            f'listen = "{listen}"' if line.startswith("listen = ") else line
            for line in text.splitlines()
        )
    config.write_text(text + "\n", "utf-8")


@dataclasses.dataclass
class Replicated:
    """The PostgreSQL federation and its coordinator's two addresses."""

    federation: Federation
    first: str
    second: str


def prepare_postgres(root: Path, agencies: int, server: Server, seed: int) -> Replicated:
    """Nodes and coordinator on PostgreSQL, the coordinator listed at two addresses, each
    node's demo export (the `seed` of the SQLite federation) imported."""
    workdir = root / f"score-{agencies}-postgres"
    layout = init_federation(workdir, agencies, fast_kdf=True)
    paths = FederationPaths(workdir)
    host = layout.endpoints[COORDINATOR_ID].rsplit(":", 1)[0]
    first, second = (f"{host}:{port}" for port in free_ports(host, 2))
    move_coordinator(workdir, f"{first},{second}")
    for party_id in [*layout.agencies, COORDINATOR_ID]:
        listen = first if party_id == COORDINATOR_ID else ""
        _configure(paths.org(party_id).config, server.fresh_database(), listen)
    portal = load_party(workdir, scenarios.PORTAL)
    data = generate(workdir / "data", portal.policy, layout.agencies, scenarios.DEMO_CITIZENS, seed)
    for agency, path in data.files.items():
        party = load_party(workdir, agency)
        store = NodeStore(party.db_url)
        try:
            ingest_file(store, path, portal.policy, agency, party.secrets.pseudonym_key)
        finally:
            store.dispose()
    return Replicated(Federation(workdir, layout.agencies, data, portal), first, second)


@contextlib.contextmanager
def running_replicated(replicated: Replicated) -> Iterator[dict[str, int]]:
    """Every server, the coordinator twice: the pids of the score path's processes."""
    federation = replicated.federation
    processes = FederationProcesses(federation.workdir)
    replica: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(processes.start_all(federation.portal))
        config = FederationPaths(federation.workdir).org(COORDINATOR_ID).config
        with (config.parent / "serve-replica-2.log").open("ab") as log:
            replica = subprocess.Popen(
                [sys.executable, "-m", "fedscore.apps.cli.main", "serve", "--config",
                 str(config), "--bind", replicated.second, "--migrate"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        asyncio.run(_serving_at(federation.portal, replicated.second))
        pids = {"coordinator": processes.processes[COORDINATOR_ID].pid}
        pids.update({a: processes.processes[a].pid for a in federation.agencies})
        pids["coordinator-2"] = replica.pid
        yield pids
    finally:
        if replica is not None:
            replica.terminate()
            try:
                replica.wait(10)
            except subprocess.TimeoutExpired:
                replica.kill()
                replica.wait()
        processes.stop_all()


async def _serving_at(prober: Party, address: str, timeout: float = 60.0) -> None:
    """Wait until the coordinator at `address` (one replica) answers SERVING."""
    deadline = time.monotonic() + timeout
    while True:
        async with secure_channel(address, prober.tls, COORDINATOR_ID) as channel:
            try:
                answer = await call_unary(
                    channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest(),
                    health_pb2.HealthCheckResponse, 1.0,
                )  # fmt: skip
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except FedscoreError:
                if time.monotonic() > deadline:
                    raise
        await asyncio.sleep(0.1)


class TreeCpuSampler(CpuSampler):
    """`CpuSampler` that also counts the PostgreSQL server: its postmaster and every
    backend (live children, and those already gone through the postmaster's cutime)."""

    def __init__(self, pids: dict[str, int], postmaster: int) -> None:
        super().__init__({**pids, "postgres": postmaster})
        self.postmaster = postmaster

    def __call__(self, moment: str) -> None:
        sample = {n: process_cpu_seconds(p) for n, p in self.pids.items() if n != "postgres"}
        sample["postgres"] = tree_cpu_seconds(self.postmaster)
        if moment == "start":
            self.start = sample
            return
        for name, seconds in sample.items():
            self.used[name] = self.used.get(name, 0.0) + seconds - self.start[name]


def tree_cpu_seconds(parent: int) -> float:
    """CPU seconds of `parent`, of its children it waited for, and of its live children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(stat.parent.name)
        if pid == parent:
            total += sum(int(f) for f in fields[11:15]) / ticks  # utime stime cutime cstime
        elif int(fields[1]) == parent:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def postmaster_pid(server: Server) -> int:
    with psycopg.connect(server.admin_url) as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    fields = Path(f"/proc/{int(row[0])}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def postgres_scenario(
    root: Path, sqlite: Federation, plan: LoadPlan, server: Server
) -> list[dict[str, Any]]:
    """The 5-agency score scenario on PostgreSQL, one replica and two, in turns with the
    SQLite federation `sqlite` (already prepared): two records."""
    agencies = len(sqlite.agencies)
    replicated = prepare_postgres(root, agencies, server, seed=agencies)
    postgres = replicated.federation
    with scenarios.running(sqlite) as sqlite_processes, running_replicated(replicated) as pids:
        sqlite_target = scenarios.score_target(
            sqlite, scenarios.grant_token(sqlite), sqlite.expected_score
        )
        both = scenarios.score_target(
            postgres, scenarios.grant_token(postgres), postgres.expected_score
        )
        targets = {
            "sqlite": sqlite_target,
            "postgres": dataclasses.replace(both, endpoint=replicated.first),
            "replicas": both,
        }
        postmaster = postmaster_pid(server)
        one = {k: v for k, v in pids.items() if k != "coordinator-2"}
        samplers: dict[str, CpuSampler] = {
            "sqlite": CpuSampler(scenarios._party_pids(sqlite_processes, sqlite.agencies)),
            "postgres": TreeCpuSampler(one, postmaster),
            "replicas": TreeCpuSampler(pids, postmaster),
        }
        figures = measure_interleaved(
            targets,
            sequential=plan.sequential,
            rounds=plan.rounds,
            concurrency=plan.concurrency,
            seconds=plan.seconds,
            clients=plan.clients,
            max_qps=dict.fromkeys(targets, 1500),
            on_window=samplers,
        )
    result = {}
    for name in targets:
        result[name] = figures[name].as_dict()
        result[name]["server_cpu_ms_per_query"] = samplers[name].ms_per_query(
            figures[name].concurrent_queries
        )
    on_sqlite, one_replica, two = result["sqlite"], result["postgres"], result["replicas"]
    common = {"agencies": agencies, "tls": True, "rounds": plan.rounds}
    return [
        {
            "scenario": SCENARIO,
            **common,
            "database": "postgresql (nodes and coordinator)",
            "measured_in_turns_with": ["score (sqlite)", REPLICAS_SCENARIO],
            **one_replica,
            "sqlite_throughput_qps": on_sqlite["throughput_qps"],
            "sqlite_p50_ms": on_sqlite["p50_ms"],
            "sqlite_server_cpu_ms_per_query": on_sqlite["server_cpu_ms_per_query"],
            "sqlite_errors": on_sqlite["errors"],
            "throughput_ratio_to_sqlite": _ratio(
                one_replica["throughput_qps"], on_sqlite["throughput_qps"]
            ),
            "p50_ratio_to_sqlite": _ratio(one_replica["p50_ms"], on_sqlite["p50_ms"]),
        },
        {
            "scenario": REPLICAS_SCENARIO,
            **common,
            "database": "postgresql (nodes and coordinator)",
            "coordinator_replicas": 2,
            "measured_in_turns_with": ["score (sqlite)", SCENARIO],
            **two,
            "throughput_ratio_to_one_replica": _ratio(
                two["throughput_qps"], one_replica["throughput_qps"]
            ),
        },
    ]


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator and numerator >= 0 else None


# The benchmark's server: fsync kept, commits not waited for (see bench.postgres), and room
# for every party's connections.
BENCH_SETTINGS = {"synchronous_commit": "off", "max_connections": "300"}


@contextlib.contextmanager
def bench_server() -> Iterator[Server | None]:
    """A PostgreSQL server for the run (FEDSCORE_BENCH_POSTGRES_URL, or one started here),
    or None when none can be had (its scenarios then say why)."""
    configured = os.environ.get(URL_ENV, "")
    if unavailable_reason(URL_ENV) is not None:
        yield None
        return
    with postgres_server(configured, BENCH_SETTINGS) as server:
        yield server


def lines(
    root: Path, sqlite: Federation, plan: LoadPlan, server: Server | None
) -> list[dict[str, Any]]:
    """`postgres_scenario`'s records, or one naming why there are none."""
    if server is None:
        return [{"scenario": SCENARIO, "error": unavailable_reason(URL_ENV)}]
    failures = []
    for attempt in range(2):  # a port chosen at init may be taken by then: once more
        try:
            return postgres_scenario(root / f"attempt-{attempt}", sqlite, plan, server)
        except Exception as exc:  # one broken scenario must not hide every other figure
            logs = sorted((root / f"attempt-{attempt}").glob("*/orgs/*/serve*.log"))
            text = [line for log in logs for line in log.read_text().splitlines()]
            told = [line for line in text if "rror" in line or "ADDRESS" in line]
            failures.append(f"{type(exc).__name__}: {exc}; " + " | ".join(told[-6:]))
    return [{"scenario": SCENARIO, "error": failures}]
