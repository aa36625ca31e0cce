"""Benchmarks of differentially private statistics (issue 4); `make bench` calls `run`.

Scenarios, one dict each:
- `stats_node_histogram_<N>`: one agency node holding N synthetic records; the time of
  each node-side histogram, computed in SQL exactly as a statistics query computes it.
  The node is Chuang Pao (17 indicators reaching 4 cells, bound 2), the costliest shape:
  the per-person bound needs a window over (person, cell). Records are bulk-inserted
  straight into the node's `behaviour_record` table (one import batch; the query index
  rebuilt after the load, as a first import does) because CSV ingestion of 10,000,000
  rows would dominate the run; ten records per person, 10 % uncertified, 13 months.
- `stats_release_5_agencies`: a federation of 5 agencies, each party its own process with
  mutual TLS, 1,000 demo citizens; end-to-end time of publishing one release (log, signed
  fan-out, SQL at every node, shares, the helper aggregator's checks, ledger, log and
  OpenDP noise, the coordinator's ledger, chart, signed bundle), against the
  single-aggregator release of before issue 18, measured in the same run on the same
  processes: `SingleAggregator` takes the helper's place in the coordinator's own process
  and does only what the coordinator did then, summing every share itself (it holds the
  helper's key, as one aggregator holding every sum would) and adding the noise, with no
  round trip to the helper, no signature or check there, no second ledger or log. The
  nodes' work is the same in both (count, mask, split, seal, sign); releases alternate
  between the two, so both see the same warm caches. `ratio_to_single_aggregator` is the
  two medians' ratio.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RELEASES = ("participation-by-domain-and-area", "yearly-points-in-bands")
AGENCY = "chuangpao"
YEAR = 2025
_COLUMNS = (
    "record_key",
    "pseudonym",
    "indicator",
    "occurred_at",
    "quantity",
    "certifier",
    "certified",
    "import_id",
)


def _load_records(db_url: str, records: int, codes: list[str], start: int) -> float:
    """Bulk-insert `records` synthetic rows; seconds taken (load and index rebuild)."""
    from sqlalchemy import bindparam, insert

    from node.store import BEHAVIOUR_RECORD, IMPORT_BATCH, QUERY_INDEX, NodeStore

    store = NodeStore(db_url)
    as_bytes = BEHAVIOUR_RECORD.c.pseudonym.type.python_type is bytes
    people = max(1000, records // 10)
    pseudonyms: list[Any] = [hashlib.sha256(b"%d" % p).digest() for p in range(people)]
    if not as_bytes:
        pseudonyms = [p.hex() for p in pseudonyms]
    span, first = 400 * 86_400, start - 30 * 86_400
    began = time.perf_counter()
    with store.engine.begin() as connection:
        connection.execute(
            insert(IMPORT_BATCH).values(
                id=1,
                file_sha256="bench",
                filename="bench",
                row_count=records,
                new_records=records,
                imported_at=0,
            )
        )
        QUERY_INDEX.drop(connection)
        # Plain DB-API executemany of the compiled INSERT: no per-row SQLAlchemy overhead.
        named = insert(BEHAVIOUR_RECORD).values({name: bindparam(name) for name in _COLUMNS})
        sql = str(named.compile(dialect=connection.dialect))
        for low in range(0, records, 500_000):
            rows = [
                (
                    # Increasing keys append to the unique index instead of splitting it.
                    n.to_bytes(32, "big") if as_bytes else f"{n:064x}",
                    pseudonyms[(n * 7919) % people],
                    codes[n % len(codes)],
                    first + (n * 104_729) % span,
                    1 + n % 3,
                    "bench-certifier",
                    n % 10 != 0,
                    1,
                )
                for n in range(low, min(records, low + 500_000))
            ]
            connection.exec_driver_sql(sql, rows)
        QUERY_INDEX.create(connection)
    store.dispose()
    return time.perf_counter() - began


def node_histogram_scenario(records: int, root: Path, repeats: int) -> dict[str, Any]:
    from node.histogram import node_histogram
    from node.store import NodeStore
    from policies.defaults import default_policy_document
    from policies.loader import parse_policy

    policy = parse_policy(default_policy_document(3))
    path = root / f"node-{records}.db"
    start = int(policy.year_bounds(YEAR)[0].timestamp())
    codes = [i.code for i in policy.indicators_for(AGENCY)]
    load_seconds = _load_records(f"sqlite:///{path}", records, codes, start)
    store = NodeStore(f"sqlite:///{path}")
    timings: dict[str, float] = {}
    try:
        for name in RELEASES:
            definition = policy.statistics_rules.release(name)
            runs = []
            for _ in range(repeats):
                began = time.perf_counter()
                node_histogram(store.engine, policy, definition, AGENCY, YEAR)
                runs.append(time.perf_counter() - began)
            timings[name] = min(runs)
    finally:
        store.dispose()
    figures = {
        "scenario": f"stats_node_histogram_{records}",
        "records": records,
        "people": max(1000, records // 10),
        "participation_s": round(timings[RELEASES[0]], 2),
        "points_in_bands_s": round(timings[RELEASES[1]], 2),
        "load_s": round(load_seconds, 1),
        "database_mb": round(os.path.getsize(path) / 1e6),
    }
    path.unlink()
    return figures


class SingleAggregator:
    """The baseline: the coordinator adds the noise itself, as before issue 18 (one process
    holding every share; see the module docstring). Used by this benchmark only."""

    def __init__(self, helper: Any, policy: Any) -> None:
        self.helper_id = helper.id
        self._box = helper.box
        self._policy = policy

    async def ready(self) -> None:
        return None

    async def noisy_share_sums(self, order: Any, signed_order: Any, width: int) -> list[int]:
        from fedscore.noise import histogram_mechanism
        from fedscore.v1.statistics_pb2 import HelperShare, StatisticsSpec
        from keys.masks import MODULUS
        from keys.shares import open_shares, sum_shares
        from policies.releases import l1_sensitivity

        spec = StatisticsSpec.FromString(order.spec)
        query_hash = hashlib.sha256(order.spec).digest()
        shares = [
            open_shares(
                HelperShare.FromString(envelope.payload).sealed_shares,
                self._box,
                query_hash,
                agency,
                width,
            )
            for agency, envelope in zip(spec.participants, order.shares, strict=True)
        ]
        definition = self._policy.statistics_rules.release(spec.release)
        noise = histogram_mechanism(l1_sensitivity(self._policy, definition), definition.epsilon)
        sums = sum_shares(shares, width)
        return [(s + n) % MODULUS for s, n in zip(sums, noise.noise(width), strict=True)]

    def follow(self, view: Any) -> None:
        return None

    async def close(self) -> None:
        return None


def release_scenario(root: Path, agencies: int, repeats: int) -> dict[str, Any]:
    from coordinator.statistics import open_publisher, publish_release
    from fedscore.apps.demo_data import generate
    from fedscore.apps.federation import HELPER_ID, init_federation
    from fedscore.apps.processes import FederationProcesses
    from fedscore.runtime.party import load_party
    from node.ingest import ingest_file
    from node.store import NodeStore

    workdir = root / f"release-{agencies}"
    layout = init_federation(workdir, agencies)
    policy = load_party(workdir, "regulator").policy
    data = generate(workdir / "data", policy, layout.agencies, 1000, seed=agencies)
    for agency, path in data.files.items():
        party = load_party(workdir, agency)
        store = NodeStore(party.db_url)
        ingest_file(store, path, policy, agency, party.secrets.pseudonym_key)
        store.dispose()
    processes = FederationProcesses(workdir)
    coordinator = load_party(workdir, "coordinator")

    async def publish_all() -> tuple[list[float], list[float]]:
        publisher = open_publisher(coordinator)
        single = open_publisher(coordinator)
        await single.helper().close()
        single.noiser = SingleAggregator(load_party(workdir, HELPER_ID), policy)
        timings: tuple[list[float], list[float]] = ([], [])
        try:
            # Alternating, each pays its epsilon: 2 x repeats releases of 1.0 within 10.0.
            for _ in range(repeats):
                for which, chosen in enumerate((publisher, single)):
                    began = time.perf_counter()
                    await publish_release(chosen, RELEASES[0])
                    timings[which].append(time.perf_counter() - began)
        finally:
            await publisher.close()
            await single.close()
        return timings

    try:
        asyncio.run(processes.start_all(coordinator))
        timings, baseline = asyncio.run(publish_all())
    finally:
        processes.stop_all()
    median, baseline_median = statistics.median(timings), statistics.median(baseline)
    return {
        "scenario": f"stats_release_{agencies}_agencies",
        "agencies": agencies,
        "records": data.records,
        "tls": True,
        "releases": repeats,
        "median_s": round(median, 3),
        "first_s": round(timings[0], 3),
        "single_aggregator_median_s": round(baseline_median, 3),
        "ratio_to_single_aggregator": round(median / baseline_median, 3),
    }


def run(quick: bool) -> list[dict[str, Any]]:
    """Every statistics scenario; small sizes when `quick`."""
    sizes = (20_000, 100_000) if quick else (1_000_000, 10_000_000)
    results = []
    with tempfile.TemporaryDirectory(prefix="fedscore-stats-bench-") as tmp:
        root = Path(tmp)
        for records in sizes:
            # Best of three at a million records; one run at ten million (about 35 s each).
            repeats = 1 if quick or records > 1_000_000 else 3
            results.append(node_histogram_scenario(records, root, repeats))
            print(results[-1], file=sys.stderr, flush=True)
        results.append(release_scenario(root, 5, 2 if quick else 4))
    return results


if __name__ == "__main__":
    import json

    for result in run("--quick" in sys.argv):
        print(json.dumps(result, sort_keys=True), flush=True)
