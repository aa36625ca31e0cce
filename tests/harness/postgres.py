"""A real PostgreSQL server for the tests: `FEDSCORE_TEST_POSTGRES_URL`, or one started here.

Started here by `bench.postgres` (shared with `make bench`): `initdb` and `pg_ctl` from
the machine's PostgreSQL, as the `postgres` user (they refuse root) through `runuser`,
with the data folder in a new temporary folder and the server listening on 127.0.0.1
only, on a free port, with trust authentication for local connections, and fsync off
(a test's data need not survive a power cut). It is stopped and its folder removed when
the session ends. Every test gets a database of its own (`fresh_database`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from bench import postgres as _shared
from bench.postgres import Server

URL_ENV = "FEDSCORE_TEST_POSTGRES_URL"
TEST_SETTINGS = {"fsync": "off"}


def unavailable_reason() -> str | None:
    """Why no PostgreSQL server can be had here, or None when one can."""
    return _shared.unavailable_reason(URL_ENV)


@contextlib.contextmanager
def postgres_server() -> Iterator[Server]:
    """The configured server, or a new one for as long as the context lasts."""
    with _shared.postgres_server(os.environ.get(URL_ENV, ""), TEST_SETTINGS) as server:
        yield server
