"""Import an agency's export of behaviour records (CSV or JSON Lines) into its node.

Invariants:
- A file is accepted whole or not at all: every row is validated, every problem is
  collected as (row number, reason), and if there is any, `IngestError` is raised and
  nothing is stored (the one import transaction rolls back).
- Rows are read by `node.export_rows` and each is checked by `node.row_checks` (a
  national ID leaves the checker only as the agency's pseudonym).
- Importing a file whose SHA-256 was imported before changes nothing; a record whose
  `record_key` exists already (from this or an earlier file) is counted as a duplicate
  and not stored again.
- Rows are streamed and written in chunks of `CHUNK_ROWS` with one DB-API executemany
  of INSERT ... ON CONFLICT (record_key) DO NOTHING each, inside the one transaction;
  the number of rows it inserted is the number of new records.
- Speed without shortcuts (about 10x the per-row cost of a naive loop): every row is
  still validated, with a bounded per-file cache of values already validated.
- `progress(stage, done, total)`, if given, hears how far the import is: the bytes of the
  file read (every row validated and written as it comes), then the index rebuild and
  the commit; it is told at most once per block read, never per row.
- When the node holds no record yet (a first import) on SQLite, the query index is
  dropped inside the import transaction and rebuilt once at its end (one sort instead of
  a million random B-tree inserts). DDL is transactional in SQLite and readers keep their
  WAL snapshot, so a failed import leaves the index as it was and no reader sees a table
  without it. On other databases the index stays (dropping it would lock out readers).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql as psycopg_sql
from sqlalchemy import Column, Connection, MetaData, Table, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from fedscore.errors import FailedPrecondition, IngestError
from fedscore.runtime.db import insert_unless_present
from node.export_rows import READERS, HashingReader, RawRow, file_sha256, text_of
from node.row_checks import RECORD_COLUMNS, RowChecker, RowProblem
from node.store import (
    BEHAVIOUR_RECORD,
    IMPORT_BATCH,
    QUERY_INDEX,
    NodeStore,
)
from policies.model import Policy

CHUNK_ROWS = 50_000
# (stage, done, total): what the import is doing and how far it is (bytes, then steps).
ProgressHook = Callable[[str, int, int], None]
_ATTEMPTS = 3
_SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class IngestReport:
    """What an import did. `duplicate_records` were already stored (or repeated in the file)."""

    file_sha256: str
    rows: int
    new_records: int
    duplicate_records: int
    already_imported: bool
    # Rows of an indicator that counts only once certified, with no certifier: stored, but
    # they add nothing to any score until a certified version replaces them.
    uncertified_records: int = 0


class _RecordWriter:
    """Writes validated rows in chunks with one executemany each; counts what was new.

    (Inserting on a helper thread while the next chunk is validated was measured slower:
    sqlite3 takes the GIL back after every row it steps, so the two threads convoy.)
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        statement = insert_unless_present(connection, BEHAVIOUR_RECORD, "record_key")
        compiled = statement.compile(dialect=connection.dialect, column_keys=[*RECORD_COLUMNS])
        self.sql = str(compiled)
        # Positional drivers (sqlite3: "?") take tuples in the compiled order; named ones
        # (psycopg: "%(name)s") take mappings.
        order = compiled.positiontup
        self.named = order is None
        self.reorder = None if order is None else [RECORD_COLUMNS.index(n) for n in order]
        if self.reorder == list(range(len(RECORD_COLUMNS))):
            self.reorder = None
        self.new_records = 0

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        params: list[Any]
        if self.named:
            params = [dict(zip(RECORD_COLUMNS, row, strict=True)) for row in rows]
        elif self.reorder is not None:
            params = [tuple(row[i] for i in self.reorder) for row in rows]
        else:
            params = rows
        result = self.connection.exec_driver_sql(self.sql, params)
        # ON CONFLICT DO NOTHING: the rows it changed are exactly the new records.
        self.new_records += max(0, result.rowcount)

    def finish(self) -> None:
        """Every row is written as it comes."""


class _CopyWriter:
    """PostgreSQL: rows go by `COPY` into a temporary table, then one INSERT ... SELECT ...
    ON CONFLICT DO NOTHING moves them into the records; its row count is the new records.

    COPY itself cannot skip a taken key, hence the staging table; it is dropped at commit.
    The statements are SQLAlchemy Core constructs and psycopg's composed SQL: no SQL text
    is pasted together.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        staging = Table(
            "behaviour_record_staging",
            MetaData(),
            *(Column(name, BEHAVIOUR_RECORD.c[name].type) for name in RECORD_COLUMNS),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )
        staging.create(connection)
        self.copy_sql = psycopg_sql.SQL("COPY {} ({}) FROM STDIN").format(
            psycopg_sql.Identifier(staging.name),
            psycopg_sql.SQL(", ").join(psycopg_sql.Identifier(n) for n in RECORD_COLUMNS),
        )
        self.move = (
            postgresql.insert(BEHAVIOUR_RECORD)
            .from_select(list(RECORD_COLUMNS), select(*staging.c))
            .on_conflict_do_nothing(index_elements=["record_key"])
        )
        self.new_records = 0

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        driver = self.connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(self.copy_sql) as copy:
            for row in rows:
                copy.write_row(row)

    def finish(self) -> None:
        self.new_records = max(0, self.connection.execute(self.move).rowcount)


def _holds_no_record(connection: Connection) -> bool:
    first = select(BEHAVIOUR_RECORD.c.id).limit(1)
    return connection.execute(first).first() is None


def _already_imported(store: NodeStore, digest: str) -> IngestReport | None:
    query = select(IMPORT_BATCH.c.row_count).where(IMPORT_BATCH.c.file_sha256 == digest)
    with store.engine.connect() as connection:
        row_count = connection.execute(query).scalar_one_or_none()
    if row_count is None:
        return None
    return IngestReport(digest, int(row_count), 0, 0, already_imported=True)


def _problem_error(name: str, problems: list[tuple[int, str]]) -> IngestError:
    shown = "; ".join(f"row {n}: {reason}" for n, reason in problems[:_SHOWN_PROBLEMS])
    more = len(problems) - _SHOWN_PROBLEMS
    return IngestError(
        f"{name}: {len(problems)} problem(s), nothing imported: {shown}"
        + (f"; and {more} more" if more > 0 else ""),
        problems,
    )


def _import_once(
    store: NodeStore,
    path: Path,
    rows_of: Callable[[Iterable[str]], Iterator[RawRow]],
    checker: RowChecker,
    digest: str,
    now: float,
    progress: ProgressHook | None = None,
) -> IngestReport:
    problems: list[tuple[int, str]] = []
    rows = 0
    chunk: list[tuple[Any, ...]] = []
    reread = hashlib.sha256()
    with store.engine.begin() as connection, path.open("rb") as handle:
        # The first write takes the database's write lock for the whole import.
        batch = connection.execute(
            insert(IMPORT_BATCH).values(
                file_sha256=digest,
                filename=path.name,
                row_count=0,
                new_records=0,
                imported_at=int(now),
            )
        )
        assert batch.inserted_primary_key is not None  # an INSERT of one row has a key
        batch_id = int(batch.inserted_primary_key[0])
        rebuild_index = connection.dialect.name == "sqlite" and _holds_no_record(connection)
        if rebuild_index:
            QUERY_INDEX.drop(connection)
        writer: _RecordWriter | _CopyWriter = (
            _CopyWriter(connection)
            if connection.dialect.name == "postgresql"
            else _RecordWriter(connection)
        )
        on_read = None
        if progress is not None:
            stage, size = f"checking {path.name}", path.stat().st_size
            progress(stage, 0, size)

            def on_read(read: int) -> None:
                progress(stage, read, size)

        raw = HashingReader(handle, reread, on_read)
        record = checker.record
        needs_certificate = checker.needs_certificate
        uncertified = 0
        for number, cells, problem in rows_of(text_of(raw)):
            rows += 1
            if cells is None:
                problems.append((number, problem or "unreadable row"))
                continue
            try:
                row = record(cells, batch_id)
            except RowProblem as exc:
                problems.append((number, str(exc)))
                continue
            if problems:
                continue  # keep validating, but a rejected file stores nothing
            if not row[6] and row[2] in needs_certificate:  # (certified, indicator)
                uncertified += 1
            chunk.append(row)
            if len(chunk) >= CHUNK_ROWS:
                writer.write(chunk)
                chunk = []
        raw.drain()
        if reread.hexdigest() != digest:
            raise FailedPrecondition(f"{path.name} changed while it was read", "FILE_CHANGED")
        if problems:
            raise _problem_error(path.name, problems)
        writer.write(chunk)
        writer.finish()
        new_records = writer.new_records
        if rebuild_index:
            if progress is not None:
                progress("building the query index", 0, 1)
            QUERY_INDEX.create(connection)
        connection.execute(
            update(IMPORT_BATCH)
            .where(IMPORT_BATCH.c.id == batch_id)
            .values(row_count=rows, new_records=new_records)
        )
        if progress is not None:
            progress("committing", 0, 1)
    return IngestReport(
        digest,
        rows,
        new_records,
        rows - new_records,
        already_imported=False,
        uncertified_records=uncertified,
    )


def ingest_file(
    store: NodeStore,
    path: Path,
    policy: Policy,
    agency_id: str,
    pseudonym_key: bytes,
    now: float | None = None,
    progress: ProgressHook | None = None,
) -> IngestReport:
    """Validate and import one export file (.csv or .jsonl) as a single transaction.

    `progress`, if given, hears (stage, done, total) as the import goes (see above)."""
    path = Path(path)
    rows_of = READERS.get(path.suffix.lower())
    if rows_of is None:
        raise IngestError(
            f"{path.name}: expected a .csv or .jsonl file",
            [(0, "file name must end in .csv or .jsonl")],
        )
    checker = RowChecker(policy, agency_id, pseudonym_key, time.time() if now is None else now)
    digest = file_sha256(path)
    for _ in range(_ATTEMPTS):
        done = _already_imported(store, digest)
        if done is not None:
            return done
        try:
            return _import_once(store, path, rows_of, checker, digest, checker.now, progress)
        except IntegrityError:
            # Another import committed the same file first; the transaction rolled back,
            # so look again and retry on the new state.
            continue
    raise FailedPrecondition(
        f"{path.name}: concurrent imports kept conflicting", "IMPORT_CONTENDED"
    )
