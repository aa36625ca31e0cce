"""Release definitions in the policy: parsing, refusals naming the field, bins, sensitivity."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedscore.errors import PermissionDenied, PolicyError
from policies.defaults import default_policy_document, default_policy_path
from policies.loader import load_policy, parse_policy
from policies.releases import bins, indicator_cells, l1_sensitivity, month_starts
from policies.statistics import PARTICIPATION, POINTS_IN_BANDS, SCORE_QUERIES

DEFAULT = load_policy(default_policy_path())
THREE = parse_policy(default_policy_document(3))
PARTICIPATION_NAME = "participation-by-domain-and-area"
BANDS_NAME = "yearly-points-in-bands"
QUERIES_NAME = "score-queries-by-purpose-and-month"

Mutation = Callable[[dict[str, Any]], None]


def base() -> dict[str, Any]:
    return copy.deepcopy(THREE.document)


def release(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in document["statistics"]["releases"] if r["name"] == name)
    return found


def test_the_default_policy_defines_three_releases_and_a_yearly_budget() -> None:
    rules = DEFAULT.statistics_rules
    assert rules.budget_epsilon_per_year == 10.0
    assert list(rules.releases) == [PARTICIPATION_NAME, BANDS_NAME, QUERIES_NAME]
    participation = rules.release(PARTICIPATION_NAME)
    assert (participation.kind, participation.dataset, participation.privacy_unit) == (
        PARTICIPATION,
        "agency-records",
        "person",
    )
    assert (participation.contribution_bound, participation.area_level) == (2, "province")
    bands = rules.release(BANDS_NAME)
    assert bands.kind == POINTS_IN_BANDS
    assert [(b.min_points, b.label) for b in bands.bands] == [
        (0, "0-149"),
        (150, "150-299"),
        (300, "300-599"),
        (600, "600-1000"),
    ]
    queries = rules.release(QUERIES_NAME)
    assert (queries.kind, queries.dataset, queries.privacy_unit) == (
        SCORE_QUERIES,
        "score-query-log",
        "consent-token",
    )
    assert all(r.epsilon == 1.0 for r in rules.releases.values())
    with pytest.raises(PermissionDenied) as unknown:
        rules.release("nope")
    assert unknown.value.reason == "UNKNOWN_RELEASE"


def test_the_statistics_document_is_normalised_and_hashed(tmp_path: Path) -> None:
    document = base()
    # Integers where floats are meant are the same content: same hash.
    document["statistics"]["budget_epsilon_per_year"] = 10
    release(document, BANDS_NAME)["epsilon"] = 1
    assert parse_policy(document).content_hash == THREE.content_hash
    changed = base()
    release(changed, BANDS_NAME)["epsilon"] = 2.0
    assert parse_policy(changed).content_hash != THREE.content_hash
    written = tmp_path / "policy.json"
    written.write_text(json.dumps(THREE.document), "utf-8")
    assert load_policy(written) == THREE
    # A policy without statistics may release nothing.
    bare = base()
    del bare["statistics"]
    rules = parse_policy(bare).statistics_rules
    assert (rules.budget_epsilon_per_year, dict(rules.releases)) == (0.0, {})


REFUSALS: list[tuple[str, Mutation, str, str]] = [
    (
        "unknown kind",
        lambda d: release(d, PARTICIPATION_NAME).update(kind="salaries"),
        "statistics.releases.participation-by-domain-and-area.kind",
        "not one of",
    ),
    (
        "node kind on the query log",
        lambda d: release(d, PARTICIPATION_NAME).update(dataset="score-query-log"),
        "statistics.releases.participation-by-domain-and-area.dataset",
        "reads 'agency-records'",
    ),
    (
        "query log with a person unit",
        lambda d: release(d, QUERIES_NAME).update(privacy_unit="person"),
        "statistics.releases.score-queries-by-purpose-and-month.privacy_unit",
        "consent-token",
    ),
    (
        "no privacy unit",
        lambda d: release(d, PARTICIPATION_NAME).pop("privacy_unit"),
        "statistics.releases.participation-by-domain-and-area.privacy_unit",
        "required",
    ),
    (
        "zero bound",
        lambda d: release(d, PARTICIPATION_NAME).update(contribution_bound=0),
        "statistics.releases.participation-by-domain-and-area.contribution_bound",
        ">= 1",
    ),
    (
        "bands with a bound above one",
        lambda d: release(d, BANDS_NAME).update(contribution_bound=2),
        "statistics.releases.yearly-points-in-bands.contribution_bound",
        "<= 1",
    ),
    (
        "zero epsilon",
        lambda d: release(d, BANDS_NAME).update(epsilon=0.0),
        "statistics.releases.yearly-points-in-bands.epsilon",
        "> 0",
    ),
    (
        "epsilon as text",
        lambda d: release(d, BANDS_NAME).update(epsilon="1.0"),
        "statistics.releases.yearly-points-in-bands.epsilon",
        "number",
    ),
    (
        "epsilon as a flag",
        lambda d: release(d, BANDS_NAME).update(epsilon=True),
        "statistics.releases.yearly-points-in-bands.epsilon",
        "number",
    ),
    (
        "epsilon above the yearly budget",
        lambda d: release(d, BANDS_NAME).update(epsilon=11.0),
        "statistics.releases.yearly-points-in-bands.epsilon",
        "exceeds the yearly budget",
    ),
    (
        "negative budget",
        lambda d: d["statistics"].update(budget_epsilon_per_year=-1.0),
        "statistics.budget_epsilon_per_year",
        ">= 0",
    ),
    (
        "participation without an area level",
        lambda d: release(d, PARTICIPATION_NAME).pop("area_level"),
        "statistics.releases.participation-by-domain-and-area.area_level",
        "required",
    ),
    (
        "unknown area level",
        lambda d: release(d, PARTICIPATION_NAME).update(area_level="village"),
        "statistics.releases.participation-by-domain-and-area.area_level",
        "province",
    ),
    (
        "area level on bands",
        lambda d: release(d, BANDS_NAME).update(area_level="province"),
        "statistics.releases.yearly-points-in-bands.area_level",
        "only",
    ),
    (
        "bands on participation",
        lambda d: release(d, PARTICIPATION_NAME).update(bands=[]),
        "statistics.releases.participation-by-domain-and-area.bands",
        "only",
    ),
    (
        "first band above zero",
        lambda d: release(d, BANDS_NAME)["bands"][0].update(min_points=10),
        "statistics.releases.yearly-points-in-bands.bands[0].min_points",
        "starts at 0",
    ),
    (
        "bands not increasing",
        lambda d: release(d, BANDS_NAME)["bands"][2].update(min_points=100),
        "statistics.releases.yearly-points-in-bands.bands[2].min_points",
        ">= 151",
    ),
    (
        "band label twice",
        lambda d: release(d, BANDS_NAME)["bands"][1].update(label="0-149"),
        "statistics.releases.yearly-points-in-bands.bands[1].label",
        "twice",
    ),
    (
        "no bands",
        lambda d: release(d, BANDS_NAME).update(bands=[]),
        "statistics.releases.yearly-points-in-bands.bands",
        "at least one",
    ),
    (
        "release typo key",
        lambda d: release(d, BANDS_NAME).update(epsilom=1.0),
        "statistics.releases.yearly-points-in-bands.epsilom",
        "unknown key",
    ),
    (
        "statistics typo key",
        lambda d: d["statistics"].update(budget=1.0),
        "statistics.budget",
        "unknown key",
    ),
    (
        "bad release name",
        lambda d: release(d, BANDS_NAME).update(name="Bands!"),
        "statistics.releases[1].name",
        "does not match",
    ),
    (
        "release defined twice",
        lambda d: d["statistics"]["releases"].append(copy.deepcopy(release(d, BANDS_NAME))),
        "statistics.releases.yearly-points-in-bands",
        "twice",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field", "word"), [pytest.param(m, f, w, id=n) for n, m, f, w in REFUSALS]
)
def test_bad_release_definitions_are_refused_naming_the_field(
    mutate: Mutation, field: str, word: str
) -> None:
    document = base()
    mutate(document)
    with pytest.raises(PolicyError) as refused:
        parse_policy(document)
    assert refused.value.message.startswith(f"{field}: "), refused.value.message
    assert word in refused.value.message


def test_bins_come_from_the_policy_alone() -> None:
    participation = THREE.statistics_rules.release(PARTICIPATION_NAME)
    assert [b.key for b in bins(THREE, participation)] == [
        "health/national",
        "health/50",
        "learning/national",
        "learning/50",
        "community/50",
        "environment/50",
    ]
    first = bins(THREE, participation)[1]
    assert (first.label, first.label_th) == (
        "Physical and mental health — Province 50",
        "สุขภาพกายและจิต — จังหวัดรหัส 50",
    )
    assert dict(first.dimensions) == {"domain": "health", "area": "50"}
    cells = indicator_cells(THREE, participation, "chuangpao")
    assert cells["CP-BLOOD"] == 1 and cells["CP-ACCOUNT"] == 4 and cells["CP-CULTURE"] == 4
    assert set(indicator_cells(THREE, participation, "trc").values()) == {0}
    bands = THREE.statistics_rules.release(BANDS_NAME)
    assert [b.key for b in bins(THREE, bands)] == [
        "band/0-149",
        "band/150-299",
        "band/300-599",
        "band/600-1000",
    ]
    queries = bins(THREE, THREE.statistics_rules.release(QUERIES_NAME))
    assert len(queries) == 24
    assert queries[0].key == "ptt-fuel-discount/01" and queries[-1].key == "self-view/12"
    assert (queries[3].label, queries[3].label_th) == (
        "ptt-fuel-discount — Apr",
        "ptt-fuel-discount — เม.ย.",
    )


def test_sensitivity_adds_what_each_agency_lets_one_person_contribute() -> None:
    rules = THREE.statistics_rules
    # TRC reaches one cell, DSD one, Chuang Pao four but a person counts in at most two.
    assert l1_sensitivity(THREE, rules.release(PARTICIPATION_NAME)) == 1 + 1 + 2
    assert l1_sensitivity(THREE, rules.release(BANDS_NAME)) == 3  # once at each agency
    assert l1_sensitivity(THREE, rules.release(QUERIES_NAME)) == 12  # per consent token
    ten = DEFAULT.statistics_rules
    assert l1_sensitivity(DEFAULT, ten.release(BANDS_NAME)) == 10
    # Ten agencies, bound 2: eight national agencies reach one or two cells each.
    assert l1_sensitivity(DEFAULT, ten.release(PARTICIPATION_NAME)) <= 10 * 2
    one = base()
    release(one, PARTICIPATION_NAME)["contribution_bound"] = 1
    policy = parse_policy(one)
    assert l1_sensitivity(policy, policy.statistics_rules.release(PARTICIPATION_NAME)) == 3


def test_month_starts_are_local_midnights() -> None:
    starts = month_starts(THREE, 2026)
    assert len(starts) == 13
    start, end = THREE.year_bounds(2026)
    assert (starts[0], starts[-1]) == (int(start.timestamp()), int(end.timestamp()))
    assert starts[1] - starts[0] == 31 * 86_400
