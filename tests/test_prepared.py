"""fedscore.runtime.prepared and the audit log's fast paths: same SQL, bytes and refusals.

The query path runs SQLAlchemy Core statements on the DB-API cursor and writes log
leaves without json.dumps; these tests pin that nothing changes but the speed: the
statements compile for SQLite and PostgreSQL alike, transactions commit whole or not at
all, and every leaf and every refused log body is what the general code gives.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from audit.core.entries import DENIED_KEYS, canonical_json, check_fields, leaf_data
from audit.store.log import EventLog
from fedscore.errors import InvalidArgument
from fedscore.runtime.db import open_engine
from fedscore.runtime.prepared import MAX_KEPT_CONNECTIONS, HotConnection, Prepared
from node.store import SEEN_QUERY, NodeStore, quantities_of_many_query


def test_a_statement_compiles_for_each_dialect_with_its_literals_and_in_lists() -> None:
    statement = select(SEEN_QUERY.c.query_id).where(
        SEEN_QUERY.c.query_id.in_(bindparam("ids", expanding=True)),
        SEEN_QUERY.c.seen_at > func.coalesce(bindparam("since"), -1),
    )
    lite = Prepared(statement, sqlite.dialect(), {"ids": 3})
    assert lite.sql.count("?") == 5
    assert lite.parameters({"ids": ["a", "b", "c"], "since": 9}) == ["a", "b", "c", 9, -1]
    pg = Prepared(statement, postgresql.psycopg2.dialect(), {"ids": 2})
    assert "%(ids_1)s, %(ids_2)s" in pg.sql
    assert pg.parameters({"ids": ["a", "b"], "since": None}) == {
        "ids_1": "a",
        "ids_2": "b",
        "since": None,
        "coalesce_1": -1,
    }


def test_a_transaction_commits_whole_or_not_at_all(tmp_path: Path) -> None:
    store = NodeStore(f"sqlite:///{tmp_path / 'node.db'}")
    hot = HotConnection(store.engine)
    insert = SEEN_QUERY.insert()
    with hot.transaction() as cursor:
        cursor.execute(insert, {"query_id": "q-1", "seen_at": 1})
        assert cursor.executemany(insert, [{"query_id": f"q-{n}", "seen_at": n} for n in (2, 3)])
    with pytest.raises(RuntimeError), hot.transaction() as cursor:
        cursor.execute(insert, {"query_id": "q-4", "seen_at": 4})
        raise RuntimeError("refused half way")
    assert store.has_seen_query("q-3") and not store.has_seen_query("q-4")
    store.dispose()


def test_an_in_list_lookup_reads_what_the_store_reads(tmp_path: Path) -> None:
    """The raw IN-list statement and NodeStore.quantities agree, per person."""
    store = NodeStore(f"sqlite:///{tmp_path / 'node.db'}")
    people = [bytes([n]) * 32 for n in range(1, 4)]
    from node.store import BEHAVIOUR_RECORD, IMPORT_BATCH

    with store.engine.begin() as connection:
        connection.execute(
            IMPORT_BATCH.insert(),
            {
                "id": 1,
                "file_sha256": "x",
                "filename": "f",
                "row_count": 0,
                "new_records": 0,
                "imported_at": 0,
            },
        )
        rows = [
            {
                "record_key": bytes([n, k]) * 16,
                "pseudonym": person,
                "indicator": code,
                "occurred_at": when,
                "quantity": quantity,
                "certifier": "c",
                "certified": certified,
                "import_id": 1,
            }
            for n, person in enumerate(people)
            for k, (code, when, quantity, certified) in enumerate(
                [("A", 10, 1, True), ("A", 20, 2, True), ("B", 30, 1, False), ("A", 99, 5, True)]
            )
        ]
        connection.execute(BEHAVIOUR_RECORD.insert(), rows)
    hot = HotConnection(store.engine)
    with hot.transaction() as cursor:
        found = cursor.execute(
            quantities_of_many_query({"B"}),
            {"pseudonyms": people[:2], "start": 0, "end": 50},
            expanding=("pseudonyms",),
        )
        held: dict[bytes, dict[str, int]] = {}
        for person, code, total in found:
            held.setdefault(bytes(person), {})[code] = int(total)
    for person in people[:2]:
        assert (
            held[person]
            == store.quantities(person, 0, 50, uncertified_ok={"B"})
            == {
                "A": 3,
                "B": 1,
            }
        )
    store.dispose()


def test_log_entries_written_through_a_cursor_verify(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'log.db'}")
    log = EventLog(engine, "trc")
    log.append_now("first", {"n": 1})
    hot = HotConnection(engine)
    with hot.transaction() as cursor:
        one = log.append(cursor, "second", {"n": 2})
        more = log.append_many(cursor, [("third", {"n": 3}), ("fourth", {"n": 4})])
    assert [one.index, *(ref.index for ref in more)] == [1, 2, 3]
    entries = log.entries(0, log.size())  # re-derives and checks every leaf hash
    assert [e.kind for e in entries] == ["first", "second", "third", "fourth"]
    engine.dispose()


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_text, st.integers(0, 2**62), _text, _text, st.integers(-(2**40), 2**40))
def test_leaf_data_is_the_canonical_json_of_its_five_fields(
    origin: str, index: int, kind: str, body: str, logged_at: int
) -> None:
    general = {"body": body, "index": index, "kind": kind, "logged_at": logged_at}
    general["origin"] = origin
    assert leaf_data(origin, index, kind, body, logged_at) == canonical_json(general).encode()


# The log body rules as the audit log first wrote them (before the fast paths).
_ID_LIKE = re.compile(r"(?<![0-9A-Za-z])(?:\d{13}|\d-\d{4}-\d{5}-\d{2}-\d)(?![0-9A-Za-z])")


def _reference_check(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"{path}: keys must be strings", "BAD_LOG_FIELD")
            normalised = key.lower().replace("_", "").replace("-", "")
            if any(denied in normalised for denied in DENIED_KEYS):
                raise InvalidArgument(f"{path}.{key}: denied", "DENIED_LOG_FIELD")
            _reference_check(inner, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            _reference_check(inner, f"{path}[{i}]")
    elif isinstance(value, str):
        if _ID_LIKE.search(value):
            raise InvalidArgument(f"{path}: 13-digit number", "DENIED_LOG_FIELD")
    elif value is not None and not isinstance(value, bool | int | float):
        raise InvalidArgument(f"{path}: not JSON", "BAD_LOG_FIELD")


_keys = st.sampled_from(["query_id", "purpose", "national_id", "Pseudonym", "masked-value", "n"])
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from(["trc", "1100700123456", "x-1-2345-67890-12-3", "ab1234567890123cd", "ok"]),
    st.just(b"bytes"),
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(_keys | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=8,
)


def _outcome(check: Any, value: object) -> tuple[str, str] | None:
    try:
        check(value, "fields")
    except InvalidArgument as error:
        return error.reason, error.message.split(":")[0]
    return None


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4))
def test_log_bodies_are_refused_exactly_as_before(fields: dict[Any, Any]) -> None:
    """Same verdict and same path named as the original rules, for any nested value."""
    assert _outcome(check_fields, fields) == _outcome(_reference_check, fields)
    if _outcome(check_fields, fields) is None:
        json.dumps(fields)  # accepted bodies are JSON


def test_appending_through_a_cursor_compiles_each_statement_once(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'log.db'}")
    log = EventLog(engine, "trc")
    hot = HotConnection(engine)
    kept = []
    for n in range(20):
        with hot.transaction() as cursor:
            log.append_many(cursor, [("answered", {"n": n}), ("refused", {"n": n})])
        kept.append(hot.statements_kept)
    assert len(set(kept)) == 1, kept  # no new statement per call, so nothing piles up
    assert log.size() == 40
    hot.close()
    engine.dispose()


_TEMP = text("CREATE TEMP TABLE IF NOT EXISTS mine (n INTEGER)")
_TEMP_ROWS = text("SELECT count(*) FROM sqlite_temp_master WHERE name = 'mine'")


def _has_temp_table(hot: HotConnection) -> bool:
    with hot.transaction() as cursor:
        return bool(cursor.execute(_TEMP_ROWS).fetchone()[0])


def test_a_thread_keeps_its_connection_and_another_thread_gets_its_own(tmp_path: Path) -> None:
    # A TEMP table lives only in the connection that created it.
    store = NodeStore(f"sqlite:///{tmp_path / 'node.db'}")
    hot = HotConnection(store.engine)
    with hot.transaction() as cursor:
        cursor.execute(_TEMP)
    assert _has_temp_table(hot)
    with ThreadPoolExecutor(1) as other:
        assert other.submit(_has_temp_table, hot).result() is False
    assert store.engine.pool.checkedout() == 2  # one kept per thread that ran a transaction
    hot.close()
    assert store.engine.pool.checkedout() == 0
    store.dispose()


def test_a_nested_transaction_commits_on_its_own_connection(tmp_path: Path) -> None:
    store = NodeStore(f"sqlite:///{tmp_path / 'node.db'}")
    hot = HotConnection(store.engine)
    insert = SEEN_QUERY.insert()
    with pytest.raises(RuntimeError), hot.transaction() as outer:
        with hot.transaction() as inner:
            inner.execute(insert, {"query_id": "inner", "seen_at": 1})
        outer.execute(insert, {"query_id": "outer", "seen_at": 2})
        raise RuntimeError("the outer one fails")
    assert store.has_seen_query("inner") and not store.has_seen_query("outer")
    hot.close()
    store.dispose()


def test_a_connection_that_failed_is_replaced(tmp_path: Path) -> None:
    store = NodeStore(f"sqlite:///{tmp_path / 'node.db'}")
    hot = HotConnection(store.engine)
    insert = SEEN_QUERY.insert()
    with hot.transaction() as cursor:
        cursor.execute(_TEMP)
        cursor.execute(insert, {"query_id": "q-1", "seen_at": 1})
    with pytest.raises(sqlite3.IntegrityError), hot.transaction() as cursor:
        cursor.execute(insert, {"query_id": "q-2", "seen_at": 2})
        cursor.execute(insert, {"query_id": "q-1", "seen_at": 3})  # taken: a database error
    assert not _has_temp_table(hot)  # a new connection
    with hot.transaction() as cursor:
        cursor.execute(insert, {"query_id": "q-2", "seen_at": 2})
    assert store.has_seen_query("q-2")
    hot.close()
    store.dispose()


def test_threads_beyond_the_kept_ones_use_the_pool_and_give_it_back(tmp_path: Path) -> None:
    store = NodeStore(f"sqlite:///{tmp_path / 'node.db'}")
    hot = HotConnection(store.engine)
    insert = SEEN_QUERY.insert()

    def claim(n: int) -> int:
        with hot.transaction() as cursor:
            cursor.execute(insert, {"query_id": f"q-{n}", "seen_at": n})
        return store.engine.pool.checkedout()

    with ThreadPoolExecutor(8) as threads:
        list(threads.map(claim, range(40)))
    # However many threads came and went, at most MAX_KEPT_CONNECTIONS stay checked out,
    # so the pool (5) always has a connection left for everyone else.
    assert store.engine.pool.checkedout() <= MAX_KEPT_CONNECTIONS
    assert all(store.has_seen_query(f"q-{n}") for n in range(40))
    hot.close()
    assert store.engine.pool.checkedout() == 0
    store.dispose()
