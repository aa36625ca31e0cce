"""Prepared statements for the score query path: compiled once, run on the DB-API cursor.

On the path every score query takes, SQLAlchemy's per-execution machinery (execution
context, parameter objects, result wrapping, connection pool checkout) costs more CPU than
SQLite itself, and its deep call chains stay cold in the CPU caches of a busy machine.
This module keeps the statements SQLAlchemy Core builds and compiles, and only skips that
per-execution machinery.

Invariants:
- Every statement is a SQLAlchemy Core construct compiled by SQLAlchemy for the engine's
  own dialect: no SQL is written by hand, and PostgreSQL works as SQLite does.
- Bind values pass through each bound type's own bind processor for the dialect; literal
  values compiled into the statement keep theirs. Rows come back as the DB-API returns
  them (the query path reads only integers, strings and bytes).
- An expanding IN list is compiled once per list length.
- A `HotConnection` holds a party's prepared statements and one kept DB-API connection
  per thread; each `transaction()` commits as a whole or rolls back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

Processor = Callable[[Any], Any]


class _Slot:
    """Stands for one bound value while a statement is compiled: (bind name, list position)."""

    __slots__ = ("name", "position")

    def __init__(self, name: str, position: int | None) -> None:
        self.name = name
        self.position = position


class Prepared:
    """One Core statement compiled for one dialect: its SQL and where each value goes.

    `expand` gives the length of each expanding IN list; the statement is compiled for
    exactly those lengths.
    """

    __slots__ = ("_named", "_processors", "_slots", "sql")

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, expand: Mapping[str, int] | None = None
    ) -> None:
        lengths = dict(expand or {})
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        sample: dict[str, Any] = {}
        self._processors: dict[str, Processor] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor
            if name in lengths:
                sample[name] = [_Slot(name, i) for i in range(lengths[name])]
            elif bind.value is None and bind.callable is None:
                sample[name] = _Slot(name, None)
        expanded = compiled.construct_expanded_state(sample)
        self.sql = expanded.statement
        # Per value the statement takes, in order: a slot to fill, or a literal compiled in.
        self._named = expanded.positiontup is None
        names = list(expanded.parameters) if self._named else list(expanded.positiontup or [])
        self._slots: list[tuple[str, _Slot | Any]] = [
            (name, expanded.parameters[name]) for name in names
        ]

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """The DB-API parameters for `values` (a list for each expanding IN)."""
        filled = []
        for _, slot in self._slots:
            if isinstance(slot, _Slot):
                value = values[slot.name]
                if slot.position is not None:
                    value = value[slot.position]
                processor = self._processors.get(slot.name)
                filled.append(processor(value) if processor is not None else value)
            else:
                filled.append(slot)
        if self._named:
            return {name: value for (name, _), value in zip(self._slots, filled, strict=True)}
        return filled


# Threads that may keep a connection at once: below the engine pool's 5, so that threads
# coming and going (an executor's) can never hold the whole pool.
MAX_KEPT_CONNECTIONS = 4


class HotConnection:
    """One party's prepared statements, and transactions on connections it keeps open.

    Each thread that runs a transaction keeps one DB-API connection from the engine's
    pool for as long as this object lives (the query path runs on one event-loop thread),
    so a transaction pays neither the pool's checkout nor its reset on return. A
    transaction opened while the same thread's kept connection is busy (nested), or by a
    thread beyond the first MAX_KEPT_CONNECTIONS, takes a pooled connection instead; a
    connection that failed with a database error is dropped and replaced on the next
    transaction. `close()` gives every kept connection back; call it before disposing of
    the engine.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._prepared: dict[Any, Prepared] = {}
        self._kept: dict[int, Any] = {}  # thread id -> its DB-API connection (None: opening)
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def prepared(
        self, statement: ClauseElement, expand: Mapping[str, int] | None = None
    ) -> Prepared:
        """`statement` compiled for this dialect once (per IN-list lengths, if any)."""
        key = (statement, tuple(sorted(expand.items()))) if expand else statement
        found = self._prepared.get(key)
        if found is None:
            found = self._prepared[key] = Prepared(statement, self.dialect, expand)
        return found

    @property
    def statements_kept(self) -> int:
        """How many compiled statements this party keeps (bounded by the code's statements)."""
        return len(self._prepared)

    def _take(self) -> tuple[Any, bool]:
        """(DB-API connection, whether it is this thread's kept one)."""
        thread = threading.get_ident()
        with self._lock:
            if thread in self._busy:
                return self.engine.raw_connection(), False
            if thread not in self._kept:
                if len(self._kept) >= MAX_KEPT_CONNECTIONS:
                    return self.engine.raw_connection(), False
                self._kept[thread] = None  # the slot is this thread's from now on
            raw = self._kept[thread]
            self._busy.add(thread)
        if raw is None:
            try:
                raw = self.engine.raw_connection()
            except BaseException:
                with self._lock:
                    self._busy.discard(thread)
                    self._kept.pop(thread, None)
                raise
            with self._lock:
                self._kept[thread] = raw
        return raw, True

    def _give_back(self, raw: Any, kept: bool, failed: bool) -> None:
        if not kept:
            raw.close()
            return
        thread = threading.get_ident()
        with self._lock:
            self._busy.discard(thread)
            if failed:
                self._kept.pop(thread, None)
        if failed:
            raw.invalidate()  # the pool opens a new connection when next asked

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor whose statements commit together when the block ends, or not at all."""
        raw, kept = self._take()
        failed = False
        try:
            cursor = Cursor(self, raw.cursor())
            try:
                yield cursor
                raw.commit()
            except BaseException as error:
                failed = isinstance(error, self.dialect.loaded_dbapi.Error)
                with contextlib.suppress(self.dialect.loaded_dbapi.Error):
                    raw.rollback()
                raise
            finally:
                cursor.close()
        finally:
            self._give_back(raw, kept, failed)

    def close(self) -> None:
        """Give every kept connection back to the engine's pool."""
        with self._lock:
            kept, self._kept = self._kept, {}
        for raw in kept.values():
            if raw is not None:
                raw.close()


class Cursor:
    """Runs prepared statements inside one `HotConnection.transaction()`."""

    __slots__ = ("_cursor", "hot")

    def __init__(self, hot: HotConnection, cursor: Any) -> None:
        self.hot = hot
        self._cursor = cursor

    def execute(
        self,
        statement: ClauseElement,
        values: Mapping[str, Any] | None = None,
        expanding: Sequence[str] = (),
    ) -> Any:
        """Run `statement`; the DB-API cursor (for `rowcount`, `fetchone`, iteration).

        `expanding` names the values that are lists for an expanding IN.
        """
        given = values or {}
        lengths = {name: len(given[name]) for name in expanding}
        prepared = self.hot.prepared(statement, lengths)
        self._cursor.execute(prepared.sql, prepared.parameters(given))
        return self._cursor

    def executemany(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run `statement` once per row; the number of rows it changed in all."""
        prepared = self.hot.prepared(statement)
        self._cursor.executemany(prepared.sql, [prepared.parameters(row) for row in rows])
        return int(self._cursor.rowcount)

    def close(self) -> None:
        self._cursor.close()
