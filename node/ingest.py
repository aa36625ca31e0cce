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
- Rows are streamed and written in chunks of `CHUNK_ROWS` with executemany; duplicate
  keys are filtered with one indexed SELECT per chunk, which both SQLite and PostgreSQL run.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from fedscore.errors import FailedPrecondition, IngestError, InvalidArgument
from keys.pseudonym import pseudonym
from node.store import (
    BEHAVIOUR_RECORD,
    IMPORT_BATCH,
    NodeStore,
    record_key,
    record_key_secret,
)
from policies.model import Policy

COLUMNS = ("national_id", "indicator", "occurred_at", "quantity", "certifier")
MIN_QUANTITY, MAX_QUANTITY = 1, 1000
EARLIEST_YEAR = 2000
MAX_CERTIFIER_CHARS = 200
CHUNK_ROWS = 10_000
_ATTEMPTS = 3
_SHOWN_PROBLEMS = 5
_SAFE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")
# Thirteen digits (\d includes Thai digits), possibly hyphenated as printed on ID cards.
_ID_LIKE = re.compile(r"\d(?:[- ]?\d){12}")

# (row number, the five cells in COLUMNS order or None, problem or None)
_RawRow = tuple[int, tuple[Any, ...] | None, str | None]


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


def _text_lines(handle: BinaryIO, digest: Any) -> Iterator[str]:
    """Decoded lines, hashing the exact bytes read; a UTF-8 byte-order mark is dropped."""
    first = True
    for raw in handle:
        digest.update(raw)
        if first:
            raw, first = raw.removeprefix(codecs.BOM_UTF8), False
        # Undecodable bytes become U+FFFD, which validation then refuses in its row.
        yield raw.decode("utf-8", errors="replace")


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


def _csv_rows(lines: Iterator[str]) -> Iterator[_RawRow]:
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
    for number, cells in enumerate(reader, start=2):
        if not cells:
            continue  # a blank line is not a record
        if len(cells) != len(names):
            yield number, None, f"expected {len(names)} fields, found {len(cells)}"
            continue
        yield number, tuple(cells[p] for p in positions), None


def _jsonl_rows(lines: Iterator[str]) -> Iterator[_RawRow]:
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


_READERS: Mapping[str, Callable[[Iterator[str]], Iterator[_RawRow]]] = {
    ".csv": _csv_rows,
    ".jsonl": _jsonl_rows,
}


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
        # Exports repeat dates and people many times; bounded caches keep memory flat.
        self.instant = lru_cache(maxsize=8192)(self._instant)
        self.pseudonym_of = lru_cache(maxsize=65536)(self._pseudonym)

    def check(self, cells: tuple[Any, ...]) -> tuple[str, str, int, int, str]:
        """(agency pseudonym, indicator, occurred_at, quantity, certifier); raises `_RowProblem`."""
        national_id, indicator, occurred_at, quantity, certifier = cells
        return (
            self._subject(national_id),
            self._indicator(indicator),
            self._occurred_at(occurred_at),
            self._quantity(quantity),
            self._certifier(certifier),
        )

    def _subject(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _RowProblem("national_id must be text")
        return self.pseudonym_of(value)

    def _pseudonym(self, national_id: str) -> str:
        try:
            # Validates the ID (13 digits, check digit) before hashing it.
            return pseudonym(self.pseudonym_key, national_id)
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
        instant = self.instant(value.strip()) if isinstance(value, str) else None
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


def _store_chunk(connection: Connection, chunk: dict[str, dict[str, Any]]) -> int:
    """Insert the chunk's records whose keys are not stored yet; return how many."""
    keys = list(chunk)
    column = BEHAVIOUR_RECORD.c.record_key
    stored = set(connection.execute(select(column).where(column.in_(keys))).scalars())
    fresh = [chunk[key] for key in keys if key not in stored]
    if fresh:
        connection.execute(insert(BEHAVIOUR_RECORD), fresh)
    return len(fresh)


def _already_imported(store: NodeStore, digest: str) -> IngestReport | None:
    query = select(IMPORT_BATCH.c.row_count).where(IMPORT_BATCH.c.file_sha256 == digest)
    with store.engine.connect() as connection:
        row_count = connection.execute(query).scalar_one_or_none()
    if row_count is None:
        return None
    return IngestReport(digest, int(row_count), 0, 0, already_imported=True)


def _import_once(
    store: NodeStore,
    path: Path,
    rows_of: Callable[[Iterator[str]], Iterator[_RawRow]],
    checker: _RowChecker,
    pseudonym_key: bytes,
    digest: str,
    now: float,
) -> IngestReport:
    secret = record_key_secret(pseudonym_key)
    problems: list[tuple[int, str]] = []
    rows = new_records = 0
    chunk: dict[str, dict[str, Any]] = {}
    reread = hashlib.sha256()
    with store.engine.begin() as connection, path.open("rb") as handle:
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
        batch_id = batch.inserted_primary_key[0]
        for number, cells, problem in rows_of(_text_lines(handle, reread)):
            rows += 1
            if cells is None:
                problems.append((number, problem or "unreadable row"))
                continue
            try:
                subject, indicator, occurred_at, quantity, certifier = checker.check(cells)
            except _RowProblem as exc:
                problems.append((number, str(exc)))
                continue
            if problems:
                continue  # keep validating, but a rejected file stores nothing
            key = record_key(secret, subject, indicator, occurred_at, quantity, certifier)
            chunk[key] = {
                "record_key": key,
                "pseudonym": subject,
                "indicator": indicator,
                "occurred_at": occurred_at,
                "quantity": quantity,
                "certifier": certifier,
                "certified": bool(certifier),
                "import_id": batch_id,
            }
            if len(chunk) >= CHUNK_ROWS:
                new_records += _store_chunk(connection, chunk)
                chunk = {}
        for rest in handle:  # a header problem stops the reader early
            reread.update(rest)
        if reread.hexdigest() != digest:
            raise FailedPrecondition(f"{path.name} changed while it was read", "FILE_CHANGED")
        if problems:
            shown = "; ".join(f"row {n}: {reason}" for n, reason in problems[:_SHOWN_PROBLEMS])
            more = len(problems) - _SHOWN_PROBLEMS
            raise IngestError(
                f"{path.name}: {len(problems)} problem(s), nothing imported: {shown}"
                + (f"; and {more} more" if more > 0 else ""),
                problems,
            )
        if chunk:
            new_records += _store_chunk(connection, chunk)
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
            return _import_once(store, path, rows_of, checker, pseudonym_key, digest, checker.now)
        except IntegrityError:
            # Another import committed the same file or overlapping records first; the
            # transaction rolled back, so look again and retry on the new state.
            continue
    raise FailedPrecondition(
        f"{path.name}: concurrent imports kept conflicting", "IMPORT_CONTENDED"
    )
