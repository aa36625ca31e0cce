"""Revocation propagation: from the citizen's Revoke to "every checking party refuses".

Method, on a running federation (separate processes, mutual TLS):
1. Grant a fresh token and score with it once (it works).
2. t0; the citizen portal calls ConsentService.Revoke (the registry commits, pushes a
   signed notice to the coordinator and every node, and answers after the push).
3. From t0 on, two things are polled until both hold, every 2 ms:
   - the coordinator: a new signed Score request with the token is refused with
     CONSENT_REVOKED (a live, end-to-end refusal);
   - every node: its own database's audit log holds "revocation_received" for the token.
     A node writes that entry right after its RevocationState applied the verified
     notice, so from then on it refuses the token (node/service.py, node/checks.py).
     Asking a node directly would need a query the coordinator logged and promised, and
     a revoked token never gets that far, so the node's own log is the faithful witness.
`revocation_ms` is the time from t0 until the last of these held. The status list (pull)
is the fallback for a party that missed the push; its TTL bounds the worst case and is
reported as `status_list_ttl_s`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from fedscore.apps import client
from fedscore.errors import FedscoreError
from fedscore.runtime.party import load_party
from fedscore.runtime.status_follower import fetch_from_registry
from fedscore.v1.consent_pb2 import ConsentToken, StatusList
from fedscore.v1.envelope_pb2 import Envelope

POLL_SECONDS = 0.002
GIVE_UP_SECONDS = 30.0


def _node_knows(db_path: Path, token_id: str) -> bool:
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        row = connection.execute(
            "SELECT 1 FROM audit_entry WHERE kind = 'revocation_received' AND body LIKE ?",
            (f'%"{token_id}"%',),
        ).fetchone()
        return row is not None
    finally:
        connection.close()


async def _coordinator_refuses(portal: Any, token: Envelope) -> str:
    try:
        await client.score(portal, token, "self-view")
    except FedscoreError as error:
        return error.reason
    return ""


async def measure_revocation(workdir: Path, agencies: list[str], citizen: str) -> dict[str, Any]:
    portal = load_party(workdir, "citizen-portal")
    granted = await client.grant(portal, citizen, "self-view", "citizen-portal", 1)
    token_id = ConsentToken.FromString(granted.token.payload).token_id
    await client.score(portal, granted.token, "self-view")  # works before the revocation
    databases = {
        a: Path(load_party(workdir, a).db_url.removeprefix("sqlite:///")) for a in agencies
    }

    started = time.perf_counter()
    revoke = asyncio.ensure_future(client.revoke(portal, citizen, token_id))
    done_at: dict[str, float] = {}
    reason = ""
    while len(done_at) < len(agencies) + 1:
        if time.perf_counter() - started > GIVE_UP_SECONDS:
            break
        if "coordinator" not in done_at:
            reason = await _coordinator_refuses(portal, granted.token)
            if reason == "CONSENT_REVOKED":
                done_at["coordinator"] = time.perf_counter()
        for agency, path in databases.items():
            if agency not in done_at and _node_knows(path, token_id):
                done_at[agency] = time.perf_counter()
        await asyncio.sleep(POLL_SECONDS)
    await revoke
    revoke_returned = time.perf_counter()  # upper bound: awaited after the polling loop
    complete = len(done_at) == len(agencies) + 1
    async with client.channel_to(portal, client.REGISTRY_ID) as channel:
        status = await fetch_from_registry(channel)()
    ttl = StatusList.FromString(status.payload).ttl_seconds
    return {
        "scenario": "revocation_propagation",
        "agencies": len(agencies),
        "revocation_ms": round((max(done_at.values()) - started) * 1000, 1) if complete else None,
        "coordinator_refused_ms": round((done_at["coordinator"] - started) * 1000, 1)
        if "coordinator" in done_at
        else None,
        "last_node_knew_ms": round((max(done_at[a] for a in agencies) - started) * 1000, 1)
        if all(a in done_at for a in agencies)
        else None,
        "revoke_call_done_by_ms": round((revoke_returned - started) * 1000, 1),
        "refusal_reason": reason,
        "status_list_ttl_s": ttl,
        "method": "Revoke -> coordinator refuses Score (CONSENT_REVOKED) and every node's "
        "log shows revocation_received",
    }
