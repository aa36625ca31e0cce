"""An agency node's histograms for overview statistics, computed in SQL from its records.

Invariants:
- Only records a score would count are read: those in the year [start, end) that are
  certified, or whose indicator needs no certification under the policy.
- Each person (one pseudonym here) adds at most the definition's contribution bound to the
  node's histogram, in L1:
  - participation: a person counts once per (domain, area) cell they have a record in,
    and in at most `bound` cells: their earliest cells of the year (ties by bin order);
  - points-in-bands: a person counts once, in the band of the yearly points they earned
    at THIS agency (each indicator capped per year, as in a score).
- The counts are exact and never leave this module's caller unmasked
  (`node.statistics` masks every bin before signing).
- Plain SQLAlchemy Core (CASE, GROUP BY, a ROW_NUMBER window) that SQLite and PostgreSQL
  both run. A CASE is grouped on only through a subquery column, because PostgreSQL does not
  treat two renderings of one parameterised expression as the same GROUP BY key.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy import ColumnElement, Connection, Engine, Select, case, func, or_, select

from fedscore.errors import FailedPrecondition
from node.store import BEHAVIOUR_RECORD
from policies.model import Policy
from policies.releases import bins, indicator_cells
from policies.statistics import PARTICIPATION, POINTS_IN_BANDS, ReleaseDefinition


def _counted(
    codes: Collection[str], uncertified_ok: Collection[str], start: int, end: int
) -> list[ColumnElement[bool]]:
    records = BEHAVIOUR_RECORD.c
    certified: ColumnElement[bool] = records.certified.is_(True)
    if uncertified_ok:
        certified = or_(certified, records.indicator.in_(sorted(uncertified_ok)))
    return [
        records.occurred_at >= start,
        records.occurred_at < end,
        records.indicator.in_(sorted(codes)),
        certified,
    ]


def participation_query(
    cells: Mapping[str, int],
    bound: int,
    uncertified_ok: Collection[str],
    start: int,
    end: int,
) -> Select[int, int]:
    """(bin, people) for the agency's indicators `cells` (code -> bin), bounded per person."""
    records = BEHAVIOUR_RECORD.c
    rows = (
        select(
            records.pseudonym.label("person"),
            case(dict(cells), value=records.indicator).label("bin"),
            records.occurred_at.label("at"),
        )
        .where(*_counted(cells, uncertified_ok, start, end))
        .subquery("counted")
    )
    # One row per (person, cell) they have a record in, with their first record's time.
    pairs = (
        select(rows.c.person, rows.c.bin, func.min(rows.c.at).label("first_at"))
        .group_by(rows.c.person, rows.c.bin)
        .subquery("pairs")
    )
    if bound >= len(set(cells.values())):
        # Nobody can exceed the bound: skip the window (one sort fewer).
        return select(pairs.c.bin, func.count()).group_by(pairs.c.bin)
    rank = func.row_number().over(
        partition_by=pairs.c.person, order_by=(pairs.c.first_at, pairs.c.bin)
    )
    ranked = select(pairs.c.bin, rank.label("rank")).subquery("ranked")
    return select(ranked.c.bin, func.count()).where(ranked.c.rank <= bound).group_by(ranked.c.bin)


def _points(quantity: ColumnElement[int], points: int, cap: int | None) -> ColumnElement[int]:
    earned = quantity * points
    return earned if cap is None else case((earned > cap, cap), else_=earned)


def points_bands_query(
    policy: Policy,
    agency_id: str,
    thresholds: list[int],
    uncertified_ok: Collection[str],
    start: int,
    end: int,
) -> Select[int, int]:
    """(band index, people): each person once, by their yearly points at this agency."""
    records = BEHAVIOUR_RECORD.c
    own = policy.indicators_for(agency_id)
    occurrences = (
        select(
            records.pseudonym.label("person"),
            records.indicator.label("code"),
            func.sum(records.quantity).label("n"),
        )
        .where(*_counted([i.code for i in own], uncertified_ok, start, end))
        .group_by(records.pseudonym, records.indicator)
        .subquery("occurrences")
    )
    points = case(
        *(
            (occurrences.c.code == i.code, _points(occurrences.c.n, i.points, i.cap_per_year))
            for i in own
        ),
        else_=0,
    )
    totals = (
        select(func.sum(points).label("total")).group_by(occurrences.c.person).subquery("totals")
    )
    # The highest band whose minimum the total reaches; a total above the person maximum
    # is clamped, which leaves it in the top band anyway.
    band = case(
        *((totals.c.total >= low, index) for index, low in reversed(list(enumerate(thresholds)))),
        else_=0,
    )
    banded = select(band.label("band")).subquery("banded")
    return select(banded.c.band, func.count()).group_by(banded.c.band)


def node_histogram(
    connection: Connection | Engine,
    policy: Policy,
    definition: ReleaseDefinition,
    agency_id: str,
    year: int,
    uncertified_ok: Collection[str] = (),
) -> list[int]:
    """This agency's exact, bounded counts per bin of `definition` for `year`."""
    start_at, end_at = policy.year_bounds(year)
    start, end = int(start_at.timestamp()), int(end_at.timestamp())
    counts = [0] * len(bins(policy, definition))
    if not policy.indicators_for(agency_id):
        return counts
    if definition.kind == PARTICIPATION:
        cells = indicator_cells(policy, definition, agency_id)
        query = participation_query(
            cells, definition.contribution_bound, uncertified_ok, start, end
        )
    elif definition.kind == POINTS_IN_BANDS:
        thresholds = [band.min_points for band in definition.bands]
        query = points_bands_query(policy, agency_id, thresholds, uncertified_ok, start, end)
    else:
        raise FailedPrecondition(
            f"{definition.kind} is not computed by agency nodes", reason="UNKNOWN_RELEASE"
        )
    if isinstance(connection, Engine):
        with connection.connect() as opened:
            rows = opened.execute(query).all()
    else:
        rows = connection.execute(query).all()
    for index, count in rows:
        counts[int(index)] = int(count)
    return counts
