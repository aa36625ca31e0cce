"""An agency node's records of positive behaviour, its import history and seen queries.

Invariants:
- Records are keyed by the agency's pseudonym; no column ever holds a national ID.
- `pseudonym` and `record_key` are stored as their 32 raw bytes (BLOB / BYTEA), not as
  64 hex characters: the two indexes on them are half the size. Callers may still name a
  person by the hex pseudonym (`keys.pseudonym.pseudonym`); `as_pseudonym_bytes` converts.
- `record_key` (keyed BLAKE2b-256, RFC 7693's MAC mode, over
  pseudonym|indicator|occurred_at|quantity|certifier, under a key derived from the
  agency's pseudonym key; a third of HMAC-SHA256's cost per imported row) is unique, so
  importing the same occurrence twice, from one file or from several, stores it once.
  An export must therefore sum same-moment occurrences into `quantity`.
- `occurred_at` is Unix seconds (UTC); scoring years are half-open [start, end).
- A query id is stored at most once (`node.claims.ClaimStatements.claim_query_id`): a
  second is a replay. Likewise a
  relying party's request nonce (`node_request_nonce`), and each consent token's uses are
  counted here by the node itself (`node_token_use`; `node.claims`).
- Queries are plain SQLAlchemy Core that SQLite and PostgreSQL both run; the only
  engine-specific code is the connect-time SQLite tuning and the choice of the
  dialect's INSERT ... ON CONFLICT DO NOTHING construct.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Index,
    Integer,
    Select,
    Table,
    bindparam,
    distinct,
    func,
    or_,
    select,
)
from sqlmodel import Field, SQLModel

from fedscore.errors import InvalidArgument
from fedscore.runtime.db import create_tables, open_engine

_RECORD_KEY_INFO = b"fedscore/v1/record-key"
PSEUDONYM_BYTES = 32
RECORD_KEY_BYTES = 32
# The index every contribution query uses (and a bulk import into an empty table rebuilds).
QUERY_INDEX_NAME = "ix_behaviour_record_pseudonym_time"
# Times are 64-bit (a 32-bit PostgreSQL INTEGER ends in 2038). Record ids are 64-bit too,
# except on SQLite, where only INTEGER PRIMARY KEY is the auto-numbered rowid (already 64-bit).
_ROW_ID = BigInteger().with_variant(Integer, "sqlite")


class ImportBatch(SQLModel, table=True):
    """One accepted agency export; `file_sha256` makes re-importing a file a no-op."""

    __tablename__ = "import_batch"

    id: int | None = Field(default=None, primary_key=True)
    file_sha256: str = Field(unique=True)
    filename: str
    row_count: int
    new_records: int
    imported_at: int = Field(sa_type=BigInteger)


class BehaviourRecord(SQLModel, table=True):
    """One occurrence (or `quantity` occurrences) of an indicator for one pseudonym."""

    __tablename__ = "behaviour_record"
    # The contribution query filters on pseudonym and a time window.
    __table_args__ = (Index(QUERY_INDEX_NAME, "pseudonym", "occurred_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=_ROW_ID)
    record_key: bytes = Field(unique=True)
    pseudonym: bytes
    indicator: str
    occurred_at: int = Field(sa_type=BigInteger)
    quantity: int
    certifier: str
    certified: bool
    import_id: int = Field(foreign_key="import_batch.id")


class SeenQuery(SQLModel, table=True):
    """A contribution query id this node has admitted (replay protection)."""

    __tablename__ = "seen_query"

    query_id: str = Field(primary_key=True)
    seen_at: int = Field(sa_type=BigInteger)


class AcceptedRequest(SQLModel, table=True):
    """A relying party's request nonce this node has served (stored as its SHA-256).

    One signed request authorises one query: a coordinator that sends a request again under
    another query id is refused here, whatever it logged.
    """

    __tablename__ = "node_request_nonce"

    nonce_hash: bytes = Field(primary_key=True)
    relying_party: str
    accepted_at: int = Field(sa_type=BigInteger)


class TokenUse(SQLModel, table=True):
    """How many queries of a consent token this node has answered (its own count)."""

    __tablename__ = "node_token_use"

    token_id: str = Field(primary_key=True)
    uses: int = 0
    last_used_at: int = Field(default=0, sa_type=BigInteger)


IMPORT_BATCH: Table = ImportBatch.__table__  # type: ignore[attr-defined]
BEHAVIOUR_RECORD: Table = BehaviourRecord.__table__  # type: ignore[attr-defined]
SEEN_QUERY: Table = SeenQuery.__table__  # type: ignore[attr-defined]
ACCEPTED_REQUEST: Table = AcceptedRequest.__table__  # type: ignore[attr-defined]
TOKEN_USE: Table = TokenUse.__table__  # type: ignore[attr-defined]
NODE_TABLES = (IMPORT_BATCH, BEHAVIOUR_RECORD, SEEN_QUERY, ACCEPTED_REQUEST, TOKEN_USE)
QUERY_INDEX: Index = next(i for i in BEHAVIOUR_RECORD.indexes if i.name == QUERY_INDEX_NAME)


def record_key_secret(pseudonym_key: bytes) -> bytes:
    """The MAC key of record keys, derived from the pseudonym key (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_RECORD_KEY_INFO).derive(
        pseudonym_key
    )


def as_pseudonym_bytes(pseudonym: str | bytes) -> bytes:
    """The stored form of a pseudonym given as 32 bytes or as 64 hex characters."""
    raw = bytes.fromhex(pseudonym) if isinstance(pseudonym, str) else bytes(pseudonym)
    if len(raw) != PSEUDONYM_BYTES:
        raise InvalidArgument(
            f"a pseudonym is {PSEUDONYM_BYTES} bytes, got {len(raw)}", reason="BAD_PSEUDONYM"
        )
    return raw


def record_key_message(
    pseudonym: bytes, indicator: str, occurred_at: int, quantity: int, certifier: str
) -> bytes:
    """What a record key authenticates; only the last field is free text, so "|" is safe."""
    return b"%b|%b|%d|%d|%b" % (
        pseudonym,
        indicator.encode(),
        occurred_at,
        quantity,
        certifier.encode(),
    )


def record_key(
    secret: bytes,
    pseudonym: str | bytes,
    indicator: str,
    occurred_at: int,
    quantity: int,
    certifier: str,
) -> bytes:
    """The 32-byte keyed BLAKE2b naming one record (see `record_key_message`)."""
    return stored_record_key(
        secret, as_pseudonym_bytes(pseudonym), indicator, occurred_at, quantity, certifier
    )


def stored_record_key(
    secret: bytes, pseudonym: bytes, indicator: str, occurred_at: int, quantity: int, certifier: str
) -> bytes:
    """`record_key` of a pseudonym already in its stored 32-byte form (ingest, per row)."""
    message = record_key_message(pseudonym, indicator, occurred_at, quantity, certifier)
    return hashlib.blake2b(message, key=secret, digest_size=RECORD_KEY_BYTES).digest()


def _counted(uncertified_ok: Collection[str]) -> ColumnElement[bool]:
    """Certified records, and records of the indicators that need no certification."""
    records = BEHAVIOUR_RECORD.c
    counted: ColumnElement[bool] = records.certified.is_(True)
    if uncertified_ok:
        counted = or_(counted, records.indicator.in_(sorted(uncertified_ok)))
    return counted


def quantities_query(uncertified_ok: Collection[str] = ()) -> Select[str, int]:
    """One GROUP BY over the (pseudonym, occurred_at) index: indicator -> summed quantity.

    Parameters: `pseudonym` (32 bytes), `start`, `end` (Unix seconds, half-open). Built
    once per policy on the query path, so answering executes a cached statement.
    """
    records = BEHAVIOUR_RECORD.c
    return (
        select(records.indicator, func.sum(records.quantity))
        .where(
            records.pseudonym == bindparam("pseudonym"),
            records.occurred_at >= bindparam("start"),
            records.occurred_at < bindparam("end"),
            _counted(uncertified_ok),
        )
        .group_by(records.indicator)
    )


def quantities_of_many_query(uncertified_ok: Collection[str] = ()) -> Select[bytes, str, int]:
    """`quantities_query` for a list of people (`pseudonyms`, expanding) at once."""
    records = BEHAVIOUR_RECORD.c
    return (
        select(records.pseudonym, records.indicator, func.sum(records.quantity))
        .where(
            records.pseudonym.in_(bindparam("pseudonyms", expanding=True)),
            records.occurred_at >= bindparam("start"),
            records.occurred_at < bindparam("end"),
            _counted(uncertified_ok),
        )
        .group_by(records.pseudonym, records.indicator)
    )


class NodeStore:
    """The node's database: behaviour records, import batches and seen query ids."""

    def __init__(self, db_url: str) -> None:
        self.engine = open_engine(db_url)
        create_tables(self.engine, list(NODE_TABLES))

    def dispose(self) -> None:
        """Close pooled connections (lets tests and shutdown release the file)."""
        self.engine.dispose()

    def quantities(
        self,
        pseudonym: str | bytes,
        start_ts: int,
        end_ts: int,
        *,
        uncertified_ok: Collection[str] = (),
    ) -> dict[str, int]:
        """Occurrences per indicator for `pseudonym` with start_ts <= occurred_at < end_ts.

        `pseudonym` is the agency's pseudonym of the person, hex or raw bytes.

        Only certified records count, except for the indicator codes in `uncertified_ok`
        (those whose policy does not require certification).
        """
        values = {"pseudonym": as_pseudonym_bytes(pseudonym), "start": start_ts, "end": end_ts}
        with self.engine.connect() as connection:
            rows = connection.execute(quantities_query(uncertified_ok), values)
            return {str(code): int(total) for code, total in rows}

    def has_seen_query(self, query_id: str) -> bool:
        query = select(SEEN_QUERY.c.query_id).where(SEEN_QUERY.c.query_id == query_id)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def record_count(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(BEHAVIOUR_RECORD)).scalar_one()
            )

    def pseudonym_count(self) -> int:
        query = select(func.count(distinct(BEHAVIOUR_RECORD.c.pseudonym)))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())
