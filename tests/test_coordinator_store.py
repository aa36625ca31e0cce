"""The coordinator's store: nonce, token use and "query_issued" commit together or not at all."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from audit.store.log import EventLog
from coordinator.store import TOKEN_USES, CoordinatorStore, QueryIssue
from fedscore.errors import AlreadyExists, ResourceExhausted
from fedscore.runtime.db import open_engine, use_counters


@pytest.fixture
def store(tmp_path: Path) -> CoordinatorStore:
    engine = open_engine(f"sqlite:///{tmp_path / 'coordinator.db'}")
    return CoordinatorStore(engine, EventLog(engine, "coordinator"))


def _issue(
    nonce: bytes = b"n" * 16,
    *,
    token_id: str = "tok-1",  # noqa: S107
    max_uses: int = 0,
    query_id: str = "q-1",
) -> QueryIssue:
    return QueryIssue(
        query_id=query_id,
        query_hash=b"\xab" * 32,
        nonce=nonce,
        relying_party="ptt",
        request_nonce_hash=hashlib.sha256(nonce).digest(),
        token_id=token_id,
        max_uses=max_uses,
        purpose_id="ptt-fuel-discount",
        participants=("trc", "dsd", "chuangpao"),
        year=2025,
        issued_at=1_760_000_000,
        expires_at=1_760_000_030,
    )


def test_issue_stores_nonce_use_query_and_log_entry(store: CoordinatorStore) -> None:
    ref = store.issue(_issue())
    assert store.nonce_seen(b"n" * 16)
    assert store.uses("tok-1") == 1
    row = store.query("q-1")
    assert row is not None
    assert (row.log_index, row.outcome, row.query_hash) == (ref.index, "issued", "ab" * 32)
    [entry] = store.log.entries(0, store.log.size())
    assert entry.kind == "query_issued"
    assert entry.index == ref.index and entry.leaf_hash == ref.leaf_hash
    assert entry.fields == {
        "query_id": "q-1",
        "query_hash": "ab" * 32,
        "token_id": "tok-1",
        "purpose": "ptt-fuel-discount",
        "relying_party": "ptt",
        "participants": ["trc", "dsd", "chuangpao"],
        "year": 2025,
        "kind": "score",
        "request_nonce_hash": hashlib.sha256(b"n" * 16).hexdigest(),
    }


def test_replayed_nonce_is_refused_and_nothing_is_stored(store: CoordinatorStore) -> None:
    store.issue(_issue())
    with pytest.raises(AlreadyExists) as caught:
        store.issue(_issue(query_id="q-2"))
    assert caught.value.reason == "REPLAYED_NONCE"
    assert store.uses("tok-1") == 1
    assert store.query("q-2") is None
    assert store.log.size() == 1


def test_use_limit_is_counted_persistently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    first = CoordinatorStore(open_engine(url), EventLog(open_engine(url), "coordinator"))
    first.issue(_issue(b"a" * 16, max_uses=2, query_id="q-a"))
    first.issue(_issue(b"b" * 16, max_uses=2, query_id="q-b"))
    first.engine.dispose()
    # A restarted coordinator still knows the token was used twice.
    engine = open_engine(url)
    again = CoordinatorStore(engine, EventLog(engine, "coordinator"))
    with pytest.raises(ResourceExhausted) as caught:
        again.issue(_issue(b"c" * 16, max_uses=2, query_id="q-c"))
    assert caught.value.reason == "USE_LIMIT_REACHED"
    # The refused request spent neither its nonce nor a use.
    assert not again.nonce_seen(b"c" * 16)
    assert again.uses("tok-1") == 2
    assert again.log.size() == 2
    # Another token is counted on its own.
    again.issue(_issue(b"d" * 16, token_id="tok-2", max_uses=2, query_id="q-d"))


def test_finish_records_outcome_with_its_log_entry(store: CoordinatorStore) -> None:
    store.issue(_issue())
    ref = store.finish("q-1", "failed", "query_failed", {"query_id": "q-1", "unavailable": ["dsd"]})
    row = store.query("q-1")
    assert row is not None and row.outcome == "failed"
    entry = store.log.entries(ref.index, ref.index + 1)[0]
    assert (entry.kind, entry.fields["unavailable"]) == ("query_failed", ["dsd"])


def test_refusal_is_logged_without_spending_anything(store: CoordinatorStore) -> None:
    store.refuse({"reason": "BAD_SIGNATURE"})
    [entry] = store.log.entries(0, 1)
    assert (entry.kind, json.loads(entry.body)) == ("score_refused", {"reason": "BAD_SIGNATURE"})
    assert store.uses("tok-1") == 0


def test_two_writers_never_both_take_the_last_use(tmp_path: Path) -> None:
    # Two coordinator stores on one database (two processes' worth of connections) race
    # for a token's last use, again and again: exactly one wins each time.
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    stores = []
    for _ in range(2):
        engine = open_engine(url)
        stores.append(CoordinatorStore(engine, EventLog(engine, "coordinator")))
    for round_ in range(15):
        token = f"tok-{round_}"
        start = threading.Barrier(2)

        def take(
            side: int, token: str = token, start: threading.Barrier = start, round_: int = round_
        ) -> str:
            start.wait()
            nonce = bytes([round_, side]) * 8
            try:
                stores[side].issue(_issue(nonce, token_id=token, max_uses=1, query_id=nonce.hex()))
            except ResourceExhausted as refused:
                return refused.reason
            return "issued"

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(take, (0, 1)))
        assert outcomes == ["USE_LIMIT_REACHED", "issued"], (round_, outcomes)
        assert stores[0].uses(token) == 1
    assert stores[0].log.size() == 15  # only the winners' queries were logged
    for store in stores:
        store.hot.close()
        store.engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_use_is_counted_in_one_statement_on_each_database(database: str) -> None:
    dialect = {"sqlite": sqlite.dialect(), "postgresql": postgresql.psycopg2.dialect()}[database]
    unlimited, limited = use_counters(database, TOKEN_USES)
    plain = " ".join(str(unlimited.compile(dialect=dialect)).split())
    capped = " ".join(str(limited.compile(dialect=dialect)).split())
    for sql in (plain, capped):
        assert sql.startswith("INSERT INTO coordinator_token_use (token_id, uses, last_used_at)")
        assert "ON CONFLICT (token_id) DO UPDATE SET uses = (coordinator_token_use.uses + " in sql
        assert "last_used_at = excluded.last_used_at" in sql
    assert "WHERE" not in plain
    assert re.search(r"WHERE coordinator_token_use\.uses < (\?|%\(max_uses\)s)$", capped), capped
