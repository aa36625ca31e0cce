"""Reading an agency's export file: CSV or JSON Lines rows, hashed as they are read.

Invariants:
- Row numbers are those a person sees: in a CSV the header is row 1 and the first
  record row 2; in JSON Lines, line numbers from 1.
- The header (or each JSON object's keys) must name exactly `COLUMNS`, in any order; a
  problem names the columns, never a cell's value (an unexpected column name is shown
  only if it is shaped like a code).
- `HashingReader` hashes exactly the bytes the rows came from (and the rest on `drain`),
  so an import can prove it stored what it hashed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

COLUMNS = ("national_id", "indicator", "occurred_at", "quantity", "certifier")
SAFE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")

# (row number, the five cells in COLUMNS order or None, problem or None)
RawRow = tuple[int, Sequence[Any] | None, str | None]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HashingReader(io.RawIOBase):
    """A raw reader that hashes exactly the bytes it hands on (and the rest, on `drain`).

    `on_read(total)`, if given, is told how many bytes were handed on so far after each
    read (a block of about 1 MiB: progress at no cost per row).
    """

    def __init__(
        self, handle: BinaryIO, digest: Any, on_read: Callable[[int], None] | None = None
    ) -> None:
        super().__init__()
        self._handle = handle
        self._digest = digest
        self._on_read = on_read
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._digest.update(memoryview(buffer)[:count])
            if self._on_read is not None:
                self._read += count
                self._on_read(self._read)
        return int(count or 0)

    def drain(self) -> None:
        """Hash what was not read (a header problem stops the reader early)."""
        for block in iter(lambda: self._handle.read(1 << 20), b""):
            self._digest.update(block)


def text_of(raw: HashingReader) -> IO[str]:
    """Decoded text; a UTF-8 byte-order mark is dropped and undecodable bytes become
    U+FFFD, which validation then refuses in its row."""
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", errors="replace", newline="")


def header_problem(names: Iterable[str]) -> str | None:
    names = list(names)
    missing = [c for c in COLUMNS if c not in names]
    unexpected = sorted({n for n in names if n not in COLUMNS})
    repeated = sorted({n for n in names if names.count(n) > 1})
    parts = []
    if missing:
        parts.append("missing column " + ", ".join(missing))
    if unexpected:
        shown = [n if SAFE_CODE.fullmatch(n) else "(not shown)" for n in unexpected]
        parts.append("unexpected column " + ", ".join(shown))
    if repeated:
        parts.append("repeated column " + ", ".join(repeated))
    return "; ".join(parts) or None


def csv_rows(lines: Iterable[str]) -> Iterator[RawRow]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        yield 1, None, "file is empty; expected the header " + ",".join(COLUMNS)
        return
    names = [name.strip() for name in header]
    problem = header_problem(names)
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


def jsonl_rows(lines: Iterable[str]) -> Iterator[RawRow]:
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
        problem = header_problem(record)
        if problem:
            yield number, None, problem
            continue
        yield number, tuple(record[column] for column in COLUMNS), None


READERS: Mapping[str, Callable[[Iterable[str]], Iterator[RawRow]]] = {
    ".csv": csv_rows,
    ".jsonl": jsonl_rows,
}
