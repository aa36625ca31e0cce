"""Cut-down default policies for federations of 2 to 10 agencies."""

from __future__ import annotations

import pytest

from fedscore.errors import InvalidArgument
from policies.defaults import DEFAULT_AGENCIES, default_policy_document, default_policy_path
from policies.loader import canonical_json, load_policy, parse_policy


@pytest.mark.parametrize("count", [2, 3, 5, 10])
def test_default_policy_document(count: int) -> None:
    kept = DEFAULT_AGENCIES[:count]
    policy = parse_policy(default_policy_document(count))
    assert tuple(policy.agencies) == kept
    assert policy.indicators
    assert {i.agency for i in policy.indicators.values()} == set(kept)
    for purpose in policy.purposes.values():
        assert purpose.participants == kept
    assert set(policy.purposes) == {"ptt-fuel-discount", "self-view"}


def test_demo_federation_has_red_cross_skills_and_chuang_pao() -> None:
    policy = parse_policy(default_policy_document(3))
    assert tuple(policy.agencies) == ("trc", "dsd", "chuangpao")
    assert len(policy.indicators_for("chuangpao")) == 17


def test_all_ten_agencies_is_the_default_policy() -> None:
    full = load_policy(default_policy_path())
    assert canonical_json(default_policy_document(10)).encode() == full.canonical


def test_documents_are_canonical_and_deterministic() -> None:
    document = default_policy_document(3)
    assert document == default_policy_document(3)
    assert canonical_json(document).encode() == parse_policy(document).canonical


@pytest.mark.parametrize("count", [-1, 0, 1, 11])
def test_agency_count_out_of_range(count: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        default_policy_document(count)
    assert refused.value.reason == "AGENCIES_OUT_OF_RANGE"
    assert refused.value.message.endswith(f"got {count}")
