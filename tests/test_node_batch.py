"""NodeService.ContributeBatch: many questions per round trip, each checked alone.

Real nodes over mutual TLS (tests/harness/node.py): batches are signed with the real
coordinator key, tokens come from the running consent registry or are signed with the
registry's real key, and every answer batch is verified with the agency keyring, and
its binding to the batch checked, before anything in it is believed. A batch refused
as a whole, and every refusal of a lone item, are rows of tests/test_node_refusals.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness.node import (
    ALICE,
    BOB,
    EXPECTED,
    LiveFederation,
    assert_clean_log,
    live_federation,
    make_federation,
    spec_bytes,
)

from fedscore.errors import Code
from fedscore.runtime.statuses import error_from_refusal
from fedscore.v1.consent_pb2 import ConsentToken, SealedSubject
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_message
from keys.masks import MODULUS
from keys.seal import seal_subject

pytestmark = pytest.mark.integration


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
                live.item(alice),
                live.item(bob),
                live.item(subset),
                live.item(other, live.promise(spec_bytes(alice))),  # promised for another query
                live.item(alice),  # the same query id again, in the same batch
                live.item(sealed_wrong),
            ]
            before = {a: (live.seen_count(a), live.log_size(a)) for a in live.agencies}
            batch = live.batch(items)
            answered = await asyncio.gather(
                *(live.contribute_batch(a, batch) for a in live.agencies)
            )

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
            batch = live.batch([live.item(spec) for spec in specs])
            first = await live.contribute_batch("trc", batch)
            assert all(o.WhichOneof("outcome") == "answer" for o in first.outcomes)
            seen = live.seen_count("trc")
            again = await live.contribute_batch("trc", batch)
            reasons = [error_from_refusal(o.refusal).reason for o in again.outcomes]
            assert reasons == ["REPLAYED_QUERY"] * len(specs)
            assert live.seen_count("trc") == seen

    asyncio.run(scenario())
