"""NodeService.ContributeBatch: many contribution queries per round trip, each checked alone.

Real nodes over mutual TLS (the `LiveFederation` harness of test_node_service): batches are
signed with the real coordinator key, tokens come from the running consent registry or
are signed with the registry's real key, and every answer batch is verified with the
agency keyring before anything in it is believed.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from pathlib import Path

import pytest
from test_node_service import (
    ALICE,
    BOB,
    EXPECTED,
    LiveFederation,
    assert_clean_log,
    live_federation,
    make_federation,
)

from fedscore.errors import Code, FedscoreError
from fedscore.runtime.rpc import call_unary, error_from_refusal
from fedscore.v1.consent_pb2 import ConsentToken, SealedSubject
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    BatchedContributionQuery,
    ContributeBatchRequest,
    ContributeBatchResponse,
    ContributionAnswerBatch,
    ContributionBatch,
    LogPromise,
    QuerySpec,
)
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message, verify_message
from keys.masks import MODULUS
from keys.seal import seal_subject

CONTRIBUTE_BATCH = "/fedscore.v1.NodeService/ContributeBatch"
TIMEOUT = 10.0


def promise_for(spec: QuerySpec, origin: str = "coordinator") -> LogPromise:
    return LogPromise(
        origin=origin,
        index=11,
        leaf_hash=hashlib.sha256(b"leaf").digest(),
        query_hash=hashlib.sha256(spec.SerializeToString(deterministic=True)).digest(),
        logged_at=int(time.time()),
    )


def item(spec: QuerySpec, promise: LogPromise | None = None) -> BatchedContributionQuery:
    return BatchedContributionQuery(
        spec=spec.SerializeToString(deterministic=True),
        log_promise=promise if promise is not None else promise_for(spec),
    )


def signed_batch(
    live: LiveFederation,
    items: list[BatchedContributionQuery],
    *,
    agencies: list[str] | None = None,
    signer: str = "coordinator",
) -> Envelope:
    batch = ContributionBatch(
        batch_id=secrets.token_hex(16),
        agency_ids=agencies if agencies is not None else list(live.agencies),
        issued_at=int(time.time()),
        queries=items,
    )
    return sign_message(batch, live.parties[signer].signing_key)


async def send(live: LiveFederation, agency: str, batch: Envelope) -> ContributionAnswerBatch:
    """Send as the coordinator; verify the node's answer batch and its binding to `batch`."""
    response = await call_unary(
        live.channels[agency],
        CONTRIBUTE_BATCH,
        ContributeBatchRequest(batch=batch),
        ContributeBatchResponse,
        TIMEOUT,
    )
    keyring = live.coordinator.trust.keyring(Role.ROLE_AGENCY)
    verified = verify_message(response.answers, ContributionAnswerBatch, keyring)
    answers = verified.payload
    assert verified.signer == answers.agency_id == agency
    assert answers.batch_id == ContributionBatch.FromString(batch.payload).batch_id
    assert answers.batch_hash == hashlib.sha256(batch.payload).digest()
    return answers


def mis_sealed_token(live: LiveFederation, national_id: str) -> Envelope:
    """A registry-signed token whose TRC blob was sealed for another token id."""
    good = ConsentToken.FromString(live.signed_token(national_id).payload)
    trc_box = live.registry.trust.box_public("trc")
    wrong = seal_subject("another-token", "trc", national_id, trc_box)
    blobs = [
        SealedSubject(agency_id=s.agency_id, blob=wrong if s.agency_id == "trc" else s.blob)
        for s in good.sealed_subjects
    ]
    del good.sealed_subjects[:]
    good.sealed_subjects.extend(blobs)
    return sign_message(good, live.registry.signing_key)


def test_each_item_is_answered_or_refused_on_its_own(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root) as live:
            alice = live.spec(await live.grant(ALICE))
            bob = live.spec(await live.grant(BOB))
            subset = live.spec(await live.grant(ALICE), participants=["trc", "dsd"])
            other = live.spec(await live.grant(ALICE))
            sealed_wrong = live.spec(mis_sealed_token(live, ALICE))
            items = [
                item(alice),
                item(bob),
                item(subset),
                item(other, promise_for(alice)),  # promised for another query
                item(alice),  # the same query id again, in the same batch
                item(sealed_wrong),
            ]
            before = {a: (live.seen_count(a), live.log_size(a)) for a in live.agencies}
            batch = signed_batch(live, items)
            answered = await asyncio.gather(*(send(live, a, batch) for a in live.agencies))

            refused_everywhere = {
                2: "PARTICIPANT_SET_MISMATCH",
                3: "BAD_LOG_PROMISE",
                4: "REPLAYED_QUERY",
            }
            for agency, answers in zip(live.agencies, answered, strict=True):
                kinds = [o.WhichOneof("outcome") for o in answers.outcomes]
                expected_kinds = ["answer", "answer", "refusal", "refusal", "refusal"]
                # Only TRC's own sealed subject is broken.
                expected_kinds.append("refusal" if agency == "trc" else "answer")
                assert kinds == expected_kinds, agency
                for position, reason in refused_everywhere.items():
                    refusal = error_from_refusal(answers.outcomes[position].refusal)
                    assert refusal.reason == reason
                if agency == "trc":
                    refusal = error_from_refusal(answers.outcomes[5].refusal)
                    assert (refusal.reason, refusal.code) == (
                        "SEAL_MISMATCH",
                        Code.PERMISSION_DENIED,
                    )
                for position, spec in ((0, alice), (1, bob)):
                    answer = answers.outcomes[position].answer
                    assert (answer.query_id, answer.agency_id) == (spec.query_id, agency)

            # The masks cancel per query: Alice's total, and nothing for Bob.
            for position, total in ((0, sum(EXPECTED.values())), (1, 0)):
                masked = [a.outcomes[position].answer.masked_value for a in answered]
                assert sum(masked) % MODULUS == total

            for agency in live.agencies:
                seen_before, log_before = before[agency]
                answered_here = 2 if agency == "trc" else 3
                # A refused item is not remembered as seen, not even the one refused after
                # its claim (the seal that would not open).
                assert live.seen_count(agency) == seen_before + answered_here
                new = live.log_entries(agency, log_before)
                assert len(new) == len(items)  # one entry per item, in batch order
                assert [e.kind for e in new[:2]] == ["query_answered", "query_answered"]
                assert [e.fields["reason"] for e in new[2:5]] == list(refused_everywhere.values())
                assert new[2].fields["query_id"] == subset.query_id
                assert new[5].kind == ("query_refused" if agency == "trc" else "query_answered")
                assert_clean_log(live.log_entries(agency))

    asyncio.run(scenario())


def test_a_batch_answered_once_is_refused_item_by_item_the_second_time(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, ["trc"]) as live:
            specs = [live.spec(await live.grant(ALICE)) for _ in range(6)]
            batch = signed_batch(live, [item(spec) for spec in specs])
            first = await send(live, "trc", batch)
            assert all(o.WhichOneof("outcome") == "answer" for o in first.outcomes)
            seen = live.seen_count("trc")
            again = await send(live, "trc", batch)
            reasons = [error_from_refusal(o.refusal).reason for o in again.outcomes]
            assert reasons == ["REPLAYED_QUERY"] * len(specs)
            assert live.seen_count("trc") == seen

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("signer", "agencies", "reason"),
    [
        ("ptt", None, "UNKNOWN_SIGNER"),
        ("coordinator", ["dsd", "chuangpao"], "WRONG_AGENCY"),
    ],
    ids=["signed by a relying party", "addressed to other agencies"],
)
def test_a_batch_that_is_not_the_coordinators_for_this_node_is_refused_whole(
    tmp_path: Path, signer: str, agencies: list[str] | None, reason: str
) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, ["trc"]) as live:
            spec = live.spec(await live.grant(ALICE))
            log_before = live.log_size("trc")
            batch = signed_batch(live, [item(spec)], agencies=agencies, signer=signer)
            with pytest.raises(FedscoreError) as caught:
                await send(live, "trc", batch)
            assert caught.value.reason == reason
            assert live.seen_count("trc") == 0
            # Logged once, with nothing the forger chose in it.
            [entry] = live.log_entries("trc", log_before)
            assert entry.kind == "query_refused"
            assert entry.fields == {"reason": reason}

    asyncio.run(scenario())


def test_an_item_without_a_log_promise_is_refused(tmp_path: Path) -> None:
    root = make_federation(tmp_path)

    async def scenario() -> None:
        async with live_federation(root, ["trc"]) as live:
            spec = live.spec(await live.grant(ALICE))
            unpromised = BatchedContributionQuery(spec=spec.SerializeToString(deterministic=True))
            answers = await send(live, "trc", signed_batch(live, [unpromised]))
            assert error_from_refusal(answers.outcomes[0].refusal).reason == "BAD_LOG_PROMISE"

    asyncio.run(scenario())
