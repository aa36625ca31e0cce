"""The agency node's score path: real nodes answering over mutual TLS.

A whole local federation in tmp_path (tests/harness/node.py): records imported into each
agency node with `node.ingest.ingest_file`, the real consent registry (tokens, status
list, revocation pushes) and every agency node as real gRPC servers on 127.0.0.1, and
questions signed with the real coordinator key. Every question travels in a signed
`ContributionBatch` (`NodeService.ContributeBatch`); a lone question is a batch of one.
The plain checks are tested without a server in tests/test_node_checks.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import pytest
from harness.node import (
    ALICE,
    BOB,
    EXPECTED,
    PROMISE_INDEX,
    PROMISE_LEAF,
    PURPOSE,
    LiveFederation,
    assert_clean_log,
    live_federation,
    make_federation,
    spec_bytes,
)

from consent import server as consent_server
from fedscore.errors import FedscoreError
from fedscore.v1.consent_pb2 import ConsentToken
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ContributionAnswer, QuerySpec, ScoreQuery
from keys.masks import MODULUS

pytestmark = pytest.mark.integration


async def _ask_everyone(
    live: LiveFederation, token: Envelope
) -> tuple[QuerySpec, dict[str, ContributionAnswer]]:
    """The same question to every node, each as a batch of one."""
    spec = live.spec(token)
    answers = await asyncio.gather(*(live.contribute(a, spec) for a in live.agencies))
    return spec, dict(zip(live.agencies, answers, strict=True))


def test_masked_answers_of_all_nodes_sum_to_the_total(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            token = await live.grant(ALICE)
            before = {a: (live.seen_count(a), live.log_size(a)) for a in live.agencies}
            spec, answers = await _ask_everyone(live, token)
            spec_hash = hashlib.sha256(spec_bytes(spec)).digest()
            for agency, answer in answers.items():
                assert answer.query_id == spec.query_id
                assert answer.agency_id == agency
                assert answer.query_hash == spec_hash
            total = sum(a.masked_value for a in answers.values()) % MODULUS
            assert total == sum(EXPECTED.values()) == 220

            token_id = ConsentToken.FromString(token.payload).token_id
            for agency in live.agencies:
                seen_before, log_before = before[agency]
                assert live.seen_count(agency) == seen_before + 1
                new = live.log_entries(agency, log_before)
                assert [e.kind for e in new] == ["query_answered"]
                request = ScoreQuery.FromString(spec.request.payload)
                assert new[0].fields == {
                    "query_id": spec.query_id,
                    "query_hash": spec_hash.hex(),
                    "kind": "score-batch-item",
                    "purpose": PURPOSE,
                    "token_id": token_id,
                    "relying_party": "ptt",
                    "request_nonce_hash": hashlib.sha256(request.nonce).hexdigest(),
                    "year": spec.year,
                    "coordinator": "coordinator",
                    "promise_index": PROMISE_INDEX,
                    "promise_leaf_hash": PROMISE_LEAF.hex(),
                }
                assert_clean_log(live.log_entries(agency))

    asyncio.run(scenario())


def test_every_node_answers_zero_for_a_person_it_holds_nothing_about(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            token = await live.grant(BOB)
            _, answers = await _ask_everyone(live, token)
            assert sum(a.masked_value for a in answers.values()) % MODULUS == 0
            # Each node still sent a masked value, indistinguishable from one with records.
            assert all(a.masked_value != 0 for a in answers.values())

    asyncio.run(scenario())


def test_a_token_used_again_is_opened_once_per_node_and_answered_alike(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            alice, bob = await live.grant(ALICE), await live.grant(BOB)
            totals = []
            for token in (alice, bob, alice, alice, bob):
                _, answers = await _ask_everyone(live, token)
                totals.append(sum(a.masked_value for a in answers.values()) % MODULUS)
            assert totals == [220, 0, 220, 220, 0]
            for agency in live.agencies:
                opened = live.nodes[agency].node.opened_subjects
                assert (len(opened), opened.misses, opened.hits) == (2, 2, 3)
                # What is remembered is the node's pseudonym, never the national ID.
                for value in opened.values():
                    assert re.fullmatch("[0-9a-f]{64}", value)

    asyncio.run(scenario())


def test_an_answer_never_equals_the_contribution(tmp_path: Path) -> None:
    """Over a sample of queries, no node ever sends its contribution in the clear."""
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            token = await live.grant(ALICE)
            seen: dict[str, set[int]] = {a: set() for a in live.agencies}
            for _ in range(8):
                _, answers = await _ask_everyone(live, token)
                assert sum(a.masked_value for a in answers.values()) % MODULUS == 220
                for agency, answer in answers.items():
                    assert answer.masked_value != EXPECTED[agency]
                    seen[agency].add(answer.masked_value)
            # A fresh query id gives a fresh mask: answers cannot be subtracted.
            assert all(len(values) == 8 for values in seen.values())

    asyncio.run(scenario())


def test_a_node_refuses_until_it_holds_a_status_list(tmp_path: Path) -> None:
    """Fail closed: with the registry down there is no status list, so no answer."""
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, ["trc"], with_registry=False) as live:
            spec = live.spec(live.signed_token())
            with pytest.raises(FedscoreError) as refused:
                await live.contribute("trc", spec)
            assert refused.value.reason == "STATUS_LIST_STALE"
            assert live.seen_count("trc") == 0
            last = live.log_entries("trc")[-1]
            assert last.kind == "query_refused"
            assert last.fields == {
                "reason": "STATUS_LIST_STALE",
                "query_id": spec.query_id,
                "purpose": PURPOSE,
            }

    asyncio.run(scenario())


def test_a_node_started_before_the_registry_answers_once_a_list_arrives(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, ["trc"], with_registry=False) as live:
            live.registry_running = await consent_server.start(live.registry)
            # The follower retries in the background; wait for its list, not for a time.
            for _ in range(200):
                if live.node("trc").node.trust.revocations.sequence >= 0:
                    break
                await asyncio.sleep(0.05)
            spec = live.spec(live.signed_token())
            answer = await live.contribute("trc", spec)
            assert answer.query_id == spec.query_id

    asyncio.run(scenario())
