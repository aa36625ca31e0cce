"""A party's database to back up: an agency's schema, a log with signed checkpoints, and
every row read back for comparison; and a process that keeps writing to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, select

from audit.store.checkpoints import CheckpointSigner
from audit.store.log import EventLog
from fedscore.runtime.db import open_engine
from fedscore.runtime.schema import upgrade
from keys.signing import SigningKey

PARTY = "trc"
KEY = SigningKey.from_seed(bytes(range(32)))


def fill(url: str, entries: int, *, start: int = 0, chunk: int = 5_000) -> None:
    """Migrate the agency schema and append `entries` log entries, then sign a checkpoint."""
    engine = open_engine(url)
    try:
        upgrade(engine, "agency")
        log = EventLog(engine, PARTY)
        for lo in range(start, start + entries, chunk):
            events = [
                ("query_answered", {"query_id": f"q{i}", "purpose": "self-view"})
                for i in range(lo, min(start + entries, lo + chunk))
            ]
            with engine.begin() as connection:
                log.append_many(connection, events)
        CheckpointSigner(log, KEY).sign()
    finally:
        engine.dispose()


def contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: two databases are the same if these are."""
    engine = open_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            return {
                name: sorted(tuple(row) for row in connection.execute(select(table)))
                for name, table in sorted(metadata.tables.items())
            }
    finally:
        engine.dispose()


def log_of(url: str) -> EventLog:
    return EventLog(open_engine(url), PARTY)


WRITER = """
import os, sys, pathlib
from audit.store.checkpoints import CheckpointSigner
from audit.store.log import EventLog
from fedscore.runtime.db import open_engine
from keys.signing import SigningKey

url, stop, progress = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
engine = open_engine(url)
log = EventLog(engine, "trc")
signer = CheckpointSigner(log, SigningKey.from_seed(bytes(range(32))))
n = 0
while not stop.exists():
    with engine.begin() as connection:
        events = [("query_answered", {"query_id": f"w{n}.{i}"}) for i in range(20)]
        log.append_many(connection, events)
    n += 1
    if n % 10 == 0:
        signer.sign()
    progress.with_suffix(".new").write_text(str(n))
    os.replace(progress.with_suffix(".new"), progress)  # never read half-written
"""


def start_writer(url: str, folder: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """A process that appends 20 entries per transaction and signs a checkpoint every 10,
    until `stop` exists; `progress` holds how many transactions it committed."""
    stop, progress = folder / "stop", folder / "progress"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(stop), str(progress)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return process, stop, progress


def committed(progress: Path) -> int:
    try:
        return int(progress.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0
