"""Pairwise masks: they cancel over the full set, and hide each contribution."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedscore.errors import InvalidArgument
from keys.box import BoxKeyPair
from keys.masks import MODULUS, mask_for, masked_answer, pairwise_seeds, unmasked_total

# Fixed box keys: deriving them costs nothing, and examples then differ only in what
# hypothesis chooses (participant count, query id, contributions).
POOL = [BoxKeyPair.from_private(hashlib.sha256(b"box %d" % i).digest()) for i in range(50)]
IDS = [f"agency-{i:02d}" for i in range(50)]


def _federation(count: int) -> dict[str, dict[str, bytes]]:
    """Each participant's seeds with every other participant."""
    publics = {IDS[i]: POOL[i].public_bytes for i in range(count)}
    return {IDS[i]: pairwise_seeds(IDS[i], POOL[i], publics) for i in range(count)}


def test_seeds_are_symmetric() -> None:
    seeds = _federation(3)
    assert seeds["agency-00"]["agency-01"] == seeds["agency-01"]["agency-00"]
    assert seeds["agency-00"]["agency-01"] != seeds["agency-00"]["agency-02"]
    assert "agency-00" not in seeds["agency-00"]


def test_two_party_mask_is_the_prf() -> None:
    seeds = _federation(2)
    seed = seeds["agency-00"]["agency-01"]
    prf = int.from_bytes(hmac.new(seed, b"q-1", hashlib.sha256).digest()[:8], "big")
    participants = ["agency-00", "agency-01"]
    assert mask_for("agency-00", seeds["agency-00"], participants, "q-1") == prf
    assert mask_for("agency-01", seeds["agency-01"], participants, "q-1") == (-prf) % MODULUS


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(2, 50),
    query_id=st.text(min_size=1, max_size=36),
    data=st.data(),
)
def test_masks_cancel_over_the_full_set(count: int, query_id: str, data: st.DataObject) -> None:
    seeds = _federation(count)
    participants = IDS[:count]
    masks = [mask_for(pid, seeds[pid], participants, query_id) for pid in participants]
    assert sum(masks) % MODULUS == 0
    contributions = data.draw(
        st.lists(st.integers(0, 1_000), min_size=count, max_size=count), label="contributions"
    )
    answers = [masked_answer(c, m) for c, m in zip(contributions, masks, strict=True)]
    assert unmasked_total(answers) == sum(contributions)
    assert all(0 <= a < MODULUS for a in answers)


def test_masked_answer_hides_the_contribution() -> None:
    seeds = _federation(2)
    participants = IDS[:2]
    for pid in participants:
        mask = mask_for(pid, seeds[pid], participants, "q-1")
        assert masked_answer(300, mask) != 300


def test_fresh_query_id_gives_a_fresh_answer() -> None:
    seeds = _federation(3)
    participants = IDS[:3]
    first = masked_answer(70, mask_for("agency-01", seeds["agency-01"], participants, "q-1"))
    second = masked_answer(70, mask_for("agency-01", seeds["agency-01"], participants, "q-2"))
    assert first != second


def test_order_of_participants_does_not_matter() -> None:
    seeds = _federation(4)
    forward = mask_for("agency-02", seeds["agency-02"], IDS[:4], "q")
    assert forward == mask_for("agency-02", seeds["agency-02"], list(reversed(IDS[:4])), "q")


def test_masks_over_different_sets_do_not_cancel() -> None:
    # If the coordinator told one node a smaller set, the total is garbage, not a leak.
    seeds = _federation(3)
    full, subset = IDS[:3], IDS[:2]
    masks = [
        mask_for("agency-00", seeds["agency-00"], subset, "q"),
        mask_for("agency-01", seeds["agency-01"], full, "q"),
        mask_for("agency-02", seeds["agency-02"], full, "q"),
    ]
    assert sum(masks) % MODULUS != 0


def test_missing_seed_is_an_error() -> None:
    seeds = _federation(2)
    with pytest.raises(InvalidArgument) as error:
        mask_for("agency-00", seeds["agency-00"], [*IDS[:2], "stranger"], "q")
    assert error.value.reason == "NO_PAIRWISE_SEED"


@pytest.mark.parametrize("participants", [["agency-01"], ["agency-00", "agency-01", "agency-01"]])
def test_bad_participant_sets(participants: list[str]) -> None:
    seeds = _federation(2)
    with pytest.raises(InvalidArgument) as error:
        mask_for("agency-00", seeds["agency-00"], participants, "q")
    assert error.value.reason == "BAD_PARTICIPANTS"


@pytest.mark.parametrize("contribution", [-1, MODULUS])
def test_contribution_out_of_range(contribution: int) -> None:
    with pytest.raises(InvalidArgument):
        masked_answer(contribution, 0)
