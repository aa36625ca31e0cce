"""One way to open a party's database, for every party.

SQLite by default (one file per party, WAL mode so readers proceed while a writer
commits, a busy timeout so a second writer waits instead of failing); any other URL
SQLAlchemy knows, PostgreSQL in production, by configuration alone. Queries stay
portable: the only dialect-specific construct, an insert that skips a taken key, is
built here for each supported engine (and the upserts built on it: `use_counters`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

from fedscore.errors import FailedPrecondition

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # In WAL mode NORMAL never corrupts the database; a power cut may lose the last
        # commits, which the parties' Merkle checkpoints make visible.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def open_engine(db_url: str) -> Engine:
    """An engine for `db_url`. Parameters stay out of error messages (they may hold pseudonyms)."""
    # `preserve_rowcount`: every store claims a row by an insert or update that affects
    # one row or none, and reads `rowcount`; psycopg's rowcount reads -1 without it.
    engine = create_engine(
        db_url, hide_parameters=True, execution_options={"preserve_rowcount": True}
    )
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _tune_sqlite)
    return engine


def dialect_insert(name: str, table: Table) -> Any:
    """The INSERT construct of the database `name` ("sqlite", "postgresql") with ON CONFLICT."""
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise FailedPrecondition(f"database {name!r} is not supported", "UNSUPPORTED_DATABASE")


def insert_unless_present(connection: Connection, table: Table, key: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING, built for the connection's engine."""
    return dialect_insert(connection.dialect.name, table).on_conflict_do_nothing(
        index_elements=[key]
    )


def create_tables(engine: Engine, tables: Sequence[Table]) -> None:
    """Create missing tables; safe when several processes open a new database at once.

    Two processes may both see a table missing and both issue CREATE TABLE; the loser's
    "already exists" is the outcome it wanted, so it checks again instead of failing.
    """
    for attempt in range(3):
        try:
            SQLModel.metadata.create_all(engine, tables=list(tables))
            return
        except OperationalError as exc:
            if "already exists" not in str(exc) or attempt == 2:
                raise


def use_counters(database: str, table: Table) -> tuple[Any, Any]:
    """Statements counting one use of a token in `table` (`token_id`, `uses`, `last_used_at`).

    Returns (without a limit, with a `max_uses` bind parameter). One statement per use: the
    first use inserts the token's row, a later one adds to it. With a limit the row changes
    only while under it (the statement then reports no row changed), so two concurrent
    transactions can never both take the last use.
    """
    first = dialect_insert(database, table).values(
        token_id=bindparam("token"), uses=1, last_used_at=bindparam("now")
    )
    uses = table.c
    again = {"uses": uses.uses + 1, "last_used_at": first.excluded.last_used_at}
    unlimited = first.on_conflict_do_update(index_elements=["token_id"], set_=again)
    limited = first.on_conflict_do_update(
        index_elements=["token_id"], set_=again, where=uses.uses < bindparam("max_uses")
    )
    return unlimited, limited
