"""A party's database schema, by Alembic migrations: one linear history per kind of party.

Each party's database holds the tables of one kind of party (`MIGRATED_ROLES`); its
history is in `fedscore/runtime/migrations/<kind>/`, the first revision the schema as it
stood when migrations began. `fedscore db upgrade` applies what is pending; `fedscore
serve` does so on start only when asked (`--migrate`), and otherwise refuses to serve a
database that is behind (MIGRATION_PENDING).

Invariants:
- Migrations run on the connection handed to Alembic (`migrations/env.py`), in one
  transaction per upgrade: a failed migration leaves the database as it was (SQLite and
  PostgreSQL both have transactional DDL).
- A database made before migrations existed (some or all of its tables created by the
  stores as they opened it, e.g. by an import before the first start) is adopted: the
  first revision creates only the tables that are absent, and later revisions run as
  usual.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine

from fedscore.errors import FailedPrecondition
from fedscore.v1.trust_pb2 import Role

_log = logging.getLogger(__name__)
# Alembic narrates every step at INFO; a party says once what it applied (`upgrade`).
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"
# The kind of party whose tables a role's database holds, and its history's folder.
MIGRATED_ROLES: dict[Role, str] = {
    Role.ROLE_AGENCY: "agency",
    Role.ROLE_CONSENT_REGISTRY: "consent-registry",
    Role.ROLE_COORDINATOR: "coordinator",
    Role.ROLE_REGULATOR: "regulator",
    Role.ROLE_HELPER_AGGREGATOR: "helper",
}


@dataclass(frozen=True)
class SchemaState:
    """Where a party's database stands against its history."""

    kind: str
    current: str | None
    head: str

    @property
    def pending(self) -> bool:
        return self.current != self.head


def kind_of(role: Role) -> str:
    try:
        return MIGRATED_ROLES[role]
    except KeyError:
        raise FailedPrecondition(
            f"a {Role.Name(role)} keeps no database of its own", "NO_DATABASE"
        ) from None


def _config(kind: str, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(MIGRATIONS / kind))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    return config


def _script(kind: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(kind))


@functools.cache
def head(kind: str) -> str:
    """The newest revision of `kind`'s history (read from its scripts once per process:
    readiness asks every second)."""
    revision = _script(kind).get_current_head()
    assert revision is not None, f"no migrations for {kind}"
    return revision


def knows(kind: str, revision: str) -> bool:
    """Whether `revision` is in the history of `kind` as this version of the code has it."""
    try:
        return _script(kind).get_revision(revision) is not None
    except CommandError:
        return False


def state(engine: Engine, kind: str) -> SchemaState:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return SchemaState(kind=kind, current=context.get_current_revision(), head=head(kind))


def upgrade(engine: Engine, kind: str) -> SchemaState:
    """Apply every pending revision of `kind` (completing a database made before them)."""
    with engine.begin() as connection:
        before = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
        command.upgrade(_config(kind, connection), "head")
    reached = state(engine, kind)
    if reached.current != before:
        _log.info("%s database migrated from %s to %s", kind, before or "none", reached.current)
    return reached


def require_current(engine: Engine, kind: str) -> None:
    """Refuse a database that is behind its history (MIGRATION_PENDING)."""
    found = state(engine, kind)
    if found.pending:
        raise FailedPrecondition(
            f"the {kind} database is at revision {found.current or 'none'}, the code needs "
            f"{found.head}: run 'fedscore db upgrade' (or 'fedscore serve --migrate')",
            "MIGRATION_PENDING",
        )
