"""The AuditService on real servers (registry, nodes, coordinator) over mutual TLS.

A local federation runs in-process: the consent registry, three agency nodes and the
coordinator, each serving its AuditService. The regulator fetches checkpoints, entries
and proofs and checks them; other callers are refused. `Live` and its helpers are reused
by tests/test_audit_verify.py and tests/test_audit_history.py.
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

import pytest
from google.protobuf.message import Message

from audit.core import merkle
from audit.core.checkpoint import Checkpoint
from audit.core.contract import SERVICE_NAME
from audit.core.entries import leaf_data
from audit.store.log import EventLog
from consent import server as consent_server
from coordinator import server as coordinator_server
from fedscore.apps import client
from fedscore.apps.federation import init_federation
from fedscore.errors import Code, FedscoreError
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.audit_pb2 import (
    GetAccessHistoryRequest,
    GetAccessHistoryResponse,
    GetCheckpointRequest,
    GetCheckpointResponse,
    GetConsistencyProofRequest,
    GetConsistencyProofResponse,
    GetEntriesRequest,
    GetEntriesResponse,
    GetInclusionProofRequest,
    GetInclusionProofResponse,
)
from fedscore.v1.consent_pb2 import ConsentReceipt, ConsentToken, GrantResponse
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_SCORE,
    ContributeRequest,
    ContributeResponse,
    ContributionQuery,
    LogPromise,
    QuerySpec,
    ScoreQuery,
)
from keys.envelope import sign_message
from keys.national_id import with_check_digit
from node import server as node_server

pytestmark = pytest.mark.integration

AGENCIES = ("trc", "dsd", "chuangpao")
SERVERS = ("consent-registry", *AGENCIES, "coordinator")
ALICE = with_check_digit("110170012345")
BOB = with_check_digit("310040099887")
PURPOSE = "ptt-fuel-discount"
TIMEOUT = 10.0


# --- the live federation ------------------------------------------------------------


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
        return self.root / "parties" / party_id / "state.db"

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
        return Checkpoint.verify(response.checkpoint, trust.keyring(role), party_id)

    def unlogged_query(self, token: Envelope, agency: str, **spec_changes: Any) -> Envelope:
        """A ContributionQuery signed with the real coordinator key that the coordinator never
        logged: what a coordinator that skips its log would send."""
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
        sealed = ConsentToken.FromString(token.payload).sealed_subjects
        query = ContributionQuery(
            spec=spec_bytes,
            agency_id=agency,
            sealed_subject=next(s.blob for s in sealed if s.agency_id == agency),
            log_promise=sign_message(promise, coordinator.signing_key),
        )
        return sign_message(query, coordinator.signing_key)

    async def contribute_as_coordinator(self, agency: str, query: Envelope) -> ContributeResponse:
        coordinator = self.party("coordinator")
        endpoint = coordinator.trust.participant(agency).endpoint
        async with secure_channel(endpoint, coordinator.tls, server_name=agency) as channel:
            return await call_unary(
                channel,
                "/fedscore.v1.NodeService/Contribute",
                ContributeRequest(query=query),
                ContributeResponse,
                TIMEOUT,
            )


def make_federation(tmp_path: Path) -> Path:
    root = tmp_path / "federation"
    init_federation(root, len(AGENCIES), fast_kdf=True)
    return root


@asynccontextmanager
async def live_federation(root: Path) -> AsyncIterator[Live]:
    registry = await consent_server.start(load_party(root, "consent-registry"))
    nodes: dict[str, node_server.Running] = {}
    coordinator = None
    try:
        for agency in AGENCIES:
            nodes[agency] = await node_server.start(load_party(root, agency))
        coordinator = await coordinator_server.start(load_party(root, "coordinator"))
        yield Live(root, registry, nodes, coordinator, {})
    finally:
        if coordinator is not None:
            await coordinator.stop()
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


def leaf_of(party: str, entry: Any) -> bytes:
    return merkle.leaf_hash(leaf_data(party, entry.index, entry.kind, entry.body, entry.logged_at))


# --- the regulator's view -------------------------------------------------------------


@pytest.mark.parametrize("party_id", ["consent-registry", "trc", "coordinator"])
def test_regulator_gets_a_checkpoint_entries_and_proofs_that_verify(
    tmp_path: Path, party_id: str
) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            grant = await live.grant()
            await live.score(grant)
            first = await live.checkpoint(party_id)
            assert first.size == live.log(party_id).size() > 0
            assert first.root == live.log(party_id).root()

            page = await live.call(
                "regulator",
                party_id,
                "GetEntries",
                GetEntriesRequest(start=0, end=first.size),
                GetEntriesResponse,
            )
            assert [e.index for e in page.entries] == list(range(first.size))
            assert page.log_size == first.size
            leaves = [leaf_of(party_id, e) for e in page.entries]
            assert leaves == [bytes(e.leaf_hash) for e in page.entries]
            assert merkle.root(leaves) == first.root
            for index in range(first.size):
                proof = await live.call(
                    "regulator",
                    party_id,
                    "GetInclusionProof",
                    GetInclusionProofRequest(index=index, tree_size=first.size),
                    GetInclusionProofResponse,
                )
                merkle.verify_inclusion(
                    leaves[index], index, first.size, list(proof.proof), first.root
                )

            await live.score(grant)
            await live.score(await live.grant(BOB))
            second = await live.checkpoint(party_id)
            assert second.size > first.size and second.timestamp >= first.timestamp
            proof = await live.call(
                "regulator",
                party_id,
                "GetConsistencyProof",
                GetConsistencyProofRequest(first_size=first.size, second_size=second.size),
                GetConsistencyProofResponse,
            )
            merkle.verify_consistency(
                first.size, second.size, first.root, second.root, list(proof.proof)
            )

    asyncio.run(scenario())


REGULATOR_METHODS = [
    ("GetCheckpoint", GetCheckpointRequest(), GetCheckpointResponse),
    ("GetEntries", GetEntriesRequest(start=0, end=10), GetEntriesResponse),
    (
        "GetInclusionProof",
        GetInclusionProofRequest(index=0, tree_size=1),
        GetInclusionProofResponse,
    ),
    (
        "GetConsistencyProof",
        GetConsistencyProofRequest(first_size=0, second_size=1),
        GetConsistencyProofResponse,
    ),
]


def test_only_the_regulator_reads_logs_and_only_the_portal_reads_history(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            grant = await live.grant()
            await live.score(grant)
            for caller in ("ptt", "citizen-portal", "trc", "coordinator", "consent-registry"):
                for method, request, reply in REGULATOR_METHODS:
                    with pytest.raises(FedscoreError) as refused:
                        await live.call(caller, "dsd", method, request, reply)
                    assert refused.value.code == Code.PERMISSION_DENIED
                    assert refused.value.reason == "CALLER_NOT_ALLOWED"
            history = GetAccessHistoryRequest(receipt=grant.receipt)
            for caller in ("regulator", "ptt", "trc"):
                with pytest.raises(FedscoreError) as refused:
                    await live.call(
                        caller, "coordinator", "GetAccessHistory", history, GetAccessHistoryResponse
                    )
                assert refused.value.reason == "CALLER_NOT_ALLOWED"
            # The portal itself gets history, but only for a receipt the registry signed.
            forged = sign_message(
                ConsentReceipt.FromString(grant.receipt.payload), live.party("ptt").signing_key
            )
            with pytest.raises(FedscoreError) as refused:
                await live.call(
                    "citizen-portal",
                    "coordinator",
                    "GetAccessHistory",
                    GetAccessHistoryRequest(receipt=forged),
                    GetAccessHistoryResponse,
                )
            assert refused.value.code == Code.UNAUTHENTICATED
            answer = await live.call(
                "citizen-portal",
                "coordinator",
                "GetAccessHistory",
                history,
                GetAccessHistoryResponse,
            )
            assert [r.entry.kind for r in answer.records] == ["query_issued", "result_released"]

    asyncio.run(scenario())


def test_a_query_a_node_refused_is_in_its_log_with_the_reason(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            grant = await live.grant()
            subset = live.unlogged_query(grant.token, "trc", participants=["trc", "dsd"])
            with pytest.raises(FedscoreError) as refused:
                await live.contribute_as_coordinator("trc", subset)
            assert refused.value.reason == "PARTICIPANT_SET_MISMATCH"
            query_id = QuerySpec.FromString(
                ContributionQuery.FromString(subset.payload).spec
            ).query_id

            # What the regulator is served, proven against trc's signed checkpoint.
            checkpoint = await live.checkpoint("trc")
            page = await live.call(
                "regulator",
                "trc",
                "GetEntries",
                GetEntriesRequest(start=0, end=checkpoint.size),
                GetEntriesResponse,
            )
            refusals = [e for e in page.entries if e.kind == "query_refused"]
            assert len(refusals) == 1
            entry = refusals[0]
            assert json.loads(entry.body) == {
                "reason": "PARTICIPANT_SET_MISMATCH",
                "query_id": query_id,
                "purpose": PURPOSE,
            }
            proof = await live.call(
                "regulator",
                "trc",
                "GetInclusionProof",
                GetInclusionProofRequest(index=entry.index, tree_size=checkpoint.size),
                GetInclusionProofResponse,
            )
            merkle.verify_inclusion(
                leaf_of("trc", entry),
                entry.index,
                checkpoint.size,
                list(proof.proof),
                checkpoint.root,
            )

    asyncio.run(scenario())


def test_every_party_signs_a_last_checkpoint_when_it_stops(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> dict[str, int]:
        async with live_federation(root) as live:
            await live.score(await live.grant())
            return {party: live.log(party).size() for party in SERVERS}

    sizes = asyncio.run(scenario())
    for party, size in sizes.items():
        with sqlite3.connect(root / "parties" / party / "state.db") as connection:
            (signed,) = connection.execute("select max(size) from audit_checkpoint").fetchone()
        assert signed == size, party
