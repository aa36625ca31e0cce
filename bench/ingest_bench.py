"""Ingestion against a bare bulk insert of the same rows, timed in the same run.

One agency's export of N records (a tenth as many people, 12 months, the agency's
indicators in turn) is written once as CSV. Then, each into an empty node database:
- `ingest_one_node`: `node.ingest.ingest_file` into SQLite (read, validate every row,
  pseudonymise, key and deduplicate each record, write, index, commit), against a bare
  `executemany` of INSERT of the very rows it stored (read back, in id order) into the
  same table of a new SQLite node database (the same schema, indexes and connection
  settings, one transaction; the one import_batch row they reference is written first,
  outside the timing): `ratio_to_raw_insert` = ingestion's records/s / the insert's.
- `ingest_one_node_postgres`: the same file into PostgreSQL (COPY into a temporary
  table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING), against a bare `COPY` of
  the same rows into the same table of a new database (one transaction):
  `ratio_to_copy`.
Absolute records/s on a shared machine swing 2x from day to day; the ratios are what to
read.
"""

from __future__ import annotations

import csv
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg import sql as psycopg_sql
from sqlalchemy import insert, make_url, select

from bench.postgres import Server
from fedscore.apps.demo_data import FIELDS, random_national_id
from fedscore.apps.federation import init_federation
from fedscore.runtime.party import Party, load_party
from node.ingest import ingest_file
from node.row_checks import RECORD_COLUMNS
from node.store import BEHAVIOUR_RECORD, IMPORT_BATCH, NodeStore

AGENCY = "trc"
Row = tuple[Any, ...]


def write_export(path: Path, party: Party, records: int) -> int:
    """`records` CSV rows of `AGENCY` over a tenth as many people; the people's count."""
    rng = random.Random(1)
    people = [random_national_id(rng) for _ in range(max(1000, records // 10))]
    codes = sorted(c for c, i in party.policy.indicators.items() if i.agency == AGENCY)
    year = time.gmtime().tm_year
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for n in range(records):
            writer.writerow(
                [
                    people[n % len(people)],
                    codes[n % len(codes)],
                    f"{year - 1}-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00",
                    1 + n % 3,
                    "trc-certifier",
                ]
            )
    return len(people)


def _ingest(url: str, path: Path, party: Party) -> tuple[float, int, list[Row]]:
    """Seconds to ingest `path` into the empty database at `url`, the new records, and the
    rows stored (in id order)."""
    store = NodeStore(url)
    try:
        start = time.perf_counter()
        report = ingest_file(store, path, party.policy, AGENCY, party.secrets.pseudonym_key)
        elapsed = time.perf_counter() - start
        columns = [BEHAVIOUR_RECORD.c[name] for name in RECORD_COLUMNS]
        with store.engine.connect() as connection:
            query = select(*columns).order_by(BEHAVIOUR_RECORD.c.id)
            rows = [tuple(row) for row in connection.execute(query)]
    finally:
        store.dispose()
    return elapsed, report.new_records, rows


def _bare(url: str, rows: list[Row], write: Callable[[Any, list[Row]], None]) -> float:
    """Seconds for `write(DB-API connection, rows)` and its commit, in a new node database
    at `url` whose one import_batch row the rows reference."""
    store = NodeStore(url)
    try:
        with store.engine.begin() as connection:
            batch = connection.execute(
                insert(IMPORT_BATCH).values(
                    file_sha256="bare", filename="bare", row_count=0, new_records=0, imported_at=0
                )
            )
            assert batch.inserted_primary_key is not None
            batch_id = int(batch.inserted_primary_key[0])
        last = RECORD_COLUMNS.index("import_id")
        rows = [(*row[:last], batch_id, *row[last + 1 :]) for row in rows]
        raw = store.engine.raw_connection()
        try:
            start = time.perf_counter()
            write(raw.driver_connection, rows)
            raw.commit()
            return time.perf_counter() - start
        finally:
            raw.close()
    finally:
        store.dispose()


def _executemany(connection: Any, rows: list[Row]) -> None:
    columns = ", ".join(RECORD_COLUMNS)
    marks = ", ".join("?" for _ in RECORD_COLUMNS)
    sql = f"INSERT INTO {BEHAVIOUR_RECORD.name} ({columns}) VALUES ({marks})"  # noqa: S608
    connection.executemany(sql, rows)


def _copy(connection: Any, rows: list[Row]) -> None:
    statement = psycopg_sql.SQL("COPY {} ({}) FROM STDIN").format(
        psycopg_sql.Identifier(BEHAVIOUR_RECORD.name),
        psycopg_sql.SQL(", ").join(psycopg_sql.Identifier(n) for n in RECORD_COLUMNS),
    )
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _figures(scenario: str, records: int, new: int, seconds: float) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "records": records,
        "new_records": new,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds),
    }


def run(records: int, root: Path, server: Server | None) -> list[dict[str, Any]]:
    """`ingest_one_node`, and `ingest_one_node_postgres` when `server` is given."""
    workdir = root / "ingest"
    init_federation(workdir, 3, fast_kdf=True)
    party = load_party(workdir, AGENCY)
    path = workdir / f"{AGENCY}-export.csv"
    people = write_export(path, party, records)
    began = time.perf_counter()
    seconds, new, rows = _ingest(party.db_url, path, party)
    database = Path(str(make_url(party.db_url).database))
    size = sum(os.path.getsize(p) for p in database.parent.glob(database.name + "*"))
    raw_seconds = _bare(f"sqlite:///{workdir / 'bare-insert.db'}", rows, _executemany)
    lines = [
        {
            **_figures("ingest_one_node", records, new, seconds),
            "people": people,
            "database_mb": round(size / 1e6, 1),
            "raw_insert_seconds": round(raw_seconds, 2),
            "raw_insert_records_per_s": round(len(rows) / raw_seconds),
            "ratio_to_raw_insert": round(raw_seconds / seconds * records / len(rows), 3),
            "scenario_s": round(time.perf_counter() - began, 1),
        }
    ]
    if server is not None:
        began = time.perf_counter()
        seconds, new, stored = _ingest(server.fresh_database(), path, party)
        copy_seconds = _bare(server.fresh_database(), stored, _copy)
        lines.append(
            {
                **_figures("ingest_one_node_postgres", records, new, seconds),
                "people": people,
                "copy_seconds": round(copy_seconds, 2),
                "copy_records_per_s": round(len(stored) / copy_seconds),
                "ratio_to_copy": round(copy_seconds / seconds * records / len(stored), 3),
                "scenario_s": round(time.perf_counter() - began, 1),
            }
        )
    return lines
