"""Cross-matching identities: one query id asks one question; one signed request, one query.

A coordinator that signs a different (each individually valid) spec for each node under
one query id could learn one agency's part from the "sum"; its own log may hold whatever
"issued" entries it likes. So these checks trust the nodes' answers, not the coordinator:
the nodes logged the hash of the very spec bytes they answered.

Checks (each failure is an `Anomaly` naming the party and entry index it is about):
- any two node answers ("query_answered" or "statistics_answered", across every agency)
  under one query id whose query hashes differ: SPEC_MISMATCH on each answer that differs
  from another, naming that other party and both hashes' prefixes, whatever the
  coordinator's log says. Needs only the agencies' verified logs;
- the coordinators' logs issue each query id once ("query_issued" or
  "statistics_query_issued", same or different hash): QUERY_ID_REUSED on every later
  entry, naming the first;
- one signed request (its "request_nonce_hash") is served by one query id only, checked
  in the coordinators' "query_issued" entries and in the nodes' "query_answered"
  entries: REQUEST_REUSED on every entry serving it under a later query id than the
  first (first by log time, then party and index). Entries without the field (logged
  before it existed) are not judged.
"""

from __future__ import annotations

from collections.abc import Sequence

from audit.client.crossmatch_entries import (
    Anomaly,
    Entry,
    VerifiedLogs,
    entries_of,
    group_by,
    prefix,
)
from audit.core import kinds
from audit.core.fields import QUERY_HASH, QUERY_ID, REQUEST_NONCE_HASH

ANSWER_KINDS = (kinds.QUERY_ANSWERED, kinds.STATISTICS_ANSWERED)
ISSUE_KINDS = (kinds.QUERY_ISSUED, kinds.STATISTICS_QUERY_ISSUED)


def one_question_per_query_id(logs: VerifiedLogs) -> list[Anomaly]:
    """Every answer or issue that breaks "one id, one question", in a stable order."""
    issued = entries_of(logs.coordinators, *ISSUE_KINDS)
    return [
        *_answers_agree(entries_of(logs.agencies, *ANSWER_KINDS)),
        *_issued_once(issued),
        *_one_query_per_request([q for q in issued if q.kind == kinds.QUERY_ISSUED]),
        *_one_query_per_request(entries_of(logs.agencies, kinds.QUERY_ANSWERED)),
    ]


def _answers_agree(answers: Sequence[Entry]) -> list[Anomaly]:
    found = []
    for query_id, group in group_by(answers, QUERY_ID).items():
        if len({a.text(QUERY_HASH) for a in group}) < 2:
            continue
        for answer in group:
            mine = answer.text(QUERY_HASH)
            other = next(a for a in group if a.text(QUERY_HASH) != mine)
            found.append(
                answer.anomaly(
                    "SPEC_MISMATCH",
                    f"answered query {query_id} with spec {prefix(mine)}; {other.party} "
                    f"(entry {other.index}) answered it with spec "
                    f"{prefix(other.text(QUERY_HASH))}",
                )
            )
    return found


def _issued_once(issued: Sequence[Entry]) -> list[Anomaly]:
    found = []
    for query_id, group in group_by(issued, QUERY_ID).items():
        first = group[0]
        found += [
            again.anomaly(
                "QUERY_ID_REUSED",
                f"query id {query_id} ({again.kind}, spec {prefix(again.text(QUERY_HASH))}) "
                f"was already issued at {first.party} entry {first.index} ({first.kind}, spec "
                f"{prefix(first.text(QUERY_HASH))})",
            )
            for again in group[1:]
        ]
    return found


def _one_query_per_request(entries: Sequence[Entry]) -> list[Anomaly]:
    found = []
    for nonce_hash, group in group_by(entries, REQUEST_NONCE_HASH).items():
        first = min(group, key=lambda e: (e.logged_at, e.party, e.index))
        served = first.text(QUERY_ID)
        found += [
            entry.anomaly(
                "REQUEST_REUSED",
                f"request {prefix(nonce_hash)} serves query {entry.text(QUERY_ID) or '?'}; "
                f"it already served query {served} ({first.party} entry {first.index})",
            )
            for entry in group
            if entry.text(QUERY_ID) != served
        ]
    return found
