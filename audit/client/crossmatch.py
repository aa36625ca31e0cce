"""Cross-matching the parties' verified logs: what one party logged must agree with the others.

Pure functions over entries whose logs already verified (every leaf re-hashed to a
signed, consistent root). A party whose log did not verify is left out, and so is every
check that needs it: nothing is concluded from entries that are not proven.

Checks (each failure is an `Anomaly` naming the party and entry index it is about).
Score queries (this module):
- every node answer ("query_answered") has a coordinator "query_issued" with the same
  query hash, query id, token and purpose (and relying party, request nonce hash and
  year whenever both entries carry them), the node is among its participants, and
  the node did not answer before the query was logged (ANSWER_WITHOUT_QUERY,
  ANSWER_MISMATCH, ANSWER_BEFORE_QUERY);
- every node answer's log promise points at that very entry of the coordinator's log:
  the leaf hash the node was promised is the leaf the regulator re-derived at that index
  (PROMISE_MISSING, PROMISE_NOT_INCLUDED);
- a query a node refused after authenticating it was logged by the coordinator
  (QUERY_NOT_LOGGED): a coordinator that signs queries it never logged is caught even
  when the node said no;
- every coordinator query has a grant in the consent registry's log for the same token,
  purpose and relying party, active at the time of the query and not revoked before it
  (QUERY_WITHOUT_GRANT, GRANT_MISMATCH, GRANT_NOT_ACTIVE, QUERY_AFTER_REVOCATION), and
  asks exactly the purpose's full participant set (PARTICIPANT_SUBSET,
  PARTICIPANT_SET_MISMATCH, UNKNOWN_PURPOSE);
- every released or failed outcome follows its query (OUTCOME_WITHOUT_QUERY); every
  revocation follows its grant (REVOCATION_WITHOUT_GRANT).
Statistics queries (`audit/client/crossmatch_statistics.py`): every node histogram answer matches
a logged statistics query and its promise; every query all nodes answered was charged to
the privacy budget by a release; the budget held per dataset and year; releases follow
their queries; authenticated statistics refusals were logged.
One query id, one question (`audit/client/crossmatch_identity.py`): node answers under one
query id all answered the same spec hash, whatever the coordinator's log says; the
coordinator never issued one query id twice; one signed request served one query only.
"""

from __future__ import annotations

from audit.client.crossmatch_entries import (
    CLOCK_SKEW_SECONDS,
    Anomaly,
    Entry,
    VerifiedLogs,
    answer_follows_query,
    entries_of,
    group_by,
    outcomes_follow,
    participant_scope,
    promise_included,
    promised_query,
    refusals_logged,
)
from audit.client.crossmatch_helper import helper_checks
from audit.client.crossmatch_identity import one_question_per_query_id
from audit.client.crossmatch_statistics import statistics_checks
from audit.core import kinds
from audit.core.fields import (
    NOT_AFTER,
    NOT_BEFORE,
    PURPOSE,
    QUERY_HASH,
    QUERY_ID,
    RELYING_PARTY,
    REQUEST_NONCE_HASH,
    REVOKED_AT,
    TOKEN_ID,
    TTL_SECONDS,
    YEAR,
)
from policies.model import Policy

# A revoked token may still be honoured until every party's status list expires.
DEFAULT_STATUS_TTL_SECONDS = 60
# Newer fields both sides log with one meaning; compared only when both entries have them
# ("kind" is not: the coordinator logs the query's kind, a node the kind of masked answer).
_OPTIONAL_SHARED = (RELYING_PARTY, REQUEST_NONCE_HASH, YEAR)


def cross_match(logs: VerifiedLogs, policy: Policy) -> list[Anomaly]:
    """Every disagreement between the verified logs, in a stable order."""
    anomalies: list[Anomaly] = []
    issued = entries_of(logs.coordinators, kinds.QUERY_ISSUED)
    if logs.verified("coordinator"):
        anomalies += _node_answers(logs, issued)
        anomalies += refusals_logged(entries_of(logs.agencies, kinds.QUERY_REFUSED), issued)
    anomalies += _query_scope(issued, policy)
    if logs.verified("registry"):
        anomalies += _query_grants(logs, issued)
        anomalies += _revocations_follow_grants(logs)
    anomalies += _outcomes_follow_queries(logs)
    anomalies += statistics_checks(logs, policy)
    anomalies += helper_checks(logs, policy)
    anomalies += one_question_per_query_id(logs)
    return anomalies


def _node_answers(logs: VerifiedLogs, issued: list[Entry]) -> list[Anomaly]:
    by_hash = group_by(issued, QUERY_HASH)
    found: list[Anomaly] = []
    for answer in entries_of(logs.agencies, kinds.QUERY_ANSWERED):
        query = promised_query(answer, by_hash.get(answer.text(QUERY_HASH), []))
        if query is None:
            found.append(
                answer.anomaly(
                    "ANSWER_WITHOUT_QUERY",
                    f"answered query {answer.text(QUERY_ID) or '?'}, which no coordinator logged",
                )
            )
        else:
            found += _answer_matches(answer, query)
        found += promise_included(logs, answer, query)
    return found


def _answer_matches(answer: Entry, query: Entry) -> list[Anomaly]:
    differs = [
        name for name in (QUERY_ID, TOKEN_ID, PURPOSE) if answer.text(name) != query.text(name)
    ]
    differs += [
        name
        for name in _OPTIONAL_SHARED
        if name in answer.fields
        and name in query.fields
        and answer.fields[name] != query.fields[name]
    ]
    return answer_follows_query(answer, query, differs, "ANSWER_MISMATCH")


def _query_scope(issued: list[Entry], policy: Policy) -> list[Anomaly]:
    found = []
    for query in issued:
        purpose = policy.purposes.get(query.text(PURPOSE))
        if purpose is None:
            found.append(
                query.anomaly(
                    "UNKNOWN_PURPOSE", f"purpose {query.text(PURPOSE)!r} is not in the policy"
                )
            )
            continue
        found += participant_scope(query, purpose.participants, f"purpose {purpose.id}")
    return found


def _query_grants(logs: VerifiedLogs, issued: list[Entry]) -> list[Anomaly]:
    grants = {g.text(TOKEN_ID): g for g in entries_of(logs.registries, kinds.CONSENT_GRANTED)}
    revoked = {r.text(TOKEN_ID): r for r in entries_of(logs.registries, kinds.CONSENT_REVOKED)}
    ttls = [p.number(TTL_SECONDS) for p in entries_of(logs.registries, kinds.STATUS_LIST_PUBLISHED)]
    ttl = max([t for t in ttls if t is not None], default=DEFAULT_STATUS_TTL_SECONDS)
    notices = {
        (n.party, n.text(TOKEN_ID)): n.index
        for n in reversed(entries_of(logs.coordinators, kinds.REVOCATION_RECEIVED))
    }
    found = []
    for query in issued:
        token_id = query.text(TOKEN_ID)
        grant = grants.get(token_id)

        def anomaly(reason: str, detail: str, query: Entry = query) -> Anomaly:
            return Anomaly(query.party, query.index, reason, detail)

        if grant is None:
            found.append(anomaly("QUERY_WITHOUT_GRANT", f"no grant of token {token_id} logged"))
            continue
        if (grant.text(PURPOSE), grant.text(RELYING_PARTY)) != (
            query.text(PURPOSE),
            query.text(RELYING_PARTY),
        ):
            found.append(
                anomaly("GRANT_MISMATCH", f"grant {grant.index} is for another purpose or party")
            )
        start, end = grant.number(NOT_BEFORE), grant.number(NOT_AFTER)
        at = query.logged_at
        if (
            grant.logged_at > at + CLOCK_SKEW_SECONDS
            or (start is not None and at < start - CLOCK_SKEW_SECONDS)
            or (end is not None and at > end + CLOCK_SKEW_SECONDS)
        ):
            found.append(anomaly("GRANT_NOT_ACTIVE", f"token {token_id} was not valid at {at}"))
        revocation = revoked.get(token_id)
        if revocation is not None:
            revoked_at = revocation.number(REVOKED_AT) or revocation.logged_at
            notified = notices.get((query.party, token_id))
            if (notified is not None and notified < query.index) or (
                at > revoked_at + ttl + CLOCK_SKEW_SECONDS
            ):
                found.append(
                    anomaly(
                        "QUERY_AFTER_REVOCATION",
                        f"token {token_id} was revoked at {revoked_at}; queried at {at}",
                    )
                )
    return found


def _revocations_follow_grants(logs: VerifiedLogs) -> list[Anomaly]:
    granted: dict[tuple[str, str], int] = {}
    for grant in entries_of(logs.registries, kinds.CONSENT_GRANTED):
        granted.setdefault((grant.party, grant.text(TOKEN_ID)), grant.index)
    return [
        Anomaly(
            revocation.party,
            revocation.index,
            "REVOCATION_WITHOUT_GRANT",
            f"revoked token {revocation.text(TOKEN_ID)}, which was never granted before",
        )
        for revocation in entries_of(logs.registries, kinds.CONSENT_REVOKED)
        if granted.get((revocation.party, revocation.text(TOKEN_ID)), revocation.index)
        >= revocation.index
    ]


def _outcomes_follow_queries(logs: VerifiedLogs) -> list[Anomaly]:
    return outcomes_follow(
        entries_of(logs.coordinators, kinds.QUERY_ISSUED),
        entries_of(logs.coordinators, kinds.RESULT_RELEASED, kinds.QUERY_FAILED),
    )
