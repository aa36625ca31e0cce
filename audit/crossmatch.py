"""Cross-matching the parties' verified logs: what one party logged must agree with the others.

Pure functions over entries whose logs already verified (every leaf re-hashed to a
signed, consistent root). A party whose log did not verify is left out, and so is every
check that needs it: nothing is concluded from entries that are not proven.

Checks (each failure is an `Anomaly` naming the party and entry index it is about):
- every node answer ("query_answered") has a coordinator "query_issued" with the same
  query hash, query id, token and purpose, the node is among its participants, and the
  node did not answer before the query was logged (ANSWER_WITHOUT_QUERY,
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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.log import LogEntry
from policies.model import Policy

# Parties' clocks may disagree by this much (seconds).
CLOCK_SKEW_SECONDS = 30
# A revoked token may still be honoured until every party's status list expires.
DEFAULT_STATUS_TTL_SECONDS = 60


@dataclass(frozen=True)
class Anomaly:
    """Something the regulator found wrong: which party, which entry, what."""

    party: str
    index: int | None
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "index": self.index,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Entry:
    """A verified entry with its parsed fields (an unparsable body yields no fields)."""

    party: str
    index: int
    kind: str
    logged_at: int
    fields: Mapping[str, Any]

    @classmethod
    def of(cls, party: str, entry: LogEntry) -> Entry:
        try:
            fields = entry.fields
        except ValueError:
            fields = {}
        if not isinstance(fields, dict):
            fields = {}
        return cls(party, entry.index, entry.kind, entry.logged_at, fields)

    def text(self, name: str) -> str:
        value = self.fields.get(name)
        return value if isinstance(value, str) else ""

    def number(self, name: str) -> int | None:
        value = self.fields.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class VerifiedLogs:
    """Verified entries and re-derived leaf hashes of the parties, by role."""

    coordinators: dict[str, Sequence[LogEntry]] = field(default_factory=dict)
    agencies: dict[str, Sequence[LogEntry]] = field(default_factory=dict)
    registries: dict[str, Sequence[LogEntry]] = field(default_factory=dict)
    leaves: dict[str, Sequence[bytes]] = field(default_factory=dict)
    # Party -> role ("coordinator", "agency", "registry") of logs that did not verify:
    # every check that needs a party of that role is skipped.
    unverified: dict[str, str] = field(default_factory=dict)


def _entries(logs: Mapping[str, Sequence[LogEntry]], kind: str) -> list[Entry]:
    return [Entry.of(party, e) for party, log in logs.items() for e in log if e.kind == kind]


def cross_match(logs: VerifiedLogs, policy: Policy) -> list[Anomaly]:
    """Every disagreement between the verified logs, in a stable order."""
    anomalies: list[Anomaly] = []
    unverified_roles = set(logs.unverified.values())
    coordinators_verified = bool(logs.coordinators) and "coordinator" not in unverified_roles
    registry_verified = bool(logs.registries) and "registry" not in unverified_roles
    issued = _entries(logs.coordinators, "query_issued")
    if coordinators_verified:
        anomalies += _node_answers(logs, issued)
        anomalies += _node_refusals(logs, issued)
    anomalies += _query_scope(issued, policy)
    if registry_verified:
        anomalies += _query_grants(logs, issued)
        anomalies += _revocations_follow_grants(logs)
    anomalies += _outcomes_follow_queries(logs)
    return anomalies


def _node_answers(logs: VerifiedLogs, issued: list[Entry]) -> list[Anomaly]:
    by_hash = {q.text("query_hash"): q for q in issued}
    found: list[Anomaly] = []
    for answer in _entries(logs.agencies, "query_answered"):
        query_id = answer.text("query_id")
        query = by_hash.get(answer.text("query_hash"))
        if query is None:
            found.append(
                Anomaly(
                    answer.party,
                    answer.index,
                    "ANSWER_WITHOUT_QUERY",
                    f"answered query {query_id or '?'}, which no coordinator logged",
                )
            )
        else:
            found += _answer_matches(answer, query)
        found += _promise_included(logs, answer, query)
    return found


def _answer_matches(answer: Entry, query: Entry) -> list[Anomaly]:
    found = []
    differs = [
        name
        for name in ("query_id", "token_id", "purpose")
        if answer.text(name) != query.text(name)
    ]
    if differs:
        found.append(
            Anomaly(
                answer.party,
                answer.index,
                "ANSWER_MISMATCH",
                f"{', '.join(differs)} differ from {query.party} entry {query.index}",
            )
        )
    participants = query.fields.get("participants")
    if not isinstance(participants, list) or answer.party not in participants:
        found.append(
            Anomaly(
                answer.party,
                answer.index,
                "ANSWER_MISMATCH",
                f"answered {query.party} entry {query.index}, which did not ask {answer.party}",
            )
        )
    if answer.logged_at + CLOCK_SKEW_SECONDS < query.logged_at:
        found.append(
            Anomaly(
                answer.party,
                answer.index,
                "ANSWER_BEFORE_QUERY",
                f"answered at {answer.logged_at}, before {query.party} logged the query "
                f"at {query.logged_at}",
            )
        )
    return found


def _promise_included(logs: VerifiedLogs, answer: Entry, query: Entry | None) -> list[Anomaly]:
    coordinator = answer.text("coordinator")
    index = answer.number("promise_index")
    leaf = answer.text("promise_leaf_hash")
    if not coordinator or index is None or not leaf:
        return [
            Anomaly(answer.party, answer.index, "PROMISE_MISSING", "answer names no log promise")
        ]
    leaves = logs.leaves.get(coordinator)
    if leaves is None or coordinator not in logs.coordinators:
        return [
            Anomaly(
                answer.party,
                answer.index,
                "PROMISE_NOT_INCLUDED",
                f"promise from {coordinator!r}, which is not a coordinator audited",
            )
        ]
    if not 0 <= index < len(leaves) or leaves[index].hex() != leaf:
        return [
            Anomaly(
                answer.party,
                answer.index,
                "PROMISE_NOT_INCLUDED",
                f"promised leaf is not entry {index} of {coordinator}'s log",
            )
        ]
    if query is None or query.party != coordinator or query.index != index:
        return [
            Anomaly(
                answer.party,
                answer.index,
                "PROMISE_NOT_INCLUDED",
                f"promise points at {coordinator} entry {index}, which is not this query",
            )
        ]
    return []


def _node_refusals(logs: VerifiedLogs, issued: list[Entry]) -> list[Anomaly]:
    logged = {q.text("query_id") for q in issued}
    return [
        Anomaly(
            refusal.party,
            refusal.index,
            "QUERY_NOT_LOGGED",
            f"refused query {refusal.text('query_id')} ({refusal.text('reason')}), which the "
            "coordinator signed but never logged",
        )
        for refusal in _entries(logs.agencies, "query_refused")
        if refusal.text("query_id") and refusal.text("query_id") not in logged
    ]


def _query_scope(issued: list[Entry], policy: Policy) -> list[Anomaly]:
    found = []
    for query in issued:
        purpose = policy.purposes.get(query.text("purpose"))
        if purpose is None:
            found.append(
                Anomaly(
                    query.party,
                    query.index,
                    "UNKNOWN_PURPOSE",
                    f"purpose {query.text('purpose')!r} is not in the policy",
                )
            )
            continue
        listed = query.fields.get("participants")
        asked = [p for p in listed if isinstance(p, str)] if isinstance(listed, list) else []
        required = set(purpose.participants)
        if len(set(asked)) == len(asked) and set(asked) == required:
            continue
        reason = "PARTICIPANT_SUBSET" if set(asked) < required else "PARTICIPANT_SET_MISMATCH"
        found.append(
            Anomaly(
                query.party,
                query.index,
                reason,
                f"asked {sorted(asked)}; purpose {purpose.id} requires {sorted(required)}",
            )
        )
    return found


def _query_grants(logs: VerifiedLogs, issued: list[Entry]) -> list[Anomaly]:
    grants = {g.text("token_id"): g for g in _entries(logs.registries, "consent_granted")}
    revoked = {r.text("token_id"): r for r in _entries(logs.registries, "consent_revoked")}
    ttls = [p.number("ttl_seconds") for p in _entries(logs.registries, "status_list_published")]
    ttl = max([t for t in ttls if t is not None], default=DEFAULT_STATUS_TTL_SECONDS)
    notices = {
        (n.party, n.text("token_id")): n.index
        for n in reversed(_entries(logs.coordinators, "revocation_received"))
    }
    found = []
    for query in issued:
        token_id = query.text("token_id")
        grant = grants.get(token_id)

        def anomaly(reason: str, detail: str, query: Entry = query) -> Anomaly:
            return Anomaly(query.party, query.index, reason, detail)

        if grant is None:
            found.append(anomaly("QUERY_WITHOUT_GRANT", f"no grant of token {token_id} logged"))
            continue
        if (grant.text("purpose"), grant.text("relying_party")) != (
            query.text("purpose"),
            query.text("relying_party"),
        ):
            found.append(
                anomaly("GRANT_MISMATCH", f"grant {grant.index} is for another purpose or party")
            )
        start, end = grant.number("not_before"), grant.number("not_after")
        at = query.logged_at
        if (
            grant.logged_at > at + CLOCK_SKEW_SECONDS
            or (start is not None and at < start - CLOCK_SKEW_SECONDS)
            or (end is not None and at > end + CLOCK_SKEW_SECONDS)
        ):
            found.append(anomaly("GRANT_NOT_ACTIVE", f"token {token_id} was not valid at {at}"))
        revocation = revoked.get(token_id)
        if revocation is not None:
            revoked_at = revocation.number("revoked_at") or revocation.logged_at
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
    for grant in _entries(logs.registries, "consent_granted"):
        granted.setdefault((grant.party, grant.text("token_id")), grant.index)
    return [
        Anomaly(
            revocation.party,
            revocation.index,
            "REVOCATION_WITHOUT_GRANT",
            f"revoked token {revocation.text('token_id')}, which was never granted before",
        )
        for revocation in _entries(logs.registries, "consent_revoked")
        if granted.get((revocation.party, revocation.text("token_id")), revocation.index)
        >= revocation.index
    ]


def _outcomes_follow_queries(logs: VerifiedLogs) -> list[Anomaly]:
    first_issued: dict[tuple[str, str], int] = {}
    for query in _entries(logs.coordinators, "query_issued"):
        first_issued.setdefault((query.party, query.text("query_id")), query.index)
    outcomes = [
        *_entries(logs.coordinators, "result_released"),
        *_entries(logs.coordinators, "query_failed"),
    ]
    return [
        Anomaly(
            outcome.party,
            outcome.index,
            "OUTCOME_WITHOUT_QUERY",
            f"{outcome.kind} for query {outcome.text('query_id')}, which was not issued before",
        )
        for outcome in sorted(outcomes, key=lambda o: (o.party, o.index))
        if first_issued.get((outcome.party, outcome.text("query_id")), outcome.index)
        >= outcome.index
    ]
