"""A party's append-only event log, stored through SQLModel and hashed as an RFC 6962 tree.

Invariants:
- Entry `index` is the leaf position: indexes are dense (0, 1, 2, ...) and each is
  written once. An index is taken as max(index) + 1 inside the writer's own transaction
  and inserted with ON CONFLICT DO NOTHING on the primary key; if another writer
  (thread or process) took it first, the writer re-reads and tries the next one. A
  transaction that rolls back leaves no index behind, so no gap can appear.
- `append` writes inside the caller's transaction (a Core connection or
  a `fedscore.runtime.prepared` cursor) and never commits: the event and its log entry commit
  together or not at all.
- Leaf data and what a body may hold are `audit.core.entries`; a body is checked before
  anything is written.
- Roots and proofs are computed from the stored leaf hashes of committed entries only.
  The roots of complete, aligned subtrees of `BLOCK` (256) leaves and above are cached
  in memory and only ever extend over rows already committed, which are never
  rewritten; so a root or proof at any size reads at most one block of leaves from the
  database and hashes O(log n) nodes, whatever the log's length.
- `stored_entries` returns rows exactly as stored, without checking them: it is what an
  auditor is served, so that the auditor, not the party, decides what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    RowMapping,
    Table,
    bindparam,
    func,
    or_,
    select,
)
from sqlmodel import Field, SQLModel

from audit.core import merkle
from audit.core.entries import KIND, LogEntry, LogRef, canonical_json, check_fields, leaf_data
from audit.store.subtrees import BLOCK, BLOCK_LEVEL, CompleteSubtrees, perfect_root
from fedscore.errors import FailedPrecondition, InvalidArgument
from fedscore.runtime.db import create_tables, insert_unless_present
from fedscore.runtime.prepared import Cursor

# A writer loses the race for an index only when another one commits first; this many
# losses in a row means the database is not serialising writers (e.g. REPEATABLE READ).
_MAX_ATTEMPTS = 100
_READ_CHUNK = 64 * BLOCK


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


class EventLog:
    """The log of one party (`origin`), in the `audit_entry` table of `engine`."""

    def __init__(self, engine: Engine, origin: str) -> None:
        if not origin:
            raise InvalidArgument("a log needs an origin", "BAD_LOG_ORIGIN")
        self.engine = engine
        self.origin = origin
        create_tables(engine, [AUDIT_ENTRY])
        # One writer at a time per process for append_now; cross-process safety comes
        # from the primary key, so this lock is an optimisation, not the guarantee.
        self._append_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._subtrees = CompleteSubtrees()
        # Built once: SQLAlchemy then reuses the compiled statements on every append.
        self._next_index = select(func.coalesce(func.max(AUDIT_ENTRY.c.index), -1) + 1)
        # PostgreSQL: one sequencer per log in the database, for every process (replicas)
        # that appends to it: a transaction-scoped advisory lock, taken before the index.
        self._sequencer = select(
            func.pg_advisory_xact_lock(bindparam("log_lock", type_=BigInteger))
        )
        digest = hashlib.sha256(b"fedscore-log:" + origin.encode()).digest()
        self._lock_key = int.from_bytes(digest[:8], "big", signed=True)
        self._insert: Any = None

    @staticmethod
    def _body(kind: str, fields: Mapping[str, Any]) -> str:
        if not isinstance(kind, str) or not KIND.fullmatch(kind):
            raise InvalidArgument(f"bad log entry kind {kind!r}", "BAD_LOG_FIELD")
        check_fields(fields, "fields")
        try:
            return canonical_json(dict(fields))
        except ValueError as exc:
            raise InvalidArgument(f"fields: {exc}", "BAD_LOG_FIELD") from exc

    def check(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Raise as `append` would for an entry it refuses; nothing is written."""
        self._body(kind, fields)

    def _row(self, index: int, kind: str, body: str, logged_at: int) -> dict[str, Any]:
        leaf = merkle.leaf_hash(leaf_data(self.origin, index, kind, body, logged_at))
        return {
            "index": index,
            "kind": kind,
            "body": body,
            "leaf_hash": leaf.hex(),
            "logged_at": logged_at,
        }

    def _insert_statement(self) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING on the index, for this log's database."""
        if self._insert is None:
            with self.engine.connect() as connection:
                self._insert = insert_unless_present(connection, AUDIT_ENTRY, "index")
        return self._insert

    def _take_index(self, writer: Connection | Cursor, kind: str, body: str, now: int) -> LogRef:
        """Append one entry at max(index) + 1, trying the next index if another took it."""
        insert = self._insert_statement()
        dialect = writer.hot.dialect if isinstance(writer, Cursor) else writer.dialect
        if dialect.name == "postgresql":
            writer.execute(self._sequencer, {"log_lock": self._lock_key})
        for _ in range(_MAX_ATTEMPTS):
            if isinstance(writer, Cursor):
                index = int(writer.execute(self._next_index).fetchone()[0])
            else:
                index = int(writer.execute(self._next_index).scalar_one())
            row = self._row(index, kind, body, now)
            if writer.execute(insert, row).rowcount == 1:
                return LogRef(index, bytes.fromhex(row["leaf_hash"]), now)
        raise FailedPrecondition("could not take a log index", "LOG_CONTENDED")

    def append(
        self,
        writer: LogWriter,
        kind: str,
        fields: Mapping[str, Any],
        *,
        now: float | None = None,
    ) -> LogRef:
        """Add an entry inside `writer`'s transaction (not committed here); the caller commits.

        `writer` is a Core connection inside a transaction, or a cursor
        of a `fedscore.runtime.prepared.HotConnection` transaction.
        """
        body = self._body(kind, fields)
        logged_at = int(time.time() if now is None else now)
        return self._take_index(writer, kind, body, logged_at)

    def append_many(
        self,
        writer: LogWriter,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        now: float | None = None,
    ) -> list[LogRef]:
        """Add consecutive entries inside `writer`'s transaction (not committed), in one statement.

        The first entry takes its index as `append` does; from then on this transaction
        holds the next index, which every other writer must read as committed before
        taking it, so the rest follow densely without a race.
        """
        bodies = [(kind, self._body(kind, fields)) for kind, fields in events]
        if not bodies:
            return []
        logged_at = int(time.time() if now is None else now)
        first_kind, first_body = bodies[0]
        first = self._take_index(writer, first_kind, first_body, logged_at)
        rows = [
            self._row(first.index + offset, kind, body, logged_at)
            for offset, (kind, body) in enumerate(bodies[1:], start=1)
        ]
        if rows:
            if isinstance(writer, Cursor):
                writer.executemany(_INSERT_ENTRY, rows)
            else:
                writer.execute(_INSERT_ENTRY, rows)
        return [first] + [
            LogRef(row["index"], bytes.fromhex(row["leaf_hash"]), logged_at) for row in rows
        ]

    def append_now(
        self, kind: str, fields: Mapping[str, Any], *, now: float | None = None
    ) -> LogRef:
        """Add an entry for an event with no other state, committed before returning."""
        with self._append_lock, self.engine.begin() as connection:
            return self.append(connection, kind, fields, now=now)

    def size(self) -> int:
        """The number of committed entries."""
        with self.engine.connect() as connection:
            top = connection.execute(select(func.max(AUDIT_ENTRY.c.index))).scalar_one()
        return 0 if top is None else int(top) + 1

    def _select_rows(self, start: int, end: int) -> list[LogEntry]:
        if not 0 <= start <= end:
            raise InvalidArgument(f"bad entry range [{start}, {end})", "BAD_RANGE")
        query = (
            select(*_ENTRY_COLUMNS)
            .where(AUDIT_ENTRY.c.index >= start, AUDIT_ENTRY.c.index < end)
            .order_by(AUDIT_ENTRY.c.index)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        # Unpacked as plain tuples: the checkpoint signer re-reads every new entry.
        return [_entry(*row) for row in rows]

    def stored_entries(self, start: int, end: int) -> list[LogEntry]:
        """Rows with start <= index < end exactly as stored, unchecked (for auditors)."""
        return self._select_rows(start, end)

    def entries(self, start: int, end: int) -> list[LogEntry]:
        """Committed entries with start <= index < end, in order; refuses tampered rows."""
        found = self._select_rows(start, end)
        for expected, entry in enumerate(found, start=start):
            if entry.index != expected:
                raise FailedPrecondition(f"log has no entry {expected}", "LOG_CORRUPTED")
            if merkle.leaf_hash(entry.leaf_data(self.origin)) != entry.leaf_hash:
                raise FailedPrecondition(
                    f"entry {entry.index} does not match its leaf hash", "LOG_CORRUPTED"
                )
        return found

    def entries_naming(self, field: str, values: Sequence[str], limit: int) -> list[LogEntry]:
        """Entries whose top-level `field` equals one of `values`, oldest first, unchecked.

        Bodies are canonical JSON, so `"field":"value"` appears verbatim in a match; the
        database narrows by that text and the parsed body confirms the exact value.
        """
        if not values:
            return []
        needles = [canonical_json({field: value})[1:-1] for value in values]
        column = AUDIT_ENTRY.c.body
        query = (
            select(AUDIT_ENTRY)
            .where(or_(*(column.contains(needle, autoescape=True) for needle in needles)))
            .order_by(AUDIT_ENTRY.c.index)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        wanted = set(values)
        found = []
        for row in rows:
            entry = _as_entry(row._mapping)
            try:
                fields = json.loads(entry.body)
            except ValueError:
                continue  # a body that is not JSON any more; the auditor reports it
            if isinstance(fields, dict) and fields.get(field) in wanted:
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

    def _cover(self, size: int) -> None:
        """Extend the cached complete subtrees over every whole block below `size`."""
        target = size >> BLOCK_LEVEL << BLOCK_LEVEL
        for lo in range(self._subtrees.blocks * BLOCK, target, _READ_CHUNK):
            hashes = self.leaf_hashes(lo, min(target, lo + _READ_CHUNK))
            for b in range(0, len(hashes), BLOCK):
                self._subtrees.add_block(perfect_root(hashes[b : b + BLOCK]))

    def _subtree_roots(self, size: int) -> merkle.SubtreeRoot:
        """MTH over [lo, hi) within the first `size` entries, from the cache and one block."""
        self._cover(size)
        blocks: dict[int, list[bytes]] = {}

        def block(number: int) -> list[bytes]:
            if number not in blocks:
                lo = number * BLOCK
                blocks[number] = self.leaf_hashes(lo, min(size, lo + BLOCK))
            return blocks[number]

        def subtree(lo: int, hi: int) -> bytes:
            n = hi - lo
            if n & (n - 1) == 0:  # complete; RFC 6962 ranges start aligned to their size
                level = n.bit_length() - 1
                if level >= BLOCK_LEVEL:
                    return self._subtrees.get(level, lo >> level)
                offset = lo & (BLOCK - 1)
                return perfect_root(block(lo >> BLOCK_LEVEL)[offset : offset + n])
            k = 1 << ((n - 1).bit_length() - 1)
            return merkle.node_hash(subtree(lo, lo + k), subtree(lo + k, hi))

        return subtree

    def root(self, size: int | None = None) -> bytes:
        """The tree root over the first `size` committed entries (default: all)."""
        current = self.size()
        if size is None:
            size = current
        self._check_size(size, current)
        if size == 0:
            return merkle.EMPTY_ROOT
        with self._cache_lock:
            return self._subtree_roots(size)(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The audit path of entry `index` in the tree of the first `size` entries."""
        self._check_size(size, self.size())
        with self._cache_lock:
            return merkle.inclusion_path(self._subtree_roots(size), size, index)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Proof that the tree of `size1` entries is a prefix of the tree of `size2`."""
        self._check_size(size2, self.size())
        with self._cache_lock:
            return merkle.consistency_path(self._subtree_roots(size2), size1, size2)

    @staticmethod
    def _check_size(size: int, current: int) -> None:
        if not 0 <= size <= current:
            raise InvalidArgument(f"log has {current} entries, not {size}", "BAD_RANGE")


def _as_entry(col: RowMapping) -> LogEntry:
    return _entry(col["index"], col["kind"], col["body"], col["leaf_hash"], col["logged_at"])


def _entry(index: Any, kind: Any, body: Any, leaf_hash: Any, logged_at: Any) -> LogEntry:
    try:
        leaf = bytes.fromhex(str(leaf_hash))
    except ValueError:
        leaf = b""  # garbage in the column: shown as no hash, so no check can pass
    return LogEntry(int(index), str(kind), str(body), leaf, int(logged_at))


# Built once: a prepared-statement cursor compiles each statement object once, so a new
# object per call would be compiled (and kept) again every time.
_INSERT_ENTRY = AUDIT_ENTRY.insert()

_ENTRY_COLUMNS = (
    AUDIT_ENTRY.c.index,
    AUDIT_ENTRY.c.kind,
    AUDIT_ENTRY.c.body,
    AUDIT_ENTRY.c.leaf_hash,
    AUDIT_ENTRY.c.logged_at,
)


# Where an entry can be appended: a Core connection in a transaction, or the cursor of a
# `fedscore.runtime.prepared.HotConnection` transaction (the score query path).
LogWriter = Connection | Cursor


# What opens a party's log over its engine: `EventLog` in production. Servers take it as
# an argument only so that the benchmark can measure the score path without logging.
LogFactory = Callable[[Engine, str], EventLog]
