"""Each party's schema by Alembic migrations: the head equals what the models declare, on
SQLite and on a real PostgreSQL server; an old database is adopted; a database that is
behind is refused until upgraded."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table

from audit.client.regulator_state import VERIFIED_CHECKPOINT, VERIFIED_LEAF
from audit.store.checkpoints import SIGNED_CHECKPOINT
from audit.store.log import AUDIT_ENTRY
from consent.store import GRANT, STATUS_LIST
from coordinator.store import COORDINATOR_TABLES
from fedscore.errors import FailedPrecondition
from fedscore.runtime.budget import PRIVACY_BUDGET, PRIVACY_SPEND
from fedscore.runtime.db import create_tables, open_engine
from fedscore.runtime.schema import MIGRATED_ROLES, require_current, state, upgrade
from helper.store import HELPER_TABLES
from node.store import NODE_TABLES

AUDIT = [AUDIT_ENTRY, SIGNED_CHECKPOINT]
LEDGER = [PRIVACY_BUDGET, PRIVACY_SPEND]
# What each kind of party's stores create: the models the migrations must match.
MODELS: dict[str, list[Table]] = {
    "agency": [*NODE_TABLES, *AUDIT, *LEDGER],
    "consent-registry": [GRANT, STATUS_LIST, *AUDIT],
    "coordinator": [*COORDINATOR_TABLES, *AUDIT, *LEDGER],
    "regulator": [VERIFIED_CHECKPOINT, VERIFIED_LEAF],
    "helper": [*HELPER_TABLES, *AUDIT, *LEDGER],
}
BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.integration))


def test_every_kind_of_party_has_a_history() -> None:
    assert set(MIGRATED_ROLES.values()) == set(MODELS)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        yield request.getfixturevalue("postgres").fresh_database()
        return
    yield f"sqlite:///{tmp_path / 'party.db'}"


def _differences(url: str, kind: str) -> list[object]:
    metadata = MetaData()
    for table in MODELS[kind]:
        table.to_metadata(metadata)
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return [
                diff
                for diff in compare_metadata(context, metadata)
                if not (diff[0] == "remove_table" and diff[1].name == "alembic_version")
            ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_head_is_what_the_models_declare(database: str, kind: str) -> None:
    engine = open_engine(database)
    try:
        with pytest.raises(FailedPrecondition) as behind:
            require_current(engine, kind)
        assert behind.value.reason == "MIGRATION_PENDING"
        reached = upgrade(engine, kind)
        assert not reached.pending and reached.current == state(engine, kind).head
        require_current(engine, kind)
        # Upgrading again changes nothing.
        assert upgrade(engine, kind) == reached
    finally:
        engine.dispose()
    assert _differences(database, kind) == []


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_database_made_before_migrations_is_adopted(database: str, kind: str) -> None:
    engine = open_engine(database)
    try:
        create_tables(engine, MODELS[kind])  # as the stores did before migrations existed
        assert state(engine, kind).current is None
        assert not upgrade(engine, kind).pending
    finally:
        engine.dispose()
    assert _differences(database, kind) == []


def test_a_database_holding_part_of_a_schema_is_completed(database: str) -> None:
    """An import before the first start creates only the node's tables: the first revision
    keeps them (and their rows) and creates the rest."""
    engine = open_engine(database)
    try:
        create_tables(engine, list(NODE_TABLES))
        with engine.begin() as connection:
            connection.execute(NODE_TABLES[0].insert(), [_import_row()])
        assert not upgrade(engine, "agency").pending
        with engine.connect() as connection:
            assert connection.execute(NODE_TABLES[0].select()).fetchall() != []
    finally:
        engine.dispose()
    assert _differences(database, "agency") == []


def _import_row() -> dict[str, object]:
    return {"file_sha256": "0" * 64, "filename": "export.csv", "row_count": 1,
            "new_records": 1, "imported_at": 1}  # fmt: skip


@pytest.mark.integration
def test_serve_refuses_a_database_that_is_behind_and_db_upgrade_brings_it_up(
    tmp_path: Path,
) -> None:
    from fedscore.apps.federation import init_federation

    workdir = tmp_path / "federation"
    init_federation(workdir, 3, fast_kdf=True)

    def fedscore(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fedscore.apps.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    party = ("--workdir", str(workdir), "--party", "trc")
    refused = fedscore("serve", *party)
    assert refused.returncode == 2
    assert refused.stderr.startswith("fedscore: error: MIGRATION_PENDING: ")
    assert "fedscore db upgrade" in refused.stderr
    status = fedscore("db", "status", *party, "--json")
    assert json.loads(status.stdout)["pending"] is True
    upgraded = fedscore("db", "upgrade", *party, "--json")
    assert upgraded.returncode == 0 and json.loads(upgraded.stdout)["pending"] is False
    assert json.loads(fedscore("db", "status", *party, "--json").stdout)["current"] == "agency_0001"
