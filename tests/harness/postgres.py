"""A real PostgreSQL server for the tests: `FEDSCORE_TEST_POSTGRES_URL`, or one started here.

Started here: `initdb` and `pg_ctl` from the machine's PostgreSQL, as the `postgres` user
(they refuse root) through `runuser`, with the data folder in a new temporary folder
and the server listening on 127.0.0.1 only, on a free port, with trust authentication
for local connections. It is stopped and its folder removed when the session ends.
Every test gets a database of its own (`fresh_database`).
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

URL_ENV = "FEDSCORE_TEST_POSTGRES_URL"
SERVER_USER = "postgres"


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def unavailable_reason() -> str | None:
    """Why no PostgreSQL server can be had here, or None when one can."""
    if os.environ.get(URL_ENV):
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
def postgres_server() -> Iterator[Server]:
    """The configured server, or a new one for as long as the context lasts."""
    configured = os.environ.get(URL_ENV)
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
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
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
