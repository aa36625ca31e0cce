"""The event log on real SQLite files: persistence, atomicity with the caller's
transaction, dense indexes under concurrent writers, refusal of personal data."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, text

from audit.core import merkle
from audit.core.entries import leaf_data
from audit.store.log import EventLog
from fedscore.errors import FailedPrecondition, InvalidArgument

ORIGIN = "trc"


def _engine(path: Path) -> Engine:
    return create_engine(f"sqlite:///{path}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = _engine(db_path)
    yield engine
    engine.dispose()


def _expected_root(log: EventLog, size: int) -> bytes:
    """Recompute the root from the entries' contents, not from the stored leaf hashes."""
    entries = log.entries(0, size)
    return merkle.root([merkle.leaf_hash(e.leaf_data(ORIGIN)) for e in entries])


def test_append_now_assigns_dense_indexes_and_hashes_the_leaf(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    assert log.size() == 0
    assert log.root() == merkle.EMPTY_ROOT
    refs = [log.append_now("query.accepted", {"query_id": f"q{i}", "n": i}) for i in range(5)]
    assert [r.index for r in refs] == [0, 1, 2, 3, 4]
    assert log.size() == 5
    entry = log.entries(2, 3)[0]
    assert entry.fields == {"query_id": "q2", "n": 2}
    assert entry.body == '{"n":2,"query_id":"q2"}'
    data = leaf_data(ORIGIN, 2, "query.accepted", entry.body, refs[2].logged_at)
    assert json.loads(data) == {
        "body": entry.body,
        "index": 2,
        "kind": "query.accepted",
        "logged_at": refs[2].logged_at,
        "origin": ORIGIN,
    }
    assert refs[2].leaf_hash == merkle.leaf_hash(data) == entry.leaf_hash
    assert log.root() == _expected_root(log, 5)


def test_log_survives_reopening_the_database_file(db_path: Path) -> None:
    first = _engine(db_path)
    log = EventLog(first, ORIGIN)
    for i in range(7):
        log.append_now("consent.granted", {"token": f"t{i}"}, now=1_700_000_000 + i)
    root_before = log.root()
    first.dispose()

    second = _engine(db_path)
    reopened = EventLog(second, ORIGIN)
    assert reopened.size() == 7
    assert reopened.root() == root_before == _expected_root(reopened, 7)
    assert [e.logged_at for e in reopened.entries(0, 7)] == list(
        range(1_700_000_000, 1_700_000_007)
    )
    assert reopened.append_now("consent.revoked", {"token": "t0"}).index == 7
    second.dispose()


def test_append_in_a_rolled_back_transaction_leaves_no_entry(engine: Engine) -> None:
    notes = Table(
        "event_note", MetaData(), Column("id", Integer, primary_key=True), Column("what", String)
    )
    notes.metadata.create_all(engine)
    log = EventLog(engine, ORIGIN)
    log.append_now("start", {})

    with engine.connect() as connection:
        connection.execute(notes.insert().values(what="refused"))
        ref = log.append(connection, "query.refused", {"reason": "REPLAYED_QUERY"})
        assert ref.index == 1
        connection.rollback()
    assert log.size() == 1
    with engine.connect() as connection:
        assert connection.execute(text("select count(*) from event_note")).scalar_one() == 0

    # The next event takes the index the rolled-back one had: no gap.
    with engine.connect() as connection:
        connection.execute(notes.insert().values(what="answered"))
        first = log.append(connection, "query.answered", {"query_id": "q"})
        second = log.append(connection, "query.answered", {"query_id": "q2"})
        connection.commit()
    assert (first.index, second.index) == (1, 2)
    assert log.size() == 3
    with engine.connect() as connection:
        assert connection.execute(text("select count(*) from event_note")).scalar_one() == 1
    assert log.root() == _expected_root(log, 3)


@pytest.mark.parametrize(
    "fields",
    [
        {"national_id": "x"},
        {"pseudonym": "ab" * 32},
        {"subject_pseudonym": "ab"},
        {"contribution": 70},
        {"masked_value": 12345},
        {"Masked-Value": 1},
        {"answer": {"nested": {"nationalId": "x"}}},
        {"answers": [{"contribution": 1}]},
        {"note": "holder 1101700230708"},
        {"note": "card 1-1017-00230-70-8 shown"},
        {"subject": "๑๑๐๑๗๐๐๒๓๐๗๐๘"},
    ],
)
def test_personal_data_is_refused_and_nothing_is_written(
    engine: Engine, fields: dict[str, object]
) -> None:
    log = EventLog(engine, ORIGIN)
    with pytest.raises(InvalidArgument) as err:
        log.append_now("query.answered", fields)
    assert err.value.reason == "DENIED_LOG_FIELD"
    assert "1101700230708" not in str(err.value)
    assert log.size() == 0


def test_hashes_that_contain_long_digit_runs_are_not_mistaken_for_ids(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    query_hash = "ab" + "1101700230708" * 4 + "cd"
    ref = log.append_now("query.answered", {"query_hash": query_hash, "at": 1_700_000_000_000})
    assert log.entries(ref.index, ref.index + 1)[0].fields["query_hash"] == query_hash


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("", {}),
        ("query answered", {}),
        ("ok", {"x": float("nan")}),
        ("ok", {"x": b"bytes"}),
        ("ok", {"x": {1: "non-string key"}}),
    ],
)
def test_malformed_entries_are_refused(
    engine: Engine, kind: str, fields: dict[str, object]
) -> None:
    log = EventLog(engine, ORIGIN)
    with pytest.raises(InvalidArgument) as err:
        log.append_now(kind, fields)
    assert err.value.reason == "BAD_LOG_FIELD"
    assert log.size() == 0


def test_origin_and_index_are_bound_into_the_leaf(tmp_path: Path) -> None:
    engines = [_engine(tmp_path / "a.db"), _engine(tmp_path / "b.db")]
    a, b = EventLog(engines[0], "trc"), EventLog(engines[1], "dsd")
    ref_a = a.append_now("x", {"k": 1}, now=100)
    ref_b = b.append_now("x", {"k": 1}, now=100)
    assert ref_a.index == ref_b.index == 0
    assert ref_a.leaf_hash != ref_b.leaf_hash
    ref_a2 = a.append_now("x", {"k": 1}, now=100)
    assert ref_a2.leaf_hash != ref_a.leaf_hash
    for engine in engines:
        engine.dispose()


def test_a_rewritten_entry_is_detected(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    for i in range(3):
        log.append_now("query.answered", {"outcome": "ok", "i": i})
    with engine.begin() as connection:
        connection.execute(
            text('update audit_entry set body = :b where "index" = 1'),
            {"b": '{"i":1,"outcome":"refused"}'},
        )
    with pytest.raises(FailedPrecondition) as err:
        log.entries(0, 3)
    assert err.value.reason == "LOG_CORRUPTED"


def test_a_missing_entry_is_detected(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    for i in range(4):
        log.append_now("e", {"i": i})
    with engine.begin() as connection:
        connection.execute(text('delete from audit_entry where "index" = 1'))
    with pytest.raises(FailedPrecondition):
        log.root()
    with pytest.raises(FailedPrecondition):
        log.entries(0, 4)


def test_roots_and_proofs_of_every_size_verify(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    roots = [log.root()]
    for i in range(12):
        log.append_now("e", {"i": i})
        roots.append(log.root())  # grows the cached peaks one entry at a time
    for size in range(13):
        assert log.root(size) == roots[size] == _expected_root(log, size)
    leaves = [e.leaf_hash for e in log.entries(0, 12)]
    for index in range(12):
        proof = log.inclusion_proof(index, 12)
        merkle.verify_inclusion(leaves[index], index, 12, proof, roots[12])
    for size1 in range(13):
        proof = log.consistency_proof(size1, 12)
        merkle.verify_consistency(size1, 12, roots[size1], roots[12], proof)
    with pytest.raises(InvalidArgument):
        log.root(13)
    with pytest.raises(InvalidArgument):
        log.inclusion_proof(0, 13)


def test_concurrent_threads_get_distinct_consecutive_indexes(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    threads_count, per_thread = 8, 20
    indexes: list[int] = []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(per_thread):
                if i % 2:
                    ref = log.append_now("e", {"t": t, "i": i})
                else:
                    # Each in its own transaction, racing the other threads for the index.
                    with engine.connect() as connection:
                        ref = log.append(connection, "e", {"t": t, "i": i})
                        connection.commit()
                with guard:
                    indexes.append(ref.index)
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    total = threads_count * per_thread
    assert sorted(indexes) == list(range(total))
    assert log.size() == total
    entries = log.entries(0, total)
    assert {(e.fields["t"], e.fields["i"]) for e in entries} == {
        (t, i) for t in range(threads_count) for i in range(per_thread)
    }
    assert log.root() == _expected_root(log, total)


_WRITER = textwrap.dedent(
    """
    import sys
    from sqlalchemy import create_engine
    from audit.store.log import EventLog

    path, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})
    log = EventLog(engine, "trc")
    for i in range(count):
        with engine.connect() as connection:
            log.append(connection, "e", {"who": who, "i": i})
            connection.commit()
    """
)


@pytest.mark.integration
def test_concurrent_processes_get_distinct_consecutive_indexes(
    engine: Engine, db_path: Path
) -> None:
    log = EventLog(engine, ORIGIN)
    processes, per_process = 3, 40
    running = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db_path), f"p{p}", str(per_process)],
            stderr=subprocess.PIPE,
        )
        for p in range(processes)
    ]
    for proc in running:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    total = processes * per_process
    assert log.size() == total
    entries = log.entries(0, total)  # refuses any gap or mismatched leaf
    assert {(e.fields["who"], e.fields["i"]) for e in entries} == {
        (f"p{p}", i) for p in range(processes) for i in range(per_process)
    }
    assert log.root() == _expected_root(log, total)


# --- batched appends, cached subtrees, what auditors are served ---------------------------


def test_append_many_takes_dense_indexes_in_the_callers_transaction(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    log.append_now("start", {})
    with engine.connect() as connection:
        refs = log.append_many(connection, [("e", {"i": i}) for i in range(5)], now=1_700_000_000)
        connection.rollback()
    assert [r.index for r in refs] == [1, 2, 3, 4, 5]
    assert log.size() == 1  # rolled back: nothing of the batch remains
    with engine.connect() as connection:
        refs = log.append_many(connection, [("e", {"i": i}) for i in range(5)], now=1_700_000_000)
        connection.commit()
    entries = log.entries(1, 6)  # re-hashes every entry: the batch hashed them right
    assert [e.leaf_hash for e in entries] == [r.leaf_hash for r in refs]
    assert [e.fields["i"] for e in entries] == list(range(5))
    with engine.connect() as connection:
        assert log.append_many(connection, []) == []
        with pytest.raises(InvalidArgument):
            log.append_many(connection, [("e", {}), ("e", {"national_id": "x"})])
    assert log.size() == 6


def test_roots_and_proofs_from_cached_subtrees_equal_those_from_every_leaf(
    engine: Engine,
) -> None:
    """Sizes around the 256-leaf blocks: the cache must never change an answer."""
    log = EventLog(engine, ORIGIN)
    with engine.connect() as connection:
        log.append_many(connection, [("e", {"i": i}) for i in range(1100)])
        connection.commit()
    leaves = log.leaf_hashes(0, 1100)
    sizes = [1, 2, 255, 256, 257, 511, 512, 513, 767, 1024, 1025, 1099, 1100]
    for size in sizes:
        assert log.root(size) == merkle.root(leaves[:size]), size
        for index in {0, size // 2, size - 1}:
            assert log.inclusion_proof(index, size) == merkle.inclusion_proof(leaves[:size], index)
        for size1 in {0, 1, size // 3, size - 1, size}:
            assert log.consistency_proof(size1, size) == merkle.consistency_proof(
                leaves[:size], size1
            )
    # A fresh EventLog (a restart) builds its cache from the stored leaves alone.
    reopened = EventLog(engine, ORIGIN)
    assert reopened.inclusion_proof(700, 1100) == merkle.inclusion_proof(leaves, 700)


def test_auditors_are_served_rows_as_stored_even_when_tampered(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    for i in range(3):
        log.append_now("e", {"i": i})
    with engine.begin() as connection:
        connection.execute(
            text('update audit_entry set body = :b where "index" = 1'), {"b": '{"i":7}'}
        )
        connection.execute(text("update audit_entry set leaf_hash = 'zz' where \"index\" = 2"))
    served = log.stored_entries(0, 3)
    assert [e.body for e in served] == ['{"i":0}', '{"i":7}', '{"i":2}']
    assert served[2].leaf_hash == b""  # garbage is shown as no hash at all
    with pytest.raises(FailedPrecondition):
        log.entries(0, 3)


def test_entries_naming_a_value_match_the_field_exactly(engine: Engine) -> None:
    log = EventLog(engine, ORIGIN)
    log.append_now("a", {"token_id": "abc"})
    log.append_now("b", {"token_id": "abcd"})  # a longer id sharing the prefix
    log.append_now("c", {"query_id": "abc"})  # the same value in another field
    log.append_now("d", {"outer": {"token_id": "abc"}})  # nested, not top level
    log.append_now("e", {"token_id": "a%c"})
    log.append_now("f", {"token_id": "abc", "query_id": "q"})
    assert [e.kind for e in log.entries_naming("token_id", ["abc"], 100)] == ["a", "f"]
    assert [e.kind for e in log.entries_naming("token_id", ["a%c"], 100)] == ["e"]
    assert [e.kind for e in log.entries_naming("query_id", ["abc", "q"], 100)] == ["c", "f"]
    assert log.entries_naming("token_id", [], 100) == []
    assert len(log.entries_naming("token_id", ["abc"], 1)) == 1
