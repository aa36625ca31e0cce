"""The helper aggregator's own table: every release it added noise to, once.

Invariants:
- One row per query id and per release id (`claim`), written in the transaction that
  charges the helper's ledger and logs "statistics_noised": a query id or a release id is
  noised at most once, so the coordinator never gets two noisy draws of one sum for one
  charge.
- The claim inserts-or-skips (no failed statement), so the transaction stays usable.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Connection, Engine, Table, select
from sqlmodel import Field, SQLModel

from fedscore.errors import AlreadyExists
from fedscore.runtime.db import create_tables, insert_unless_present


class NoisedRelease(SQLModel, table=True):
    """A statistics query whose shares this helper summed and noised."""

    __tablename__ = "helper_noised"

    query_id: str = Field(primary_key=True)
    release_id: str = Field(index=True)
    noised_at: int = Field(sa_type=BigInteger)


HELPER_NOISED: Table = NoisedRelease.__table__  # type: ignore[attr-defined]
HELPER_TABLES = [HELPER_NOISED]


class HelperStore:
    """The helper's table in its own database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, HELPER_TABLES)

    def has_noised(self, query_id: str) -> bool:
        """A read ahead of the work; `claim` decides."""
        query = select(HELPER_NOISED.c.query_id).where(HELPER_NOISED.c.query_id == query_id)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def claim(self, connection: Connection, query_id: str, release_id: str, now: int) -> None:
        """Record the query id and release id, or raise `AlreadyExists` (REPLAYED_QUERY,
        REPLAYED_RELEASE); in the caller's transaction."""
        insert = insert_unless_present(connection, HELPER_NOISED, "query_id")
        row = {"query_id": query_id, "release_id": release_id, "noised_at": now}
        if int(connection.execute(insert, row).rowcount) != 1:
            raise AlreadyExists(f"query {query_id!r} was already noised", "REPLAYED_QUERY")
        others = select(HELPER_NOISED.c.query_id).where(
            HELPER_NOISED.c.release_id == release_id, HELPER_NOISED.c.query_id != query_id
        )
        if connection.execute(others).first() is not None:
            raise AlreadyExists(f"release {release_id!r} was already noised", "REPLAYED_RELEASE")
