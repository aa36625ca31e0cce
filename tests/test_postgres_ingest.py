"""Importing into PostgreSQL goes by COPY and stores exactly what SQLite stores: the same
new and duplicate counts, the same records, a re-import that changes nothing, and a
rejected file that stores nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from fedscore.apps.demo_data import generate
from fedscore.errors import IngestError
from node.ingest import IngestReport, ingest_file
from node.store import BEHAVIOUR_RECORD, NodeStore
from policies.defaults import default_policy_document
from policies.loader import parse_policy

pytestmark = pytest.mark.integration

KEY = b"\x07" * 32
AGENCY = "trc"


def _records(store: NodeStore) -> set[tuple[object, ...]]:
    columns = [c for c in BEHAVIOUR_RECORD.c if c.name not in ("id", "import_id")]
    with store.engine.connect() as connection:
        return {tuple(row) for row in connection.execute(select(*columns))}


def _import_all(store: NodeStore, files: list[Path]) -> list[IngestReport]:
    policy = parse_policy(default_policy_document(3))
    return [ingest_file(store, path, policy, AGENCY, KEY) for path in files]


def test_postgresql_stores_what_sqlite_stores(tmp_path: Path, postgres: object) -> None:
    policy = parse_policy(default_policy_document(3))
    first = generate(tmp_path / "a", policy, [AGENCY], 300, seed=3).files[AGENCY]
    # The first file's rows again, and others: its first part is already stored.
    others = generate(tmp_path / "b", policy, [AGENCY], 200, seed=4).files[AGENCY]
    second = tmp_path / "second.csv"
    extra = others.read_text("utf-8").splitlines()[1:]
    second.write_text(first.read_text("utf-8") + "\n".join(extra) + "\n", "utf-8")
    stores = {
        "sqlite": NodeStore(f"sqlite:///{tmp_path / 'node.db'}"),
        "postgresql": NodeStore(postgres.fresh_database()),  # type: ignore[attr-defined]
    }
    try:
        reports = {
            name: _import_all(store, [first, second, first]) for name, store in stores.items()
        }
        assert reports["postgresql"] == reports["sqlite"]
        once, more, again = reports["postgresql"]
        assert once.new_records > 0 and more.duplicate_records > 0 and again.already_imported
        assert _records(stores["postgresql"]) == _records(stores["sqlite"])
        # A file with a bad row stores nothing, in PostgreSQL as in SQLite.
        bad = tmp_path / "bad.csv"
        lines = first.read_text("utf-8").splitlines()
        bad.write_text("\n".join([*lines[:50], lines[1].replace(",", ",NO-SUCH,", 1)]) + "\n")
        before = _records(stores["postgresql"])
        with pytest.raises(IngestError):
            _import_all(stores["postgresql"], [bad])
        assert _records(stores["postgresql"]) == before
    finally:
        for store in stores.values():
            store.dispose()
