"""Import an agency's export of behaviour records (CSV or JSON Lines) into its node.

Invariants:
- A file is accepted whole or not at all: every row is validated, every problem is
  collected as (row number, reason), and if there is any, `IngestError` is raised and
  nothing is stored (the one import transaction rolls back).
- Row numbers are those a person sees: in a CSV the header is row 1 and the first
  record row 2; in JSON Lines, line numbers from 1.
- A national ID is read, validated (13 digits, mod-11 check digit) and turned into the
  agency's pseudonym at once; it is never stored, logged, or echoed in a problem text
  (no problem text repeats a cell's value, except a policy-shaped indicator code).
- Importing a file whose SHA-256 was imported before changes nothing; a record whose
  `record_key` exists already (from this or an earlier file) is counted as a duplicate
  and not stored again.
- Rows are streamed and written in chunks of `CHUNK_ROWS` with one DB-API executemany
  of INSERT ... ON CONFLICT (record_key) DO NOTHING each, inside the one transaction;
  the number of rows it inserted is the number of new records.
- Speed without shortcuts (about 10x the per-row cost of a naive loop): every row is
  still validated, but a value seen before in the same file (an ID, a date, a quantity,
  a certifier) is looked up in a bounded per-file cache of its validated form instead of
  being validated again; a cache never holds a value that failed validation.
- When the node holds no record yet (a first import) on SQLite, the query index is
  dropped inside the import transaction and rebuilt once at its end (one sort instead of
  a million random B-tree inserts). DDL is transactional in SQLite and readers keep their
  WAL snapshot, so a failed import leaves the index as it was and no reader sees a table
  without it. On other databases the index stays (dropping it would lock out readers).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import IO, Any, BinaryIO

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from fedscore.errors import FailedPrecondition, IngestError, InvalidArgument
from fedscore.runtime.db import insert_unless_present
from keys.pseudonym import pseudonym
from node.store import (
    BEHAVIOUR_RECORD,
    IMPORT_BATCH,
    QUERY_INDEX,
    NodeStore,
    record_key_secret,
    stored_record_key,
)
from policies.model import Policy

COLUMNS = ("national_id", "indicator", "occurred_at", "quantity", "certifier")
MIN_QUANTITY, MAX_QUANTITY = 1, 1000
EARLIEST_YEAR = 2000
MAX_CERTIFIER_CHARS = 200
CHUNK_ROWS = 50_000
# Distinct values a per-file cache keeps before it starts over (bounded memory).
CACHE_LIMIT = 262_144
_ATTEMPTS = 3
_SHOWN_PROBLEMS = 5
_SAFE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")
# Thirteen digits (\d includes Thai digits), possibly hyphenated as printed on ID cards.
_ID_LIKE = re.compile(r"\d(?:[- ]?\d){12}")

# (row number, the five cells in COLUMNS order or None, problem or None)
_RawRow = tuple[int, Sequence[Any] | None, str | None]
# The stored columns, in the order `_RowChecker.record` builds them.
_RECORD_COLUMNS = (
    "record_key",
    "pseudonym",
    "indicator",
    "occurred_at",
    "quantity",
    "certifier",
    "certified",
    "import_id",
)


@dataclass(frozen=True)
class IngestReport:
    """What an import did. `duplicate_records` were already stored (or repeated in the file)."""

    file_sha256: str
    rows: int
    new_records: int
    duplicate_records: int
    already_imported: bool


class _RowProblem(Exception):
    """One row's first problem; its text never contains the row's values."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _HashingReader(io.RawIOBase):
    """A raw reader that hashes exactly the bytes it hands on (and the rest, on `drain`)."""

    def __init__(self, handle: BinaryIO, digest: Any) -> None:
        super().__init__()
        self._handle = handle
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._digest.update(memoryview(buffer)[:count])
        return int(count or 0)

    def drain(self) -> None:
        """Hash what was not read (a header problem stops the reader early)."""
        for block in iter(lambda: self._handle.read(1 << 20), b""):
            self._digest.update(block)


def _text(raw: _HashingReader) -> IO[str]:
    """Decoded text; a UTF-8 byte-order mark is dropped and undecodable bytes become
    U+FFFD, which validation then refuses in its row."""
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", errors="replace", newline="")


def _header_problem(names: Iterable[str]) -> str | None:
    names = list(names)
    missing = [c for c in COLUMNS if c not in names]
    unexpected = sorted({n for n in names if n not in COLUMNS})
    repeated = sorted({n for n in names if names.count(n) > 1})
    parts = []
    if missing:
        parts.append("missing column " + ", ".join(missing))
    if unexpected:
        shown = [n if _SAFE_CODE.fullmatch(n) else "(not shown)" for n in unexpected]
        parts.append("unexpected column " + ", ".join(shown))
    if repeated:
        parts.append("repeated column " + ", ".join(repeated))
    return "; ".join(parts) or None


def _csv_rows(lines: Iterable[str]) -> Iterator[_RawRow]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        yield 1, None, "file is empty; expected the header " + ",".join(COLUMNS)
        return
    names = [name.strip() for name in header]
    problem = _header_problem(names)
    if problem:
        yield 1, None, problem
        return
    positions = [names.index(column) for column in COLUMNS]
    in_order = positions == list(range(len(COLUMNS)))
    width = len(names)
    for number, cells in enumerate(reader, start=2):
        if len(cells) != width:
            if cells:  # a blank line is not a record
                yield number, None, f"expected {width} fields, found {len(cells)}"
            continue
        yield number, cells if in_order else [cells[p] for p in positions], None


def _jsonl_rows(lines: Iterable[str]) -> Iterator[_RawRow]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            yield number, None, "line is not valid JSON"
            continue
        if not isinstance(record, dict):
            yield number, None, "line is not a JSON object"
            continue
        problem = _header_problem(record)
        if problem:
            yield number, None, problem
            continue
        yield number, tuple(record[column] for column in COLUMNS), None


_READERS: Mapping[str, Callable[[Iterable[str]], Iterator[_RawRow]]] = {
    ".csv": _csv_rows,
    ".jsonl": _jsonl_rows,
}


class _ValueCache:
    """Validated forms of raw text cells seen before in this file; bounded, then restarted.

    Only text keys are cached: a JSON `true` hashes like `1` and must not hit the entry
    of the text "1"; values that failed validation are never stored.
    """

    def __init__(self, validate: Callable[[Any], Any], limit: int = CACHE_LIMIT) -> None:
        self.known: dict[str, Any] = {}
        self._validate = validate
        self._limit = limit

    def miss(self, value: Any) -> Any:
        checked = self._validate(value)  # raises _RowProblem
        if type(value) is str:
            if len(self.known) >= self._limit:
                self.known.clear()
            self.known[value] = checked
        return checked


class _RowChecker:
    """Validates one row's cells; the national ID leaves it only as the agency's pseudonym."""

    def __init__(self, policy: Policy, agency_id: str, pseudonym_key: bytes, now: float) -> None:
        self.own = frozenset(i.code for i in policy.indicators_for(agency_id))
        self.known = policy.indicators
        self.agency_id = agency_id
        self.zone: tzinfo = policy.score.zone
        self.earliest = int(datetime(EARLIEST_YEAR, 1, 1, tzinfo=self.zone).timestamp())
        self.now = now
        self.pseudonym_key = pseudonym_key
        self.record_secret = record_key_secret(pseudonym_key)
        # Exports repeat people, dates, quantities and certifiers many times.
        self.subjects = _ValueCache(self._subject)
        self.indicators = _ValueCache(self._indicator)
        self.instants = _ValueCache(self._occurred_at)
        self.quantities = _ValueCache(self._quantity)
        self.certifiers = _ValueCache(self._certifier)

    def check(self, cells: Sequence[Any]) -> tuple[bytes, str, int, int, str]:
        """(pseudonym bytes, indicator, occurred_at, quantity, certifier); raises `_RowProblem`."""
        national_id, indicator, occurred_at, quantity, certifier = cells
        subjects, indicators = self.subjects.known, self.indicators.known
        instants, quantities = self.instants.known, self.quantities.known
        certifiers = self.certifiers.known
        # A hit is a value validated before; anything else (new, or not text) is validated.
        try:
            return (
                subjects[national_id]
                if national_id in subjects
                else self.subjects.miss(national_id),
                indicators[indicator]
                if indicator in indicators
                else self.indicators.miss(indicator),
                instants[occurred_at]
                if occurred_at in instants
                else self.instants.miss(occurred_at),
                quantities[quantity]
                if type(quantity) is str and quantity in quantities
                else self.quantities.miss(quantity),
                certifiers[certifier]
                if certifier in certifiers
                else self.certifiers.miss(certifier),
            )
        except TypeError:  # a JSON list or object cannot be a cache key: validate it plainly
            return (
                self.subjects.miss(national_id),
                self.indicators.miss(indicator),
                self.instants.miss(occurred_at),
                self.quantities.miss(quantity),
                self.certifiers.miss(certifier),
            )

    def record(self, cells: Sequence[Any], import_id: int) -> tuple[Any, ...]:
        """The stored row (columns in `_RECORD_COLUMNS` order) of one valid record."""
        subject, indicator, occurred_at, quantity, certifier = self.check(cells)
        key = stored_record_key(
            self.record_secret, subject, indicator, occurred_at, quantity, certifier
        )
        certified = bool(certifier)
        return (key, subject, indicator, occurred_at, quantity, certifier, certified, import_id)

    def _subject(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise _RowProblem("national_id must be text")
        try:
            # Validates the ID (13 digits, check digit) before hashing it.
            return bytes.fromhex(pseudonym(self.pseudonym_key, value))
        except InvalidArgument as exc:
            if exc.reason != "INVALID_NATIONAL_ID":
                raise
            # The validator's message describes the problem without repeating the number.
            raise _RowProblem(exc.message) from None

    def _indicator(self, value: Any) -> str:
        code = value.strip() if isinstance(value, str) else ""
        if code in self.own:
            return code
        shown = repr(code) if _SAFE_CODE.fullmatch(code) else "(value not shown)"
        if code in self.known:
            owner = self.known[code].agency
            raise _RowProblem(
                f"indicator {shown} is recorded by agency {owner!r}, not {self.agency_id!r}"
            )
        raise _RowProblem(f"indicator {shown} is not in the policy")

    def _instant(self, text: str) -> int | None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)  # an agency's local time
        return int(moment.timestamp())

    def _occurred_at(self, value: Any) -> int:
        instant = self._instant(value.strip()) if isinstance(value, str) else None
        if instant is None:
            raise _RowProblem("occurred_at must be an ISO date or date-time")
        if instant > self.now:
            raise _RowProblem("occurred_at is in the future")
        if instant < self.earliest:
            raise _RowProblem(f"occurred_at is before {EARLIEST_YEAR}-01-01")
        return instant

    @staticmethod
    def _quantity(value: Any) -> int:
        if isinstance(value, str):
            text = value.strip()
            number = int(text) if text.isascii() and text.isdigit() else None
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            number = None
        if number is None or not MIN_QUANTITY <= number <= MAX_QUANTITY:
            raise _RowProblem(
                f"quantity must be a whole number from {MIN_QUANTITY} to {MAX_QUANTITY}"
            )
        return number

    @staticmethod
    def _certifier(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _RowProblem("certifier must be text")
        text = value.strip()
        if len(text) > MAX_CERTIFIER_CHARS:
            raise _RowProblem(f"certifier is longer than {MAX_CERTIFIER_CHARS} characters")
        if "\ufffd" in text or not text.isprintable():
            raise _RowProblem("certifier has characters that are not printable UTF-8")
        if _ID_LIKE.search(text):
            # A certifier names a unit, never a person by ID: that would store a raw ID.
            raise _RowProblem("certifier must not contain a 13-digit number")
        return text


class _RecordWriter:
    """Writes validated rows in chunks with one executemany each; counts what was new.

    (Inserting on a helper thread while the next chunk is validated was measured slower:
    sqlite3 takes the GIL back after every row it steps, so the two threads convoy.)
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        statement = insert_unless_present(connection, BEHAVIOUR_RECORD, "record_key")
        compiled = statement.compile(dialect=connection.dialect, column_keys=[*_RECORD_COLUMNS])
        self.sql = str(compiled)
        # Positional drivers (sqlite3: "?") take tuples in the compiled order; named ones
        # (psycopg: "%(name)s") take mappings.
        order = compiled.positiontup
        self.named = order is None
        self.reorder = None if order is None else [_RECORD_COLUMNS.index(n) for n in order]
        if self.reorder == list(range(len(_RECORD_COLUMNS))):
            self.reorder = None
        self.new_records = 0

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        params: list[Any]
        if self.named:
            params = [dict(zip(_RECORD_COLUMNS, row, strict=True)) for row in rows]
        elif self.reorder is not None:
            params = [tuple(row[i] for i in self.reorder) for row in rows]
        else:
            params = rows
        result = self.connection.exec_driver_sql(self.sql, params)
        # ON CONFLICT DO NOTHING: the rows it changed are exactly the new records.
        self.new_records += max(0, result.rowcount)


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
    rows_of: Callable[[Iterable[str]], Iterator[_RawRow]],
    checker: _RowChecker,
    digest: str,
    now: float,
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
        writer = _RecordWriter(connection)
        raw = _HashingReader(handle, reread)
        record = checker.record
        for number, cells, problem in rows_of(_text(raw)):
            rows += 1
            if cells is None:
                problems.append((number, problem or "unreadable row"))
                continue
            try:
                row = record(cells, batch_id)
            except _RowProblem as exc:
                problems.append((number, str(exc)))
                continue
            if problems:
                continue  # keep validating, but a rejected file stores nothing
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
        new_records = writer.new_records
        if rebuild_index:
            QUERY_INDEX.create(connection)
        connection.execute(
            update(IMPORT_BATCH)
            .where(IMPORT_BATCH.c.id == batch_id)
            .values(row_count=rows, new_records=new_records)
        )
    return IngestReport(digest, rows, new_records, rows - new_records, already_imported=False)


def ingest_file(
    store: NodeStore,
    path: Path,
    policy: Policy,
    agency_id: str,
    pseudonym_key: bytes,
    now: float | None = None,
) -> IngestReport:
    """Validate and import one export file (.csv or .jsonl) as a single transaction."""
    path = Path(path)
    rows_of = _READERS.get(path.suffix.lower())
    if rows_of is None:
        raise IngestError(
            f"{path.name}: expected a .csv or .jsonl file",
            [(0, "file name must end in .csv or .jsonl")],
        )
    checker = _RowChecker(policy, agency_id, pseudonym_key, time.time() if now is None else now)
    digest = _file_sha256(path)
    for _ in range(_ATTEMPTS):
        done = _already_imported(store, digest)
        if done is not None:
            return done
        try:
            return _import_once(store, path, rows_of, checker, digest, checker.now)
        except IntegrityError:
            # Another import committed the same file first; the transaction rolled back,
            # so look again and retry on the new state.
            continue
    raise FailedPrecondition(
        f"{path.name}: concurrent imports kept conflicting", "IMPORT_CONTENDED"
    )
