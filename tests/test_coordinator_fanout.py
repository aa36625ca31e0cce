"""Secure sum, answer checks and the failure rule of the coordinator's fan-out, the same
for a score question and a histogram question (coordinator/fanout.py)."""

from __future__ import annotations

import asyncio
import hashlib
import socket

import grpc.aio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.core.entries import LogRef
from coordinator.dispatch import batch_replies
from coordinator.fanout import (
    INVALID,
    UNAVAILABLE,
    LoggedQuery,
    NodeAnswers,
    NodeChannels,
    NodeReply,
    call_node,
    check_answer,
    check_items,
    score_total,
    secure_sum,
)
from coordinator.histograms import NodeShares, shares_of
from fedscore.errors import Code, FedscoreError, PermissionDenied, Unavailable
from fedscore.protocol.questions import SignedContributionAnswerBatch, SignedStatisticsAnswer
from fedscore.v1 import envelope_pb2, query_pb2, statistics_pb2
from keys.box import BoxKeyPair
from keys.envelope import sign_message
from keys.keyring import AgencyKeys
from keys.masks import (
    MODULUS,
    Question,
    QuestionKind,
    bin_masks,
    mask_for,
    masked_answer,
    pairwise_seeds,
)
from keys.shares import RandomShares, split, sum_shares
from keys.signing import SigningKey

IDS = [f"agency-{i:02d}" for i in range(8)]
BOXES = {pid: BoxKeyPair.from_private(hashlib.sha256(pid.encode()).digest()) for pid in IDS}
SIGNING = {
    pid: SigningKey.from_seed(hashlib.sha256(b"sign " + pid.encode()).digest()) for pid in IDS
}
AGENCY_KEYRING = AgencyKeys.of({pid: key.verify_key for pid, key in SIGNING.items()})


def _masked_answers(contributions: list[int], query_id: str) -> list[int]:
    members = IDS[: len(contributions)]
    publics = {pid: BOXES[pid].public_bytes for pid in members}
    question = Question.of(QuestionKind.SCORE_BATCH_ITEM, query_id.encode("utf-8"))
    answers = []
    for pid, contribution in zip(members, contributions, strict=True):
        seeds = pairwise_seeds(pid, BOXES[pid], publics)
        answers.append(masked_answer(contribution, mask_for(pid, seeds, members, question)))
    return answers


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=5_000), min_size=2, max_size=len(IDS)),
    st.text(min_size=1, max_size=40),
)
def test_masks_cancel_and_leave_the_total(contributions: list[int], query_id: str) -> None:
    assert secure_sum(_masked_answers(contributions, query_id)) == sum(contributions)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5_000), min_size=3, max_size=len(IDS)))
def test_a_missing_answer_never_yields_the_total_of_the_rest(contributions: list[int]) -> None:
    """Without one node's answer the masks do not cancel: no partial total can be read."""
    answers = _masked_answers(contributions, "q-partial")
    try:
        partial = secure_sum(answers[1:])
    except FedscoreError as error:
        assert error.reason == "MASKS_DID_NOT_CANCEL"
    else:
        assert partial != sum(contributions[1:])


def test_a_sum_in_the_upper_half_is_refused() -> None:
    with pytest.raises(FedscoreError, match="MASKS_DID_NOT_CANCEL"):
        secure_sum([MODULUS - 1])


def _logged(query_id: str = "q-1") -> LoggedQuery:
    spec = query_pb2.QuerySpec(query_id=query_id, participants=IDS[:3])
    spec_bytes = spec.SerializeToString()
    return LoggedQuery(
        spec=spec,
        spec_bytes=spec_bytes,
        query_hash=hashlib.sha256(spec_bytes).digest(),
        promise=query_pb2.LogPromise(),
    )


BATCH = query_pb2.ContributionBatch(batch_id="b-1", agency_ids=IDS[:3])
BATCH_HASH = hashlib.sha256(BATCH.SerializeToString()).digest()


def _answer(
    signer: str,
    *,
    agency_id: str | None = None,
    logged: LoggedQuery | None = None,
    batch_id: str = "b-1",
    items: int = 1,
) -> envelope_pb2.Envelope:
    """`signer`'s signed answer batch to `BATCH`, answering `logged` (`items` times)."""
    logged = logged or _logged()
    answer = query_pb2.ContributionAnswer(
        query_id=logged.spec.query_id,
        agency_id=agency_id or signer,
        masked_value=12345,
        query_hash=logged.query_hash,
    )
    answers = query_pb2.ContributionAnswerBatch(
        batch_id=batch_id,
        agency_id=agency_id or signer,
        batch_hash=BATCH_HASH,
        outcomes=[query_pb2.ContributionOutcome(answer=answer)] * items,
    )
    return sign_message(answers, SIGNING[signer])


def _score_reply(envelope: envelope_pb2.Envelope) -> NodeReply[int]:
    """What the dispatcher makes of IDS[0]'s answer batch to a batch of one question."""
    signed = SignedContributionAnswerBatch.verify(envelope, AGENCY_KEYRING)
    [reply] = batch_replies(signed, IDS[0], BATCH, BATCH_HASH, [_logged()])
    return reply


def test_verified_answer_gives_its_masked_value() -> None:
    assert _score_reply(_answer(IDS[0])) == NodeReply(masked=12345)


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        (_answer(IDS[1]), "SIGNER_MISMATCH"),
        (_answer(IDS[1], agency_id=IDS[0]), "SIGNER_MISMATCH"),
        (_answer(IDS[0], batch_id="b-other"), "BATCH_MISMATCH"),
        (_answer(IDS[0], items=2), "ITEM_COUNT_MISMATCH"),
        (
            sign_message(
                query_pb2.ContributionAnswerBatch(agency_id=IDS[0]), SigningKey.generate()
            ),
            "UNKNOWN_SIGNER",
        ),
        (envelope_pb2.Envelope(), "UNSIGNED"),
    ],
    ids=["another agency", "in this one's name", "other batch", "two items", "stranger", "empty"],
)
def test_answers_that_do_not_verify(envelope: envelope_pb2.Envelope, reason: str) -> None:
    with pytest.raises(FedscoreError) as caught:
        _score_reply(envelope)
    assert caught.value.reason == reason


def test_an_item_answering_another_query_fails_that_query_only() -> None:
    envelope = _answer(IDS[0], logged=_logged("q-other"))
    assert _score_reply(envelope) is INVALID
    [outcome] = query_pb2.ContributionAnswerBatch.FromString(envelope.payload).outcomes
    with pytest.raises(FedscoreError) as caught:
        check_answer(outcome.answer, IDS[0], IDS[0], _logged())
    assert caught.value.reason == "QUERY_MISMATCH"


def test_unavailable_node_fails_the_query_by_name() -> None:
    answers = NodeAnswers(masked={"trc": 5}, unavailable=["dsd"])
    assert not answers.complete
    with pytest.raises(Unavailable) as caught:
        answers.raise_for_failure()
    assert caught.value.reason == "NODE_UNAVAILABLE"
    assert "dsd" in caught.value.message
    assert answers.failure_fields("q-1") == {"query_id": "q-1", "unavailable": ["dsd"]}


def test_node_refusal_is_passed_on_with_its_code_and_reason() -> None:
    answers = NodeAnswers(refused={"trc": PermissionDenied("revoked", "CONSENT_REVOKED")})
    with pytest.raises(FedscoreError) as caught:
        answers.raise_for_failure()
    assert caught.value.code == Code.PERMISSION_DENIED
    assert caught.value.reason == "CONSENT_REVOKED"
    assert "trc" in caught.value.message
    fields = answers.failure_fields("q-1")
    assert fields["refused"] == {"trc": "CONSENT_REVOKED"}


def test_invalid_answer_fails_the_query() -> None:
    answers = NodeAnswers(masked={"trc": 987_654}, invalid=["dsd"])
    with pytest.raises(Unavailable, match="NODE_ANSWER_INVALID"):
        answers.raise_for_failure()
    assert "987654" not in str(answers.failure_fields("q"))


def test_complete_answers_raise_nothing() -> None:
    answers = NodeAnswers(masked={"trc": 1, "dsd": 2})
    assert answers.complete
    answers.raise_for_failure()


# --- a histogram question: the same checks, the same failure rule, summed per bin ---------


def _stats_logged(query_id: str = "s-1") -> LoggedQuery:
    spec = statistics_pb2.StatisticsSpec(
        query_id=query_id, participants=IDS[:3], coordinator="coordinator"
    )
    spec_bytes = spec.SerializeToString(deterministic=True)
    ref = LogRef(index=7, leaf_hash=b"\x01" * 32, logged_at=1_800_000_000)
    return LoggedQuery.at(spec, spec_bytes, hashlib.sha256(spec_bytes).digest(), ref)


def _stats_answer(
    signer: str, logged: LoggedQuery, *, agency_id: str | None = None
) -> envelope_pb2.Envelope:
    answer = statistics_pb2.StatisticsAnswer(
        query_id=logged.spec.query_id,
        agency_id=agency_id or signer,
        coordinator_shares=[1, 2, 3],
        query_hash=logged.query_hash,
        helper_share=envelope_pb2.Envelope(payload=b"sealed share"),
    )
    return sign_message(answer, SIGNING[signer])


def test_a_logged_question_carries_the_promise_of_where_it_was_logged() -> None:
    logged = _stats_logged()
    assert logged.promise == query_pb2.LogPromise(
        origin="coordinator",
        index=7,
        leaf_hash=b"\x01" * 32,
        query_hash=hashlib.sha256(logged.spec_bytes).digest(),
        logged_at=1_800_000_000,
    )


def test_a_histogram_answer_is_checked_as_a_score_answer_is() -> None:
    logged = _stats_logged()

    def bins(envelope: envelope_pb2.Envelope, width: int = 3) -> NodeShares:
        signed = SignedStatisticsAnswer.verify(envelope, AGENCY_KEYRING)
        return shares_of(signed, IDS[0], logged, width)

    shares = bins(_stats_answer(IDS[0], logged))
    assert shares.coordinator == [1, 2, 3]
    assert shares.helper.payload == b"sealed share"
    for envelope, width, reason in (
        (_stats_answer(IDS[1], logged), 3, "SIGNER_MISMATCH"),
        (_stats_answer(IDS[1], logged, agency_id=IDS[0]), 3, "SIGNER_MISMATCH"),
        (_stats_answer(IDS[0], _stats_logged("s-other")), 3, "QUERY_MISMATCH"),
        (_stats_answer(IDS[0], logged), 4, "ITEM_COUNT_MISMATCH"),
        (_answer(IDS[0]), 3, "WRONG_PAYLOAD_TYPE"),  # a score answer is no histogram answer
    ):
        with pytest.raises(FedscoreError) as refused:
            bins(envelope, width)
        assert refused.value.reason == reason


def test_an_answer_holds_one_value_per_item_asked() -> None:
    check_items(3, 3, IDS[0])
    for answered in (2, 4, 0):
        with pytest.raises(FedscoreError) as refused:
            check_items(answered, 3, IDS[0])
        assert refused.value.reason == "ITEM_COUNT_MISMATCH"


def _masked_bins(counts: list[list[int]], spec_bytes: bytes) -> dict[str, list[int]]:
    members = IDS[: len(counts)]
    publics = {pid: BOXES[pid].public_bytes for pid in members}
    question = Question.of(QuestionKind.HISTOGRAM_BIN, spec_bytes)
    answers = {}
    for pid, bins in zip(members, counts, strict=True):
        seeds = pairwise_seeds(pid, BOXES[pid], publics)
        masks = bin_masks(pid, seeds, members, question, len(bins))
        answers[pid] = [masked_answer(c, m) for c, m in zip(bins, masks, strict=True)]
    return answers


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=2, max_value=5).flatmap(
        lambda agencies: st.lists(
            st.lists(st.integers(0, 1_000), min_size=agencies, max_size=agencies),
            min_size=1,
            max_size=6,
        )
    )
)
def test_each_bins_shares_add_up_to_its_total_and_only_both_do(per_bin: list[list[int]]) -> None:
    """per_bin[b][a]: agency a's count in bin b; every bin's masks cancel on their own, in
    the sum of both aggregators' shares (docs/adr/0019), never in the coordinator's alone."""
    counts = [list(column) for column in zip(*per_bin, strict=True)]
    width = len(per_bin)
    split_bins = [split(v, RandomShares(), a) for a, v in _masked_bins(counts, b"s-bins").items()]
    own = sum_shares((s.coordinator for s in split_bins), width)
    theirs = sum_shares((s.helper for s in split_bins), width)
    assert [(c + h) % MODULUS for c, h in zip(own, theirs, strict=True)] == [
        sum(row) for row in per_bin
    ]
    assert own != [sum(row) for row in per_bin]  # 2^-64 per bin to collide


def test_a_histogram_with_one_node_missing_fails_whole_before_any_sum() -> None:
    masked = _masked_bins([[5, 0, 9], [1, 1, 1], [0, 2, 0]], b"s-missing")
    answers: NodeAnswers[list[int]] = NodeAnswers()
    for agency in IDS[:2]:
        NodeReply(masked=masked[agency]).record(agency, answers)
    UNAVAILABLE.record(IDS[2], answers)
    INVALID.record(IDS[3], answers)
    with pytest.raises(Unavailable) as failed:
        answers.raise_for_failure()
    assert failed.value.reason == "NODE_UNAVAILABLE"
    assert answers.failure_fields("s-missing", failed.value.reason) == {
        "query_id": "s-missing",
        "unavailable": [IDS[2]],
        "invalid": [IDS[3]],
        "reason": "NODE_UNAVAILABLE",
    }


def test_a_score_total_follows_the_same_failure_rule() -> None:
    refused: NodeAnswers[int] = NodeAnswers(
        masked={"trc": 5}, refused={"dsd": PermissionDenied("revoked", "CONSENT_REVOKED")}
    )
    with pytest.raises(FedscoreError) as caught:
        score_total(refused)
    assert caught.value.reason == "CONSENT_REVOKED"
    assert score_total(NodeAnswers(masked={"trc": 5, "dsd": 7})) == 12


def test_a_node_without_a_channel_or_that_does_not_answer_is_unavailable() -> None:
    """The channel of a node that did not answer is replaced by a fresh one."""
    opened: list[str] = []

    def open_channel(agency: str, endpoint: str) -> grpc.aio.Channel:
        opened.append(agency)
        return grpc.aio.insecure_channel(endpoint)

    async def scenario() -> None:
        with socket.socket() as unused:  # a port nothing listens on
            unused.bind(("127.0.0.1", 0))
            endpoint = f"127.0.0.1:{unused.getsockname()[1]}"
        channels = NodeChannels({"trc": endpoint}, open_channel)
        first = channels.get("trc")
        request = statistics_pb2.HistogramBatchRequest()
        method = "/fedscore.v1.NodeStatisticsService/HistogramBatch"
        response_type = statistics_pb2.HistogramBatchResponse
        try:
            missing = await call_node(channels, "dsd", method, request, response_type, 1.0)
            assert missing is UNAVAILABLE
            down = await call_node(channels, "trc", method, request, response_type, 1.0)
            assert down is UNAVAILABLE
            assert channels.get("trc") is not first and opened == ["trc", "trc"]
        finally:
            await channels.close()

    asyncio.run(scenario())
