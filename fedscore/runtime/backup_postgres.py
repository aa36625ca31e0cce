"""A PostgreSQL party's database in and out of a backup, by the PostgreSQL client programs.

`dump` runs `pg_dump --format=custom` inside a snapshot exported by the transaction that
reads what the backup's header says, so the header describes exactly what was dumped while
the party keeps serving. `load` turns the archive into SQL (`pg_restore --file`, which
touches no database) and runs it with `psql --single-transaction` after a prelude that
drops every table, view and sequence of the `public` schema: the database becomes exactly
the backup, tables a later migration added included, or stays as it was if anything fails.

The programs are the newest of `/usr/lib/postgresql/*/bin` (a pg_dump must be at least as
new as the server), else those on PATH; `FEDSCORE_PG_BIN_DIR` names the folder to use
instead. Missing: PG_CLIENT_MISSING. A password in the URL is handed over in PGPASSWORD,
never on a command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

from fedscore.errors import FailedPrecondition
from fedscore.runtime.db import open_engine

BIN_ENV = "FEDSCORE_PG_BIN_DIR"
_INSTALLED = Path("/usr/lib/postgresql")

# Everything of the schema the party's tables live in, dropped before the backup's are made.
PRELUDE = """DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT viewname AS name FROM pg_views WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP VIEW IF EXISTS public.%I CASCADE', r.name);
  END LOOP;
  FOR r IN SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', r.name);
  END LOOP;
  FOR r IN SELECT sequencename AS name FROM pg_sequences WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP SEQUENCE IF EXISTS public.%I CASCADE', r.name);
  END LOOP;
END $$;
"""
_OTHER_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)


def _major(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in path.parts[-3].split(".") if part.isdigit())


def client_program(name: str) -> Path:
    """The PostgreSQL client program `name` (pg_dump, pg_restore, psql) to run."""
    override = os.environ.get(BIN_ENV)
    if override:
        candidates, where = [Path(override) / name], f"{BIN_ENV}={override}"
    else:
        on_path = shutil.which(name)
        candidates = sorted(_INSTALLED.glob(f"*/bin/{name}"), key=_major, reverse=True)
        candidates += [Path(on_path)] if on_path else []
        where = f"{_INSTALLED}/*/bin or PATH"
    found = next((path for path in candidates if os.access(path, os.X_OK)), None)
    if found is None:
        raise FailedPrecondition(
            f"{name} is needed for a PostgreSQL party's backup and restore and is not in "
            f"{where}: install the PostgreSQL client (postgresql-client)",
            "PG_CLIENT_MISSING",
        )
    return found


def conninfo(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI for `url` (no password in it) and the environment carrying the password."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error" in line]
    return (errors or lines or ["no output"])[0]


def _run(command: list[str], env: dict[str, str], reason: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FailedPrecondition(
            f"{Path(command[0]).name} failed: {_one_line(done.stderr or done.stdout)}", reason
        )


def unreachable(exc: SQLAlchemyError) -> FailedPrecondition:
    detail = str(getattr(exc, "orig", None) or exc)
    return FailedPrecondition(
        f"the party's database cannot be reached: {_one_line(detail)}", "DATABASE_UNAVAILABLE"
    )


def dump(
    url: str, archive: Path, describe: Callable[[Connection], dict[str, Any]]
) -> dict[str, Any]:
    """pg_dump the database at `url` into `archive`; what `describe` read in the same snapshot."""
    program = client_program("pg_dump")
    target, env = conninfo(url)
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            snapshot = connection.execution_options(isolation_level="REPEATABLE READ")
            with snapshot.begin():
                name = snapshot.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
                facts = describe(snapshot)
                _run(
                    [str(program), "--format=custom", "--no-owner", "--no-privileges",
                     f"--snapshot={name}", f"--file={archive}", f"--dbname={target}"],
                    env,
                    "BACKUP_FAILED",
                )  # fmt: skip
    except SQLAlchemyError as exc:
        raise unreachable(exc) from exc
    finally:
        engine.dispose()
    return facts


def other_sessions(url: str) -> int:
    """How many client sessions other than this one are connected to the party's database."""
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql(_OTHER_SESSIONS).scalar_one())
    except SQLAlchemyError as exc:
        raise unreachable(exc) from exc
    finally:
        engine.dispose()


def load(url: str, archive: Path, work: Path) -> None:
    """Replace the database at `url` by the archive's, in one transaction."""
    restore, psql = client_program("pg_restore"), client_program("psql")
    target, env = conninfo(url)
    script, prelude = work / "restore.sql", work / "prelude.sql"
    _run(
        [str(restore), "--no-owner", "--no-privileges", f"--file={script}", str(archive)],
        env,
        "BACKUP_DAMAGED",
    )
    prelude.write_text(PRELUDE, encoding="utf-8")
    _run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
         f"--dbname={target}", "-f", str(prelude), "-f", str(script)],
        env,
        "RESTORE_FAILED",
    )  # fmt: skip
