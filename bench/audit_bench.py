"""Benchmarks of the audit log (issue 3, Performance): `run(quick) -> list[dict]`.

Scenarios, one dict each:
- audit_append_single: `append_now`, one committed transaction per entry, to a persistent
  SQLite log opened as every party opens its database (WAL, synchronous=NORMAL);
- audit_append_batched: 1,000 `append` calls per transaction (events logged together
  with their own state, as the coordinator does);
- audit_append_bulk: `append_many`, 10,000 entries per transaction (how the 1M-entry log
  below is built);
- audit_proofs_1m: inclusion and consistency proof generation (by the party, from its
  database) and verification (by the regulator or citizen) at 1,000,000 entries, plus
  the one-time cost of caching the log's complete subtrees after a restart;
- audit_score_path_cost: score-query throughput of one in-process federation (registry,
  three nodes, coordinator, clients in one event loop) with the audit log, and with a
  log that writes nothing, alternated in one run. The no-log runs pass a bench-only
  `log_factory` to `node.server.start` and `coordinator.server.start`; production
  servers always use the real `EventLog` (the option exists for this measurement only).

Entries carry bodies the size of real "query_issued" entries. Times are medians over the
samples; the machine may be shared, so absolute numbers are noisy, ratios less so.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from audit.core import merkle
from audit.core.entries import LogRef
from audit.store.log import EventLog, LogFactory, LogWriter

FULL_LOG = 1_000_000
QUICK_LOG = 50_000


def _fields(n: int) -> dict[str, Any]:
    """A body shaped like the coordinator's "query_issued" (about 250 bytes)."""
    return {
        "query_id": secrets.token_hex(16),
        "query_hash": hashlib.sha256(n.to_bytes(8, "big")).hexdigest(),
        "token_id": secrets.token_hex(16),
        "purpose": "ptt-fuel-discount",
        "relying_party": "ptt",
        "participants": ["trc", "dsd", "chuangpao"],
        "year": 2025,
    }


def _open(path: Path) -> Engine:
    from fedscore.runtime.db import open_engine

    return open_engine(f"sqlite:///{path}")


def _ms(samples: Sequence[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def append_single(root: Path, count: int) -> dict[str, Any]:
    engine = _open(root / "single.db")
    log = EventLog(engine, "bench")
    start = time.perf_counter()
    for n in range(count):
        log.append_now("query_issued", _fields(n))
    elapsed = time.perf_counter() - start
    engine.dispose()
    return {
        "scenario": "audit_append_single",
        "entries": count,
        "appends_per_s": round(count / elapsed),
    }


def append_batched(root: Path, count: int, per_transaction: int = 1000) -> dict[str, Any]:
    engine = _open(root / "batched.db")
    log = EventLog(engine, "bench")
    start = time.perf_counter()
    for lo in range(0, count, per_transaction):
        with engine.connect() as connection:
            for n in range(lo, min(count, lo + per_transaction)):
                log.append(connection, "query_issued", _fields(n))
            connection.commit()
    elapsed = time.perf_counter() - start
    engine.dispose()
    return {
        "scenario": "audit_append_batched",
        "entries": count,
        "per_transaction": per_transaction,
        "appends_per_s": round(count / elapsed),
    }


def _bulk(log: EventLog, engine: Engine, count: int, per_transaction: int) -> float:
    start = time.perf_counter()
    for lo in range(0, count, per_transaction):
        events = [("query_issued", _fields(n)) for n in range(lo, min(count, lo + per_transaction))]
        with engine.connect() as connection:
            log.append_many(connection, events)
            connection.commit()
    return time.perf_counter() - start


def proofs_at_size(root: Path, size: int, samples: int) -> list[dict[str, Any]]:
    path = root / "large.db"
    engine = _open(path)
    log = EventLog(engine, "bench")
    per_transaction = 10_000
    built = _bulk(log, engine, size, per_transaction)
    engine.dispose()

    engine = _open(path)  # a restart: nothing cached
    log = EventLog(engine, "bench")
    start = time.perf_counter()
    tree_root = log.root()
    first_root = time.perf_counter() - start
    rng = random.Random(6962)
    prove_inclusion, check_inclusion, prove_consistency, check_consistency = [], [], [], []
    proof_lengths = []
    for _ in range(samples):
        index = rng.randrange(size)
        leaf = log.leaf_hashes(index, index + 1)[0]
        start = time.perf_counter()
        path_ = log.inclusion_proof(index, size)
        prove_inclusion.append(time.perf_counter() - start)
        start = time.perf_counter()
        merkle.verify_inclusion(leaf, index, size, path_, tree_root)
        check_inclusion.append(time.perf_counter() - start)
        proof_lengths.append(len(path_))

        older = rng.randrange(1, size)
        older_root = log.root(older)
        start = time.perf_counter()
        proof = log.consistency_proof(older, size)
        prove_consistency.append(time.perf_counter() - start)
        start = time.perf_counter()
        merkle.verify_consistency(older, size, older_root, tree_root, proof)
        check_consistency.append(time.perf_counter() - start)
    start = time.perf_counter()
    log.root()
    warm_root = time.perf_counter() - start
    engine.dispose()
    database_mb = round(path.stat().st_size / 1e6, 1)
    return [
        {
            "scenario": "audit_append_bulk",
            "entries": size,
            "per_transaction": per_transaction,
            "appends_per_s": round(size / built),
            "database_mb": database_mb,
        },
        {
            "scenario": "audit_proofs_1m" if size == FULL_LOG else "audit_proofs_quick",
            "entries": size,
            "samples": samples,
            "root_after_restart_ms": round(first_root * 1000, 1),
            "root_warm_ms": round(warm_root * 1000, 3),
            "inclusion_prove_ms": _ms(prove_inclusion),
            "inclusion_verify_ms": _ms(check_inclusion),
            "inclusion_proof_hashes": max(proof_lengths),
            "consistency_prove_ms": _ms(prove_consistency),
            "consistency_verify_ms": _ms(check_consistency),
        },
    ]


# --- the score path with and without the log -----------------------------------------


class UnwrittenLog(EventLog):
    """Bench only: a log that records nothing, to measure what logging costs the score path.

    Returns a reference as `append` would (a leaf hash of the entry at index 0) so that the
    coordinator still signs a log promise and the nodes still check it.
    """

    def append(
        self,
        writer: LogWriter,
        kind: str,
        fields: Mapping[str, Any],
        *,
        now: float | None = None,
    ) -> LogRef:
        return self._nothing_logged(kind, now)

    def append_many(
        self,
        writer: LogWriter,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        now: float | None = None,
    ) -> list[LogRef]:
        return [self.append(writer, kind, fields, now=now) for kind, fields in events]

    def append_now(
        self, kind: str, fields: Mapping[str, Any], *, now: float | None = None
    ) -> LogRef:
        return self._nothing_logged(kind, now)

    @staticmethod
    def _nothing_logged(kind: str, now: float | None) -> LogRef:
        logged_at = int(time.time() if now is None else now)
        return LogRef(0, merkle.leaf_hash(kind.encode()), logged_at)


async def _throughput(
    workdir: Path, log_factory: LogFactory, queries: int, concurrency: int
) -> float:
    from consent import server as consent_server
    from coordinator import server as coordinator_server
    from fedscore.apps import client
    from fedscore.runtime.party import load_party
    from node import server as node_server

    registry = await consent_server.start(load_party(workdir, "consent-registry"))
    nodes = []
    coordinator = None
    try:
        for agency in ("trc", "dsd", "chuangpao"):
            party = load_party(workdir, agency)
            nodes.append(await node_server.start(party, log_factory=log_factory))
        coordinator = await coordinator_server.start(
            load_party(workdir, "coordinator"), log_factory=log_factory
        )
        portal = load_party(workdir, "citizen-portal")
        grant = await client.grant(portal, "1101700230708", "self-view", "citizen-portal", 1)
        async with client.channel_to(portal, client.COORDINATOR_ID) as channel:

            async def ask() -> None:
                query = client.signed_score_query(portal, grant.token, "self-view")
                await client.send_score_query(portal, query, channel)

            for _ in range(10):  # warm up
                await ask()

            async def worker(count: int) -> None:
                for _ in range(count):
                    await ask()

            start = time.perf_counter()
            await asyncio.gather(*(worker(queries // concurrency) for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
        return (queries // concurrency) * concurrency / elapsed
    finally:
        if coordinator is not None:
            await coordinator.stop()
        for node in nodes:
            await node.stop()
        await registry.stop()


def score_path_cost(root: Path, queries: int, rounds: int, concurrency: int = 16) -> dict[str, Any]:
    from fedscore.apps.federation import init_federation

    workdir = root / "score-path"
    init_federation(workdir, 3)
    logged: list[float] = []
    unlogged: list[float] = []
    runs: list[tuple[list[float], LogFactory]] = [(logged, EventLog), (unlogged, UnwrittenLog)]
    for _ in range(rounds):
        for sink, factory in runs:
            sink.append(asyncio.run(_throughput(workdir, factory, queries, concurrency)))
    with_log = statistics.median(logged)
    without_log = statistics.median(unlogged)
    return {
        "scenario": "audit_score_path_cost",
        "in_process": True,
        "concurrency": concurrency,
        "queries_per_run": queries,
        "rounds": rounds,
        "qps_with_log": round(with_log, 1),
        "qps_without_log": round(without_log, 1),
        "logging_cost_percent": round(100 * (1 - with_log / without_log), 1),
    }


def run(quick: bool) -> list[dict[str, Any]]:
    """Every audit scenario, one dict each (see the module docstring)."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedscore-audit-bench-") as tmp:
        root = Path(tmp)
        steps: list[Callable[[], list[dict[str, Any]]]] = [
            lambda: [append_single(root, 300 if quick else 5_000)],
            lambda: [append_batched(root, 5_000 if quick else 100_000)],
            lambda: proofs_at_size(root, QUICK_LOG if quick else FULL_LOG, 50 if quick else 200),
            lambda: [score_path_cost(root, 64 if quick else 800, 1 if quick else 3)],
        ]
        for step in steps:
            results += step()
    return results


if __name__ == "__main__":
    import json
    import sys

    for record in run("--quick" in sys.argv):
        print(json.dumps(record, sort_keys=True), flush=True)
