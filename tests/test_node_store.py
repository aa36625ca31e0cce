"""The node's store on real SQLite files: engine tuning, replay protection, the yearly
quantities query and the record key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.dialects.postgresql.base import PGDialect

from audit.store.log import EventLog
from fedscore.errors import AlreadyExists, InvalidArgument
from node.claims import ClaimStatements
from node.store import (
    BEHAVIOUR_RECORD,
    IMPORT_BATCH,
    NodeStore,
    as_pseudonym_bytes,
    quantities_query,
    record_key,
    record_key_secret,
)

ALICE = "a" * 64
BOB = "b" * 64
START_2024 = 1_703_955_600  # 2024-01-01 00:00 Asia/Bangkok
END_2024 = 1_735_664_400  # 2025-01-01 00:00 Asia/Bangkok


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    store = NodeStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    store.dispose()


def _add(store: NodeStore, *records: tuple[str, str, int, int, bool]) -> None:
    secret = record_key_secret(b"k" * 32)
    with store.engine.begin() as connection:
        inserted = connection.execute(
            insert(IMPORT_BATCH).values(
                file_sha256=f"{len(records)}-{records[0]}",
                filename="x.csv",
                row_count=len(records),
                new_records=len(records),
                imported_at=0,
            )
        ).inserted_primary_key
        assert inserted is not None
        batch = inserted[0]
        rows = []
        for subject, indicator, occurred_at, quantity, certified in records:
            certifier = "TRC-HQ" if certified else ""
            key = record_key(secret, subject, indicator, occurred_at, quantity, certifier)
            rows.append(
                {
                    "record_key": key,
                    "pseudonym": bytes.fromhex(subject),
                    "indicator": indicator,
                    "occurred_at": occurred_at,
                    "quantity": quantity,
                    "certifier": certifier,
                    "certified": certified,
                    "import_id": batch,
                }
            )
        connection.execute(insert(BEHAVIOUR_RECORD), rows)


def test_sqlite_connections_use_wal_and_wait_for_writers(store: NodeStore) -> None:
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar_one() >= 5000


def test_a_new_store_is_empty_and_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = NodeStore(url)
    assert (first.record_count(), first.pseudonym_count()) == (0, 0)
    _add(
        first, (ALICE, "TRC-BLOOD", START_2024, 1, True), (ALICE, "TRC-PLASMA", START_2024, 2, True)
    )
    _add(first, (BOB, "TRC-BLOOD", START_2024, 1, True))
    first.dispose()
    second = NodeStore(url)
    assert (second.record_count(), second.pseudonym_count()) == (3, 2)
    second.dispose()


def test_quantities_sum_certified_records_inside_the_year(store: NodeStore) -> None:
    _add(
        store,
        (ALICE, "TRC-BLOOD", START_2024, 1, True),  # first second of the year: counts
        (ALICE, "TRC-BLOOD", START_2024 + 86_400, 2, True),
        (ALICE, "TRC-BLOOD", START_2024 - 1, 5, True),  # last second of 2023
        (ALICE, "TRC-BLOOD", END_2024, 7, True),  # first second of 2025
        (ALICE, "TRC-PLASMA", START_2024 + 10, 3, False),  # not certified
        (ALICE, "TRC-ORGAN-PLEDGE", END_2024 - 1, 1, True),
        (BOB, "TRC-BLOOD", START_2024 + 10, 4, True),  # someone else
    )
    assert store.quantities(ALICE, START_2024, END_2024) == {
        "TRC-BLOOD": 3,
        "TRC-ORGAN-PLEDGE": 1,
    }
    assert store.quantities(ALICE, START_2024, END_2024, uncertified_ok={"TRC-PLASMA"}) == {
        "TRC-BLOOD": 3,
        "TRC-ORGAN-PLEDGE": 1,
        "TRC-PLASMA": 3,
    }
    assert store.quantities(ALICE, END_2024, END_2024 + 365 * 86_400) == {"TRC-BLOOD": 7}
    assert store.quantities("c" * 64, START_2024, END_2024) == {}


def test_quantities_query_uses_the_pseudonym_time_index(store: NodeStore) -> None:
    compiled = quantities_query().compile(store.engine)
    assert compiled.positiontup is not None
    values = {"pseudonym": bytes.fromhex(ALICE), "start": START_2024, "end": END_2024}
    params = tuple(values[name] for name in compiled.positiontup)
    with store.engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
        plan = " ".join(str(row[-1]) for row in rows)
    assert "ix_behaviour_record_pseudonym_time" in plan


def test_quantities_query_compiles_for_postgresql() -> None:
    dialect = PGDialect()  # type: ignore[no-untyped-call]
    sql = str(quantities_query({"X"}).compile(dialect=dialect))
    assert "GROUP BY behaviour_record.indicator" in sql
    assert "IS true" in sql


def test_a_query_id_is_accepted_once(store: NodeStore) -> None:
    log = EventLog(store.engine, "trc")
    claims = ClaimStatements(store.engine)
    assert not store.has_seen_query("q-1")
    with store.engine.begin() as connection:
        claims.claim_query_id(connection, "q-1", now=1)
        log.append(connection, "query.accepted", {"query_id": "q-1"})
    assert store.has_seen_query("q-1")

    with store.engine.begin() as connection:
        with pytest.raises(AlreadyExists) as err:
            claims.claim_query_id(connection, "q-1", now=2)
        assert err.value.reason == "REPLAYED_QUERY"
        # The transaction is still usable: the refusal is logged in it.
        log.append(connection, "query.refused", {"query_id": "q-1", "reason": err.value.reason})
    assert [e.kind for e in log.entries(0, 2)] == ["query.accepted", "query.refused"]


def test_a_rolled_back_transaction_does_not_claim_the_query(store: NodeStore) -> None:
    claims = ClaimStatements(store.engine)
    with store.engine.connect() as connection:
        claims.claim_query_id(connection, "q-2", now=1)
        connection.rollback()
    assert not store.has_seen_query("q-2")
    with store.engine.begin() as connection:
        claims.claim_query_id(connection, "q-2", now=1)
    assert store.has_seen_query("q-2")


def test_record_key_names_every_field_and_hides_the_key() -> None:
    secret = record_key_secret(b"k" * 32)
    assert secret != b"k" * 32 and len(secret) == 32
    assert record_key_secret(b"j" * 32) != secret
    base = record_key(secret, ALICE, "TRC-BLOOD", 100, 1, "TRC-HQ")
    assert base == record_key(secret, ALICE, "TRC-BLOOD", 100, 1, "TRC-HQ")
    assert isinstance(base, bytes) and len(base) == 32
    assert base == record_key(secret, bytes.fromhex(ALICE), "TRC-BLOOD", 100, 1, "TRC-HQ")
    variants = {
        record_key(secret, BOB, "TRC-BLOOD", 100, 1, "TRC-HQ"),
        record_key(secret, ALICE, "TRC-PLASMA", 100, 1, "TRC-HQ"),
        record_key(secret, ALICE, "TRC-BLOOD", 101, 1, "TRC-HQ"),
        record_key(secret, ALICE, "TRC-BLOOD", 100, 2, "TRC-HQ"),
        record_key(secret, ALICE, "TRC-BLOOD", 100, 1, ""),
        record_key(record_key_secret(b"j" * 32), ALICE, "TRC-BLOOD", 100, 1, "TRC-HQ"),
    }
    assert base not in variants and len(variants) == 6


def test_a_pseudonym_is_named_by_32_bytes_or_64_hex_characters(store: NodeStore) -> None:
    assert as_pseudonym_bytes(ALICE) == as_pseudonym_bytes(bytes.fromhex(ALICE)) == b"\xaa" * 32
    for wrong in ("ab" * 31, b"\x01" * 16):
        with pytest.raises(InvalidArgument) as err:
            store.quantities(wrong, START_2024, END_2024)
        assert err.value.reason == "BAD_PSEUDONYM"
