"""What every test shares: the harnesses' fixtures, and the guard of the unit-only run.

Fixtures (the helpers behind them are in tests/harness/; no test module imports another):

- `audit_federation`: a new federation folder of three agencies, no records
  (tests/harness/audit.py; run it with `live_federation`);
- `coordinator_federation`: one federation folder per test module whose nodes hold the
  known records of tests/harness/coordinator.py (run it with `running`);
- `new_stats_federation`: builds a federation with the demo generator's records under
  this test's tmp_path (tests/harness/stats.py; run it with `servers`).

The guard: `make test-unit` runs `pytest -m "not integration"`, so every test that starts
a server or another process must be marked `integration`. While a test that is not so
marked runs (its setup, including fixtures of any scope it is the first to need, its body
and its teardown), starting a gRPC server (`grpc.aio.server`, `grpc.server`, and so
`fedscore.runtime.rpc.start_server` and every party's server) or a process
(`subprocess.Popen` and all that uses it: `subprocess.run`,
`asyncio.create_subprocess_exec`; `os.system`, `os.fork`, `os.posix_spawn`,
`multiprocessing`) fails the test, naming the marker. It is a guard, not a mock: it only
refuses, and a marked test calls the real functions.

The guard wraps those entry points once for the whole session (restored at the end)
rather than per test with `monkeypatch`: a module-scoped fixture is set up before any
function-scoped one, and a module imported during a test with `from ... import ...`
would keep a per-test replacement after the test; a wrapper that asks which test is
running has neither hole. The harnesses are imported by the fixtures that use them, so a
harness that does not import fails its own tests, not the collection of the whole suite.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio
import pytest

if TYPE_CHECKING:
    from harness.stats import NewStatsFederation, StatsFederation

INTEGRATION = "integration"


# --- the guard ------------------------------------------------------------------------


class _Guard:
    """Which test is running, if it is one that may start neither server nor process."""

    unit_test: str | None = None

    @classmethod
    def check(cls, what: str) -> None:
        if cls.unit_test is not None:
            _refuse(cls.unit_test, what)


def _refuse(test: str, what: str) -> NoReturn:
    pytest.fail(
        f"{test} {what}, but is not marked {INTEGRATION!r}: mark it "
        f"(@pytest.mark.{INTEGRATION}, or pytestmark = pytest.mark.{INTEGRATION} for its "
        f'module) so that the unit-only run, make test-unit (pytest -m "not {INTEGRATION}"), '
        "leaves it out"
    )


class _GuardedPopen(subprocess.Popen):  # type: ignore[type-arg]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Guard.check("starts a subprocess")
        super().__init__(*args, **kwargs)


def _guarded(what: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _Guard.check(what)
        return original(*args, **kwargs)

    guarded.__wrapped__ = original  # type: ignore[attr-defined]
    return guarded


# (owner, attribute, what starting it does)
_ENTRY_POINTS: list[tuple[Any, str, str]] = [
    (grpc.aio, "server", "starts a gRPC server"),
    (grpc, "server", "starts a gRPC server"),
    (os, "system", "starts a subprocess"),
    (os, "fork", "starts a subprocess"),
    (os, "forkpty", "starts a subprocess"),
    (os, "posix_spawn", "starts a subprocess"),
    (os, "posix_spawnp", "starts a subprocess"),
    (multiprocessing.process.BaseProcess, "start", "starts a subprocess"),
]
_originals: list[tuple[Any, str, Any]] = []


def pytest_configure(config: pytest.Config) -> None:
    _originals.append((subprocess, "Popen", subprocess.Popen))
    subprocess.Popen = _GuardedPopen  # type: ignore[misc]
    for owner, name, what in _ENTRY_POINTS:
        original = getattr(owner, name, None)
        if original is None:  # os.fork and the like, where the platform has none
            continue
        _originals.append((owner, name, original))
        setattr(owner, name, _guarded(what, original))


def pytest_unconfigure(config: pytest.Config) -> None:
    while _originals:
        owner, name, original = _originals.pop()
        setattr(owner, name, original)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    _Guard.unit_test = None if item.get_closest_marker(INTEGRATION) else item.nodeid
    try:
        return (yield)
    finally:
        _Guard.unit_test = None


# --- the harnesses' fixtures ----------------------------------------------------------


@pytest.fixture
def audit_federation(tmp_path: Path) -> Path:
    """A new federation folder of the audit harness's three agencies, holding no records."""
    from harness.audit import make_federation

    return make_federation(tmp_path)


@pytest.fixture(scope="module")
def coordinator_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation folder whose nodes hold tests/harness/coordinator.py's known records."""
    from harness.coordinator import ingest_known_records

    return ingest_known_records(tmp_path_factory.mktemp("coordinator") / "federation")


@pytest.fixture
def new_stats_federation(tmp_path: Path) -> NewStatsFederation:
    """`new_stats_federation(citizens=..., seed=..., change=...)`: demo records, ingested."""
    from harness.stats import stats_federation

    def make(**options: Any) -> StatsFederation:
        return stats_federation(tmp_path / "federation", **options)

    return make


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server for the session (tests/harness/postgres.py): the one named
    by FEDSCORE_TEST_POSTGRES_URL, or one this run starts and stops. Its tests are marked
    `integration` (it is a process of its own)."""
    from harness.postgres import postgres_server, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(f"PostgreSQL is needed for this test and cannot be had: {reason}")
    with postgres_server() as server:
        yield server
        # Stopping the session's server (pg_ctl) is not the doing of whichever test ran last.
        _Guard.unit_test = None
