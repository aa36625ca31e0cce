"""A party's append-only event log, stored through SQLModel and hashed as an RFC 6962 tree.

Invariants:
- Entry `index` is the leaf position: indexes are dense (0, 1, 2, ...) and each is
  written once. An index is taken as max(index) + 1 inside the writer's own transaction
  and inserted with ON CONFLICT DO NOTHING on the primary key; if another writer
  (thread or process) took it first, the writer re-reads and tries the next one. A
  transaction that rolls back leaves no index behind, so no gap can appear.
- `append` writes inside the caller's session and never commits: the event and its log
  entry commit together or not at all.
- Leaf data is the canonical JSON (sorted keys, compact, UTF-8) of
  {"body", "index", "kind", "logged_at", "origin"}, where `body` is the stored canonical
  JSON text of the fields. Binding index and origin into the leaf stops an entry from
  being replayed at another position or in another party's log.
- Bodies never hold personal data or secrets of the query path: a field whose key names
  a national ID, a pseudonym, a contribution or a masked value (at any depth) is refused,
  as is a string holding a stand-alone 13-digit number, before anything is written.
- `root()` is computed from the stored leaf hashes of committed entries only; the cached
  peaks only ever extend over rows already committed, which are never rewritten.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Engine, Table, func, select
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from audit import merkle
from fedscore.db import insert_unless_present
from fedscore.errors import FailedPrecondition, InvalidArgument

# Normalised (lower case, no "_" or "-") key fragments an entry body may never contain.
DENIED_KEYS = ("nationalid", "pseudonym", "contribution", "maskedvalue")
# A 13-digit number standing alone (plain or as printed on ID cards, 1-2345-67890-12-3).
# Runs of digits inside hex or base64 (bounded by letters) are hashes, not IDs.
_ID_LIKE = re.compile(r"(?<![0-9A-Za-z])(?:\d{13}|\d-\d{4}-\d{5}-\d{2}-\d)(?![0-9A-Za-z])")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
# A writer loses the race for an index only when another one commits first; this many
# losses in a row means the database is not serialising writers (e.g. REPEATABLE READ).
_MAX_ATTEMPTS = 100
_READ_CHUNK = 10_000


class AuditEntry(SQLModel, table=True):
    """One row of the log; `leaf_hash` is hex of SHA-256(0x00 || leaf data)."""

    __tablename__ = "audit_entry"

    # 64-bit on PostgreSQL; indexes are allocated here, never by the database.
    index: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    kind: str
    body: str
    leaf_hash: str
    logged_at: int = Field(sa_type=BigInteger)


AUDIT_ENTRY: Table = AuditEntry.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class LogRef:
    """Where an event landed in the log."""

    index: int
    leaf_hash: bytes
    logged_at: int = Field(sa_type=BigInteger)


@dataclass(frozen=True)
class LogEntry:
    """An entry as stored; `body` is canonical JSON text of its fields."""

    index: int
    kind: str
    body: str
    leaf_hash: bytes
    logged_at: int = Field(sa_type=BigInteger)

    @property
    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = json.loads(self.body)
        return fields

    def leaf_data(self, origin: str) -> bytes:
        return leaf_data(origin, self.index, self.kind, self.body, self.logged_at)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text; refuses NaN and infinities."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def leaf_data(origin: str, index: int, kind: str, body: str, logged_at: int) -> bytes:
    """The bytes an entry's leaf hash covers (see the module docstring)."""
    leaf = {"body": body, "index": index, "kind": kind, "logged_at": logged_at, "origin": origin}
    return canonical_json(leaf).encode("utf-8")


def _normalised(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _check_value(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"{path}: keys must be strings", "BAD_LOG_FIELD")
            if any(denied in _normalised(key) for denied in DENIED_KEYS):
                raise InvalidArgument(
                    f"{path}.{key}: a log entry never holds this field", "DENIED_LOG_FIELD"
                )
            _check_value(inner, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            _check_value(inner, f"{path}[{i}]")
    elif isinstance(value, str):
        if _ID_LIKE.search(value):
            # The value itself is not echoed: it may be a national ID.
            raise InvalidArgument(
                f"{path}: a log entry never holds a 13-digit number", "DENIED_LOG_FIELD"
            )
    elif value is not None and not isinstance(value, bool | int | float):
        raise InvalidArgument(
            f"{path}: {type(value).__name__} is not a JSON value", "BAD_LOG_FIELD"
        )


class EventLog:
    """The log of one party (`origin`), in the `audit_entry` table of `engine`."""

    def __init__(self, engine: Engine, origin: str) -> None:
        if not origin:
            raise InvalidArgument("a log needs an origin", "BAD_LOG_ORIGIN")
        self.engine = engine
        self.origin = origin
        SQLModel.metadata.create_all(engine, tables=[AUDIT_ENTRY])
        # One writer at a time per process for append_now; cross-process safety comes
        # from the primary key, so this lock is an optimisation, not the guarantee.
        self._append_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._peaks: list[bytes] = []
        self._peaks_size = 0

    def append(
        self, session: Session, kind: str, fields: Mapping[str, Any], *, now: float | None = None
    ) -> LogRef:
        """Add an entry inside `session` (not committed here); the caller commits."""
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise InvalidArgument(f"bad log entry kind {kind!r}", "BAD_LOG_FIELD")
        _check_value(fields, "fields")
        try:
            body = canonical_json(dict(fields))
        except ValueError as exc:
            raise InvalidArgument(f"fields: {exc}", "BAD_LOG_FIELD") from exc
        logged_at = int(time.time() if now is None else now)
        connection = session.connection()
        insert = insert_unless_present(connection, AUDIT_ENTRY, "index")
        next_index = select(func.coalesce(func.max(AUDIT_ENTRY.c.index), -1) + 1)
        for _ in range(_MAX_ATTEMPTS):
            index = int(connection.execute(next_index).scalar_one())
            leaf = merkle.leaf_hash(leaf_data(self.origin, index, kind, body, logged_at))
            row = {
                "index": index,
                "kind": kind,
                "body": body,
                "leaf_hash": leaf.hex(),
                "logged_at": logged_at,
            }
            if connection.execute(insert, row).rowcount == 1:
                return LogRef(index, leaf, logged_at)
        raise FailedPrecondition("could not take a log index", "LOG_CONTENDED")

    def append_now(
        self, kind: str, fields: Mapping[str, Any], *, now: float | None = None
    ) -> LogRef:
        """Add an entry for an event with no other state, committed before returning."""
        with self._append_lock, Session(self.engine) as session:
            ref = self.append(session, kind, fields, now=now)
            session.commit()
            return ref

    def size(self) -> int:
        """The number of committed entries."""
        with self.engine.connect() as connection:
            top = connection.execute(select(func.max(AUDIT_ENTRY.c.index))).scalar_one()
        return 0 if top is None else int(top) + 1

    def entries(self, start: int, end: int) -> list[LogEntry]:
        """Committed entries with start <= index < end, in order; refuses tampered rows."""
        if not 0 <= start <= end:
            raise InvalidArgument(f"bad entry range [{start}, {end})", "BAD_RANGE")
        query = (
            select(AUDIT_ENTRY)
            .where(AUDIT_ENTRY.c.index >= start, AUDIT_ENTRY.c.index < end)
            .order_by(AUDIT_ENTRY.c.index)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        found = []
        for expected, row in enumerate(rows, start=start):
            # Row.index is the tuple method, so read the columns through the mapping.
            col = row._mapping
            entry = LogEntry(
                int(col["index"]),
                str(col["kind"]),
                str(col["body"]),
                bytes.fromhex(col["leaf_hash"]),
                int(col["logged_at"]),
            )
            if entry.index != expected:
                raise FailedPrecondition(f"log has no entry {expected}", "LOG_CORRUPTED")
            if merkle.leaf_hash(entry.leaf_data(self.origin)) != entry.leaf_hash:
                raise FailedPrecondition(
                    f"entry {entry.index} does not match its leaf hash", "LOG_CORRUPTED"
                )
            found.append(entry)
        return found

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Stored leaf hashes of entries start <= index < end; refuses a gap."""
        hashes: list[bytes] = []
        with self.engine.connect() as connection:
            for lo in range(start, end, _READ_CHUNK):
                hi = min(end, lo + _READ_CHUNK)
                query = (
                    select(AUDIT_ENTRY.c.index, AUDIT_ENTRY.c.leaf_hash)
                    .where(AUDIT_ENTRY.c.index >= lo, AUDIT_ENTRY.c.index < hi)
                    .order_by(AUDIT_ENTRY.c.index)
                )
                for expected, (index, leaf) in enumerate(connection.execute(query), start=lo):
                    if index != expected:
                        raise FailedPrecondition(f"log has no entry {expected}", "LOG_CORRUPTED")
                    hashes.append(bytes.fromhex(leaf))
        if len(hashes) != end - start:
            raise FailedPrecondition(f"log has fewer than {end} entries", "LOG_CORRUPTED")
        return hashes

    def root(self, size: int | None = None) -> bytes:
        """The tree root over the first `size` committed entries (default: all)."""
        current = self.size()
        if size is None:
            size = current
        if not 0 <= size <= current:
            raise InvalidArgument(f"log has {current} entries, not {size}", "BAD_RANGE")
        with self._cache_lock:
            if size < self._peaks_size:
                return merkle.root(self.leaf_hashes(0, size))
            peaks = self._peaks
            for offset, leaf in enumerate(self.leaf_hashes(self._peaks_size, size)):
                peaks = merkle.append_to_peaks(peaks, self._peaks_size + offset, leaf)
            self._peaks, self._peaks_size = peaks, size
            return merkle.root_from_peaks(peaks)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The audit path of entry `index` in the tree of the first `size` entries."""
        self._check_size(size)
        return merkle.inclusion_proof(self.leaf_hashes(0, size), index)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Proof that the tree of `size1` entries is a prefix of the tree of `size2`."""
        self._check_size(size2)
        return merkle.consistency_proof(self.leaf_hashes(0, size2), size1)

    def _check_size(self, size: int) -> None:
        current = self.size()
        if not 0 <= size <= current:
            raise InvalidArgument(f"log has {current} entries, not {size}", "BAD_RANGE")
