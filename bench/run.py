"""`make bench`: one JSON line per scenario, then a summary line.

Scenarios (issue: federation core): for 3 and 5 agencies, each party its own process on
loopback with mutual TLS — sequential score-query latency (p50, p99) and throughput at
32 concurrent requests; ingestion rate of 1,000,000 records into one node. Figures are
medians and ratios from one run; the machine is shared, so absolute times are noisy.
Results are also written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedscore.client import COORDINATOR_ID, channel_to, send_score_query, signed_score_query
from fedscore.demo_data import generate
from fedscore.federation import init_federation
from fedscore.party import Party, load_party
from fedscore.processes import FederationProcesses
from fedscore.v1.envelope_pb2 import Envelope

RESULTS = Path(__file__).resolve().parent / "results"


def emit(record: dict[str, Any], sink: list[dict[str, Any]]) -> None:
    sink.append(record)
    print(json.dumps(record, sort_keys=True), flush=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _score_load(
    party: Party, token: Envelope, sequential: int, concurrent: int, per_worker: int
) -> dict[str, Any]:
    async with channel_to(party, COORDINATOR_ID) as channel:
        for _ in range(10):  # warm up channels and caches
            await send_score_query(party, signed_score_query(party, token, "self-view"), channel)
        latencies = []
        for _ in range(sequential):
            query = signed_score_query(party, token, "self-view")
            start = time.perf_counter()
            await send_score_query(party, query, channel)
            latencies.append((time.perf_counter() - start) * 1000)

        async def worker() -> None:
            for _ in range(per_worker):
                await send_score_query(
                    party, signed_score_query(party, token, "self-view"), channel
                )

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrent)))
        elapsed = time.perf_counter() - start
    return {
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "sequential_queries": sequential,
        "concurrency": concurrent,
        "concurrent_queries": concurrent * per_worker,
        "throughput_qps": round(concurrent * per_worker / elapsed, 1),
    }


def score_scenario(agencies: int, root: Path, quick: bool) -> dict[str, Any]:
    from fedscore import client

    workdir = root / f"score-{agencies}"
    layout = init_federation(workdir, agencies)
    policy = load_party(workdir, "regulator").policy
    data = generate(workdir / "data", policy, layout.agencies, 1000, seed=agencies)
    from node.ingest import ingest_file
    from node.store import NodeStore

    for agency, path in data.files.items():
        party = load_party(workdir, agency)
        ingest_file(NodeStore(party.db_url), path, policy, agency, party.secrets.pseudonym_key)
    processes = FederationProcesses(workdir)
    portal = load_party(workdir, "citizen-portal")
    try:
        asyncio.run(processes.start_all(portal))
        grant = asyncio.run(
            client.grant(portal, data.demo_citizen, "self-view", "citizen-portal", 1)
        )
        figures = asyncio.run(
            _score_load(portal, grant.token, 50 if quick else 300, 32, 5 if quick else 25)
        )
    finally:
        processes.stop_all()
    return {"scenario": f"score_{agencies}_agencies", "agencies": agencies, "tls": True, **figures}


def ingest_scenario(records: int, root: Path) -> dict[str, Any]:
    import csv
    import random

    from fedscore.demo_data import FIELDS, random_national_id
    from node.ingest import ingest_file
    from node.store import NodeStore

    workdir = root / "ingest"
    init_federation(workdir, 3)
    party = load_party(workdir, "trc")
    rng = random.Random(1)
    people = [random_national_id(rng) for _ in range(max(1000, records // 10))]
    codes = sorted(c for c, i in party.policy.indicators.items() if i.agency == "trc")
    path = workdir / "trc-1m.csv"
    year = time.gmtime().tm_year
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for n in range(records):
            writer.writerow(
                [
                    people[n % len(people)],
                    codes[n % len(codes)],
                    f"{year - 1}-{1 + n % 12:02d}-{1 + n % 28:02d}",
                    1 + n % 3,
                    "trc-certifier",
                ]
            )
    store = NodeStore(party.db_url)
    start = time.perf_counter()
    report = ingest_file(store, path, party.policy, "trc", party.secrets.pseudonym_key)
    elapsed = time.perf_counter() - start
    return {
        "scenario": "ingest_one_node",
        "records": records,
        "new_records": report.new_records,
        "seconds": round(elapsed, 2),
        "records_per_s": round(records / elapsed),
        "database_mb": round(os.path.getsize(str(store.engine.url.database)) / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke check")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedscore-bench-") as tmp:
        root = Path(tmp)
        for agencies in (3, 5):
            emit(score_scenario(agencies, root, args.quick), results)
        emit(ingest_scenario(20_000 if args.quick else 1_000_000, root), results)
    by_name = {r["scenario"]: r for r in results}
    summary = {
        "summary": True,
        "p50_ms_3": by_name["score_3_agencies"]["p50_ms"],
        "p50_ms_5": by_name["score_5_agencies"]["p50_ms"],
        "throughput_qps_5": by_name["score_5_agencies"]["throughput_qps"],
        "ingest_per_s": by_name["ingest_one_node"]["records_per_s"],
    }
    emit(summary, results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
