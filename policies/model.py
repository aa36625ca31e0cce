"""Typed, immutable model of a scoring policy for the score for positive behaviour.

A `Policy` is built only by `policies.loader.parse_policy`, which enforces:
- every indicator names one of the five `DOMAINS` and a declared agency, has
  points >= 0 and, when capped, a yearly cap >= its points;
- score ranges stay inside 0-1,000 (person) and 0-5,000 (organisation), the same
  range everywhere (the study: per-city ranges caused inflation);
- every purpose has at least two contributing agencies (with one, the total would
  be that agency's contribution in the clear), names only declared agencies and
  relying parties, declares that it does NOT gate a basic right or public service, and
  says how many years back it may ask (`max_years_back`, default 0: the current year);
- `canonical` is the canonical JSON of the whole document and `content_hash` its
  SHA-256: the hash is the policy's version, so equal content means equal hash.

Everything here is a pure value; helpers compute, they never do I/O.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fedscore.errors import InvalidArgument, NotFound, PermissionDenied
from policies.statistics import StatisticsRules
from policies.vocabulary import ScoreRules

Release = Literal["score", "band", "eligible"]
RELEASE_KINDS: tuple[Release, ...] = ("score", "band", "eligible")


@dataclass(frozen=True)
class Agency:
    """A data holder that records (and scores) behaviour. `scope` is national or an area code.

    `example` marks values that are illustrative (e.g. an area code not checked
    against the official register).
    """

    id: str
    name: str
    name_th: str
    scope: str
    example: bool


@dataclass(frozen=True)
class RelyingParty:
    """A privilege provider allowed to ask for a released score (e.g. PTT)."""

    id: str
    name: str
    name_th: str


@dataclass(frozen=True)
class Indicator:
    """A positive behaviour worth `points` per occurrence, capped at `cap_per_year` points."""

    code: str
    domain: str
    points: int
    cap_per_year: int | None
    agency: str
    requires_certification: bool
    scope: str
    example: bool
    title: str
    title_th: str

    def points_for(self, occurrences: int) -> int:
        """Points for `occurrences` in one year, after this indicator's cap."""
        earned = self.points * occurrences
        return earned if self.cap_per_year is None else min(earned, self.cap_per_year)


@dataclass(frozen=True)
class Band:
    """Totals >= `min_points` (up to the next band) release `label`."""

    min_points: int
    label: str


@dataclass(frozen=True)
class Purpose:
    """What a consented question may be asked for, by whom, and what it releases."""

    id: str
    description: str
    relying_parties: tuple[str, ...]
    participants: tuple[str, ...]
    domains: tuple[str, ...]
    release: Release
    bands: tuple[Band, ...]
    eligible_min: int | None
    max_token_days: int
    max_uses: int
    basic_right_or_public_service: bool
    # How many calendar years before the current one may be asked (0: the current year only).
    max_years_back: int = 0

    def uses_allowed(self, token_max_uses: int) -> int:
        """The tighter of the token's and this purpose's use limits (0 = no limit)."""
        limits = [limit for limit in (token_max_uses, self.max_uses) if limit > 0]
        return min(limits) if limits else 0

    def check_year(self, year: int, current_year: int) -> None:
        """`year` is the current year or at most `max_years_back` before it.

        Raises `PermissionDenied YEAR_NOT_ALLOWED` otherwise: a purpose never reaches into
        the future, nor further into the past than it declares.
        """
        earliest = current_year - self.max_years_back
        if not earliest <= year <= current_year:
            raise PermissionDenied(
                f"purpose {self.id!r} may ask about {earliest}-{current_year}, not {year}",
                reason="YEAR_NOT_ALLOWED",
            )


@dataclass(frozen=True)
class Policy:
    """A validated scoring policy; `content_hash` is its version."""

    policy_id: str
    title: str
    agencies: Mapping[str, Agency]
    relying_parties: Mapping[str, RelyingParty]
    indicators: Mapping[str, Indicator]
    score: ScoreRules
    purposes: Mapping[str, Purpose]
    statistics: Mapping[str, Any]
    statistics_rules: StatisticsRules  # the typed form of `statistics`
    canonical: bytes
    content_hash: str

    @property
    def document(self) -> dict[str, Any]:
        """The canonical document as a fresh mapping (callers may change their copy)."""
        document: dict[str, Any] = json.loads(self.canonical)
        return document

    @functools.cached_property
    def _indicators_by_agency(self) -> dict[str, tuple[Indicator, ...]]:
        # Built once per policy: nodes ask for their indicators on every query.
        return {
            agency: tuple(i for i in self.indicators.values() if i.agency == agency)
            for agency in self.agencies
        }

    def indicators_for(self, agency_id: str) -> tuple[Indicator, ...]:
        """The indicators `agency_id` records, in document order."""
        try:
            return self._indicators_by_agency[agency_id]
        except KeyError:
            raise NotFound(
                f"agency {agency_id!r} is not in this policy", "UNKNOWN_AGENCY"
            ) from None

    def purpose(self, purpose_id: str) -> Purpose:
        try:
            return self.purposes[purpose_id]
        except KeyError:
            raise PermissionDenied(
                f"purpose {purpose_id!r} is not in this policy; it has "
                + ", ".join(sorted(self.purposes)),
                "UNKNOWN_PURPOSE",
            ) from None

    def year_bounds(self, year: int) -> tuple[datetime, datetime]:
        """UTC instants of 1 January 00:00 of `year` and of `year + 1`, in local time."""
        zone = self.score.zone
        start = datetime(year, 1, 1, tzinfo=zone).astimezone(UTC)
        end = datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC)
        return start, end

    def current_year(self, now: datetime | float) -> int:
        """The scoring year that contains `now` (Unix seconds or an aware datetime)."""
        if isinstance(now, datetime):
            if now.tzinfo is None:
                # A naive time has no meaning across parties in different zones.
                raise InvalidArgument("now: naive datetime; give a time zone", "NAIVE_TIME")
            return now.astimezone(self.score.zone).year
        return datetime.fromtimestamp(now, tz=self.score.zone).year

    def clamp(self, total: int) -> int:
        return self.score.clamp(total)

    def release(self, purpose: Purpose | str, total: int) -> tuple[str, int | str | bool]:
        """What `purpose` releases for a yearly `total`: only that, after clamping."""
        chosen = self.purpose(purpose) if isinstance(purpose, str) else purpose
        clamped = self.clamp(total)
        if chosen.release == "score":
            return ("score", clamped)
        if chosen.release == "band":
            label = chosen.bands[0].label
            for band in chosen.bands:  # strictly increasing, first at person_min
                if clamped >= band.min_points:
                    label = band.label
            return ("band", label)
        assert chosen.eligible_min is not None  # the loader requires it for "eligible"
        return ("eligible", clamped >= chosen.eligible_min)
