"""Cross-matching the helper aggregator: every noised release was asked, charged and
released, and both ledgers agree (docs/adr/0019).

A node-side release is noised by the helper, which charges its own ledger; the coordinator
charges its own. Neither log alone shows that the other party agreed, so the regulator
matches them (each failure an `Anomaly` naming the party and entry it is about):
- every helper "statistics_noised" answers a coordinator "statistics_query_issued" with
  the same query hash, id, release and year, logged no later (beyond the clock skew)
  (NOISE_WITHOUT_QUERY, NOISE_MISMATCH), whose log promise points at that very entry of
  the coordinator's verified log (PROMISE_MISSING, PROMISE_NOT_INCLUDED). Needs every
  coordinator's log verified;
- every helper charge is matched by that coordinator's "statistics_released" of the same
  query id (HELPER_CHARGE_NOT_RELEASED: the coordinator may hold noisy counts it never
  published, or the helper's answer was lost), with the same release id, dataset, year
  and epsilon (BUDGET_DISAGREEMENT), naming this helper as who noised it
  (NOISED_BY_MISMATCH);
- every node-side "statistics_released" was noised by a helper whose log verified
  (RELEASE_NOT_NOISED_BY_HELPER: a coordinator that publishes without the helper had no
  counts to publish; whatever it published is not the federation's). Needs every helper's
  log verified;
- the helper's budget held: per helper, dataset and year, its charges never exceed the
  policy's yearly budget (BUDGET_OVERSPENT, as for the coordinator).
"""

from __future__ import annotations

from collections.abc import Sequence

from audit.client.crossmatch_entries import (
    CLOCK_SKEW_SECONDS,
    Anomaly,
    Entry,
    VerifiedLogs,
    entries_of,
    group_by,
    prefix,
    promise_included,
    promised_query,
)
from audit.client.crossmatch_statistics import budget_held
from audit.core import kinds
from audit.core.fields import (
    DATASET,
    EPSILON_SPENT,
    NOISED_BY,
    QUERY_HASH,
    QUERY_ID,
    RELEASE,
    RELEASE_ID,
    YEAR,
)
from policies.model import Policy

LEDGER_FIELDS = (RELEASE_ID, RELEASE, DATASET, YEAR, EPSILON_SPENT)


def helper_checks(logs: VerifiedLogs, policy: Policy) -> list[Anomaly]:
    """Every disagreement between the helpers' logs and the coordinators', in a stable order."""
    noised = entries_of(logs.helpers, kinds.STATISTICS_NOISED)
    issued = entries_of(logs.coordinators, kinds.STATISTICS_QUERY_ISSUED)
    released = entries_of(logs.coordinators, kinds.STATISTICS_RELEASED)
    found: list[Anomaly] = []
    if logs.verified("coordinator"):
        found += _noise_follows_queries(logs, noised, issued)
        found += _charges_released(noised, released)
    if logs.verified("helper"):
        found += _releases_noised(noised, released, policy)
    found += budget_held(noised, policy)
    return found


def _noise_follows_queries(
    logs: VerifiedLogs, noised: Sequence[Entry], issued: Sequence[Entry]
) -> list[Anomaly]:
    by_hash = group_by(issued, QUERY_HASH)
    found: list[Anomaly] = []
    for charge in noised:
        query = promised_query(charge, by_hash.get(charge.text(QUERY_HASH), []))
        if query is None:
            found.append(
                charge.anomaly(
                    "NOISE_WITHOUT_QUERY",
                    f"noised statistics query {charge.text(QUERY_ID) or '?'} (spec "
                    f"{prefix(charge.text(QUERY_HASH))}), which no coordinator logged",
                )
            )
        else:
            differs = [
                name
                for name in (QUERY_ID, RELEASE, YEAR)
                if charge.fields.get(name) != query.fields.get(name)
            ]
            if differs or charge.logged_at + CLOCK_SKEW_SECONDS < query.logged_at:
                found.append(
                    charge.anomaly(
                        "NOISE_MISMATCH",
                        f"{', '.join(differs) or 'time'} differ from {query.party} entry "
                        f"{query.index}",
                    )
                )
        found += promise_included(logs, charge, query)
    return found


def _charges_released(noised: Sequence[Entry], released: Sequence[Entry]) -> list[Anomaly]:
    by_query = group_by(released, QUERY_ID)
    found: list[Anomaly] = []
    for charge in noised:
        query_id = charge.text(QUERY_ID)
        matches = by_query.get(query_id, [])
        if not matches:
            found.append(
                charge.anomaly(
                    "HELPER_CHARGE_NOT_RELEASED",
                    f"noised and charged statistics query {query_id} (release id "
                    f"{charge.text(RELEASE_ID)}), which no coordinator released",
                )
            )
            continue
        release = matches[-1]
        differs = [n for n in LEDGER_FIELDS if charge.fields.get(n) != release.fields.get(n)]
        if differs:
            found.append(
                charge.anomaly(
                    "BUDGET_DISAGREEMENT",
                    f"{', '.join(differs)} differ from {release.party} entry {release.index}: "
                    "the two ledgers charged this release differently",
                )
            )
        if release.text(NOISED_BY) != charge.party:
            found.append(
                release.anomaly(
                    "NOISED_BY_MISMATCH",
                    f"released query {query_id} as noised by {release.text(NOISED_BY)!r}; "
                    f"{charge.party} noised it",
                )
            )
    return found


def _releases_noised(
    noised: Sequence[Entry], released: Sequence[Entry], policy: Policy
) -> list[Anomaly]:
    charged = {charge.text(QUERY_ID) for charge in noised}
    found: list[Anomaly] = []
    for release in released:
        definition = policy.statistics_rules.releases.get(release.text(RELEASE))
        query_id = release.text(QUERY_ID)
        node_side = bool(query_id) or (definition is not None and definition.node_side)
        if node_side and query_id not in charged:
            found.append(
                release.anomaly(
                    "RELEASE_NOT_NOISED_BY_HELPER",
                    f"released {release.text(RELEASE)!r} (query {query_id or '?'}), which no "
                    "helper aggregator noised or charged",
                )
            )
    return found
