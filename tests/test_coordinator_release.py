"""What the coordinator releases: the clamped total, only in the purpose's form."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.release import Released, release_for, set_release
from fedscore.v1 import query_pb2
from policies.defaults import default_policy_document
from policies.loader import parse_policy
from policies.model import Policy

POLICY: Policy = parse_policy(default_policy_document(3))
PTT = POLICY.purpose("ptt-fuel-discount")
SELF_VIEW = POLICY.purpose("self-view")


def _policy_with_eligible_purpose(minimum: int) -> Policy:
    document: dict[str, Any] = default_policy_document(3)
    eligible = dict(document["purposes"][0])
    eligible.update(
        id="fast-lane",
        description="A partner's fast lane for a score for positive behaviour of 200 or more.",
        release="eligible",
        bands=[],
        eligible_min=minimum,
    )
    document["purposes"].append(eligible)
    return parse_policy(document)


@pytest.mark.parametrize(
    ("total", "band"),
    [(0, "none"), (149, "none"), (150, "3%"), (299, "3%"), (300, "5%"), (10**9, "5%")],
)
def test_ptt_learns_only_the_band(total: int, band: str) -> None:
    assert release_for(POLICY, PTT, total) == Released("band", band)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_self_view_score_is_clamped_to_the_person_range(total: int) -> None:
    released = release_for(POLICY, SELF_VIEW, total)
    assert released.kind == "score"
    assert released.value == min(total, POLICY.score.person_max)
    assert 0 <= int(released.value) <= 1000


@pytest.mark.parametrize(
    ("total", "eligible"), [(0, False), (199, False), (200, True), (5000, True)]
)
def test_eligible_purpose_releases_yes_or_no(total: int, eligible: bool) -> None:
    policy = _policy_with_eligible_purpose(200)
    assert release_for(policy, policy.purpose("fast-lane"), total) == Released("eligible", eligible)


@pytest.mark.parametrize(
    ("released", "member"),
    [
        (Released("score", 420), "score"),
        (Released("band", "3%"), "band"),
        (Released("eligible", False), "eligible"),
    ],
)
def test_result_carries_exactly_one_release(released: Released, member: str) -> None:
    result = query_pb2.ScoreResult(query_id="q")
    set_release(result, released)
    assert result.WhichOneof("release") == member
    assert getattr(result, member) == released.value


def test_log_fields_hold_only_the_release() -> None:
    assert Released("band", "5%").log_fields() == {"released": "band", "value": "5%"}
