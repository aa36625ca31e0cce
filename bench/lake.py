"""Lake baseline: what an agency would otherwise build, one central table behind an API.

One gRPC service in its own process, on the same transport as the product (aio gRPC,
mutual TLS, `fedscore.runtime.rpc.start_server` options and raw-bytes handlers, the
coordinator's certificate from the same kind of `init_federation` folder). It holds
EVERY agency's records, raw national IDs included, in a single SQLite table
`lake_record(national_id, agency, indicator, occurred_at, points, certified)` with an
index on (national_id, occurred_at), and answers `StringValue(national id)` with
`Int64Value(total)`: one indexed SQL sum of the certified points of the current year.

Left out on purpose (that is what the federation pays for): signatures, consent,
revocation, purpose limits, replay protection, logs, pseudonyms, masks, per-indicator
caps. Points are the policy's points x quantity, precomputed at load time.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import grpc.aio
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from fedscore.apps.demo_data import read_rows
from fedscore.apps.processes import stop_on_signal
from fedscore.runtime.party import load_party
from fedscore.runtime.rpc import parse_request, start_server
from policies.model import Policy

SERVICE = "fedscore.bench.LakeService"
METHOD = f"/{SERVICE}/Score"
SUM_SQL = (
    "SELECT COALESCE(SUM(points), 0) FROM lake_record"
    " WHERE national_id = ? AND occurred_at >= ? AND occurred_at < ? AND certified = 1"
)


def build_lake(db_path: Path, files: dict[str, Path], policy: Policy) -> int:
    """Load every agency's export into one table; return the number of records."""
    connection = sqlite3.connect(db_path)
    connection.execute(
        "CREATE TABLE lake_record (id INTEGER PRIMARY KEY, national_id TEXT NOT NULL,"
        " agency TEXT NOT NULL, indicator TEXT NOT NULL, occurred_at INTEGER NOT NULL,"
        " points INTEGER NOT NULL, certified INTEGER NOT NULL)"
    )

    def rows() -> Iterable[tuple[str, str, str, int, int, int]]:
        for agency, path in files.items():
            for row in read_rows(path):
                moment = datetime.fromisoformat(row["occurred_at"])
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=policy.score.zone)
                indicator = policy.indicators[row["indicator"]]
                yield (
                    row["national_id"],
                    agency,
                    indicator.code,
                    int(moment.timestamp()),
                    indicator.points * int(row["quantity"]),
                    int(bool(row["certifier"])),
                )

    with connection:
        connection.executemany(
            "INSERT INTO lake_record (national_id, agency, indicator, occurred_at, points,"
            " certified) VALUES (?, ?, ?, ?, ?, ?)",
            rows(),
        )
        connection.execute(
            "CREATE INDEX ix_lake_person_time ON lake_record (national_id, occurred_at)"
        )
    count = int(connection.execute("SELECT COUNT(*) FROM lake_record").fetchone()[0])
    connection.close()
    return count


def year_window(policy: Policy, now: float | None = None) -> tuple[int, int]:
    start, end = policy.year_bounds(policy.current_year(int(time.time() if now is None else now)))
    return int(start.timestamp()), int(end.timestamp())


def lake_total(db_path: Path, national_id: str, window: tuple[int, int]) -> int:
    """The lake's answer computed directly (to check what the service answers)."""
    connection = sqlite3.connect(db_path)
    try:
        return int(connection.execute(SUM_SQL, (national_id, *window)).fetchone()[0])
    finally:
        connection.close()


async def serve(workdir: Path, db_path: Path) -> None:
    party = load_party(workdir, "coordinator")
    window = year_window(party.policy)
    database = sqlite3.connect(db_path)

    async def score(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        national_id = parse_request(raw, wrappers_pb2.StringValue).value
        (total,) = database.execute(SUM_SQL, (national_id, *window)).fetchone()
        return wrappers_pb2.Int64Value(value=int(total))

    # Not a fedscore party: no per-caller limit (it answers ~5,000/s from one client).
    services = {SERVICE: {"Score": score}}
    server = await start_server(party.tls, party.participant.endpoint, services, rate_limits=None)
    await stop_on_signal().wait()
    await server.stop(0.5)
    database.close()


def start_process(workdir: Path, db_path: Path) -> subprocess.Popen[bytes]:
    log = (workdir / "lake.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.lake", "--workdir", str(workdir), "--db", str(db_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.lake", description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.workdir, args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
