"""What the consent registry keeps: grants and the state of its status list.

Invariants:
- A grant is stored under a citizen key (hex HMAC-SHA256 of the national ID under the
  registry's pseudonym key), never under the national ID itself; the ID exists in the
  clear only inside the sealed blobs of the signed token, which only agencies can open.
- Every status index is used by at most one grant (unique column), and indexes are drawn
  at random from a list at least `MIN_STATUS_LIST_BITS` long, so a token's index says
  nothing about when it was issued or how many tokens exist (herd privacy).
- The status-list sequence only grows; it is bumped in the same transaction that marks
  a grant revoked, so a signed list with sequence n includes every revocation before n.
- Grants are never deleted: revocation sets `revoked_at`, and the list only grows.

Storage idiom (as in every party's store): tables are declared once (SQLModel, for the
schema only); every read and write is a SQLAlchemy Core statement on a `Connection` the
caller owns (`engine.begin()`), and rows come back as frozen values (`Grant`,
`StatusListState`), never as live ORM objects. Nothing here commits: a grant or a
revocation and its audit log entry commit together or not at all. The sequence is bumped
by one `UPDATE ... RETURNING`, never read, changed and written back, so two concurrent
revocations cannot both take the same sequence.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields

from sqlalchemy import Connection, Engine, LargeBinary, Table, func, insert, select, update
from sqlmodel import Column, Field, SQLModel

from fedscore.protocol.status_list import MIN_STATUS_LIST_BITS
from fedscore.runtime.db import create_tables, insert_unless_present
from fedscore.runtime.db import open_engine as open_database

STATUS_LIST_ROW = 1


class ConsentGrant(SQLModel, table=True):
    """One consent a citizen gave, as the registry remembers it."""

    __tablename__ = "consent_grant"

    token_id: str = Field(primary_key=True)
    citizen_key: str = Field(index=True)
    purpose_id: str
    relying_party: str
    not_before: int
    not_after: int
    max_uses: int
    status_index: int = Field(unique=True)
    granted_at: int
    revoked_at: int | None = None
    token_envelope: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class StatusListRecord(SQLModel, table=True):
    """The registry's one status list: its current sequence and the last signed copy."""

    __tablename__ = "consent_status_list"

    id: int = Field(default=STATUS_LIST_ROW, primary_key=True)
    sequence: int = 0
    signed_sequence: int = -1
    signed_at: int = 0
    signed_ttl: int = 0
    signed_envelope: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


GRANT: Table = ConsentGrant.__table__  # type: ignore[attr-defined]
STATUS_LIST: Table = StatusListRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Grant:
    """A stored grant, as read or as to be written (the columns of `consent_grant`)."""

    token_id: str
    citizen_key: str
    purpose_id: str
    relying_party: str
    not_before: int
    not_after: int
    max_uses: int
    status_index: int
    granted_at: int
    revoked_at: int | None
    token_envelope: bytes


_GRANT_COLUMNS = [GRANT.c[field.name] for field in fields(Grant)]


@dataclass(frozen=True)
class StatusListState:
    """The status list's sequence and its last signed copy (`signed_envelope`, if any)."""

    sequence: int
    signed_sequence: int
    signed_at: int
    signed_ttl: int
    signed_envelope: bytes | None


def open_engine(db_url: str) -> Engine:
    """An engine for `db_url` with the registry's tables created."""
    engine = open_database(db_url)
    create_tables(engine, [GRANT, STATUS_LIST])
    return engine


def add_grant(connection: Connection, grant: Grant) -> None:
    connection.execute(
        insert(GRANT).values(**{f.name: getattr(grant, f.name) for f in fields(Grant)})
    )


def _grant(row: tuple[object, ...]) -> Grant:
    return Grant(*row)  # type: ignore[arg-type]


def find_grant(connection: Connection, token_id: str) -> Grant | None:
    row = connection.execute(select(*_GRANT_COLUMNS).where(GRANT.c.token_id == token_id)).first()
    return None if row is None else _grant(tuple(row))


def grants_of(connection: Connection, citizen_key: str) -> list[Grant]:
    """Every grant of one citizen, oldest first."""
    statement = (
        select(*_GRANT_COLUMNS)
        .where(GRANT.c.citizen_key == citizen_key)
        .order_by(GRANT.c.granted_at, GRANT.c.token_id)
    )
    return [_grant(tuple(row)) for row in connection.execute(statement)]


def grant_count(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(GRANT)).scalar_one())


def status_list_size(grant_count: int) -> int:
    """Bits in the status list: at least the minimum, doubled so it stays at most half full.

    Depends only on the number of grants (which never shrinks), so the size never shrinks
    and every issued index stays inside the list.
    """
    size = MIN_STATUS_LIST_BITS
    while 2 * (grant_count + 1) > size:
        size *= 2
    return size


def draw_status_index(connection: Connection) -> tuple[int, int]:
    """A random status index no grant uses yet, and the list size it was drawn from."""
    size = status_list_size(grant_count(connection))
    while True:
        index = secrets.randbelow(size)
        taken = connection.execute(
            select(GRANT.c.token_id).where(GRANT.c.status_index == index)
        ).first()
        if taken is None:
            return index, size


def revoked_indexes(connection: Connection) -> set[int]:
    statement = select(GRANT.c.status_index).where(GRANT.c.revoked_at.is_not(None))
    return {int(index) for index in connection.execute(statement).scalars()}


def mark_revoked(connection: Connection, token_id: str, now: int) -> int | None:
    """Revoke `token_id` and bump the status-list sequence; the new sequence, or None if
    the grant was revoked already (by this call's caller or a concurrent one)."""
    revoked = connection.execute(
        update(GRANT)
        .where(GRANT.c.token_id == token_id, GRANT.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(GRANT.c.token_id)
    ).first()
    if revoked is None:
        return None
    status_list_state(connection)  # the row exists from here on
    sequence = connection.execute(
        update(STATUS_LIST)
        .where(STATUS_LIST.c.id == STATUS_LIST_ROW)
        .values(sequence=STATUS_LIST.c.sequence + 1)
        .returning(STATUS_LIST.c.sequence)
    ).scalar_one()
    return int(sequence)


def status_list_state(connection: Connection) -> StatusListState:
    """The status list row, created on first use."""
    connection.execute(
        insert_unless_present(connection, STATUS_LIST, "id").values(
            id=STATUS_LIST_ROW, sequence=0, signed_sequence=-1, signed_at=0, signed_ttl=0
        )
    )
    row = connection.execute(
        select(
            STATUS_LIST.c.sequence,
            STATUS_LIST.c.signed_sequence,
            STATUS_LIST.c.signed_at,
            STATUS_LIST.c.signed_ttl,
            STATUS_LIST.c.signed_envelope,
        ).where(STATUS_LIST.c.id == STATUS_LIST_ROW)
    ).one()
    return StatusListState(*row)


def store_signed_list(
    connection: Connection, *, sequence: int, signed_at: int, ttl: int, envelope: bytes
) -> None:
    """Keep the copy of the list just signed for `sequence`."""
    connection.execute(
        update(STATUS_LIST)
        .where(STATUS_LIST.c.id == STATUS_LIST_ROW)
        .values(
            signed_sequence=sequence, signed_at=signed_at, signed_ttl=ttl, signed_envelope=envelope
        )
    )
