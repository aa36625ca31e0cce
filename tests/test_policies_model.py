"""The default policy's content and the Policy helpers (bands, year window, clamping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedscore.errors import InvalidArgument, NotFound, PermissionDenied
from policies.defaults import DEFAULT_AGENCIES, default_policy_path
from policies.loader import load_policy, parse_policy
from policies.vocabulary import DOMAINS, NATIONAL

POLICY = load_policy(default_policy_path())


def test_five_domains_in_the_study_order() -> None:
    assert [(d.number, d.id) for d in DOMAINS.values()] == [
        (1, "health"),
        (2, "learning"),
        (3, "community"),
        (4, "safety"),
        (5, "environment"),
    ]
    assert all(d.name and d.name_th for d in DOMAINS.values())


@pytest.mark.parametrize(
    ("code", "points", "cap"),
    [
        ("TRC-BLOOD", 70, None),
        ("TRC-PLASMA", 70, None),
        ("TRC-PLATELET", 70, None),
        ("TRC-STEM-CELL", 300, None),
        ("TRC-ORGAN-PLEDGE", 200, 200),
        ("TRC-BODY-PLEDGE", 300, 300),
    ],
)
def test_thai_red_cross_table(code: str, points: int, cap: int | None) -> None:
    indicator = POLICY.indicators[code]
    assert (indicator.points, indicator.cap_per_year) == (points, cap)
    assert indicator.agency == "trc"
    assert indicator.domain == "health"
    assert indicator.requires_certification
    assert indicator.scope == NATIONAL
    assert not indicator.example


def test_red_cross_has_exactly_the_report_table() -> None:
    assert [i.code for i in POLICY.indicators_for("trc")] == [
        "TRC-BLOOD",
        "TRC-PLASMA",
        "TRC-PLATELET",
        "TRC-STEM-CELL",
        "TRC-ORGAN-PLEDGE",
        "TRC-BODY-PLEDGE",
    ]


def test_national_basic_indicators_are_30_point_examples_in_every_domain() -> None:
    national = [i for i in POLICY.indicators.values() if i.code.startswith("NAT-")]
    assert national
    assert all(i.points == 30 and i.example and i.scope == NATIONAL for i in national)
    assert {i.domain for i in national} == set(DOMAINS)
    assert len({i.agency for i in national}) >= 5


def test_chuang_pao_goodness_bank_is_a_local_policy() -> None:
    agency = POLICY.agencies["chuangpao"]
    assert agency.scope != NATIONAL and agency.example
    table = POLICY.indicators_for("chuangpao")
    assert [i.points for i in table] == [50] * 5 + [30] * 2 + [20] * 5 + [10] * 5
    assert all(i.scope == agency.scope for i in table)
    assert all(i.title and i.title_th for i in table)


def test_agencies_in_default_order_each_with_an_indicator() -> None:
    assert tuple(POLICY.agencies) == DEFAULT_AGENCIES
    assert len(DEFAULT_AGENCIES) == 10
    for agency_id in DEFAULT_AGENCIES:
        assert POLICY.indicators_for(agency_id), agency_id


def test_purposes_ask_every_agency_and_gate_no_basic_right() -> None:
    for purpose in POLICY.purposes.values():
        assert purpose.participants == DEFAULT_AGENCIES
        assert set(purpose.domains) == set(DOMAINS)
        assert purpose.basic_right_or_public_service is False
    fuel = POLICY.purpose("ptt-fuel-discount")
    assert (fuel.relying_parties, fuel.release, fuel.max_token_days) == (("ptt",), "band", 365)
    mine = POLICY.purpose("self-view")
    assert (mine.relying_parties, mine.release) == (("citizen-portal",), "score")


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (-5, "none"),
        (0, "none"),
        (149, "none"),
        (150, "3%"),
        (299, "3%"),
        (300, "5%"),
        (1000, "5%"),
        (4000, "5%"),
    ],
)
def test_ptt_bands(total: int, band: str) -> None:
    assert POLICY.release("ptt-fuel-discount", total) == ("band", band)


@pytest.mark.parametrize(
    ("total", "shown"), [(-3, 0), (0, 0), (640, 640), (1000, 1000), (1500, 1000)]
)
def test_self_view_releases_the_clamped_score(total: int, shown: int) -> None:
    assert POLICY.release(POLICY.purpose("self-view"), total) == ("score", shown)


def test_eligible_release() -> None:
    document = POLICY.document
    purpose = next(p for p in document["purposes"] if p["id"] == "self-view")
    purpose.update(release="eligible", eligible_min=300)
    policy = parse_policy(document)
    assert policy.release("self-view", 299) == ("eligible", False)
    assert policy.release("self-view", 300) == ("eligible", True)
    assert policy.release("self-view", 9999) == ("eligible", True)


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_release_never_leaves_the_range(total: int) -> None:
    kind, value = POLICY.release("self-view", total)
    assert kind == "score" and isinstance(value, int) and 0 <= value <= 1000
    assert POLICY.release("ptt-fuel-discount", total)[1] in {"none", "3%", "5%"}


def test_unknown_purpose_is_refused() -> None:
    with pytest.raises(PermissionDenied) as refused:
        POLICY.purpose("credit-check")
    assert refused.value.reason == "UNKNOWN_PURPOSE"
    with pytest.raises(PermissionDenied):
        POLICY.release("credit-check", 100)


def test_unknown_agency_has_no_indicators() -> None:
    with pytest.raises(NotFound) as refused:
        POLICY.indicators_for("nso")
    assert refused.value.reason == "UNKNOWN_AGENCY"


def test_year_bounds_are_midnight_in_bangkok() -> None:
    start, end = POLICY.year_bounds(2024)
    assert start == datetime(2023, 12, 31, 17, 0, tzinfo=UTC)
    assert end == datetime(2024, 12, 31, 17, 0, tzinfo=UTC)
    assert start.tzinfo is not None and start.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("now", "year"),
    [
        (datetime(2024, 12, 31, 17, 30, tzinfo=UTC), 2025),  # already New Year in Bangkok
        (datetime(2024, 12, 31, 16, 59, 59, tzinfo=UTC), 2024),
        (datetime(2025, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=7))), 2025),
        (datetime(2024, 12, 31, 17, 0, tzinfo=UTC).timestamp(), 2025),
        (datetime(2024, 12, 31, 17, 0, tzinfo=UTC).timestamp() - 1, 2024),
        (1_700_000_000, 2023),
    ],
)
def test_current_year_in_bangkok(now: datetime | float, year: int) -> None:
    assert POLICY.current_year(now) == year


def test_current_year_refuses_naive_datetimes() -> None:
    with pytest.raises(InvalidArgument):
        POLICY.current_year(datetime(2024, 6, 1))


@given(st.integers(min_value=2000, max_value=2100))
def test_year_bounds_contain_exactly_their_year(year: int) -> None:
    start, end = POLICY.year_bounds(year)
    assert POLICY.current_year(start) == year
    assert POLICY.current_year(end - timedelta(microseconds=1)) == year
    assert POLICY.current_year(end) == year + 1


def test_indicator_points_for_applies_the_cap() -> None:
    pledge = POLICY.indicators["TRC-ORGAN-PLEDGE"]
    assert [pledge.points_for(n) for n in (0, 1, 2, 5)] == [0, 200, 200, 200]
    blood = POLICY.indicators["TRC-BLOOD"]
    assert blood.points_for(3) == 210
