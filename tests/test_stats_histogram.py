"""Node-side histograms in SQL (real SQLite files), against a plain-Python reference.

Property (hypothesis): for random records at every agency, each node's SQL histogram equals
the reference, and adding one more person with any records at any agencies changes the
summed histogram by at most `l1_sensitivity` in L1: the bound the noise is calibrated to.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from node.histogram import node_histogram
from node.store import BEHAVIOUR_RECORD, IMPORT_BATCH, NodeStore
from policies.defaults import default_policy_document
from policies.loader import parse_policy
from policies.model import Policy
from policies.releases import bins, indicator_cells, l1_sensitivity
from policies.statistics import ReleaseDefinition

POLICY = parse_policy(default_policy_document(3))
AGENCIES = list(POLICY.agencies)
YEAR = 2025
START = int(POLICY.year_bounds(YEAR)[0].timestamp())
DAY = 86_400
CODES = {a: [i.code for i in POLICY.indicators_for(a)] for a in AGENCIES}

# (person, indicator index, day from 1 Jan (negative: last year), quantity, certified)
Row = tuple[int, int, int, int, bool]


def _key(text: str) -> bytes | str:
    """A 32-byte value in the column's stored form (raw bytes, or hex text)."""
    digest = hashlib.sha256(text.encode()).digest()
    return digest if BEHAVIOUR_RECORD.c.pseudonym.type.python_type is bytes else digest.hex()


def _definition(name: str, bound: int | None = None) -> ReleaseDefinition:
    definition = POLICY.statistics_rules.release(name)
    if bound is None:
        return definition
    document = POLICY.document
    for entry in document["statistics"]["releases"]:
        if entry["name"] == name:
            entry["contribution_bound"] = bound
    return parse_policy(document).statistics_rules.release(name)


@contextmanager
def _stores() -> Iterator[dict[str, NodeStore]]:
    with tempfile.TemporaryDirectory() as tmp:
        stores = {a: NodeStore(f"sqlite:///{Path(tmp) / a}.db") for a in AGENCIES}
        for store in stores.values():
            with store.engine.begin() as connection:
                connection.execute(
                    insert(IMPORT_BATCH).values(
                        id=1,
                        file_sha256="x",
                        filename="x",
                        row_count=0,
                        new_records=0,
                        imported_at=0,
                    )
                )
        try:
            yield stores
        finally:
            for store in stores.values():
                store.dispose()


def _insert(store: NodeStore, agency: str, rows: list[Row], tag: str) -> None:
    codes = CODES[agency]
    records = [
        {
            "record_key": _key(f"{tag}-{n}"),
            "pseudonym": _key(f"p{person}"),
            "indicator": codes[code % len(codes)],
            "occurred_at": START + day * DAY + n,  # distinct instants, ties only by design
            "quantity": quantity,
            "certifier": "c" if certified else "",
            "certified": certified,
            "import_id": 1,
        }
        for n, (person, code, day, quantity, certified) in enumerate(rows)
    ]
    if records:
        with store.engine.begin() as connection:
            connection.execute(insert(BEHAVIOUR_RECORD), records)


def _counted(agency: str, rows: list[Row]) -> list[tuple[int, str, int, int]]:
    """(person, code, instant, quantity) of rows a score would count this year."""
    codes = CODES[agency]
    out = []
    for n, (person, code, day, quantity, certified) in enumerate(rows):
        if certified and 0 <= day < 365:
            out.append((person, codes[code % len(codes)], START + day * DAY + n, quantity))
    return out


def reference(
    policy: Policy, definition: ReleaseDefinition, agency: str, rows: list[Row]
) -> list[int]:
    counts = [0] * len(bins(policy, definition))
    counted = _counted(agency, rows)
    if definition.kind == "participation":
        cells = indicator_cells(policy, definition, agency)
        first: dict[int, dict[int, int]] = defaultdict(dict)
        for person, code, at, _ in counted:
            cell = cells[code]
            first[person][cell] = min(at, first[person].get(cell, at))
        for per_cell in first.values():
            ranked = sorted(per_cell, key=lambda c: (per_cell[c], c))
            for cell in ranked[: definition.contribution_bound]:
                counts[cell] += 1
        return counts
    thresholds = [band.min_points for band in definition.bands]
    occurrences: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for person, code, _, quantity in counted:
        occurrences[person][code] += quantity
    for per_code in occurrences.values():
        total = sum(policy.indicators[c].points_for(n) for c, n in per_code.items())
        counts[max(i for i, low in enumerate(thresholds) if total >= low)] += 1
    return counts


rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 6),
        st.integers(0, 20),
        st.integers(-30, 380),
        st.integers(1, 4),
        st.booleans(),
    ),
    max_size=25,
)
population = st.fixed_dictionaries({a: rows_strategy for a in AGENCIES})
newcomer = st.fixed_dictionaries(
    {
        a: st.lists(
            st.tuples(
                st.just(99),
                st.integers(0, 20),
                st.integers(0, 364),
                st.integers(1, 10),
                st.booleans(),
            ),
            max_size=12,
        )
        for a in AGENCIES
    }
)
DEFINITIONS = [
    _definition("participation-by-domain-and-area"),
    _definition("participation-by-domain-and-area", bound=1),
    _definition("participation-by-domain-and-area", bound=4),
    _definition("yearly-points-in-bands"),
]


def _federated(stores: dict[str, NodeStore], definition: ReleaseDefinition) -> list[int]:
    per_node = [node_histogram(stores[a].engine, POLICY, definition, a, YEAR) for a in AGENCIES]
    return [sum(column) for column in zip(*per_node, strict=True)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(population, newcomer)
def test_sql_matches_the_reference_and_one_person_moves_at_most_the_sensitivity(
    base: dict[str, list[Row]], extra: dict[str, list[Row]]
) -> None:
    with _stores() as stores:
        for agency in AGENCIES:
            _insert(stores[agency], agency, base[agency], "base")
        before = {}
        for definition in DEFINITIONS:
            for agency in AGENCIES:
                sql = node_histogram(stores[agency].engine, POLICY, definition, agency, YEAR)
                assert sql == reference(POLICY, definition, agency, base[agency])
            before[definition] = _federated(stores, definition)
        for agency in AGENCIES:
            _insert(stores[agency], agency, extra[agency], "extra")
        for definition in DEFINITIONS:
            after = _federated(stores, definition)
            moved = sum(abs(x - y) for x, y in zip(after, before[definition], strict=True))
            assert moved <= l1_sensitivity(POLICY, definition)


def test_a_person_everywhere_reaches_the_sensitivity_exactly() -> None:
    # Certified records in every cell each agency can reach: the bound is attained.
    everywhere = {
        agency: [(99, code, 10 + code, 1, True) for code in range(len(CODES[agency]))]
        for agency in AGENCIES
    }
    for definition in DEFINITIONS:
        with _stores() as stores:
            empty = _federated(stores, definition)
            for agency in AGENCIES:
                _insert(stores[agency], agency, everywhere[agency], "x")
            moved = sum(
                abs(x - y) for x, y in zip(_federated(stores, definition), empty, strict=True)
            )
            assert moved == l1_sensitivity(POLICY, definition), definition.name


def test_uncertified_and_other_years_do_not_count() -> None:
    definition = _definition("participation-by-domain-and-area")
    with _stores() as stores:
        rows: list[Row] = [(1, 0, -5, 1, True), (2, 0, 400, 1, True), (3, 0, 10, 1, False)]
        _insert(stores["trc"], "trc", rows, "r")
        assert node_histogram(stores["trc"].engine, POLICY, definition, "trc", YEAR) == [0] * 6
        # An indicator that needs no certification would count uncertified rows.
        counted = node_histogram(
            stores["trc"].engine, POLICY, definition, "trc", YEAR, uncertified_ok={"TRC-BLOOD"}
        )
        assert counted == [1, 0, 0, 0, 0, 0]
