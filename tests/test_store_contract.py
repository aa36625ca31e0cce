"""What every party's storage promises, whatever database holds it.

One contract suite for the stores (the audit log, the privacy ledger, the consent
registry's grants and status list, the coordinator's nonces and token uses): each test
takes a `database` URL from `BACKENDS`, so a new backend (PostgreSQL, in the
production-footing issue) is one more entry there and must pass every test unchanged.
The promises tested are those the stores' docstrings state: dense log indexes under
concurrent writers and no gap after a rollback, a ledger that never overspends and
refunds once, a status-list sequence that no two revocations share, a status index held
by one grant only, a nonce accepted once and a token never used past its limit.

Writers run on separate engines in threads, as separate server processes would hold
separate connections.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from audit.core import merkle
from audit.store.log import EventLog
from consent.store import (
    Grant,
    add_grant,
    draw_status_index,
    find_grant,
    grant_count,
    mark_revoked,
    status_list_state,
)
from consent.store import open_engine as open_consent_engine
from coordinator.store import CoordinatorStore, QueryIssue
from fedscore.errors import AlreadyExists, FedscoreError, ResourceExhausted
from fedscore.runtime.budget import NANO, PrivacyLedger
from fedscore.runtime.db import open_engine

BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.integration))
WRITERS = 4
T = TypeVar("T")


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of one backend (PostgreSQL: a new database on a real server)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("postgres").fresh_database()
        return
    assert request.param == "sqlite"
    yield f"sqlite:///{tmp_path / 'store.db'}"


def _each_writer(
    database: str, opener: Callable[[str], Engine], work: Callable[[Engine, int], T]
) -> list[T]:
    """Run `work(engine, i)` for each writer i, concurrently, each on its own engine.

    The caller has made the tables first, as a party's tables exist before it serves.
    """
    engines = [opener(database) for _ in range(WRITERS)]
    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            return list(pool.map(work, engines, range(WRITERS)))
    finally:
        for engine in engines:
            engine.dispose()


# --- the audit log ------------------------------------------------------------------


def test_log_indexes_stay_dense_under_concurrent_writers(database: str) -> None:
    EventLog(open_engine(database), "party").engine.dispose()

    def append(engine: Engine, writer: int) -> list[int]:
        log = EventLog(engine, "party")
        return [log.append_now("contract", {"writer": writer, "n": n}).index for n in range(25)]

    taken = sorted(
        index for indexes in _each_writer(database, open_engine, append) for index in indexes
    )
    assert taken == list(range(WRITERS * 25))
    engine = open_engine(database)
    log = EventLog(engine, "party")
    entries = log.entries(0, log.size())  # re-hashes every stored entry
    assert merkle.root([entry.leaf_hash for entry in entries]) == log.root(log.size())
    engine.dispose()


def test_a_rolled_back_append_leaves_no_gap(database: str) -> None:
    engine = open_engine(database)
    log = EventLog(engine, "party")
    log.append_now("contract", {"n": 0})
    with engine.connect() as connection:
        log.append(connection, "contract", {"n": "rolled back"})
        connection.rollback()
    assert log.append_now("contract", {"n": 1}).index == 1
    assert [entry.fields for entry in log.stored_entries(0, log.size())] == [{"n": 0}, {"n": 1}]
    engine.dispose()


# --- the privacy ledger -------------------------------------------------------------


def _spend(ledger: PrivacyLedger, release_id: str) -> bool:
    with ledger.engine.begin() as connection:
        try:
            ledger.spend(
                connection,
                release_id=release_id,
                release="participation",
                dataset="agency-records",
                year=2026,
                total_epsilon=2.0,
                cost_nano=NANO // 2,
                now=1,
            )
        except FedscoreError as refused:
            assert refused.reason == "BUDGET_EXHAUSTED"
            return False
        return True


def test_the_ledger_never_overspends_and_refunds_once(database: str) -> None:
    PrivacyLedger(open_engine(database)).engine.dispose()

    def spend(engine: Engine, writer: int) -> list[bool]:
        ledger = PrivacyLedger(engine)
        return [_spend(ledger, f"w{writer}-{n}") for n in range(3)]

    granted = [ok for outcomes in _each_writer(database, open_engine, spend) for ok in outcomes]
    assert granted.count(True) == 4  # 2.0 of budget, 0.5 a release
    engine = open_engine(database)
    ledger = PrivacyLedger(engine)
    assert ledger.status("agency-records", 2026, 2.0).remaining_nano == 0
    first = ledger.spends("agency-records", 2026)[0].release_id
    with engine.begin() as connection:
        assert ledger.refund(connection, first) == NANO // 2
        assert ledger.refund(connection, first) == 0
    assert ledger.status("agency-records", 2026, 2.0).remaining_nano == NANO // 2
    engine.dispose()


# --- the consent registry -----------------------------------------------------------


def _grant(token_id: str, status_index: int) -> Grant:
    return Grant(
        token_id=token_id,
        citizen_key="c" * 64,
        purpose_id="ptt-fuel-discount",
        relying_party="ptt",
        not_before=1,
        not_after=2,
        max_uses=0,
        status_index=status_index,
        granted_at=1,
        revoked_at=None,
        token_envelope=b"token",
    )


def test_no_two_revocations_share_a_status_list_sequence(database: str) -> None:
    engine = open_consent_engine(database)
    with engine.begin() as connection:
        for writer in range(WRITERS):
            add_grant(connection, _grant(f"t{writer}", writer))
    engine.dispose()

    def revoke(engine: Engine, writer: int) -> tuple[int | None, int | None]:
        with engine.begin() as connection:
            first = mark_revoked(connection, f"t{writer}", now=10)
        with engine.begin() as connection:
            again = mark_revoked(connection, f"t{writer}", now=11)
        return first, again

    outcomes = _each_writer(database, open_consent_engine, revoke)
    assert sorted(first for first, _ in outcomes) == list(range(1, WRITERS + 1))  # type: ignore[type-var]
    assert [again for _, again in outcomes] == [None] * WRITERS
    engine = open_consent_engine(database)
    with engine.connect() as connection:
        assert status_list_state(connection).sequence == WRITERS
        stored = find_grant(connection, "t0")
        assert stored is not None and stored.revoked_at == 10
    engine.dispose()


def test_a_status_index_belongs_to_one_grant(database: str) -> None:
    engine = open_consent_engine(database)
    with engine.begin() as connection:
        add_grant(connection, _grant("first", 7))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        add_grant(connection, _grant("second", 7))
    with engine.connect() as connection:
        assert grant_count(connection) == 1
        assert find_grant(connection, "second") is None
        for _ in range(50):
            index, size = draw_status_index(connection)
            assert index != 7 and 0 <= index < size
    engine.dispose()


# --- the coordinator's nonces and token uses ----------------------------------------


def _issue(writer: int, nonce: bytes, max_uses: int) -> QueryIssue:
    return QueryIssue(
        query_id=f"q-{writer}-{nonce.hex()}",
        query_hash=b"\xab" * 32,
        nonce=nonce,
        relying_party="ptt",
        request_nonce_hash=hashlib.sha256(nonce).digest(),
        token_id="tok",
        max_uses=max_uses,
        purpose_id="ptt-fuel-discount",
        participants=("trc", "dsd"),
        year=2026,
        issued_at=1_760_000_000,
        expires_at=1_760_000_030,
    )


def test_a_nonce_is_accepted_once_and_a_token_never_past_its_limit(database: str) -> None:
    made = open_engine(database)
    CoordinatorStore(made, EventLog(made, "coordinator"))
    made.dispose()

    def issue(engine: Engine, writer: int) -> list[str]:
        store = CoordinatorStore(engine, EventLog(engine, "coordinator"))
        reasons = []
        for n in range(3):
            # Every writer sends the same three nonces; the token allows five uses.
            try:
                store.issue(_issue(writer, bytes([n]) * 16, max_uses=5))
                reasons.append("issued")
            except (AlreadyExists, ResourceExhausted) as refused:
                reasons.append(refused.reason)
        return reasons

    reasons = [r for outcome in _each_writer(database, open_engine, issue) for r in outcome]
    assert reasons.count("issued") == 3  # one per nonce
    assert reasons.count("REPLAYED_NONCE") == WRITERS * 3 - 3
    engine = open_engine(database)
    store = CoordinatorStore(engine, EventLog(engine, "coordinator"))
    assert store.uses("tok") == 3
    for n in range(3, 5):
        store.issue(_issue(0, bytes([n]) * 16, max_uses=5))
    with pytest.raises(ResourceExhausted) as refused:
        store.issue(_issue(0, bytes([9]) * 16, max_uses=5))
    assert refused.value.reason == "USE_LIMIT_REACHED"
    assert store.uses("tok") == 5 and store.log.size() == 5
    engine.dispose()
