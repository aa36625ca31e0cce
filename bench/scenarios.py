"""The score scenarios of `make bench`: product, ceilings, floor and lake, each its own
processes.

Every scenario measures with `bench.loadgen.measure` (same client processes, same
request shape, same answer checks) and adds the CPU each server process used per
completed query during the throughput window (from /proc), so a reader sees where time
goes. Each federation folder comes from `init_federation(..., fast_kdf=True)`: real keys
and certificates, with the key files' Argon2id at its minimum cost (it only slows
process start, never a query).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import baselines, ceiling, lake
from bench.bigdata import fill_nodes
from bench.loadgen import (
    WARM_UP_REQUESTS,
    CpuSampler,
    Target,
    measure,
    measure_interleaved,
    measure_sequential,
    resident_mb,
)
from bench.revocation import measure_revocation
from fedscore.apps import client
from fedscore.apps.client import COORDINATOR_ID, REGISTRY_ID
from fedscore.apps.demo_data import DemoData, expected_total, generate
from fedscore.apps.federation import init_federation
from fedscore.apps.processes import FederationProcesses, wait_serving
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.consent_pb2 import GrantRequest, GrantResponse
from fedscore.v1.envelope_pb2 import Envelope
from node.ingest import ingest_file
from node.store import NodeStore

PORTAL = "citizen-portal"
PURPOSE = "self-view"
DEMO_CITIZENS = 1000


@dataclass(frozen=True)
class LoadPlan:
    sequential: int
    seconds: float
    clients: int
    concurrency: int = 32
    # Turns a product and its ceiling take when measured together (`paired_scenario`).
    rounds: int = 3


@dataclass
class Federation:
    """A federation folder with its agencies' demo exports, ready to start."""

    workdir: Path
    agencies: list[str]
    data: DemoData
    portal: Party

    @property
    def expected_score(self) -> int:
        return expected_total(
            self.data.files, self.portal.policy, self.data.demo_citizen, self.data.year
        )


def prepare(
    root: Path, name: str, agencies: int, filler_records: int = 0
) -> tuple[Federation, dict[str, Any]]:
    """Create the folder, the exports and every node's database (with filler if asked)."""
    workdir = root / name
    layout = init_federation(workdir, agencies, fast_kdf=True)
    portal = load_party(workdir, PORTAL)
    policy = portal.policy
    data = generate(workdir / "data", policy, layout.agencies, DEMO_CITIZENS, seed=agencies)
    build: dict[str, Any] = {}
    if filler_records:
        build = fill_nodes(workdir, layout.agencies, data.files, policy, filler_records, workdir)
    else:
        for agency, path in data.files.items():
            party = load_party(workdir, agency)
            store = NodeStore(party.db_url)
            try:
                ingest_file(store, path, policy, agency, party.secrets.pseudonym_key)
            finally:
                store.dispose()
    return Federation(workdir, layout.agencies, data, portal), build


@contextlib.contextmanager
def running(federation: Federation) -> Iterator[FederationProcesses]:
    processes = FederationProcesses(federation.workdir)
    try:
        asyncio.run(processes.start_all(federation.portal))
        yield processes
    finally:
        processes.stop_all()


def grant_token(federation: Federation, days: int = 1) -> Envelope:
    response = asyncio.run(
        client.grant(federation.portal, federation.data.demo_citizen, PURPOSE, PORTAL, days)
    )
    return response.token


GRANTS_AT_ONCE = 16


async def grant_many(
    workdir: Path, citizens: list[str], purpose: str, relying_party: str
) -> list[bytes]:
    """One serialized token per citizen in the list (a citizen may appear several times:
    each grant is a token of its own), granted through the running consent registry."""
    portal = load_party(workdir, PORTAL)
    registry = portal.trust.participant(REGISTRY_ID)
    now = int(time.time())
    tokens: list[bytes] = []
    async with secure_channel(registry.endpoint, portal.tls, REGISTRY_ID) as channel:
        for start in range(0, len(citizens), GRANTS_AT_ONCE):
            responses = await asyncio.gather(
                *(
                    call_unary(
                        channel,
                        "/fedscore.v1.ConsentService/Grant",
                        GrantRequest(
                            national_id=citizen,
                            purpose_id=purpose,
                            relying_party=relying_party,
                            not_before=now - 60,
                            not_after=now + 86_400,
                        ),
                        GrantResponse,
                        30.0,
                    )
                    for citizen in citizens[start : start + GRANTS_AT_ONCE]
                )
            )
            tokens += [response.token.SerializeToString() for response in responses]
    return tokens


def score_target(federation: Federation, token: Envelope, expected: int | None) -> Target:
    return Target(
        kind="score",
        workdir=str(federation.workdir),
        client_party=PORTAL,
        endpoint=federation.portal.trust.participant(COORDINATOR_ID).endpoint,
        server_name=COORDINATOR_ID,
        token=token.SerializeToString(),
        purpose=PURPOSE,
        expected=expected,
    )


def _load(target: Target, pids: dict[str, int], plan: LoadPlan, max_qps: float) -> dict[str, Any]:
    sampler = CpuSampler(pids)
    figures = measure(
        target,
        sequential=plan.sequential,
        concurrency=plan.concurrency,
        seconds=plan.seconds,
        clients=plan.clients,
        max_qps=max_qps,
        on_window=sampler,
    )
    result = figures.as_dict()
    result["server_cpu_ms_per_query"] = sampler.ms_per_query(figures.concurrent_queries)
    return result


def _party_pids(processes: FederationProcesses, agencies: list[str]) -> dict[str, int]:
    pids = {"coordinator": processes.processes[COORDINATOR_ID].pid}
    pids.update({agency: processes.processes[agency].pid for agency in agencies})
    return pids


def product_scenario(
    federation: Federation, plan: LoadPlan, label: str, *, measure_rss: bool = False
) -> dict[str, Any]:
    """Score queries against the real federation alone (no baseline beside it)."""
    with running(federation) as processes:
        token = grant_token(federation)
        pids = _party_pids(processes, federation.agencies)
        target = score_target(federation, token, federation.expected_score)
        figures = _load(target, pids, plan, 1500)
        if measure_rss:
            rss = {agency: resident_mb(pids[agency]) for agency in federation.agencies}
            figures["node_rss_mb"] = rss
            figures["node_rss_mb_max"] = max(rss.values())
    return {"scenario": label, "agencies": len(federation.agencies), "tls": True, **figures}


@contextlib.contextmanager
def _servers(starts: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    try:
        yield starts
    finally:
        for process in starts:
            process.terminate()
        for process in starts:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def ceiling_running(
    root: Path, agencies: int, token: Envelope
) -> Iterator[tuple[Target, dict[str, int]]]:
    """The echo federation (bench.ceiling) with the same topology, asked with the same token
    bytes: its load target and its processes' pids, while it runs."""
    workdir = root / f"ceiling-{agencies}"
    layout = init_federation(workdir, agencies, fast_kdf=True)
    portal = load_party(workdir, PORTAL)
    nodes = [ceiling.start_process(workdir, agency) for agency in layout.agencies]
    with _servers(nodes):
        asyncio.run(_wait_all(portal, layout.agencies))
        with _servers([ceiling.start_process(workdir, COORDINATOR_ID)]) as (coordinator,):
            asyncio.run(wait_serving(portal, COORDINATOR_ID))
            pids = {"coordinator": coordinator.pid}
            pids.update({a: p.pid for a, p in zip(layout.agencies, nodes, strict=True)})
            target = Target(
                kind="score",
                workdir=str(workdir),
                client_party=PORTAL,
                endpoint=portal.trust.participant(COORDINATOR_ID).endpoint,
                server_name=COORDINATOR_ID,
                token=token.SerializeToString(),
                purpose=PURPOSE,
                expected=0,
            )
            yield target, pids


# Turn names, the scenario each names, and how many requests a client signs per second
# of a throughput window (more than any of them answers).
TURNS = {
    "product": ("score", 1500),
    "ceiling": ("ceiling", 2500),
    "batched_ceiling": ("batched_ceiling", 4000),
    "floor": ("floor", 4000),
}


def paired_scenario(
    root: Path, federation: Federation, plan: LoadPlan, *, revocation: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The product and its baselines (the per-query ceiling, the batched ceiling and the
    floor, bench.baselines), all running, measured in turns (`measure_interleaved`): one
    record per turn name in `TURNS`, and the revocation figures if asked, taken afterwards
    on the running product federation."""
    agencies = len(federation.agencies)
    revoked: dict[str, Any] | None = None
    citizen = federation.data.demo_citizen
    with running(federation) as processes, contextlib.ExitStack() as baselines_running:
        token = grant_token(federation)
        pids = _party_pids(processes, federation.agencies)
        target = score_target(federation, token, federation.expected_score)
        ceiling_target, ceiling_pids = baselines_running.enter_context(
            ceiling_running(root, agencies, token)
        )
        batched, floor = (
            baselines_running.enter_context(
                baselines.running(root, agencies, token, citizen, floor=as_floor)
            )
            for as_floor in (False, True)
        )
        targets = {
            "product": target,
            "ceiling": ceiling_target,
            "batched_ceiling": batched.target,
            "floor": floor.target,
        }
        all_pids = {"product": pids, "ceiling": ceiling_pids}
        all_pids.update(batched_ceiling=batched.pids, floor=floor.pids)
        samplers = {name: CpuSampler(all_pids[name]) for name in targets}
        figures = measure_interleaved(
            targets,
            sequential=plan.sequential,
            rounds=plan.rounds,
            concurrency=plan.concurrency,
            seconds=plan.seconds,
            clients=plan.clients,
            max_qps={name: TURNS[name][1] for name in targets},
            on_window=samplers,
        )
        fresh = _fresh_token_latency(federation, plan, targets, floor)
        baselines_running.close()
        if revocation:
            began = time.perf_counter()
            revoked = asyncio.run(
                measure_revocation(federation.workdir, federation.agencies, citizen)
            )
            revoked["scenario_s"] = round(time.perf_counter() - began, 1)
    records = []
    for name in targets:
        result = figures[name].as_dict()
        result["server_cpu_ms_per_query"] = samplers[name].ms_per_query(
            figures[name].concurrent_queries
        )
        records.append(
            {
                "scenario": f"{TURNS[name][0]}_{agencies}_agencies",
                "agencies": agencies,
                "tls": True,
                "measured_in_turns_with": [TURNS[n][0] for n in targets if n != name],
                "rounds": plan.rounds,
                **result,
                **{f"{key}_fresh_tokens": value for key, value in fresh[name].items()},
            }
        )
    return records, revoked


def _fresh_token_latency(
    federation: Federation,
    plan: LoadPlan,
    targets: dict[str, Target],
    floor: baselines.Baseline,
) -> dict[str, dict[str, Any]]:
    """Sequential latency when every query carries a consent token no party has seen.

    The paired measurement repeats one token, so after its first use every party finds
    its signature verified and its sealed subject opened (ADR 0010). Here each query has
    its own token (all granted to the demo citizen, so the expected score stays the
    same): the product's from its registry, the floor's from its own; the ceilings, which
    check no token, are asked right after with the same requests' weight.
    """
    count = plan.sequential + WARM_UP_REQUESTS
    citizens = [federation.data.demo_citizen] * count
    tokens = asyncio.run(grant_many(federation.workdir, citizens, PURPOSE, PORTAL))
    fresh = dict(targets)
    fresh["product"] = dataclasses.replace(targets["product"], tokens=tuple(tokens))
    fresh["floor"] = floor.fresh(federation.data.demo_citizen, count)
    return measure_sequential(fresh, plan.sequential)


async def _wait_all(prober: Party, party_ids: list[str]) -> None:
    await asyncio.gather(*(wait_serving(prober, party_id) for party_id in party_ids))


def lake_scenario(root: Path, federation: Federation, plan: LoadPlan) -> dict[str, Any]:
    """Every agency's export of `federation` in one table behind one service (bench.lake)."""
    workdir = root / f"lake-{len(federation.agencies)}"
    init_federation(workdir, len(federation.agencies), fast_kdf=True)
    portal = load_party(workdir, PORTAL)
    db_path = workdir / "lake.db"
    started = time.perf_counter()
    records = lake.build_lake(db_path, federation.data.files, portal.policy)
    build_seconds = time.perf_counter() - started
    citizen = federation.data.demo_citizen
    expected = lake.lake_total(db_path, citizen, lake.year_window(portal.policy))
    with _servers([lake.start_process(workdir, db_path)]) as (server,):
        asyncio.run(wait_serving(portal, COORDINATOR_ID))
        target = Target(
            kind="lake",
            workdir=str(workdir),
            client_party=PORTAL,
            endpoint=portal.trust.participant(COORDINATOR_ID).endpoint,
            server_name=COORDINATOR_ID,
            method=lake.METHOD,
            subject=citizen,
            expected=expected,
        )
        figures = _load(target, {"lake": server.pid}, plan, 8000)
    return {
        "scenario": f"lake_{len(federation.agencies)}_agencies",
        "agencies": len(federation.agencies),
        "tls": True,
        "records": records,
        "build_s": round(build_seconds, 2),
        **figures,
    }
