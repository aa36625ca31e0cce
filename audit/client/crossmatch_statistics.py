"""Cross-matching statistics: every node histogram answer was asked, logged and paid for.

An exact federated histogram exists only where EVERY agency asked one spec answered it
(the per-bin masks cancel only in that sum); differential privacy holds only if each such
histogram was released with noise and its epsilon charged to the yearly budget. The
coordinator's own log cannot show that it did not ask more than it released, so the
regulator matches the nodes' logs against it.

Checks (each failure is an `Anomaly` naming the party and entry index it is about):
- every node "statistics_answered" has a coordinator "statistics_query_issued" with the
  same query hash, and the same query id, release and year, that names the node among
  its participants, and was not logged after the node answered
  (STATISTICS_ANSWER_WITHOUT_QUERY, STATISTICS_ANSWER_MISMATCH, ANSWER_BEFORE_QUERY); its
  log promise points at that very entry of the coordinator's verified log
  (PROMISE_MISSING, PROMISE_NOT_INCLUDED). Needs every coordinator's log verified;
- a statistics query a node refused after authenticating it was logged (QUERY_NOT_LOGGED);
- every statistics query asks a release the policy has nodes compute (UNKNOWN_RELEASE),
  of every agency of the policy, each once (PARTICIPANT_SUBSET, PARTICIPANT_SET_MISMATCH);
- a statistics query that every participant answered with its very spec hash (so it
  could be summed) is charged by a later "statistics_released" of the same coordinator
  naming its query id (STATISTICS_NOT_CHARGED, on the issued entry, naming who answered).
  A query some participant did not answer gave the coordinator only shares, so it needs
  no charge (e.g. "statistics_failed" with a node down); nor does one every node answered
  whose failure at the helper the coordinator logged ("statistics_failed" naming it) and
  no helper's log shows noised: without the helper's noisy share sums the coordinator
  holds uniformly random shares (docs/adr/0019; the helper's charges are matched in
  `audit.client.crossmatch_helper`);
- every "statistics_released" charges a query its coordinator issued before it, for the
  same release and year, unless its release is computed from the coordinator's own log
  (query id "") (RELEASE_WITHOUT_QUERY, RELEASE_MISMATCH, UNKNOWN_RELEASE); every
  "statistics_failed" follows its query (OUTCOME_WITHOUT_QUERY);
- the budget held: per coordinator, dataset and year, the exact sum of "epsilon_spent"
  over its releases never exceeds the policy's yearly budget (BUDGET_OVERSPENT on each
  release at and after the one that crossed it).

Budget arithmetic: the coordinator's ledger counts whole nano-epsilon, rounding each spend
up and the total down, so an honest ledger's logged spends sum (exactly, here with
fractions, not floats) to at most the budget. `BUDGET_TOLERANCE_EPSILON` (one
nano-epsilon, the ledger's unit) only absorbs a budget printed with more digits than a
float holds; it can never hide a whole release.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction

from audit.client.crossmatch_entries import (
    Anomaly,
    Entry,
    VerifiedLogs,
    answer_follows_query,
    entries_of,
    group_by,
    outcomes_follow,
    participant_scope,
    prefix,
    promise_included,
    promised_query,
    refusals_logged,
)
from audit.core import kinds
from audit.core.fields import (
    DATASET,
    EPSILON_SPENT,
    PARTICIPANTS,
    QUERY_HASH,
    QUERY_ID,
    RELEASE,
    YEAR,
)
from policies.model import Policy
from policies.releases import participants
from policies.statistics import ReleaseDefinition

BUDGET_TOLERANCE_EPSILON = Fraction(1, 10**9)
ISSUED = kinds.STATISTICS_QUERY_ISSUED
ANSWERED = kinds.STATISTICS_ANSWERED
RELEASED = kinds.STATISTICS_RELEASED


def statistics_checks(logs: VerifiedLogs, policy: Policy) -> list[Anomaly]:
    """Every statistics disagreement between the verified logs, in a stable order."""
    issued = entries_of(logs.coordinators, ISSUED)
    released = entries_of(logs.coordinators, RELEASED)
    answers = entries_of(logs.agencies, ANSWERED)
    found: list[Anomaly] = []
    if logs.verified("coordinator"):
        found += _answers_match_queries(logs, answers, issued)
        found += refusals_logged(entries_of(logs.agencies, kinds.STATISTICS_REFUSED), issued)
    found += _query_scope(issued, policy)
    failed = entries_of(logs.coordinators, kinds.STATISTICS_FAILED)
    noised = entries_of(logs.helpers, kinds.STATISTICS_NOISED)
    unnoised = {f.text(QUERY_ID) for f in failed} - {n.text(QUERY_ID) for n in noised}
    if not logs.verified("helper"):
        unnoised = set()  # without the helpers' logs no failure can be believed
    found += _answered_queries_charged(issued, released, answers, policy, unnoised)
    found += _releases_follow_queries(issued, released, policy)
    found += outcomes_follow(issued, entries_of(logs.coordinators, kinds.STATISTICS_FAILED))
    found += budget_held(released, policy)
    return found


def _answers_match_queries(
    logs: VerifiedLogs, answers: Sequence[Entry], issued: Sequence[Entry]
) -> list[Anomaly]:
    by_hash = group_by(issued, QUERY_HASH)
    found: list[Anomaly] = []
    for answer in answers:
        query = promised_query(answer, by_hash.get(answer.text(QUERY_HASH), []))
        if query is None:
            found.append(
                answer.anomaly(
                    "STATISTICS_ANSWER_WITHOUT_QUERY",
                    f"answered statistics query {answer.text(QUERY_ID) or '?'} (spec "
                    f"{prefix(answer.text(QUERY_HASH))}), which no coordinator logged",
                )
            )
        else:
            found += _answer_matches(answer, query)
        found += promise_included(logs, answer, query)
    return found


def _answer_matches(answer: Entry, query: Entry) -> list[Anomaly]:
    differs = [
        name
        for name in (QUERY_ID, RELEASE, YEAR)
        if answer.fields.get(name) != query.fields.get(name)
    ]
    return answer_follows_query(answer, query, differs, "STATISTICS_ANSWER_MISMATCH")


def _node_release(policy: Policy, name: str) -> ReleaseDefinition | None:
    definition = policy.statistics_rules.releases.get(name)
    return definition if definition is not None and definition.node_side else None


def _query_scope(issued: Sequence[Entry], policy: Policy) -> list[Anomaly]:
    found: list[Anomaly] = []
    for query in issued:
        if _node_release(policy, query.text(RELEASE)) is None:
            found.append(
                query.anomaly(
                    "UNKNOWN_RELEASE",
                    f"release {query.text(RELEASE)!r} is not one the policy has nodes compute",
                )
            )
        found += participant_scope(query, participants(policy), "every statistics query")
    return found


def _answered_queries_charged(
    issued: Sequence[Entry],
    released: Sequence[Entry],
    answers: Sequence[Entry],
    policy: Policy,
    unnoised: set[str],
) -> list[Anomaly]:
    answered: dict[tuple[str, str], set[str]] = defaultdict(set)
    for answer in answers:
        answered[(answer.text(QUERY_ID), answer.text(QUERY_HASH))].add(answer.party)
    charged = {(r.party, r.text(QUERY_ID)): r.index for r in released}
    every_agency = set(participants(policy))
    found = []
    for query in issued:
        query_id = query.text(QUERY_ID)
        who = answered.get((query_id, query.text(QUERY_HASH)), set())
        asked = set(query.names(PARTICIPANTS))
        # Summable if every agency the spec (or the policy) names answered this very spec.
        summable = bool(who) and ((bool(asked) and asked <= who) or every_agency <= who)
        # `charged` keeps each query id's LAST release: a charge before the query is none.
        if not summable or charged.get((query.party, query_id), -1) > query.index:
            continue
        if query_id in unnoised:  # failed at the helper: the coordinator holds shares only
            continue
        found.append(
            query.anomaly(
                "STATISTICS_NOT_CHARGED",
                f"{', '.join(sorted(who))} answered statistics query {query_id} (release "
                f"{query.text(RELEASE)!r}, year {query.fields.get(YEAR)}), but no "
                "statistics_released charges it to the privacy budget",
            )
        )
    return found


def _releases_follow_queries(
    issued: Sequence[Entry], released: Sequence[Entry], policy: Policy
) -> list[Anomaly]:
    first_issued: dict[tuple[str, str], Entry] = {}
    for issue in issued:
        first_issued.setdefault((issue.party, issue.text(QUERY_ID)), issue)
    found = []
    for release in released:
        name, query_id = release.text(RELEASE), release.text(QUERY_ID)
        definition = policy.statistics_rules.releases.get(name)
        if definition is None:
            found.append(release.anomaly("UNKNOWN_RELEASE", f"release {name!r} is not in policy"))
        elif release.text(DATASET) != definition.dataset:
            found.append(
                release.anomaly(
                    "RELEASE_MISMATCH",
                    f"logged dataset {release.text(DATASET)!r}; release {name!r} reads "
                    f"{definition.dataset!r}",
                )
            )
        if not query_id:
            if definition is not None and definition.node_side:
                found.append(
                    release.anomaly(
                        "RELEASE_WITHOUT_QUERY",
                        f"release {name!r} is computed by agency nodes but names no query",
                    )
                )
            continue
        query = first_issued.get((release.party, query_id))
        if query is None or query.index >= release.index:
            found.append(
                release.anomaly(
                    "RELEASE_WITHOUT_QUERY",
                    f"charges statistics query {query_id}, which was not issued before",
                )
            )
        elif (query.text(RELEASE), query.fields.get(YEAR)) != (
            name,
            release.fields.get(YEAR),
        ):
            found.append(
                release.anomaly(
                    "RELEASE_MISMATCH",
                    f"query {query_id} ({release.party} entry {query.index}) asked release "
                    f"{query.text(RELEASE)!r} for {query.fields.get(YEAR)}; this releases "
                    f"{name!r} for {release.fields.get(YEAR)}",
                )
            )
    return found


def budget_held(released: Sequence[Entry], policy: Policy) -> list[Anomaly]:
    """Per party, dataset and year, the charges of `released` ("statistics_released" at a
    coordinator, "statistics_noised" at a helper) never exceed the policy's budget."""
    spent: dict[tuple[str, str, object], Fraction] = defaultdict(Fraction)
    found = []
    for release in released:
        definition = policy.statistics_rules.releases.get(release.text(RELEASE))
        dataset = definition.dataset if definition is not None else release.text(DATASET)
        epsilon = release.real(EPSILON_SPENT)
        if epsilon is None or not math.isfinite(epsilon) or epsilon < 0:
            found.append(
                release.anomaly(
                    "RELEASE_MISMATCH", "epsilon_spent is not a finite, non-negative number"
                )
            )
            continue
        key = (release.party, dataset, release.fields.get(YEAR))
        spent[key] += Fraction(epsilon)
        budget = policy.statistics_rules.budget(dataset)
        if spent[key] > Fraction(budget) + BUDGET_TOLERANCE_EPSILON:
            found.append(
                release.anomaly(
                    "BUDGET_OVERSPENT",
                    f"{float(spent[key]):.9g} epsilon spent on {dataset} for year {key[2]}; "
                    f"the policy allows {budget:.9g}",
                )
            )
    return found
