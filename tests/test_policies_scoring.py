"""One agency's yearly contribution under the default policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedscore.errors import InvalidArgument, NotFound
from policies.defaults import default_policy_path
from policies.loader import load_policy
from policies.scoring import contribution

POLICY = load_policy(default_policy_path())


@pytest.mark.parametrize(
    ("agency", "quantities", "points"),
    [
        ("trc", {}, 0),
        ("trc", {"TRC-BLOOD": 0}, 0),
        ("trc", {"TRC-BLOOD": 2}, 140),
        ("trc", {"TRC-BLOOD": 1, "TRC-PLASMA": 1, "TRC-PLATELET": 1}, 210),
        ("trc", {"TRC-ORGAN-PLEDGE": 3}, 200),  # a pledge counts once a year
        ("trc", {"TRC-BODY-PLEDGE": 2, "TRC-BLOOD": 4}, 580),
        ("trc", {"TRC-STEM-CELL": 4}, 1000),  # clamped to the person maximum
        ("chuangpao", {"CP-ACCOUNT": 2, "CP-BLOOD": 2, "CP-VILLAGE-MEETING": 12}, 270),
        ("moph", {"NAT-HEALTH-SCREENING": 2, "NAT-HEALTH-VOLUNTEER": 2}, 90),
    ],
)
def test_contribution(agency: str, quantities: dict[str, int], points: int) -> None:
    assert contribution(POLICY, agency, quantities) == points


@pytest.mark.parametrize(
    ("agency", "quantities", "reason"),
    [
        ("trc", {"TRC-DEBT": 1}, "UNKNOWN_INDICATOR"),
        ("trc", {"CP-BLOOD": 1}, "UNKNOWN_INDICATOR"),  # another agency's indicator
        ("trc", {"TRC-BLOOD": -1}, "INVALID_QUANTITY"),
        ("trc", {"TRC-BLOOD": True}, "INVALID_QUANTITY"),
    ],
)
def test_contribution_refuses(agency: str, quantities: dict[str, int], reason: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        contribution(POLICY, agency, quantities)
    assert refused.value.reason == reason


def test_contribution_of_an_unknown_agency() -> None:
    with pytest.raises(NotFound):
        contribution(POLICY, "nso", {})


TRC_CODES = [i.code for i in POLICY.indicators_for("trc")]


@given(st.dictionaries(st.sampled_from(TRC_CODES), st.integers(min_value=0, max_value=50)))
def test_contribution_is_the_capped_sum_clamped(quantities: dict[str, int]) -> None:
    expected = 0
    for code, n in quantities.items():
        indicator = POLICY.indicators[code]
        earned = indicator.points * n
        if indicator.cap_per_year is not None:
            earned = min(earned, indicator.cap_per_year)
        expected += earned
    assert contribution(POLICY, "trc", quantities) == min(expected, 1000)
