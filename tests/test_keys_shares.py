"""Additive shares between the two aggregators (keys/shares.py, docs/adr/0019).

Each share alone is uniformly random whoever receives the drawn one; with the randomness
fixed by a seed, the receiver of the drawn share sees the same bytes whatever the value;
the two add up to the value mod 2^64; the helper's shares open only for the question and
agency they were sealed for.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedscore.errors import FedscoreError
from keys.box import BoxKeyPair
from keys.masks import MODULUS
from keys.shares import (
    Aggregator,
    RandomShares,
    SeededShares,
    as_signed,
    open_shares,
    pack,
    seal_shares,
    split,
    sum_shares,
    unpack,
)

QUERY = hashlib.sha256(b"spec").digest()
VALUES = st.lists(st.integers(0, MODULUS - 1), min_size=1, max_size=12)


@settings(max_examples=50, deadline=None)
@given(VALUES, st.sampled_from(list(Aggregator)))
def test_the_two_shares_add_up_to_the_value(values: list[int], drawn_for: Aggregator) -> None:
    shares = split(values, RandomShares(drawn_for), "trc")
    pairs = zip(shares.coordinator, shares.helper, strict=True)
    assert [(c + h) % MODULUS for c, h in pairs] == values


@settings(max_examples=50, deadline=None)
@given(VALUES, VALUES, st.sampled_from(list(Aggregator)))
def test_with_a_seed_the_drawn_share_does_not_depend_on_the_value(
    one: list[int], other: list[int], drawn_for: Aggregator
) -> None:
    """The simulation argument, run: for any two values, the aggregator that receives the
    drawn share receives the same bytes (so its view is independent of the value)."""
    other = (other * len(one))[: len(one)]
    first = split(one, SeededShares(b"test seed", drawn_for), "trc")
    second = split(other, SeededShares(b"test seed", drawn_for), "trc")
    if drawn_for is Aggregator.COORDINATOR:
        assert pack(first.coordinator) == pack(second.coordinator)
    else:
        assert pack(first.helper) == pack(second.helper)


def test_seeded_draws_differ_by_agency_and_by_draw() -> None:
    source = SeededShares(b"s")
    first, again = source.draw("trc", 4), source.draw("trc", 4)
    assert first != again
    assert SeededShares(b"s").draw("trc", 4) == first
    assert SeededShares(b"s").draw("dsd", 4) != first
    assert SeededShares(b"t").draw("trc", 4) != first


def test_random_shares_look_uniform() -> None:
    """Over many splits of zero the coordinator's shares cover the whole range evenly: no
    small value (what a count would be) and about half in each half of the range."""
    draws = [v for _ in range(200) for v in split([0] * 8, RandomShares(), "trc").coordinator]
    assert all(2**32 <= value <= MODULUS - 2**32 for value in draws)
    upper = sum(value >= MODULUS // 2 for value in draws)
    assert 650 <= upper <= 950  # 1,600 draws; mean 800, sd 20


def test_sealed_shares_open_only_for_their_question_and_agency() -> None:
    helper, other = BoxKeyPair.generate(), BoxKeyPair.generate()
    blob = seal_shares(helper.public_bytes, QUERY, "trc", [1, 2, MODULUS - 1])
    assert open_shares(blob, helper, QUERY, "trc", 3) == [1, 2, MODULUS - 1]
    for box, query, agency, width, reason in (
        (other, QUERY, "trc", 3, "BAD_SHARE"),
        (helper, hashlib.sha256(b"other").digest(), "trc", 3, "SHARE_MISMATCH"),
        (helper, QUERY, "dsd", 3, "SHARE_MISMATCH"),
        (helper, QUERY, "trc", 4, "BAD_SHARE"),
    ):
        with pytest.raises(FedscoreError) as refused:
            open_shares(blob, box, query, agency, width)
        assert refused.value.reason == reason


def test_sums_and_signed_reading() -> None:
    assert sum_shares([[1, MODULUS - 1], [2, 5]], 2) == [3, 4]
    assert as_signed(MODULUS - 3) == -3 and as_signed(7) == 7
    assert unpack(pack([0, 1, MODULUS - 1])) == [0, 1, MODULUS - 1]
    with pytest.raises(FedscoreError):
        unpack(b"\x00" * 7)
    with pytest.raises(FedscoreError):
        sum_shares([[1, 2]], 3)
