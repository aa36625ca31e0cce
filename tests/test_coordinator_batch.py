"""ScoreBatch and the batched fan-out, with real servers on 127.0.0.1 and mutual TLS.

Uses the federation of tests/harness/coordinator.py (three agencies, their records ingested;
registry, nodes and coordinator as real gRPC servers). A relying party holding many
consents streams signed queries; every query is checked and logged on its own, and a
refused one never fails the others.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import pytest
from harness.coordinator import (
    AGENCIES,
    CITIZEN,
    EXPECTED_TOTAL,
    OTHER_CITIZEN,
    Federation,
    of_kind,
    running,
)

from coordinator.checks import RefusalNotes
from coordinator.dispatch import fan_out
from coordinator.scoring import admit, issue_query
from fedscore.apps import client
from fedscore.errors import Code
from fedscore.runtime.statuses import error_from_rpc
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ScoreQuery
from keys.envelope import sign_message

pytestmark = pytest.mark.integration

PURPOSE = "ptt-fuel-discount"


async def _ptt_token(fed: Federation, citizen: str, max_uses: int = 0) -> Envelope:
    return (await client.grant(fed.portal, citizen, PURPOSE, "ptt", 30, max_uses=max_uses)).token


def _nonce(query: Envelope) -> bytes:
    return ScoreQuery.FromString(query.payload).nonce


def test_each_query_of_a_batch_is_checked_logged_and_answered_on_its_own(
    coordinator_federation: Path,
) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            citizen = await _ptt_token(fed, CITIZEN)
            other = await _ptt_token(fed, OTHER_CITIZEN)
            revoked = await _ptt_token(fed, CITIZEN)
            revoked_id = (await client.score(fed.ptt, revoked, PURPOSE)).result.token_id
            await client.revoke(fed.portal, CITIZEN, revoked_id)
            limited = await _ptt_token(fed, CITIZEN, max_uses=1)

            first = client.signed_score_query(fed.ptt, citizen, PURPOSE)
            # PTT signing a query in the citizen portal's name.
            own = await client.grant(fed.portal, CITIZEN, "self-view", "citizen-portal", 7)
            portal_query = client.signed_score_query(fed.portal, own.token, "self-view")
            in_other_name = sign_message(
                ScoreQuery.FromString(portal_query.payload), fed.ptt.signing_key
            )
            queries = [
                first,
                client.signed_score_query(fed.ptt, other, PURPOSE),
                first,  # the same request again: its nonce is spent
                in_other_name,
                client.signed_score_query(fed.ptt, revoked, PURPOSE),
                client.signed_score_query(fed.ptt, limited, PURPOSE),
                client.signed_score_query(fed.ptt, limited, PURPOSE),
                client.signed_score_query(fed.ptt, citizen, "self-view"),
            ]
            log = fed.coordinator_log
            log_before = log.size()
            outcomes = await client.score_batch(fed.ptt, queries)

            assert [o.sequence for o in outcomes] == list(range(len(queries)))
            released = {
                o.sequence: o.outcome.release_value for o in outcomes if o.outcome is not None
            }
            # 220 points for the citizen; 300 body pledge + 3 x 30 for the other one.
            assert released == {0: "3%", 1: "5%", 5: "3%"}
            refused = {
                o.sequence: (o.refusal.code, o.refusal.reason)
                for o in outcomes
                if o.refusal is not None
            }
            assert refused == {
                2: (Code.ALREADY_EXISTS, "REPLAYED_NONCE"),
                3: (Code.UNAUTHENTICATED, "SIGNER_MISMATCH"),
                4: (Code.PERMISSION_DENIED, "CONSENT_REVOKED"),
                6: (Code.RESOURCE_EXHAUSTED, "USE_LIMIT_REACHED"),
                7: (Code.PERMISSION_DENIED, "PURPOSE_MISMATCH"),
            }

            new = log.entries(log_before, log.size())
            kinds = [e.kind for e in new]
            assert kinds.count("query_issued") == kinds.count("result_released") == 3
            reasons = [e.fields["reason"] for e in new if e.kind == "score_refused"]
            assert reasons == [reason for _, reason in refused.values()]
            forged = next(e for e in new if e.fields.get("reason") == "SIGNER_MISMATCH")
            assert "relying_party" not in forged.fields  # the forger names nobody
            issued = {e.fields["query_id"]: e for e in new if e.kind == "query_issued"}
            assert {o.outcome.result.query_id for o in outcomes if o.outcome} == set(issued)
            for entry in new:
                if entry.kind == "result_released":
                    assert entry.index > issued[entry.fields["query_id"]].index
            # Every node answered each issued query once, after it was logged.
            for agency in AGENCIES:
                answered = {
                    e.fields["query_id"]: e
                    for e in of_kind(fed.node_log(agency), "query_answered")
                    if e.fields["query_id"] in issued
                }
                assert set(answered) == set(issued)
                for query_id, entry in answered.items():
                    assert entry.fields["query_hash"] == issued[query_id].fields["query_hash"]
                    assert entry.fields["promise_index"] == issued[query_id].index

            # What was refused spent nothing: the limited token was used once, and the
            # refused request's nonce is still unused.
            store = fed.coordinator.coordinator.store
            limited_id = outcomes[5].outcome.result.token_id  # type: ignore[union-attr]
            assert store.uses(limited_id) == 1
            assert not store.nonce_seen(_nonce(queries[6]))

    asyncio.run(scenario())


def test_queries_asked_together_travel_in_one_signed_batch(coordinator_federation: Path) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            coordinator = fed.coordinator.coordinator
            own = await client.grant(fed.portal, CITIZEN, "self-view", "citizen-portal", 7)
            logged = []
            for _ in range(12):
                query = client.signed_score_query(fed.portal, own.token, "self-view")
                admitted = admit(coordinator, query, RefusalNotes(), coordinator.clock())
                logged.append(issue_query(coordinator, admitted, coordinator.clock())[0])
            dispatcher = coordinator.dispatcher
            before = (dispatcher.batches_sent, dispatcher.queries_sent)
            # Asked in the same event-loop step: one batch, signed once, for all twelve.
            answers = await asyncio.gather(*(fan_out(one, dispatcher) for one in logged))
            assert (dispatcher.batches_sent, dispatcher.queries_sent) == (
                before[0] + 1,
                before[1] + 12,
            )
            for answered in answers:
                answered.raise_for_failure()
                assert sorted(answered.masked) == sorted(AGENCIES)
                assert sum(answered.masked.values()) % 2**64 == EXPECTED_TOTAL
            # Each node answered each query on its own.
            query_ids = {one.spec.query_id for one in logged}
            for agency in AGENCIES:
                answered_here = [
                    e.fields["query_id"]
                    for e in of_kind(fed.node_log(agency), "query_answered")
                    if e.fields["query_id"] in query_ids
                ]
                assert sorted(answered_here) == sorted(query_ids)

    asyncio.run(scenario())


def test_a_stopped_node_fails_every_query_of_the_batch_and_each_is_logged(
    coordinator_federation: Path,
) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            tokens = [await _ptt_token(fed, CITIZEN), await _ptt_token(fed, OTHER_CITIZEN)]
            await fed.nodes["dsd"].stop()
            queries = [client.signed_score_query(fed.ptt, t, PURPOSE) for t in tokens]
            outcomes = await client.score_batch(fed.ptt, queries)
            assert [(o.refusal.code, o.refusal.reason) for o in outcomes if o.refusal] == [
                (Code.UNAVAILABLE, "NODE_UNAVAILABLE")
            ] * 2
            failed = of_kind(fed.coordinator_log, "query_failed")[-2:]
            assert [e.fields["unavailable"] for e in failed] == [["dsd"], ["dsd"]]

    asyncio.run(scenario())


def test_score_batch_through_the_cli(coordinator_federation: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            for name, citizen in (("a.token", CITIZEN), ("b.token", OTHER_CITIZEN)):
                (tmp_path / name).write_bytes((await _ptt_token(fed, citizen)).SerializeToString())
            batch = tmp_path / "tokens.txt"
            batch.write_text('# monthly discounts\na.token\n\n{"token": "b.token"}\n')
            args = ["score", "--workdir", str(fed.root), "--as", "ptt", "--batch", str(batch)]
            for as_json in (True, False):
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "fedscore.apps.cli.main",
                    *args,
                    *(["--json"] if as_json else []),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await process.communicate()
                assert process.returncode == 0, err.decode()
                lines = out.decode().splitlines()
                assert len(lines) == 2  # one line per query
                if as_json:
                    rows = [json.loads(line) for line in lines]
                    assert [(r["sequence"], r["release"], r["value"]) for r in rows] == [
                        (0, "band", "3%"),
                        (1, "band", "5%"),
                    ]
                    assert rows[1]["token_file"].endswith("b.token")
                else:
                    assert lines[0].startswith("0 ") and "band = 3%" in lines[0]

    asyncio.run(scenario())


def test_a_stream_message_that_does_not_parse_ends_the_stream_and_is_logged(
    coordinator_federation: Path,
) -> None:
    async def scenario() -> None:
        async with running(coordinator_federation) as fed:
            log = fed.coordinator_log
            before = log.size()
            async with client.channel_to(fed.ptt, "coordinator") as channel:
                call = channel.stream_stream(client.SCORE_BATCH_METHOD)()  # raw bytes both ways
                await call.write(b"\xff\xff not a ScoreBatchRequest")
                await call.done_writing()
                with pytest.raises(grpc.RpcError) as caught:
                    async for _ in call:
                        pass
            error = error_from_rpc(caught.value)
            assert (error.code, error.reason) == (
                Code.INVALID_ARGUMENT,
                "MALFORMED_MESSAGE",
            )
            [entry] = log.entries(before, log.size())
            assert (entry.kind, entry.fields) == ("score_refused", {"reason": "MALFORMED_MESSAGE"})

    asyncio.run(scenario())
