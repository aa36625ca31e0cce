"""What each kind of server must have to answer correctly (`fedscore.runtime.readiness`).

Every server: its database answers, its schema is not behind its migrations, and the
party is active under a registry that has not expired (`LiveTrust.require_active`).
An agency node and the coordinator also need a consent status list fresher than its
time-to-live: without one they refuse every question (fail closed), so they are not
ready. Each check reads the server's current state when it runs (a new registry version
swaps objects whole), never a copy taken at start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from fedscore.errors import FedscoreError
from fedscore.protocol.status_list import RevocationState
from fedscore.runtime.live_trust import LiveTrust
from fedscore.runtime.readiness import Check
from fedscore.runtime.schema import state


def database(engine: Engine) -> Check:
    def check() -> str | None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None

    return check


def schema(engine: Engine, kind: str) -> Check:
    def check() -> str | None:
        found = state(engine, kind)
        if found.pending:
            return f"migration pending (at {found.current or 'none'}, the code needs {found.head})"
        return None

    return check


def trust(live: LiveTrust) -> Check:
    def check() -> str | None:
        try:
            live.require_active()
        except FedscoreError as error:
            return f"{error.reason}: {error.message}"
        return None

    return check


def status_list(revocations: Callable[[], RevocationState]) -> Check:
    def check() -> str | None:
        fresh_until = revocations().fresh_until()
        if int(time.time()) > fresh_until:
            if fresh_until <= 0:
                return "STATUS_LIST_STALE: no consent status list has arrived yet"
            return f"STATUS_LIST_STALE: the consent status list expired at {fresh_until}"
        return None

    return check


def checks_for(kind: str, running: Any) -> dict[str, Check]:
    """The checks of a started server of `kind` (a node's, the coordinator's, the registry's)."""
    if kind == "agency":
        engine = running.node.store.engine
        found = {"status_list": status_list(lambda: running.node.trust.revocations)}
    elif kind == "coordinator":
        engine = running.engine
        found = {"status_list": status_list(lambda: running.coordinator.revocations)}
    else:
        engine = running.engine
        found = {}
    return {
        "database": database(engine),
        "schema": schema(engine, kind),
        "trust": trust(running.live),
        **found,
    }
