"""Agency node databases with 100,000 or 10,000,000 records, built in seconds, honestly.

How, for a federation folder whose agencies already have their demo exports:
1. One template database is created with the node's real schema (`node.store.NodeStore`)
   and filled by SQLite itself (a recursive CTE, no Python per row) with `records`
   filler records in one transaction: one `import_batch` row named "bench-filler";
   pseudonyms drawn from a pool of `records // 10` random 32-byte values (ten records a
   person, like a real export), in scattered row order; times spread over the previous
   and the current year up to now; quantity 1-2; certified; indicator "BENCH-FILLER", a
   code no policy knows, so a node would never count a filler record even if a queried
   pseudonym collided with one. Filler record keys are the 32 ASCII bytes "filler" + a
   zero-padded counter: unique, in order (the unique index is built by appending) and
   unable to collide with a real 32-byte MAC. The query index (pseudonym, occurred_at)
   is dropped during the fill and rebuilt with one CREATE INDEX, as a first import
   (`node.ingest`) does. No journal while filling (a scratch file), WAL mode after.
2. For each agency the template file is copied to `orgs/<agency>/state.db` and the
   agency's demo export is then imported into it through `node.ingest.ingest_file`:
   the people who are queried have their records under the agency's real pseudonyms,
   written by the real import code, among `records` others.
Filler pseudonyms are random rather than HMACs of generated IDs: no one queries them,
and HMAC outputs are indistinguishable from random values, so index shape and lookup
cost are those of a real node of that size. Building one 10,000,000-record file takes
about 30 s here and copying it about 2 s per node, instead of 30 s per node.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from fedscore.runtime.party import load_party
from node.ingest import ingest_file
from node.store import QUERY_INDEX_NAME, NodeStore
from policies.model import Policy

PEOPLE_PER_RECORD = 10


def _sqlite_path(db_url: str) -> Path:
    prefix = "sqlite:///"
    if not db_url.startswith(prefix):
        raise ValueError(f"bench databases are SQLite files, not {db_url}")
    return Path(db_url[len(prefix) :])


FILLER_INDICATOR = "BENCH-FILLER"


def build_template(path: Path, records: int, now: int) -> float:
    """Create the filler database at `path`; return the seconds it took."""
    started = time.perf_counter()
    store = NodeStore(f"sqlite:///{path}")
    store.dispose()
    people = max(1, records // PEOPLE_PER_RECORD)
    first = int(time.mktime(time.strptime(f"{time.gmtime(now).tm_year - 1}", "%Y")))
    span = max(1, now - first - 60)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # A bench file built from scratch: no journal while filling, WAL again after.
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")
        connection.execute("BEGIN")
        batch = connection.execute(
            "INSERT INTO import_batch (file_sha256, filename, row_count, new_records,"
            " imported_at) VALUES (?, 'bench-filler', ?, ?, ?)",
            ("filler-" + str(records), records, records, now),
        ).lastrowid
        connection.execute("CREATE TEMP TABLE pool (i INTEGER PRIMARY KEY, p BLOB NOT NULL)")
        connection.execute(
            "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < ?)"
            " INSERT INTO pool SELECT i, randomblob(32) FROM c",
            (people - 1,),
        )
        connection.execute(f"DROP INDEX {QUERY_INDEX_NAME}")
        connection.execute(
            "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < ?)"
            " INSERT INTO behaviour_record (record_key, pseudonym, indicator, occurred_at,"
            " quantity, certifier, certified, import_id)"
            " SELECT CAST(printf('filler%026d', c.i) AS BLOB),"
            " (SELECT p FROM pool WHERE pool.i = c.i % ?),"
            " ?, ? + (c.i * 7919) % ?, 1 + c.i % 2, 'bench-filler', 1, ? FROM c",
            (records - 1, people, FILLER_INDICATOR, first, span, batch),
        )
        connection.execute(
            f"CREATE INDEX {QUERY_INDEX_NAME} ON behaviour_record (pseudonym, occurred_at)"
        )
        connection.execute("COMMIT")
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
    return time.perf_counter() - started


def fill_nodes(
    workdir: Path,
    agencies: list[str],
    exports: dict[str, Path],
    policy: Policy,
    records: int,
    scratch: Path,
) -> dict[str, float]:
    """Give every agency node `records` filler records plus its real demo export."""
    template = scratch / f"template-{records}.db"
    template_seconds = build_template(template, records, int(time.time()))
    copy_seconds = ingest_seconds = 0.0
    for agency in agencies:
        party = load_party(workdir, agency)
        target = _sqlite_path(party.db_url)
        started = time.perf_counter()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template, target)
        copy_seconds += time.perf_counter() - started
        started = time.perf_counter()
        store = NodeStore(party.db_url)
        try:
            ingest_file(store, exports[agency], policy, agency, party.secrets.pseudonym_key)
        finally:
            store.dispose()
        ingest_seconds += time.perf_counter() - started
    template.unlink()
    return {
        "template_s": round(template_seconds, 1),
        "copy_s": round(copy_seconds, 1),
        "ingest_s": round(ingest_seconds, 1),
    }
