"""Secure sum and answer checks of the coordinator's fan-out."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.fanout import LoggedQuery, NodeAnswers, secure_sum, verify_answer
from fedscore.errors import Code, FedscoreError, PermissionDenied, Unavailable
from fedscore.v1 import envelope_pb2, query_pb2
from keys.box import BoxKeyPair
from keys.envelope import sign_message
from keys.keyring import Keyring
from keys.masks import MODULUS, Question, QuestionKind, mask_for, masked_answer, pairwise_seeds
from keys.signing import SigningKey

IDS = [f"agency-{i:02d}" for i in range(8)]
BOXES = {pid: BoxKeyPair.from_private(hashlib.sha256(pid.encode()).digest()) for pid in IDS}
SIGNING = {
    pid: SigningKey.from_seed(hashlib.sha256(b"sign " + pid.encode()).digest()) for pid in IDS
}
AGENCY_KEYRING = Keyring.of({pid: key.verify_key for pid, key in SIGNING.items()})


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


def _answer(
    signer: str, *, agency_id: str | None = None, logged: LoggedQuery | None = None
) -> envelope_pb2.Envelope:
    logged = logged or _logged()
    answer = query_pb2.ContributionAnswer(
        query_id=logged.spec.query_id,
        agency_id=agency_id or signer,
        masked_value=12345,
        query_hash=logged.query_hash,
    )
    return sign_message(answer, SIGNING[signer])


def test_verified_answer_gives_its_masked_value() -> None:
    assert verify_answer(_answer(IDS[0]), IDS[0], _logged(), AGENCY_KEYRING) == 12345


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        (_answer(IDS[1]), "SIGNER_MISMATCH"),
        (_answer(IDS[1], agency_id=IDS[0]), "SIGNER_MISMATCH"),
        (_answer(IDS[0], logged=_logged("q-other")), "QUERY_MISMATCH"),
        (
            sign_message(query_pb2.ContributionAnswer(agency_id=IDS[0]), SigningKey.generate()),
            "UNKNOWN_SIGNER",
        ),
        (envelope_pb2.Envelope(), "UNSIGNED"),
    ],
    ids=["another agency", "another agency in this one's name", "other query", "stranger", "empty"],
)
def test_answers_that_do_not_verify(envelope: envelope_pb2.Envelope, reason: str) -> None:
    with pytest.raises(FedscoreError) as caught:
        verify_answer(envelope, IDS[0], _logged(), AGENCY_KEYRING)
    assert caught.value.reason == reason


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
