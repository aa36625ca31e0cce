"""Release definitions of differentially private overview statistics, and their budget.

A policy's `[statistics]` table holds `budget_epsilon_per_year` (the total epsilon each
dataset may spend on releases about one calendar year) and `[[statistics.releases]]`,
one definition each: name, titles, kind, dataset, privacy unit, per-unit contribution
bound, epsilon, and the kind's own fields.

Kinds, and the dataset each one reads:
- `participation` (agency-records): people with at least one counted record in the year,
  per domain and area (the indicator's scope at `area_level`, or "national"). At each
  agency a person counts in at most `contribution_bound` cells.
- `points-in-bands` (agency-records): people per band of the yearly points they earned AT
  ONE AGENCY (nodes cannot join a person across agencies, see docs/adr/0008); each
  person counts once per agency, so the bound is 1.
- `score-queries` (score-query-log): score queries per purpose per month, from the
  coordinator's own log, at most `contribution_bound` queries per consent token.

Invariants:
- `parse_statistics` is the only way to build `StatisticsRules`; every refusal is a
  `PolicyError` naming the field (`statistics.releases.x.epsilon: ...`), and it returns
  the normalised document (every field explicit, numbers as floats) that is hashed.
- Bins depend on the policy alone, never on data, so their number and order are public.
- `l1_sensitivity` is the most one privacy unit can change the federated histogram
  (L1) when added or removed: with k agencies one person changes up to k nodes' counts.
Everything here is pure; nothing does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from fedscore.errors import PermissionDenied
from policies._fields import Table, refuse
from policies.vocabulary import NATIONAL, ScoreRules

PARTICIPATION = "participation"
POINTS_IN_BANDS = "points-in-bands"
SCORE_QUERIES = "score-queries"
AGENCY_RECORDS = "agency-records"
SCORE_QUERY_LOG = "score-query-log"
# The dataset each kind reads, and the privacy unit that dataset can bound.
DATASET_OF_KIND: Mapping[str, str] = {
    PARTICIPATION: AGENCY_RECORDS,
    POINTS_IN_BANDS: AGENCY_RECORDS,
    SCORE_QUERIES: SCORE_QUERY_LOG,
}
UNIT_OF_DATASET: Mapping[str, str] = {AGENCY_RECORDS: "person", SCORE_QUERY_LOG: "consent-token"}
DATASETS: tuple[str, ...] = tuple(UNIT_OF_DATASET)
NODE_KINDS = frozenset({PARTICIPATION, POINTS_IN_BANDS})
# Geocode digits per level (DOPA: province 2, district 4, subdistrict 6).
AREA_LEVELS: Mapping[str, int] = {"province": 2, "district": 4, "subdistrict": 6}
_AREA_NAMES = {
    "province": ("Province", "จังหวัดรหัส"),
    "district": ("District", "อำเภอรหัส"),
    "subdistrict": ("Subdistrict", "ตำบลรหัส"),
}
MONTHS_TH = "ม.ค. ก.พ. มี.ค. เม.ย. พ.ค. มิ.ย. ก.ค. ส.ค. ก.ย. ต.ค. พ.ย. ธ.ค.".split()
MONTHS_EN = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
MAX_BOUND = 10_000

_ID = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_TOP = frozenset({"budget_epsilon_per_year", "releases"})
_BAND = frozenset({"min_points", "label"})


@dataclass(frozen=True)
class PointsBand:
    """Yearly points >= `min_points` (up to the next band) fall in `label`."""

    min_points: int
    label: str


@dataclass(frozen=True)
class ReleaseDefinition:
    """One statistic the federation may publish, and what it may spend."""

    name: str
    title: str
    title_th: str
    kind: str
    dataset: str
    privacy_unit: str
    contribution_bound: int
    epsilon: float
    area_level: str | None = None
    bands: tuple[PointsBand, ...] = ()

    @property
    def node_side(self) -> bool:
        """True when agency nodes compute the histogram (not the coordinator's own log)."""
        return self.kind in NODE_KINDS

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "title_th": self.title_th,
            "kind": self.kind,
            "dataset": self.dataset,
            "privacy_unit": self.privacy_unit,
            "contribution_bound": self.contribution_bound,
            "epsilon": self.epsilon,
        }
        if self.area_level is not None:
            out["area_level"] = self.area_level
        if self.bands:
            out["bands"] = [{"min_points": b.min_points, "label": b.label} for b in self.bands]
        return out


@dataclass(frozen=True)
class StatisticsRules:
    """The release definitions of a policy and each dataset's yearly epsilon."""

    budget_epsilon_per_year: float
    releases: Mapping[str, ReleaseDefinition]

    def release(self, name: str) -> ReleaseDefinition:
        try:
            return self.releases[name]
        except KeyError:
            raise PermissionDenied(
                f"release {name!r} is not defined in this policy; it has "
                + ", ".join(sorted(self.releases)),
                "UNKNOWN_RELEASE",
            ) from None

    def budget(self, dataset: str) -> float:
        """Total epsilon `dataset` may spend on releases about one year."""
        return self.budget_epsilon_per_year


@dataclass(frozen=True)
class Bin:
    """One published cell: a stable key, labels in English and Thai, and its coordinates."""

    key: str
    label: str
    label_th: str
    dimensions: tuple[tuple[str, str], ...]


# --- parsing -----------------------------------------------------------------------------

# The document's keys are the definition's field names, so the two cannot drift apart.
_RELEASE = frozenset(f.name for f in fields(ReleaseDefinition))


def _number(table: Table, key: str, *, positive: bool) -> float:
    value = table.raw(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise refuse(table.at(key), "must be a number")
    if not math.isfinite(value):
        raise refuse(table.at(key), "must be a finite number")
    if value < 0 or (positive and value == 0):
        raise refuse(table.at(key), f"must be {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def _bands(table: Table, score: ScoreRules) -> tuple[PointsBand, ...]:
    raws = table.items("bands")
    if not raws:
        raise refuse(table.at("bands"), "name at least one band")
    bands: list[PointsBand] = []
    for i, raw in enumerate(raws):
        entry = Table(raw, f"{table.at('bands')}[{i}]", _BAND)
        low = bands[-1].min_points + 1 if bands else score.person_min
        band = PointsBand(
            entry.integer("min_points", minimum=low, maximum=score.person_max),
            entry.text("label"),
        )
        if i == 0 and band.min_points != score.person_min:
            raise refuse(entry.at("min_points"), f"the first band starts at {score.person_min}")
        if any(b.label == band.label for b in bands):
            raise refuse(entry.at("label"), f"label {band.label!r} is used twice")
        bands.append(band)
    return tuple(bands)


def _release(raw: object, i: int, budget: float, score: ScoreRules) -> ReleaseDefinition:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    named = isinstance(name, str) and _ID.fullmatch(name) is not None
    table = Table(
        raw, f"statistics.releases.{name}" if named else f"statistics.releases[{i}]", _RELEASE
    )
    name = table.text("name", pattern=_ID)
    kind = table.text("kind")
    if kind not in DATASET_OF_KIND:
        raise refuse(table.at("kind"), f"{kind!r} is not one of {', '.join(DATASET_OF_KIND)}")
    dataset = table.text("dataset")
    if dataset != DATASET_OF_KIND[kind]:
        raise refuse(table.at("dataset"), f"kind {kind} reads {DATASET_OF_KIND[kind]!r}")
    unit = table.text("privacy_unit")
    if unit != UNIT_OF_DATASET[dataset]:
        raise refuse(
            table.at("privacy_unit"),
            f"{dataset} bounds what one {UNIT_OF_DATASET[dataset]} contributes, not {unit!r}",
        )
    high = 1 if kind == POINTS_IN_BANDS else MAX_BOUND
    bound = table.integer("contribution_bound", minimum=1, maximum=high)
    epsilon = _number(table, "epsilon", positive=True)
    if epsilon > budget:
        raise refuse(table.at("epsilon"), f"{epsilon} exceeds the yearly budget of {budget}")
    area_level = None
    if kind == PARTICIPATION:
        area_level = table.text("area_level")
        if area_level not in AREA_LEVELS:
            raise refuse(table.at("area_level"), f"one of {', '.join(AREA_LEVELS)}")
    elif table.has("area_level"):
        raise refuse(table.at("area_level"), f"only a {PARTICIPATION} release has it")
    bands: tuple[PointsBand, ...] = ()
    if kind == POINTS_IN_BANDS:
        bands = _bands(table, score)
    elif table.has("bands"):
        raise refuse(table.at("bands"), f"only a {POINTS_IN_BANDS} release has bands")
    return ReleaseDefinition(
        name=name,
        title=table.text("title"),
        title_th=table.text("title_th"),
        kind=kind,
        dataset=dataset,
        privacy_unit=unit,
        contribution_bound=bound,
        epsilon=epsilon,
        area_level=area_level,
        bands=bands,
    )


def parse_statistics(raw: object, score: ScoreRules) -> tuple[StatisticsRules, dict[str, Any]]:
    """Validate the `statistics` table; return the rules and their normalised document."""
    top = Table(raw, "statistics", _TOP)
    budget = (
        _number(top, "budget_epsilon_per_year", positive=False)
        if top.has("budget_epsilon_per_year")
        else 0.0
    )
    releases: dict[str, ReleaseDefinition] = {}
    for i, entry in enumerate(top.items("releases", default=[])):
        definition = _release(entry, i, budget, score)
        if definition.name in releases:
            raise refuse(f"statistics.releases.{definition.name}", "name is defined twice")
        releases[definition.name] = definition
    rules = StatisticsRules(budget, MappingProxyType(releases))
    document = {
        "budget_epsilon_per_year": budget,
        "releases": [definition.document() for definition in releases.values()],
    }
    return rules, document


# --- bins and sensitivity ----------------------------------------------------------------


def area_of(scope: str, level: str) -> str:
    """The area an indicator's scope falls in at `level` ("national" stays national)."""
    return scope if scope == NATIONAL else scope[: AREA_LEVELS[level]]


def area_labels(area: str) -> tuple[str, str]:
    """English and Thai names of an area code (a geocode's length says its level)."""
    if area == NATIONAL:
        return "Nationwide", "ทั่วประเทศ"
    level = next(name for name, digits in AREA_LEVELS.items() if digits == len(area))
    english, thai = _AREA_NAMES[level]
    return f"{english} {area}", f"{thai} {area}"
