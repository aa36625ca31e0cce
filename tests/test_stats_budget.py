"""The privacy-budget ledger on real SQLite files: exhaustion, restart, concurrency.

The concurrency tests race real check-and-spend transactions against one database file,
from threads and from separate processes, each with its own engine; whatever the
interleaving, the spends that succeed never add up to more than the total.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from fedscore.errors import FedscoreError
from fedscore.runtime.budget import (
    NANO,
    PRIVACY_SPEND,
    PrivacyLedger,
    nano_down,
    nano_up,
)
from fedscore.runtime.db import open_engine

DATASET = "agency-records"
YEAR = 2026


def _spend(ledger: PrivacyLedger, release_id: str, epsilon: float, total: float) -> bool:
    """One release's spend in its own transaction; False when the budget refuses."""
    with ledger.engine.begin() as connection:
        try:
            ledger.spend(
                connection,
                release_id=release_id,
                release="participation",
                dataset=DATASET,
                year=YEAR,
                total_epsilon=total,
                cost_nano=nano_up(epsilon),
                now=1,
            )
        except FedscoreError as error:
            assert error.reason == "BUDGET_EXHAUSTED"
            return False
        return True


def _spend_rows(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        count, total = connection.execute(
            select(func.count(), func.coalesce(func.sum(PRIVACY_SPEND.c.spent_nano), 0))
        ).one()
    return int(count), int(total)


def test_rounding_only_makes_the_ledger_stricter() -> None:
    assert nano_up(1.0) == nano_down(1.0) == NANO
    assert nano_up(0.1) == 100_000_001  # 0.1 is slightly above 1/10 in binary
    assert nano_down(0.1) == 100_000_000
    assert nano_up(1e-12) == 1
    assert nano_down(10.0) == 10 * NANO


def test_releases_spend_until_refused_and_a_refusal_changes_nothing(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'coordinator.db'}")
    ledger = PrivacyLedger(engine)
    outcomes = [_spend(ledger, f"r{i}", 1.0, total=3.5) for i in range(5)]
    assert outcomes == [True, True, True, False, False]
    status = ledger.status(DATASET, YEAR, 3.5)
    assert (status.spent_nano, status.remaining_nano) == (3 * NANO, NANO // 2)
    assert status.to_json() == {"total": 3.5, "spent": 3.0, "remaining": 0.5}
    assert _spend_rows(engine) == (3, 3 * NANO)
    with pytest.raises(FedscoreError) as refused:
        ledger.check(DATASET, YEAR, 3.5, nano_up(1.0))
    assert refused.value.reason == "BUDGET_EXHAUSTED"
    assert "0.5 of 3.5 remains" in refused.value.message
    # Half an epsilon still fits; other years and datasets are untouched.
    assert _spend(ledger, "r-half", 0.5, total=3.5)
    assert ledger.status(DATASET, YEAR, 3.5).remaining_nano == 0
    assert ledger.status(DATASET, YEAR + 1, 3.5).spent_nano == 0
    assert ledger.status("score-query-log", YEAR, 3.5).spent_nano == 0
    engine.dispose()


def test_a_refund_gives_back_exactly_the_reservation_once(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'coordinator.db'}")
    ledger = PrivacyLedger(engine)
    assert _spend(ledger, "kept", 1.0, total=2.0)
    assert _spend(ledger, "reserved", 1.0, total=2.0)
    assert not _spend(ledger, "refused-while-reserved", 0.5, total=2.0)
    with engine.begin() as connection:
        assert ledger.refund(connection, "reserved") == NANO
    with engine.begin() as connection:
        # Twice, or for a release that never spent: nothing more is given back.
        assert ledger.refund(connection, "reserved") == 0
        assert ledger.refund(connection, "never-spent") == 0
    assert ledger.status(DATASET, YEAR, 2.0).spent_nano == NANO
    assert [spend.release_id for spend in ledger.spends(DATASET, YEAR)] == ["kept"]
    assert _spend_rows(engine) == (1, NANO)
    # What was given back can be spent again, and no more than that.
    assert _spend(ledger, "after-refund", 1.0, total=2.0)
    assert not _spend(ledger, "one-too-many", 0.001, total=2.0)
    engine.dispose()


def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    first = open_engine(url)
    assert _spend(PrivacyLedger(first), "before-restart", 2.0, total=10.0)
    first.dispose()
    second = open_engine(url)
    ledger = PrivacyLedger(second)
    assert ledger.status(DATASET, YEAR, 10.0).spent_nano == 2 * NANO
    assert [spend.release_id for spend in ledger.spends(DATASET, YEAR)] == ["before-restart"]
    assert _spend(ledger, "after-restart", 8.0, total=10.0)
    assert not _spend(ledger, "one-too-many", 0.001, total=10.0)
    second.dispose()


def test_concurrent_threads_cannot_overspend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    barrier = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        engine = open_engine(url)
        ledger = PrivacyLedger(engine)
        barrier.wait()
        mine = [_spend(ledger, f"t{n}-{i}", 1.0, total=10.0) for i in range(4)]
        with lock:
            results.extend(mine)
        engine.dispose()

    PrivacyLedger(open_engine(url))  # create the tables once, before the race
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 32
    assert results.count(True) == 10
    engine = open_engine(url)
    assert PrivacyLedger(engine).status(DATASET, YEAR, 10.0).spent_nano == 10 * NANO
    assert _spend_rows(engine) == (10, 10 * NANO)


def _process_worker(url: str, name: str, start: Any) -> int:
    engine = open_engine(url)
    ledger = PrivacyLedger(engine)
    start.wait()
    granted = sum(_spend(ledger, f"{name}-{i}", 0.25, total=5.0) for i in range(12))
    engine.dispose()
    return granted


@pytest.mark.integration
def test_concurrent_processes_cannot_overspend(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    PrivacyLedger(open_engine(url))
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(4) as pool:
            pending = [pool.apply_async(_process_worker, (url, f"p{n}", start)) for n in range(4)]
            start.set()
            granted = [result.get(timeout=120) for result in pending]
    # 48 attempts of 0.25 against a total of 5.0: exactly 20 may succeed.
    assert sum(granted) == 20
    engine = open_engine(url)
    assert PrivacyLedger(engine).status(DATASET, YEAR, 5.0).spent_nano == 5 * NANO
    assert _spend_rows(engine) == (20, 5 * NANO)
