"""The AuditService on real servers (registry, nodes, coordinator) over mutual TLS.

A local federation runs in-process: the consent registry, three agency nodes and the
coordinator, each serving its AuditService. The regulator fetches checkpoints, entries
and proofs and checks them; other callers are refused. The federation is
tests/harness/audit.py's, shared with tests/test_audit_verify.py and test_audit_history.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from harness.audit import AGENCIES, BOB, PURPOSE, live_federation

from audit.core import merkle
from audit.core.entries import leaf_data
from fedscore.errors import Code, FedscoreError
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
from fedscore.v1.consent_pb2 import ConsentReceipt
from fedscore.v1.query_pb2 import ContributionBatch, QuerySpec
from keys.envelope import sign_message

pytestmark = pytest.mark.integration

SERVERS = ("consent-registry", *AGENCIES, "coordinator")


def leaf_of(party: str, entry: Any) -> bytes:
    return merkle.leaf_hash(leaf_data(party, entry.index, entry.kind, entry.body, entry.logged_at))


# --- the regulator's view -------------------------------------------------------------


@pytest.mark.parametrize("party_id", ["consent-registry", "trc", "coordinator"])
def test_regulator_gets_a_checkpoint_entries_and_proofs_that_verify(
    audit_federation: Path, party_id: str
) -> None:
    root = audit_federation

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


def test_only_the_regulator_reads_logs_and_only_the_portal_reads_history(
    audit_federation: Path,
) -> None:
    root = audit_federation

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


def test_a_query_a_node_refused_is_in_its_log_with_the_reason(audit_federation: Path) -> None:
    root = audit_federation

    async def scenario() -> None:
        async with live_federation(root) as live:
            grant = await live.grant()
            subset = live.unlogged_query(grant.token, "trc", participants=["trc", "dsd"])
            with pytest.raises(FedscoreError) as refused:
                await live.contribute_as_coordinator("trc", subset)
            assert refused.value.reason == "PARTICIPANT_SET_MISMATCH"
            query_id = QuerySpec.FromString(
                ContributionBatch.FromString(subset.payload).queries[0].spec
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


def test_every_party_signs_a_last_checkpoint_when_it_stops(audit_federation: Path) -> None:
    root = audit_federation

    async def scenario() -> dict[str, int]:
        async with live_federation(root) as live:
            await live.score(await live.grant())
            return {party: live.log(party).size() for party in SERVERS}

    sizes = asyncio.run(scenario())
    for party, size in sizes.items():
        with sqlite3.connect(root / "orgs" / party / "state.db") as connection:
            (signed,) = connection.execute("select max(size) from audit_checkpoint").fetchone()
        assert signed == size, party
