"""Pairwise masks: they cancel over the full set asked the very same question, and only then.

docs/adr/0011: a mask is bound to the SHA-256 of the exact question bytes, the kind of
question (and a histogram's bin) and the participant set. If the coordinator asks any two
participants anything different, the sum is random.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedscore.errors import InvalidArgument
from keys.box import BoxKeyPair
from keys.masks import (
    MODULUS,
    Question,
    QuestionKind,
    bin_masks,
    mask_for,
    mask_input,
    masked_answer,
    pairwise_seeds,
)

# Fixed box keys: deriving them costs nothing, and examples then differ only in what
# hypothesis chooses (participant count, query id, contributions).
POOL = [BoxKeyPair.from_private(hashlib.sha256(b"box %d" % i).digest()) for i in range(50)]
IDS = [f"agency-{i:02d}" for i in range(50)]


def _q(text: str, kind: QuestionKind = QuestionKind.SCORE_BATCH_ITEM) -> Question:
    """The question whose canonical bytes are `text`."""
    return Question.of(kind, text.encode("utf-8"))


def _federation(count: int) -> dict[str, dict[str, bytes]]:
    """Each participant's seeds with every other participant."""
    publics = {IDS[i]: POOL[i].public_bytes for i in range(count)}
    return {IDS[i]: pairwise_seeds(IDS[i], POOL[i], publics) for i in range(count)}


# Known answers: the seeds and masks of three fixed participants, as every node derives them.
# A change to any input of a mask (label, kind name, digest, bin, participant set) or to the
# PRF changes these values; nodes of two versions would then no longer cancel.
KNOWN_SEED_00_01 = "a6ed289a59e343fc1b1287cdc5da7f6946eb93eb20f755e47b52e5f9922d5c85"
KNOWN_SCORE_BATCH_ITEM = [15234622648717082476, 6592715387762722703, 15066150110939298053]
KNOWN_HISTOGRAM_BINS = [
    [5983856276811587366, 10450985174477739682, 3091446556767492499],
    [4860264374046241587, 8437094869321528101, 278229508990977690],
    [7602623422851722663, 18005408103619835449, 15077068007951081427],
]


def test_masks_of_every_kind_are_exactly_the_known_answers() -> None:
    seeds = _federation(3)
    participants = IDS[:3]
    assert seeds["agency-00"]["agency-01"].hex() == KNOWN_SEED_00_01
    score = Question.of(QuestionKind.SCORE_BATCH_ITEM, b"known spec")
    masks = [mask_for(pid, seeds[pid], participants, score) for pid in participants]
    assert masks == KNOWN_SCORE_BATCH_ITEM
    histogram = Question.of(QuestionKind.HISTOGRAM_BIN, b"known spec")
    bins = [bin_masks(pid, seeds[pid], participants, histogram, 3) for pid in participants]
    assert bins == KNOWN_HISTOGRAM_BINS
    assert sum(masks) % MODULUS == 0
    assert [sum(column) % MODULUS for column in zip(*bins, strict=True)] == [0, 0, 0]


def test_seeds_are_symmetric() -> None:
    seeds = _federation(3)
    assert seeds["agency-00"]["agency-01"] == seeds["agency-01"]["agency-00"]
    assert seeds["agency-00"]["agency-01"] != seeds["agency-00"]["agency-02"]
    assert "agency-00" not in seeds["agency-00"]


def test_two_party_mask_is_the_prf() -> None:
    seeds = _federation(2)
    seed = seeds["agency-00"]["agency-01"]
    participants = ["agency-00", "agency-01"]
    question = _q("q-1")
    data = mask_input(question, participants)
    prf = int.from_bytes(hmac.new(seed, data, hashlib.sha256).digest()[:8], "big")
    assert mask_for("agency-00", seeds["agency-00"], participants, question) == prf
    assert mask_for("agency-01", seeds["agency-01"], participants, question) == (-prf) % MODULUS


def test_the_mask_input_is_length_prefixed_and_names_everything() -> None:
    question = Question(QuestionKind.HISTOGRAM_BIN, b"\x11" * 32, bin=3)
    data = mask_input(question, ["b", "a"])
    label = b"fedscore.v1 pairwise mask input"
    set_digest = hashlib.sha256(b"\x00\x00\x00\x01a\x00\x00\x00\x01b").digest()
    assert data == b"".join(
        len(part).to_bytes(4, "big") + part
        for part in (label, b"histogram-bin", b"\x11" * 32, (3).to_bytes(8, "big"), set_digest)
    )


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(2, 50),
    query_id=st.text(min_size=1, max_size=36),
    data=st.data(),
)
def test_masks_cancel_over_the_full_set(count: int, query_id: str, data: st.DataObject) -> None:
    seeds = _federation(count)
    participants = IDS[:count]
    question = _q(query_id)
    masks = [mask_for(pid, seeds[pid], participants, question) for pid in participants]
    assert sum(masks) % MODULUS == 0
    contributions = data.draw(
        st.lists(st.integers(0, 1_000), min_size=count, max_size=count), label="contributions"
    )
    answers = [masked_answer(c, m) for c, m in zip(contributions, masks, strict=True)]
    assert sum(answers) % MODULUS == sum(contributions)
    assert all(0 <= a < MODULUS for a in answers)


def test_masked_answer_hides_the_contribution() -> None:
    seeds = _federation(2)
    participants = IDS[:2]
    for pid in participants:
        mask = mask_for(pid, seeds[pid], participants, _q("q-1"))
        assert masked_answer(300, mask) != 300


def test_fresh_query_id_gives_a_fresh_answer() -> None:
    seeds = _federation(3)
    participants = IDS[:3]
    first = masked_answer(70, mask_for("agency-01", seeds["agency-01"], participants, _q("q-1")))
    second = masked_answer(70, mask_for("agency-01", seeds["agency-01"], participants, _q("q-2")))
    assert first != second


def test_order_of_participants_does_not_matter() -> None:
    seeds = _federation(4)
    forward = mask_for("agency-02", seeds["agency-02"], IDS[:4], _q("q"))
    assert forward == mask_for("agency-02", seeds["agency-02"], list(reversed(IDS[:4])), _q("q"))


def test_masks_over_different_sets_do_not_cancel() -> None:
    # If the coordinator told one node a smaller set, the total is garbage, not a leak.
    seeds = _federation(3)
    full, subset = IDS[:3], IDS[:2]
    masks = [
        mask_for("agency-00", seeds["agency-00"], subset, _q("q")),
        mask_for("agency-01", seeds["agency-01"], full, _q("q")),
        mask_for("agency-02", seeds["agency-02"], full, _q("q")),
    ]
    assert sum(masks) % MODULUS != 0


def test_missing_seed_is_an_error() -> None:
    seeds = _federation(2)
    with pytest.raises(InvalidArgument) as error:
        mask_for("agency-00", seeds["agency-00"], [*IDS[:2], "stranger"], _q("q"))
    assert error.value.reason == "NO_PAIRWISE_SEED"


@pytest.mark.parametrize("participants", [["agency-01"], ["agency-00", "agency-01", "agency-01"]])
def test_bad_participant_sets(participants: list[str]) -> None:
    seeds = _federation(2)
    with pytest.raises(InvalidArgument) as error:
        mask_for("agency-00", seeds["agency-00"], participants, _q("q"))
    assert error.value.reason == "BAD_PARTICIPANTS"


@pytest.mark.parametrize("contribution", [-1, MODULUS])
def test_contribution_out_of_range(contribution: int) -> None:
    with pytest.raises(InvalidArgument):
        masked_answer(contribution, 0)


# --- the rule of docs/adr/0011: masks cancel only for the byte-identical question ----------


def _sum_of_masks(asked: list[Question], count: int) -> int:
    seeds = _federation(count)
    participants = IDS[:count]
    return (
        sum(
            mask_for(pid, seeds[pid], participants, question)
            for pid, question in zip(participants, asked, strict=True)
        )
        % MODULUS
    )


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(2, 6),
    spec=st.binary(min_size=1, max_size=200),
    data=st.data(),
)
def test_specs_that_differ_in_any_byte_do_not_cancel(
    count: int, spec: bytes, data: st.DataObject
) -> None:
    """Any participant asked other bytes leaves a sum that is not the total (random)."""
    position = data.draw(st.integers(0, len(spec) - 1), label="byte changed")
    flip = data.draw(st.integers(1, 255), label="xor")
    other = spec[:position] + bytes([spec[position] ^ flip]) + spec[position + 1 :]
    odd_ones = data.draw(
        st.sets(st.integers(0, count - 1), min_size=1, max_size=count - 1), label="asked other"
    )
    asked = [
        Question.of(QuestionKind.SCORE_BATCH_ITEM, other if i in odd_ones else spec)
        for i in range(count)
    ]
    assert _sum_of_masks(asked, count) != 0
    # Asked alike, the same participants' masks do cancel.
    assert _sum_of_masks([Question.of(QuestionKind.SCORE_BATCH_ITEM, spec)] * count, count) == 0


@settings(max_examples=50, deadline=None)
@given(
    count=st.integers(2, 6),
    spec=st.binary(min_size=1, max_size=64),
    kinds=st.data(),
)
def test_the_same_bytes_asked_as_another_kind_do_not_cancel(
    count: int, spec: bytes, kinds: st.DataObject
) -> None:
    chosen = kinds.draw(
        st.lists(st.sampled_from(list(QuestionKind)), min_size=count, max_size=count).filter(
            lambda ks: len(set(ks)) > 1
        ),
        label="kinds",
    )
    asked = [Question.of(kind, spec) for kind in chosen]
    assert _sum_of_masks(asked, count) != 0


def test_one_nodes_answers_to_two_questions_cannot_be_subtracted() -> None:
    """A score and a histogram bin over related ids share no mask (they could before)."""
    seeds = _federation(3)
    participants = IDS[:3]
    score = mask_for("agency-00", seeds["agency-00"], participants, _q("X/0"))
    histogram = Question.of(QuestionKind.HISTOGRAM_BIN, b"X")
    first_bin = bin_masks("agency-00", seeds["agency-00"], participants, histogram, 2)[0]
    assert score != first_bin
    # Nor do two bins of one histogram.
    second_bin = bin_masks("agency-00", seeds["agency-00"], participants, histogram, 2)[1]
    assert first_bin != second_bin


def test_no_kind_takes_the_retired_name_of_a_lone_score() -> None:
    """A kind's name is inside every mask input: a retired name ("score", a score asked alone
    on the removed unary Contribute) must never come back as another kind."""
    assert {kind.value for kind in QuestionKind} == {"score-batch-item", "histogram-bin"}
    with pytest.raises(ValueError):
        QuestionKind("score")


def test_bins_of_one_histogram_cancel_bin_by_bin() -> None:
    seeds = _federation(4)
    participants = IDS[:4]
    question = Question.of(QuestionKind.HISTOGRAM_BIN, b"statistics spec")
    per_node = [bin_masks(pid, seeds[pid], participants, question, 5) for pid in participants]
    assert [sum(column) % MODULUS for column in zip(*per_node, strict=True)] == [0] * 5


@pytest.mark.parametrize(
    "make",
    [
        lambda: Question(QuestionKind.SCORE_BATCH_ITEM, b"short"),
        lambda: Question(QuestionKind.SCORE_BATCH_ITEM, b"\x00" * 32, bin=1),
        lambda: Question("score", b"\x00" * 32),  # type: ignore[arg-type]
    ],
    ids=["digest not 32 bytes", "bin on a score", "kind not a QuestionKind"],
)
def test_malformed_questions_are_refused(make: object) -> None:
    with pytest.raises(InvalidArgument) as error:
        make()  # type: ignore[operator]
    assert error.value.reason == "BAD_QUESTION"
