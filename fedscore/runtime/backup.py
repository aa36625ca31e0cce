"""`fedscore db backup|restore`: one party's database, to and from a backup file.

The file is fedscore/runtime/backup_file.py's (a header saying what it holds, then the
database); PostgreSQL goes through its client programs (fedscore/runtime/backup_postgres.py),
SQLite through its online backup API.

Invariants:
- A backup is one consistent snapshot, taken while the party serves: SQLite copies every
  page in one step of the backup API, inside one read transaction (in WAL mode writers go
  on meanwhile); pg_dump runs in the snapshot of the transaction that reads the header's
  facts.
- A restore checks everything before it changes anything: the file (structure, header,
  SHA-256, and a SQLite copy's integrity), that it is this party's backup (WRONG_PARTY),
  of this kind of database (WRONG_DATABASE), at a schema revision this code knows
  (SCHEMA_TOO_NEW), and that the party is stopped (PARTY_RUNNING: a SQLite file that
  another connection holds open, a PostgreSQL database with another client session).
  It then replaces the database in one transaction (SQLite's backup API under the
  exclusive lock taken for that check; psql --single-transaction): a failure leaves the
  database as it was.
- Only the database is restored; the organisation's folder (keys, config, trust) is the
  operator's to back up (docs/operations.md, 4.4).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

from fedscore.errors import FailedPrecondition, InvalidArgument
from fedscore.runtime import backup_file, backup_postgres
from fedscore.runtime.backup_file import PAYLOADS, damaged
from fedscore.runtime.db import open_engine
from fedscore.runtime.org_paths import OrgPaths
from fedscore.runtime.party import database_url
from fedscore.runtime.party_config import load_config
from fedscore.runtime.schema import head, kind_of, knows


@dataclass(frozen=True)
class Target:
    """The party whose database is backed up or restored, from its own party.toml."""

    party: str
    kind: str
    url: str

    @property
    def database(self) -> str:
        name = make_url(self.url).get_backend_name()
        if name not in PAYLOADS:
            raise FailedPrecondition(f"database {name!r} is not supported", "UNSUPPORTED_DATABASE")
        return name

    @property
    def sqlite_file(self) -> Path:
        path = make_url(self.url).database
        if not path or path == ":memory:":
            raise FailedPrecondition(f"{self.url} is not a database file", "NO_DATABASE")
        return Path(path)


def target_of(config_path: Path) -> Target:
    """The party a config names; no key is opened (a backup needs no passphrase)."""
    config = load_config(config_path)
    url = database_url(config, OrgPaths(config.key_folder))
    return Target(config.id, kind_of(config.role), url)


def _describe(url: str, **engine_options: Any) -> dict[str, Any]:
    engine = create_engine(url, **engine_options) if engine_options else open_engine(url)
    try:
        with engine.connect() as connection:
            return backup_file.describe(connection)
    finally:
        engine.dispose()


# --- backup -------------------------------------------------------------------------------


def _copy_sqlite(target: Target, copy: Path) -> dict[str, Any]:
    source_file = target.sqlite_file
    if not source_file.is_file():
        raise FailedPrecondition(f"{target.party} has no database at {source_file}", "NO_DATABASE")
    try:
        source = sqlite3.connect(source_file, timeout=30)
        try:
            destination = sqlite3.connect(copy)
            try:
                source.backup(destination)  # every page in one step: one read transaction
                destination.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                destination.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise FailedPrecondition(f"SQLite backup failed: {exc}", "BACKUP_FAILED") from exc
    return _describe(f"sqlite:///{copy}", poolclass=NullPool)


def backup(target: Target, out: Path) -> dict[str, Any]:
    """Write a backup of the party's database to `out` (which must not exist yet)."""
    out = Path(out)
    if out.exists():
        raise FailedPrecondition(f"{out} exists; a backup never overwrites a file", "OUT_EXISTS")
    if not out.parent.is_dir():
        raise InvalidArgument(f"{out.parent} is not a folder", "BAD_ARGUMENTS")
    database = target.database
    started = time.monotonic()
    taken_at = int(time.time())
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fedscore-backup-") as work:
        payload = Path(work) / PAYLOADS[database]
        if database == "sqlite":
            facts = _copy_sqlite(target, payload)
        else:
            facts = backup_postgres.dump(target.url, payload, backup_file.describe)
        header = {
            "format": backup_file.FORMAT,
            "version": backup_file.VERSION,
            "party": target.party,
            "kind": target.kind,
            "database": database,
            "taken_at": taken_at,
            "taken_at_utc": backup_file.utc(taken_at),
            **facts,
            "payload": {
                "name": payload.name,
                "bytes": payload.stat().st_size,
                "sha256": backup_file.sha256(payload),
            },
        }
        backup_file.write(out, header, payload)
    return {**header, "file": str(out), "seconds": round(time.monotonic() - started, 3)}


# --- restore ------------------------------------------------------------------------------


def _check_fit(target: Target, header: dict[str, Any], path: Path) -> None:
    if (header["party"], header["kind"]) != (target.party, target.kind):
        raise FailedPrecondition(
            f"{path} is a backup of {header['party']} ({header['kind']}), not of "
            f"{target.party} ({target.kind})",
            "WRONG_PARTY",
        )
    if header["database"] != target.database:
        raise FailedPrecondition(
            f"{path} is a backup of a {header['database']} database; {target.party} keeps a "
            f"{target.database} one (database_url in its party.toml)",
            "WRONG_DATABASE",
        )
    revision = header["schema_revision"]
    if revision is not None and not knows(target.kind, revision):
        raise FailedPrecondition(
            f"{path} holds schema revision {revision}, which this version of fedscore does "
            f"not know (its {target.kind} head is {head(target.kind)}): restore it with the "
            "version that took it",
            "SCHEMA_TOO_NEW",
        )


def _running(target: Target, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{target.party} is running ({why}): stop the party first, then restore", "PARTY_RUNNING"
    )


def _log_size(connection: sqlite3.Connection) -> int | None:
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_entry'"
    ).fetchone()
    if found is None:
        return None
    top = connection.execute('SELECT max("index") FROM audit_entry').fetchone()[0]
    return 0 if top is None else int(top) + 1


def _check_sqlite_copy(copy: Path, path: Path) -> None:
    try:
        checked = sqlite3.connect(copy)
        try:
            verdict = checked.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            checked.close()
    except sqlite3.Error as exc:
        raise damaged(path, f"its SQLite database cannot be read ({exc})") from None
    if verdict != "ok":
        raise damaged(path, f"its SQLite database fails its integrity check ({verdict})")


def _restore_sqlite(target: Target, copy: Path) -> int | None:
    """Copy `copy` over the party's file under an exclusive lock; its log's size before."""
    database = target.sqlite_file
    existed = database.exists()
    destination = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        # Exclusive locking mode: the lock is kept until the copy is in, and it cannot be
        # taken while any other connection (a serving party's) holds the file open.
        destination.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            destination.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise _running(target, f"{database} is in use: {exc}") from None
        before = _log_size(destination)
        destination.execute("COMMIT")
        source = sqlite3.connect(copy)
        try:
            source.backup(destination)  # one transaction: every page, or none on failure
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise FailedPrecondition(f"SQLite restore failed: {exc}", "RESTORE_FAILED") from exc
    except BaseException:
        destination.close()
        if not existed:
            database.unlink(missing_ok=True)
        raise
    destination.close()
    return before


def restore(target: Target, source: Path) -> dict[str, Any]:
    """Replace the party's database by the backup at `source`; what was restored."""
    source = Path(source)
    started = time.monotonic()
    header = backup_file.read_header(source)
    _check_fit(target, header, source)
    if target.database == "sqlite":
        work_in = target.sqlite_file.parent  # the copy goes next to the database it replaces
        if not work_in.is_dir():
            raise FailedPrecondition(f"{work_in} does not exist", "NO_DATABASE")
    else:
        sessions = backup_postgres.other_sessions(target.url)
        if sessions:
            raise _running(target, f"{sessions} other session(s) connected to its database")
        work_in = Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=work_in, prefix=".fedscore-restore-") as work:
        copy = Path(work) / header["payload"]["name"]
        backup_file.extract(source, copy)
        if target.database == "sqlite":
            _check_sqlite_copy(copy, source)
            before = _restore_sqlite(target, copy)
        else:
            log = _describe(target.url)["log"]
            before = None if log is None else int(log["size"])
            backup_postgres.load(target.url, copy, Path(work))
    restored = header["log"]["size"] if header.get("log") else None
    return {
        "party": target.party,
        "kind": target.kind,
        "database": target.database,
        "file": str(source),
        "taken_at": header["taken_at"],
        "taken_at_utc": backup_file.utc(header["taken_at"]),
        "schema_revision": header["schema_revision"],
        "schema_head": head(target.kind),
        "pending": header["schema_revision"] != head(target.kind),
        "log": header.get("log"),
        "checkpoint": header.get("checkpoint"),
        "rows": header.get("rows"),
        "log_before": before,
        "behind": before is not None and restored is not None and restored < before,
        "seconds": round(time.monotonic() - started, 3),
    }


def _log_text(log: dict[str, Any] | None) -> str:
    if log is None:
        return "no log"
    root = f"root {log['root'][:16]}..." if log.get("root") else "no root: its log has a gap"
    return f"log of {log['size']} entries ({root})"


def backup_line(done: dict[str, Any]) -> str:
    """What `fedscore db backup` prints."""
    rows = sum((done.get("rows") or {}).values())
    return (
        f"{done['party']} ({done['kind']}): {done['database']} database backed up to "
        f"{done['file']} ({done['payload']['bytes']:,} bytes in {done['seconds']} s), taken "
        f"{done['taken_at_utc']}: schema {done['schema_revision'] or 'none'}, "
        f"{_log_text(done['log'])}, {rows:,} rows"
    )


def restore_line(done: dict[str, Any]) -> str:
    """What `fedscore db restore` prints: what was restored, and what to do next."""
    rows = sum((done.get("rows") or {}).values())
    line = (
        f"{done['party']} ({done['kind']}): {done['database']} database restored from "
        f"{done['file']} in {done['seconds']} s, as it was at {done['taken_at_utc']}: schema "
        f"{done['schema_revision'] or 'none'}, {_log_text(done['log'])}, {rows:,} rows"
    )
    if done["behind"]:
        line += (
            f"; its log had {done['log_before']} entries: tell the regulator of this restore "
            "before starting the party (docs/operations.md, 4.5)"
        )
    if done["pending"]:
        line += f"; run 'fedscore db upgrade' before starting it (head {done['schema_head']})"
    return line
