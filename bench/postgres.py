"""A real PostgreSQL server for the benchmark and the tests: a URL, or one started here.

Started here: `initdb` and `pg_ctl` from the machine's PostgreSQL, as the `postgres` user
(they refuse root) through `runuser`, with the data folder in a new temporary folder
and the server listening on 127.0.0.1 only, on a free port, with trust authentication
for local connections. It is stopped and its folder removed when the context ends.
`settings` are the server's own (`-c name=value`): the tests turn fsync off; the
benchmark keeps fsync and turns `synchronous_commit` off, the same promise as the SQLite
parties' WAL with `synchronous=NORMAL` (a commit survives the process, a power cut may
lose the last ones, the database is never corrupted). `tests/harness/postgres.py` is
this module under the tests' name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

SERVER_USER = "postgres"


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def unavailable_reason(url_env: str = "") -> str | None:
    """Why no PostgreSQL server can be had here, or None when one can (`url_env` names an
    environment variable that, when set, names a server to use instead)."""
    if url_env and os.environ.get(url_env):
        return None
    if _bin_dir() is None:
        return "no PostgreSQL server binaries in /usr/lib/postgresql (install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as its own user"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


@dataclass
class Server:
    """A PostgreSQL server: its admin URL, and new databases on it."""

    admin_url: str  # postgresql://user@host:port/postgres

    def fresh_database(self) -> str:
        """A new, empty database; its SQLAlchemy URL (psycopg 3 driver)."""
        name = "fedscore_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        base = self.admin_url.rsplit("/", 1)[0]
        return base.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"


@contextlib.contextmanager
def postgres_server(
    configured: str = "", settings: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """The server at `configured` (a URL), or a new one with `settings` for as long as the
    context lasts."""
    if configured:
        yield Server(admin_url=configured.replace("postgresql+psycopg://", "postgresql://"))
        return
    bin_dir = _bin_dir()
    assert bin_dir is not None, unavailable_reason()
    folder = Path(tempfile.mkdtemp(prefix="fedscore-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, SERVER_USER)
    port = _free_port()
    log = folder / "server.log"
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", SERVER_USER, "-A", "trust",
             "-E", "UTF8", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )  # fmt: skip
    extra = " ".join(f"-c {name}={value}" for name, value in (settings or {}).items())
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} {extra}".strip()
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
             "start"]
        ),
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        admin = f"postgresql://{SERVER_USER}@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(admin).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Server(admin_url=admin)
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
