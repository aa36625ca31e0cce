"""Cross-matching statistics and "one query id, one question", as pure functions.

Logs are synthetic but real: every entry is canonical JSON with its RFC 6962 leaf hash,
and a node's log promise names the leaf of the coordinator entry it points at, exactly
as the parties write them. Each case states the coordinator's log, what each agency
logged, and the anomalies the regulator must name (party, entry index, reason); the
clean cases must name none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from audit.client.crossmatch import cross_match
from audit.client.crossmatch_entries import VerifiedLogs
from audit.client.crossmatch_statistics import BUDGET_TOLERANCE_EPSILON
from audit.core import merkle
from audit.core.entries import LogEntry, canonical_json, leaf_data
from policies.defaults import default_policy_document
from policies.loader import parse_policy

POLICY = parse_policy(default_policy_document(3))
AGENCIES = ("trc", "dsd", "chuangpao")
NODE_RELEASE = "participation-by-domain-and-area"
OTHER_NODE_RELEASE = "yearly-points-in-bands"
LOG_RELEASE = "score-queries-by-purpose-and-month"
BUDGET = POLICY.statistics_rules.budget("agency-records")
YEAR = 2025
H1, H2, H3, H9 = "a1" * 32, "b2" * 32, "c3" * 32, "f9" * 32
NONCE = "5e" * 32
TOKEN = "ab" * 16

Found = set[tuple[str, int | None, str]]
Event = tuple[str, dict[str, Any], int]


def _log(party: str, events: Sequence[Event]) -> list[LogEntry]:
    entries = []
    for index, (kind, fields, at) in enumerate(events):
        body = canonical_json(fields)
        leaf = merkle.leaf_hash(leaf_data(party, index, kind, body, at))
        entries.append(LogEntry(index, kind, body, leaf, at))
    return entries


# --- the coordinator's entries ---------------------------------------------------------


def issued(query_id: str = "q1", query_hash: str = H1, at: int = 2000, **changes: Any) -> Event:
    fields = {
        "query_id": query_id,
        "query_hash": query_hash,
        "release": NODE_RELEASE,
        "year": YEAR,
        "participants": list(AGENCIES),
        "kind": "histogram",
    }
    return ("statistics_query_issued", {**fields, **changes}, at)


def released(query_id: str = "q1", epsilon: float = 1.0, at: int = 2010, **changes: Any) -> Event:
    fields = {
        "release_id": f"{YEAR}-{query_id}",
        "release": NODE_RELEASE,
        "dataset": "agency-records",
        "year": YEAR,
        "epsilon_spent": epsilon,
        "budget_remaining": 0.0,
        "release_sha256": "00" * 32,
        "policy_hash": POLICY.content_hash,
        "query_id": query_id,
    }
    return ("statistics_released", {**fields, **changes}, at)


def log_release(epsilon: float, at: int = 2010) -> Event:
    """A release computed from the coordinator's own log: no node answers it."""
    return released("", epsilon, at, release=LOG_RELEASE, dataset="score-query-log")


def failed(query_id: str = "q1", unavailable: Sequence[str] = ("chuangpao",)) -> Event:
    fields = {"query_id": query_id, "unavailable": list(unavailable)}
    return ("statistics_failed", {**fields, "reason": "NODE_UNAVAILABLE"}, 2010)


def score_issued(query_id: str, query_hash: str, nonce: str | None = NONCE) -> Event:
    fields: dict[str, Any] = {
        "query_id": query_id,
        "query_hash": query_hash,
        "token_id": TOKEN,
        "purpose": "ptt-fuel-discount",
        "relying_party": "ptt",
        "participants": list(AGENCIES),
        "year": YEAR,
        "kind": "score",
    }
    if nonce is not None:
        fields["request_nonce_hash"] = nonce
    return ("query_issued", fields, 2000)


# --- the agencies' entries -------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A node's "statistics_answered" for coordinator entry `promised` (its log promise)."""

    promised: int = 0
    at: int = 2001
    changes: dict[str, Any] = field(default_factory=dict)
    kind: str = "statistics_answered"


def answer(promised: int = 0, at: int = 2001, **changes: Any) -> Answer:
    return Answer(promised, at, changes)


def score_answer(query_id: str, query_hash: str, nonce: str = NONCE, at: int = 2001) -> Answer:
    fields = {
        "query_id": query_id,
        "query_hash": query_hash,
        "kind": "score",
        "purpose": "ptt-fuel-discount",
        "token_id": TOKEN,
        "relying_party": "ptt",
        "request_nonce_hash": nonce,
        "year": YEAR,
    }
    return Answer(0, at, fields, "query_answered")


def _node_event(node: Answer | Event, coordinator: list[LogEntry]) -> Event:
    if not isinstance(node, Answer):
        return node
    query: dict[str, Any] = {}
    if node.promised < len(coordinator):
        query = coordinator[node.promised].fields
    fields: dict[str, Any] = {
        "query_id": query.get("query_id", "q1"),
        "query_hash": query.get("query_hash", H1),
        "release": query.get("release", NODE_RELEASE),
        "year": query.get("year", YEAR),
        "bins": 12,
        "coordinator": "coordinator",
        "promise_index": node.promised,
        "promise_leaf_hash": (
            coordinator[node.promised].leaf_hash.hex()
            if node.promised < len(coordinator)
            else "00" * 32
        ),
    }
    if node.kind == "query_answered":
        for name in ("release", "bins"):
            del fields[name]
    merged = {k: v for k, v in {**fields, **node.changes}.items() if v is not None}
    return (node.kind, merged, node.at)


def logs_of(
    coordinator_events: Sequence[Event],
    agency_events: dict[str, Sequence[Answer | Event]],
    *,
    coordinator_verified: bool = True,
) -> VerifiedLogs:
    coordinator = _log("coordinator", coordinator_events)
    logs = VerifiedLogs(
        agencies={
            agency: _log(agency, [_node_event(e, coordinator) for e in events])
            for agency, events in agency_events.items()
        }
    )
    if coordinator_verified:
        logs.coordinators["coordinator"] = coordinator
        logs.leaves["coordinator"] = [e.leaf_hash for e in coordinator]
    else:
        logs.unverified["coordinator"] = "coordinator"
    return logs


def found(logs: VerifiedLogs) -> Found:
    return {(a.party, a.index, a.reason) for a in cross_match(logs, POLICY)}


EVERYONE = {agency: [answer()] for agency in AGENCIES}


# --- clean logs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coordinator_events", "agency_events"),
    [
        pytest.param([issued(), released()], EVERYONE, id="a released statistics query"),
        pytest.param(
            [issued(), failed()],
            {"trc": [answer()], "dsd": [answer()], "chuangpao": []},
            id="a failed query: one node was down, the rest answered",
        ),
        pytest.param(
            [issued(), failed(unavailable=())],
            {
                "trc": [answer()],
                "dsd": [answer()],
                "chuangpao": [
                    ("statistics_refused", {"reason": "BAD_YEAR", "query_id": "q1"}, 2001)
                ],
            },
            id="a failed query: one node refused it",
        ),
        pytest.param([log_release(1.0)], {}, id="a release from the coordinator's own log"),
        pytest.param(
            [issued(), released(epsilon=BUDGET / 2), issued("q2", H2), released("q2", BUDGET / 2)],
            {a: [answer(0), answer(2)] for a in AGENCIES},
            id="two releases spending exactly the budget",
        ),
        pytest.param(
            [log_release(1.0), log_release(1.0)],
            {},
            id="the score-query log has its own budget",
        ),
        pytest.param(
            [score_issued("s1", H3, nonce=None), score_issued("s2", H2, nonce=None)],
            {},
            id="score queries logged before request nonces existed",
        ),
    ],
)
def test_consistent_statistics_logs_cross_match_without_anomalies(
    coordinator_events: list[Event], agency_events: dict[str, list[Answer | Event]]
) -> None:
    assert cross_match(logs_of(coordinator_events, agency_events), POLICY) == []


# --- what the regulator must name --------------------------------------------------------


CASES: dict[str, tuple[list[Event], dict[str, list[Answer | Event]], Found]] = {
    "an answer to a statistics query no coordinator logged": (
        [issued(), released()],
        {**EVERYONE, "trc": [answer(), answer(query_id="q9", query_hash=H9)]},
        {("trc", 1, "STATISTICS_ANSWER_WITHOUT_QUERY"), ("trc", 1, "PROMISE_NOT_INCLUDED")},
    ),
    "an answer for another year than the one logged": (
        [issued(), released()],
        {**EVERYONE, "dsd": [answer(year=YEAR - 1)]},
        {("dsd", 0, "STATISTICS_ANSWER_MISMATCH")},
    ),
    "an answer for another release than the one logged": (
        [issued(), released()],
        {**EVERYONE, "dsd": [answer(release=OTHER_NODE_RELEASE)]},
        {("dsd", 0, "STATISTICS_ANSWER_MISMATCH")},
    ),
    "a node answering a query that did not ask it": (
        [issued(participants=["trc", "dsd"]), released()],
        EVERYONE,
        {("chuangpao", 0, "STATISTICS_ANSWER_MISMATCH"), ("coordinator", 0, "PARTICIPANT_SUBSET")},
    ),
    "an answer logged before the query": (
        [issued(), released()],
        {**EVERYONE, "trc": [answer(at=1000)]},
        {("trc", 0, "ANSWER_BEFORE_QUERY")},
    ),
    "an answer without a log promise": (
        [issued(), released()],
        {**EVERYONE, "trc": [answer(promise_index=None, promise_leaf_hash=None)]},
        {("trc", 0, "PROMISE_MISSING")},
    ),
    "a promise of a leaf that is not the query's": (
        [issued(), released()],
        {**EVERYONE, "trc": [answer(promise_leaf_hash="00" * 32)]},
        {("trc", 0, "PROMISE_NOT_INCLUDED")},
    ),
    "an authenticated statistics refusal of a query never logged": (
        [],
        {"dsd": [("statistics_refused", {"reason": "BAD_YEAR", "query_id": "q7"}, 2001)]},
        {("dsd", 0, "QUERY_NOT_LOGGED")},
    ),
    "a statistics query for a release nodes do not compute": (
        [issued(release=LOG_RELEASE)],
        {},
        {("coordinator", 0, "UNKNOWN_RELEASE")},
    ),
    "every node answered and nothing was released": (
        [issued()],
        EVERYONE,
        {("coordinator", 0, "STATISTICS_NOT_CHARGED")},
    ),
    "every node answered; the release charges another query": (
        [issued(), issued("q2", H2), released("q2")],
        {a: [answer(0), answer(1)] for a in AGENCIES},
        {("coordinator", 0, "STATISTICS_NOT_CHARGED")},
    ),
    "a release logged before its query cannot charge it": (
        [released(at=1990), issued()],
        {a: [answer(1)] for a in AGENCIES},
        {("coordinator", 0, "RELEASE_WITHOUT_QUERY"), ("coordinator", 1, "STATISTICS_NOT_CHARGED")},
    ),
    "a node-side release naming no query": (
        [released("")],
        {},
        {("coordinator", 0, "RELEASE_WITHOUT_QUERY")},
    ),
    "a release charging a query never issued": (
        [released("q5")],
        {},
        {("coordinator", 0, "RELEASE_WITHOUT_QUERY")},
    ),
    "a release for another year than its query asked": (
        [issued(), released(year=YEAR - 1)],
        EVERYONE,
        {("coordinator", 1, "RELEASE_MISMATCH")},
    ),
    "a release logged under another dataset to dodge the budget": (
        [issued(), released(dataset="score-query-log")],
        EVERYONE,
        {("coordinator", 1, "RELEASE_MISMATCH")},
    ),
    "the yearly budget overspent": (
        [log_release(BUDGET * 0.6), log_release(BUDGET * 0.6), log_release(0.1)],
        {},
        {("coordinator", 1, "BUDGET_OVERSPENT"), ("coordinator", 2, "BUDGET_OVERSPENT")},
    ),
    "a failure for a statistics query never issued": (
        [failed("q9")],
        {},
        {("coordinator", 0, "OUTCOME_WITHOUT_QUERY")},
    ),
    "a score query and a statistics query under one id": (
        [score_issued("q1", H3), issued()],
        {},
        {("coordinator", 1, "QUERY_ID_REUSED")},
    ),
    "one query id issued twice with the same spec": (
        [issued(), issued(at=2005)],
        {},
        {("coordinator", 1, "QUERY_ID_REUSED")},
    ),
    "one signed request served by two score queries": (
        [score_issued("s1", H1), score_issued("s2", H2)],
        {},
        {("coordinator", 1, "REQUEST_REUSED")},
    ),
    "a score answer for another request than the query's": (
        [score_issued("s1", H1)],
        {"trc": [score_answer("s1", H1, nonce="77" * 32)]},
        {("trc", 0, "ANSWER_MISMATCH")},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cross_matching_statistics_names_what_one_log_cannot_show(case: str) -> None:
    coordinator_events, agency_events, expected = CASES[case]
    assert found(logs_of(coordinator_events, agency_events)) == expected


def test_budget_rounding_is_tolerated_by_one_nano_epsilon_only() -> None:
    within = float(BUDGET + float(BUDGET_TOLERANCE_EPSILON) / 2)
    assert found(logs_of([log_release(within)], {})) == set()
    beyond = float(BUDGET + 3 * float(BUDGET_TOLERANCE_EPSILON))
    assert found(logs_of([log_release(beyond)], {})) == {("coordinator", 0, "BUDGET_OVERSPENT")}


# --- a hostile coordinator and its own "matching" log ----------------------------------


def test_two_specs_under_one_query_id_are_named_despite_matching_forged_entries() -> None:
    """The operator logs an "issued" entry for each spec it signed under one query id.

    trc is asked spec H1 (say, a year in which the others hold nothing), dsd and
    chuangpao spec H2: each answer matches an entry of the coordinator's log and its
    promise, so only comparing the nodes' answers with each other shows the attack.
    """
    coordinator = [issued(), issued(query_hash=H2, year=YEAR - 1, at=2001)]
    agencies: dict[str, Sequence[Answer | Event]] = {
        "trc": [answer(0)],
        "dsd": [answer(1)],
        "chuangpao": [answer(1)],
    }
    anomalies = cross_match(logs_of(coordinator, agencies), POLICY)
    assert {(a.party, a.index, a.reason) for a in anomalies} == {
        ("trc", 0, "SPEC_MISMATCH"),
        ("dsd", 0, "SPEC_MISMATCH"),
        ("chuangpao", 0, "SPEC_MISMATCH"),
        ("coordinator", 1, "QUERY_ID_REUSED"),
    }
    trc = next(a for a in anomalies if a.party == "trc")
    assert H1[:12] in trc.detail and H2[:12] in trc.detail and "dsd" in trc.detail

    # Whatever the coordinator's log says, even nothing the regulator could verify.
    unproven = logs_of(coordinator, agencies, coordinator_verified=False)
    assert {(a.party, a.reason) for a in cross_match(unproven, POLICY)} == {
        (agency, "SPEC_MISMATCH") for agency in AGENCIES
    }


def test_a_score_answer_and_a_histogram_answer_under_one_id_disagree() -> None:
    agencies: dict[str, Sequence[Answer | Event]] = {
        "trc": [score_answer("q1", H3)],
        "dsd": [answer()],
    }
    logs = logs_of([issued()], agencies, coordinator_verified=False)
    assert found(logs) == {("trc", 0, "SPEC_MISMATCH"), ("dsd", 0, "SPEC_MISMATCH")}


def test_one_request_answered_under_two_query_ids_is_named_at_the_nodes() -> None:
    """The coordinator's log shows one query per request; the nodes saw two."""
    agencies: dict[str, Sequence[Answer | Event]] = {
        "trc": [score_answer("s1", H1, at=2001)],
        "dsd": [score_answer("s1", H1, at=2001), score_answer("s2", H2, at=2002)],
        "chuangpao": [score_answer("s2", H2, at=2003)],
    }
    logs = logs_of([], agencies, coordinator_verified=False)
    assert found(logs) == {("dsd", 1, "REQUEST_REUSED"), ("chuangpao", 0, "REQUEST_REUSED")}


def test_no_statistics_check_concludes_from_an_unverified_coordinator_log() -> None:
    logs = logs_of([issued()], EVERYONE, coordinator_verified=False)
    assert cross_match(logs, POLICY) == []
