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

Nothing here commits: callers own the session, so a grant or revocation and its audit
log entry commit together or not at all.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Engine, LargeBinary, func
from sqlmodel import Column, Field, Session, SQLModel, col, select

from fedscore.protocol.status_list import MIN_STATUS_LIST_BITS
from fedscore.runtime.db import create_tables
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


def open_engine(db_url: str) -> Engine:
    """An engine for `db_url` with the registry's tables created."""
    engine = open_database(db_url)
    create_tables(engine, [ConsentGrant.__table__, StatusListRecord.__table__])  # type: ignore[attr-defined]
    return engine


def add_grant(session: Session, grant: ConsentGrant) -> None:
    session.add(grant)


def find_grant(session: Session, token_id: str) -> ConsentGrant | None:
    return session.get(ConsentGrant, token_id)


def grants_of(session: Session, citizen_key: str) -> list[ConsentGrant]:
    """Every grant of one citizen, oldest first."""
    statement = (
        select(ConsentGrant)
        .where(ConsentGrant.citizen_key == citizen_key)
        .order_by(col(ConsentGrant.granted_at), col(ConsentGrant.token_id))
    )
    return list(session.exec(statement))


def grant_count(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(ConsentGrant)).one())


def status_list_size(grant_count: int) -> int:
    """Bits in the status list: at least the minimum, doubled so it stays at most half full.

    Depends only on the number of grants (which never shrinks), so the size never shrinks
    and every issued index stays inside the list.
    """
    size = MIN_STATUS_LIST_BITS
    while 2 * (grant_count + 1) > size:
        size *= 2
    return size


def draw_status_index(session: Session) -> tuple[int, int]:
    """A random status index no grant uses yet, and the list size it was drawn from."""
    size = status_list_size(grant_count(session))
    while True:
        index = secrets.randbelow(size)
        taken = session.exec(
            select(ConsentGrant.token_id).where(ConsentGrant.status_index == index)
        ).first()
        if taken is None:
            return index, size


def revoked_indexes(session: Session) -> set[int]:
    statement = select(ConsentGrant.status_index).where(col(ConsentGrant.revoked_at).is_not(None))
    return set(session.exec(statement))


def status_list_record(session: Session) -> StatusListRecord:
    """The status list row, created on first use."""
    record = session.get(StatusListRecord, STATUS_LIST_ROW)
    if record is None:
        record = StatusListRecord()
        session.add(record)
        session.flush()
    return record
