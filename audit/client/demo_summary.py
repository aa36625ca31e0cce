"""What the demo reports about accountability: the regulator's audit and one citizen's history.

Runs the same code as `fedscore audit verify` (as the federation's regulator, with its
state in its own database) and `fedscore audit history` (as the citizen portal), against
the servers that are running now.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from audit.client.history import citizen_history, read_receipt
from audit.client.regulator_state import RegulatorState
from audit.client.verifier import audit_federation
from fedscore.apps.client import up_to_date
from fedscore.errors import NotFound
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import Party, federation_view, load_party
from fedscore.v1.trust_pb2 import Role


def party_with_role(workdir: Path, role: Role) -> Party:
    """The federation's (first) participant with `role`, loaded with its keys."""
    listed = federation_view(workdir).by_role(role)
    if not listed:
        raise NotFound(f"the federation has no {Role.Name(role)}", "UNKNOWN_PARTICIPANT")
    return load_party(workdir, listed[0].id)


async def audit_summary_async(workdir: Path, citizen_receipts: list[Path]) -> dict[str, Any]:
    regulator = await up_to_date(party_with_role(workdir, Role.ROLE_REGULATOR))
    engine = open_engine(regulator.db_url)
    try:
        report = await audit_federation(regulator, RegulatorState(engine))
    finally:
        engine.dispose()
    portal = await up_to_date(party_with_role(workdir, Role.ROLE_CITIZEN_PORTAL))
    receipts = [read_receipt(portal.trust, path)[0] for path in citizen_receipts]
    history = await citizen_history(portal, receipts)
    return {
        "audit": {
            "consistent": report.consistent,
            "entries": report.entries,
            "anomalies": len(report.anomalies),
        },
        "history_entries": len(history.entries),
    }


def audit_summary(workdir: Path, citizen_receipts: list[Path]) -> dict[str, Any]:
    """{"audit": {"consistent", "entries", "anomalies"}, "history_entries"}; call without a
    running event loop, while the federation's servers are up."""
    return asyncio.run(audit_summary_async(Path(workdir), [Path(p) for p in citizen_receipts]))
