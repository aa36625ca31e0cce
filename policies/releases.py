"""What one statistics release counts under one policy: its bins, participants, sensitivity.

Functions of a `Policy` and a `ReleaseDefinition` (from `policies/statistics.py`), kept
apart from the rules' parsing so that the policy model may hold its statistics rules
without an import cycle. Every node and the coordinator derive the same bins, in the
same order, from the same policy. Pure functions.
"""

from __future__ import annotations

from datetime import UTC, datetime

from policies.model import Policy
from policies.statistics import (
    MONTHS_EN,
    MONTHS_TH,
    PARTICIPATION,
    POINTS_IN_BANDS,
    SCORE_QUERIES,
    Bin,
    ReleaseDefinition,
    area_labels,
    area_of,
)
from policies.vocabulary import DOMAINS, NATIONAL


def _cell_of(policy: Policy, definition: ReleaseDefinition, code: str) -> tuple[str, str]:
    indicator = policy.indicators[code]
    assert definition.area_level is not None  # parse_statistics requires it here
    return indicator.domain, area_of(indicator.scope, definition.area_level)


def _participation_cells(policy: Policy, definition: ReleaseDefinition) -> list[tuple[str, str]]:
    reached = {_cell_of(policy, definition, code) for code in policy.indicators}
    domain_order = list(DOMAINS)
    return sorted(reached, key=lambda c: (domain_order.index(c[0]), c[1] != NATIONAL, c[1]))


def bins(policy: Policy, definition: ReleaseDefinition) -> tuple[Bin, ...]:
    """The release's cells, in the order every node and the coordinator use."""
    if definition.kind == PARTICIPATION:
        out = []
        for domain, area in _participation_cells(policy, definition):
            area_en, area_th = area_labels(area)
            name = DOMAINS[domain]
            out.append(
                Bin(
                    key=f"{domain}/{area}",
                    label=f"{name.name} — {area_en}",
                    label_th=f"{name.name_th} — {area_th}",
                    dimensions=(("domain", domain), ("area", area)),
                )
            )
        return tuple(out)
    if definition.kind == POINTS_IN_BANDS:
        return tuple(
            Bin(
                key=f"band/{band.label}",
                label=f"{band.label} points",
                label_th=f"{band.label} คะแนน",
                dimensions=(("band", band.label),),
            )
            for band in definition.bands
        )
    return tuple(
        Bin(
            key=f"{purpose}/{month:02d}",
            label=f"{purpose} — {MONTHS_EN[month - 1]}",
            label_th=f"{purpose} — {MONTHS_TH[month - 1]}",
            dimensions=(("purpose", purpose), ("month", f"{month:02d}")),
        )
        for purpose in policy.purposes
        for month in range(1, 13)
    )


def indicator_cells(
    policy: Policy, definition: ReleaseDefinition, agency_id: str
) -> dict[str, int]:
    """Participation: each of the agency's indicator codes -> the index of its bin."""
    index = {b.key: i for i, b in enumerate(bins(policy, definition))}
    return {
        i.code: index["/".join(_cell_of(policy, definition, i.code))]
        for i in policy.indicators_for(agency_id)
    }


def participants(policy: Policy) -> tuple[str, ...]:
    """Every agency of the policy: a statistics query always asks them all (no subsets)."""
    return tuple(policy.agencies)


def l1_sensitivity(policy: Policy, definition: ReleaseDefinition) -> int:
    """The most one privacy unit, added or removed, changes the summed histogram (L1).

    Nodes cannot tell that two pseudonyms are one person, so a person present at every
    agency changes every agency's counts: the sum over agencies of what one agency lets
    one person contribute (its bound, or fewer if its indicators reach fewer cells).
    """
    bound = definition.contribution_bound
    if definition.kind == SCORE_QUERIES:
        return bound
    total = 0
    for agency in participants(policy):
        if definition.kind == PARTICIPATION:
            reachable = len(set(indicator_cells(policy, definition, agency).values()))
        else:
            reachable = 1 if policy.indicators_for(agency) else 0
        total += min(bound, reachable)
    return total


def month_starts(policy: Policy, year: int) -> tuple[int, ...]:
    """Unix seconds of the 1st of each month of `year`, local time, and of 1 Jan next year."""
    zone = policy.score.zone
    starts = [datetime(year, m, 1, tzinfo=zone) for m in range(1, 13)]
    starts.append(datetime(year + 1, 1, 1, tzinfo=zone))
    return tuple(int(s.astimezone(UTC).timestamp()) for s in starts)
