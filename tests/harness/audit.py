"""A live local federation for the audit tests: registry, three nodes and the coordinator.

`live_federation` runs the consent registry, every agency node and the coordinator
in-process as real gRPC servers over mutual TLS; `Live` reaches each party's log,
database and AuditService, and can act as a coordinator that skips its own log.
`fedscore_cli` and `audit_verify` run the CLI as its own process; `tamper` edits a
party's database file as an attacker with disk access would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from audit.core.checkpoint import Checkpoint
from audit.core.contract import SERVICE_NAME
from audit.store.log import EventLog
from consent import server as consent_server
from coordinator import server as coordinator_server
from fedscore.apps import client
from fedscore.apps.federation import HELPER_ID, init_federation
from fedscore.protocol.questions import SignedContributionAnswerBatch
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.runtime.statuses import error_from_refusal
from fedscore.v1.audit_pb2 import GetCheckpointRequest, GetCheckpointResponse
from fedscore.v1.consent_pb2 import GrantResponse
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_SCORE,
    BatchedContributionQuery,
    ContributeBatchRequest,
    ContributeBatchResponse,
    ContributionAnswer,
    ContributionBatch,
    LogPromise,
    QuerySpec,
    ScoreQuery,
)
from helper import server as helper_server
from keys.envelope import sign_message
from keys.national_id import with_check_digit
from node import server as node_server

AGENCIES = ("trc", "dsd", "chuangpao")
ALICE = with_check_digit("110170012345")
BOB = with_check_digit("310040099887")
PURPOSE = "ptt-fuel-discount"
TIMEOUT = 10.0


@dataclass
class Live:
    root: Path
    registry: consent_server.Running
    nodes: dict[str, node_server.Running]
    coordinator: coordinator_server.Running
    parties: dict[str, Party]

    def party(self, party_id: str) -> Party:
        if party_id not in self.parties:
            self.parties[party_id] = load_party(self.root, party_id)
        return self.parties[party_id]

    def log(self, party_id: str) -> EventLog:
        if party_id == "consent-registry":
            return self.registry.registry.log
        if party_id == "coordinator":
            return self.coordinator.coordinator.store.log
        return self.nodes[party_id].node.log

    def db(self, party_id: str) -> Path:
        return self.root / "orgs" / party_id / "state.db"

    async def grant(self, citizen: str = ALICE, purpose: str = PURPOSE) -> GrantResponse:
        relying_party = "ptt" if purpose == PURPOSE else "citizen-portal"
        return await client.grant(self.party("citizen-portal"), citizen, purpose, relying_party, 30)

    async def score(self, grant: GrantResponse, purpose: str = PURPOSE) -> client.ScoreOutcome:
        asker = self.party("ptt" if purpose == PURPOSE else "citizen-portal")
        return await client.score(asker, grant.token, purpose)

    async def call(
        self, caller: str, party_id: str, method: str, request: Message, reply: Any
    ) -> Any:
        """Call `party_id`'s AuditService as `caller` (its own TLS identity)."""
        me = self.party(caller)
        endpoint = me.trust.participant(party_id).endpoint
        async with secure_channel(endpoint, me.tls, server_name=party_id) as channel:
            return await call_unary(channel, f"/{SERVICE_NAME}/{method}", request, reply, TIMEOUT)

    async def checkpoint(self, party_id: str) -> Checkpoint:
        response = await self.call(
            "regulator", party_id, "GetCheckpoint", GetCheckpointRequest(), GetCheckpointResponse
        )
        trust = self.party("regulator").trust
        role = trust.participant(party_id).role
        return Checkpoint.verify(response.checkpoint, trust.log_keys(role), party_id)

    def unlogged_query(self, token: Envelope, agency: str, **spec_changes: Any) -> Envelope:
        """A batch of one question, signed with the real coordinator key, that the coordinator
        never logged: what a coordinator that skips its log would send to `agency`."""
        coordinator = self.party("coordinator")
        now = int(time.time())
        # A request PTT really signed, which the coordinator captured instead of serving.
        request = ScoreQuery(
            relying_party="ptt",
            purpose_id=PURPOSE,
            token=token,
            nonce=secrets.token_bytes(16),
            issued_at=now,
        )
        spec = QuerySpec(
            query_id=secrets.token_hex(16),
            purpose_id=PURPOSE,
            policy_hash=coordinator.policy.content_hash,
            year=coordinator.policy.current_year(now),
            participants=list(AGENCIES),
            issued_at=now,
            expires_at=now + 30,
            coordinator=coordinator.id,
            request=sign_message(request, self.party("ptt").signing_key),
            kind=QUESTION_KIND_SCORE,
        )
        for name, value in spec_changes.items():
            del getattr(spec, name)[:]
            getattr(spec, name).extend(value)
        spec_bytes = spec.SerializeToString(deterministic=True)
        promise = LogPromise(
            origin=coordinator.id,
            index=0,
            leaf_hash=hashlib.sha256(b"never logged").digest(),
            query_hash=hashlib.sha256(spec_bytes).digest(),
            logged_at=now,
        )
        batch = ContributionBatch(
            batch_id=secrets.token_hex(16),
            agency_ids=[agency],
            issued_at=now,
            queries=[BatchedContributionQuery(spec=spec_bytes, log_promise=promise)],
        )
        return sign_message(batch, coordinator.signing_key)

    async def contribute_as_coordinator(self, agency: str, batch: Envelope) -> ContributionAnswer:
        """Send a batch of one as the coordinator; the node's answer, or its refusal raised."""
        coordinator = self.party("coordinator")
        endpoint = coordinator.trust.participant(agency).endpoint
        async with secure_channel(endpoint, coordinator.tls, server_name=agency) as channel:
            response = await call_unary(
                channel,
                "/fedscore.v1.NodeService/ContributeBatch",
                ContributeBatchRequest(batch=batch),
                ContributeBatchResponse,
                TIMEOUT,
            )
        keyring = coordinator.trust.agency_keys()
        answers = SignedContributionAnswerBatch.verify(response.answers, keyring).answers
        [outcome] = answers.outcomes
        if outcome.HasField("refusal"):
            raise error_from_refusal(outcome.refusal)
        return outcome.answer


def make_federation(tmp_path: Path) -> Path:
    root = tmp_path / "federation"
    init_federation(root, len(AGENCIES), fast_kdf=True)
    return root


@asynccontextmanager
async def live_federation(root: Path) -> AsyncIterator[Live]:
    """Every server of the federation, in-process: the regulator audits every one of them,
    the helper aggregator included (docs/adr/0019)."""
    registry = await consent_server.start(load_party(root, "consent-registry"))
    nodes: dict[str, node_server.Running] = {}
    coordinator = helper = None
    try:
        for agency in AGENCIES:
            nodes[agency] = await node_server.start(load_party(root, agency))
        helper = await helper_server.start(load_party(root, HELPER_ID))
        coordinator = await coordinator_server.start(load_party(root, "coordinator"))
        yield Live(root, registry, nodes, coordinator, {})
    finally:
        if coordinator is not None:
            await coordinator.stop()
        if helper is not None:
            await helper.stop()
        for node in nodes.values():
            await node.stop()
        await registry.stop()


def fedscore_cli(*args: str) -> tuple[int, dict[str, Any], str]:
    """Run `fedscore ...` as its own process; the JSON it printed last, if any."""
    done = subprocess.run(
        [sys.executable, "-m", "fedscore.apps.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    lines = done.stdout.strip().splitlines()
    data = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return done.returncode, data, done.stderr


async def audit_verify(root: Path) -> tuple[int, dict[str, Any], str]:
    """`fedscore audit verify --json` in a separate process, while the servers keep serving."""
    return await asyncio.to_thread(
        fedscore_cli, "audit", "verify", "--workdir", str(root), "--json"
    )


def tamper(db: Path, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    """Change a party's database file directly, as an attacker with disk access would."""
    with sqlite3.connect(db) as connection:
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, ())
            connection.execute(sql, params)
