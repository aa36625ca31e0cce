"""The words every policy module shares: the national area, the five domains, score ranges.

A leaf under `policies/model.py` and `policies/statistics.py`: both import it, it
imports neither, so the model of a policy and its statistics rules form no cycle.
Pure values only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

NATIONAL = "national"


@dataclass(frozen=True)
class Domain:
    """One of the study's five domains of positive behaviour."""

    id: str
    number: int
    name: str
    name_th: str


DOMAINS: Mapping[str, Domain] = {
    d.id: d
    for d in (
        Domain("health", 1, "Physical and mental health", "สุขภาพกายและจิต"),
        Domain("learning", 2, "Lifelong learning", "การเรียนรู้ตลอดชีวิต"),
        Domain(
            "community",
            3,
            "Community and social participation",
            "การมีส่วนร่วมในการพัฒนาชุมชนและสังคม",
        ),
        Domain("safety", 4, "Quality of life and safety", "คุณภาพชีวิตและความปลอดภัย"),
        Domain("environment", 5, "Environment and resources", "สิ่งแวดล้อมและทรัพยากร"),
    )
}


@dataclass(frozen=True)
class ScoreRules:
    """Score ranges and the local time zone of the calendar-year window."""

    person_min: int
    person_max: int
    organisation_min: int
    organisation_max: int
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def clamp(self, total: int) -> int:
        """`total` clamped to the person range."""
        return max(self.person_min, min(self.person_max, total))
