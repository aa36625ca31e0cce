"""What a backup file is: one tar archive that says what it holds, and what it says.

An uncompressed tar archive of two members, in this order:
- `backup.json`, the header: format and version; the party's id and kind; the database
  ("sqlite" or "postgresql"); its schema revision; its log's size and root and the last
  checkpoint the party had signed; the rows of each table; when it was taken; the name,
  size and SHA-256 of the second member;
- `database.sqlite` (a copy by SQLite's online backup API) or `database.pgdump`
  (`pg_dump --format=custom`).
In an emergency, `tar -xf` and then `sqlite3` or `pg_restore` open it by hand.

Invariants:
- The header's facts are read from the copy itself (`describe`, on the copy or in the
  snapshot pg_dump runs in), never from the live database.
- A backup file appears complete or not at all (written aside, fsynced, then renamed),
  with mode 0600: it holds personal data.
- Nothing is believed before it is checked: a file that is not such an archive, lacks a
  header field, or whose database does not match the size and SHA-256 in its header is
  BACKUP_DAMAGED; a newer format than this code reads is BACKUP_FORMAT_TOO_NEW.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, column, func, inspect, select, table

from audit.core import merkle
from fedscore.errors import FailedPrecondition, NotFound

FORMAT, VERSION = "fedscore-backup", 1
HEADER = "backup.json"
PAYLOADS = {"sqlite": "database.sqlite", "postgresql": "database.pgdump"}
_CHUNK = 1 << 20


def _log(connection: Connection) -> dict[str, Any]:
    """Size and root of the log; no root when an index is missing or a hash garbled."""
    entries = table("audit_entry", column("index"), column("leaf_hash"))
    rows = connection.execute(select(entries.c.index, entries.c.leaf_hash).order_by("index"))
    leaves: list[bytes] | None = []
    size = 0
    for position, (index, leaf) in enumerate(rows):
        size = int(index) + 1
        try:
            if leaves is not None and index == position:
                leaves.append(bytes.fromhex(leaf))
                continue
        except ValueError:
            pass
        leaves = None
    return {"size": size, "root": None if leaves is None else merkle.root(leaves).hex()}


def describe(connection: Connection) -> dict[str, Any]:
    """Schema revision, log, last signed checkpoint and rows per table, as `connection` sees."""
    names = sorted(inspect(connection).get_table_names())
    facts: dict[str, Any] = {"schema_revision": None, "log": None, "checkpoint": None}
    facts["rows"] = {
        name: int(connection.execute(select(func.count()).select_from(table(name))).scalar_one())
        for name in names
        if name != "alembic_version"
    }
    if "alembic_version" in names:
        version = table("alembic_version", column("version_num"))
        facts["schema_revision"] = connection.execute(select(version.c.version_num)).scalar()
    if "audit_entry" in names:
        facts["log"] = _log(connection)
    if "audit_checkpoint" in names:
        signed = table("audit_checkpoint", column("size"), column("root"), column("signed_at"))
        last = connection.execute(select(signed).order_by(signed.c.size.desc()).limit(1)).first()
        if last is not None:
            size, root, signed_at = last
            facts["checkpoint"] = {"size": int(size), "root": root, "signed_at": int(signed_at)}
    return facts


def utc(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write(out: Path, header: dict[str, Any], payload: Path) -> None:
    """The archive of `header` and `payload` at `out`, complete or not at all."""
    partial = out.with_name(f".{out.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
                text = json.dumps(header, indent=2, sort_keys=True).encode()
                for name, size, stream in (
                    (HEADER, len(text), io.BytesIO(text)),
                    (header["payload"]["name"], payload.stat().st_size, payload.open("rb")),
                ):
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = size, 0o600, header["taken_at"]
                    with stream:
                        archive.addfile(info, stream)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def damaged(path: Path, why: str) -> FailedPrecondition:
    return FailedPrecondition(f"{path} is not a usable fedscore backup: {why}", "BACKUP_DAMAGED")


def _checked(path: Path, header: Any) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise damaged(path, f"{HEADER} does not describe a {FORMAT}")
    if not isinstance(header.get("version"), int) or header["version"] > VERSION:
        raise FailedPrecondition(
            f"{path} is a backup of format version {header.get('version')!r}; this version of "
            f"fedscore reads up to {VERSION}: restore it with the version that took it",
            "BACKUP_FORMAT_TOO_NEW",
        )
    payload = header.get("payload")
    complete = (
        all(isinstance(header.get(key), str) for key in ("party", "kind", "database"))
        and header["database"] in PAYLOADS
        and isinstance(header.get("taken_at"), int)
        and isinstance(header.get("schema_revision"), str | None)
        and isinstance(header.get("log"), dict | None)
        and isinstance(payload, dict)
        and payload.get("name") == PAYLOADS[header["database"]]
        and isinstance(payload.get("bytes"), int)
        and isinstance(payload.get("sha256"), str)
    )
    if not complete:
        raise damaged(path, f"{HEADER} lacks a field or has one of the wrong type")
    return header


@contextlib.contextmanager
def opened(path: Path) -> Iterator[tuple[dict[str, Any], tarfile.TarInfo, tarfile.TarFile]]:
    """The header, the database's member and the archive, open; refuses what is not a backup."""
    if not path.is_file():
        raise NotFound(f"{path}: no such backup file", "BACKUP_NOT_FOUND")
    try:
        archive = tarfile.open(path, "r:")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise damaged(path, f"not a backup archive ({exc})") from None
    with archive:
        try:
            members = archive.getmembers()
            if [m.name for m in members[:1]] != [HEADER] or len(members) != 2:
                raise damaged(path, f"it must hold {HEADER} and then the database")
            if not all(member.isfile() for member in members):
                raise damaged(path, "a member is not a regular file")
            stream = archive.extractfile(members[0])
            assert stream is not None
            header = _checked(path, json.loads(stream.read()))
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise damaged(path, str(exc)) from None
        payload = members[1]
        if (payload.name, payload.size) != (header["payload"]["name"], header["payload"]["bytes"]):
            raise damaged(path, "the database member is not the one the header describes")
        yield header, payload, archive


def read_header(path: Path) -> dict[str, Any]:
    """The header of the backup at `path`, after checking the archive's structure."""
    with opened(Path(path)) as (header, _, _):
        return header


def extract(path: Path, into: Path) -> dict[str, Any]:
    """Write the backup's database to `into`, checked against its header; the header."""
    digest = hashlib.sha256()
    with opened(path) as (header, member, archive):
        try:
            source = archive.extractfile(member)
            assert source is not None
            with source, into.open("wb") as sink:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
        except (tarfile.TarError, EOFError) as exc:  # writing `into` may fail on its own
            raise damaged(path, f"its database cannot be read ({exc})") from None
    if digest.hexdigest() != header["payload"]["sha256"]:
        raise damaged(path, "its database does not match the SHA-256 in its header")
    return header
