"""What every cross-match works on: verified entries, anomalies, and the log-promise check.

Invariants:
- Only entries of logs that verified are ever wrapped (`VerifiedLogs` holds nothing else);
  a party whose log did not verify is named in `VerifiedLogs.unverified` instead.
- Reading a field never raises: a missing field or one of the wrong JSON type reads as
  "" (text) or None (numbers), so a malformed body is judged, never crashes the audit.
- `promise_included` is the one check that a node's answer (score or statistics) was
  promised the very coordinator entry it answers: the leaf the node was promised must be
  the leaf the regulator re-derived at that index of a coordinator it audited.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.core.entries import LogEntry
from audit.core.fields import (
    COORDINATOR,
    PARTICIPANTS,
    PROMISE_INDEX,
    PROMISE_LEAF_HASH,
    QUERY_ID,
    REASON,
)

# Parties' clocks may disagree by this much (seconds).
CLOCK_SKEW_SECONDS = 30


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

    def real(self, name: str) -> float | None:
        """A JSON number (integer or not) as a float; None if absent or not a number."""
        value = self.fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def names(self, name: str) -> list[str]:
        """A list of strings (e.g. participants); anything else reads as empty."""
        value = self.fields.get(name)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def anomaly(self, reason: str, detail: str) -> Anomaly:
        """An anomaly about this very entry."""
        return Anomaly(self.party, self.index, reason, detail)


@dataclass
class VerifiedLogs:
    """Verified entries and re-derived leaf hashes of the parties, by role."""

    coordinators: dict[str, Sequence[LogEntry]] = field(default_factory=dict)
    agencies: dict[str, Sequence[LogEntry]] = field(default_factory=dict)
    registries: dict[str, Sequence[LogEntry]] = field(default_factory=dict)
    # Helper aggregators (docs/adr/0019).
    helpers: dict[str, Sequence[LogEntry]] = field(default_factory=dict)
    leaves: dict[str, Sequence[bytes]] = field(default_factory=dict)
    # Party -> role ("coordinator", "agency", "registry", "helper") of logs that did not
    # verify: every check that needs a party of that role is skipped.
    unverified: dict[str, str] = field(default_factory=dict)

    def verified(self, role: str) -> bool:
        """True if some party of `role` has a verified log and none of that role failed."""
        present = {
            "coordinator": self.coordinators,
            "agency": self.agencies,
            "registry": self.registries,
            "helper": self.helpers,
        }[role]
        return bool(present) and role not in set(self.unverified.values())


def entries_of(logs: Mapping[str, Sequence[LogEntry]], *kinds: str) -> list[Entry]:
    """Every entry of one of `kinds`, party by party, in log order."""
    return [Entry.of(party, e) for party, log in logs.items() for e in log if e.kind in kinds]


def group_by(entries: Iterable[Entry], name: str) -> dict[str, list[Entry]]:
    """Entries by the text of one field, in order; entries without it are left out."""
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        if entry.text(name):
            groups[entry.text(name)].append(entry)
    return groups


def prefix(hex_hash: str) -> str:
    """A short, readable prefix of a hex hash for an anomaly's detail."""
    return (hex_hash or "?")[:12]


def promise_included(logs: VerifiedLogs, answer: Entry, query: Entry | None) -> list[Anomaly]:
    """The answer's log promise points at `query`, an entry of an audited coordinator's log."""
    coordinator = answer.text(COORDINATOR)
    index = answer.number(PROMISE_INDEX)
    leaf = answer.text(PROMISE_LEAF_HASH)
    if not coordinator or index is None or not leaf:
        return [answer.anomaly("PROMISE_MISSING", "answer names no log promise")]
    leaves = logs.leaves.get(coordinator)
    if leaves is None or coordinator not in logs.coordinators:
        return [
            answer.anomaly(
                "PROMISE_NOT_INCLUDED",
                f"promise from {coordinator!r}, which is not a coordinator audited",
            )
        ]
    if not 0 <= index < len(leaves) or leaves[index].hex() != leaf:
        return [
            answer.anomaly(
                "PROMISE_NOT_INCLUDED", f"promised leaf is not entry {index} of {coordinator}'s log"
            )
        ]
    if query is None or query.party != coordinator or query.index != index:
        return [
            answer.anomaly(
                "PROMISE_NOT_INCLUDED",
                f"promise points at {coordinator} entry {index}, which is not this query",
            )
        ]
    return []


def promised_query(answer: Entry, candidates: Sequence[Entry]) -> Entry | None:
    """Of the logged queries with the answer's hash, the one its promise names (else the first).

    A coordinator that logged one hash twice must not make an honest node's promise look
    wrong: the promise is judged against the entry it names when that entry has the hash.
    """
    for query in candidates:
        if query.party == answer.text(COORDINATOR) and query.index == answer.number(PROMISE_INDEX):
            return query
    return candidates[0] if candidates else None


def participant_scope(query: Entry, required: Iterable[str], asked_for: str) -> list[Anomaly]:
    """A logged query asks exactly `required`, each once (a subset allows differencing)."""
    asked = query.names(PARTICIPANTS)
    needed = set(required)
    if len(set(asked)) == len(asked) and set(asked) == needed:
        return []
    reason = "PARTICIPANT_SUBSET" if set(asked) < needed else "PARTICIPANT_SET_MISMATCH"
    return [query.anomaly(reason, f"asked {sorted(asked)}; {asked_for} requires {sorted(needed)}")]


def outcomes_follow(issued: Sequence[Entry], outcomes: Sequence[Entry]) -> list[Anomaly]:
    """Each outcome names a query id its own coordinator issued before it."""
    first_issued: dict[tuple[str, str], int] = {}
    for query in issued:
        first_issued.setdefault((query.party, query.text(QUERY_ID)), query.index)
    return [
        outcome.anomaly(
            "OUTCOME_WITHOUT_QUERY",
            f"{outcome.kind} for query {outcome.text(QUERY_ID)}, which was not issued before",
        )
        for outcome in sorted(outcomes, key=lambda o: (o.party, o.index))
        if first_issued.get((outcome.party, outcome.text(QUERY_ID)), outcome.index) >= outcome.index
    ]


def refusals_logged(refusals: Sequence[Entry], issued: Sequence[Entry]) -> list[Anomaly]:
    """A query a node refused after authenticating it (its id is known) was logged."""
    logged = {q.text(QUERY_ID) for q in issued}
    return [
        refusal.anomaly(
            "QUERY_NOT_LOGGED",
            f"refused query {refusal.text(QUERY_ID)} ({refusal.text(REASON)}), which the "
            "coordinator signed but never logged",
        )
        for refusal in refusals
        if refusal.text(QUERY_ID) and refusal.text(QUERY_ID) not in logged
    ]


def answer_follows_query(
    answer: Entry, query: Entry, differs: Sequence[str], mismatch: str
) -> list[Anomaly]:
    """What every node answer must share with the query it answers, of either kind.

    `differs` names the fields the caller found to disagree (reported as `mismatch`); the
    answering node must be one the query asked, and must not have answered before the
    query was logged (beyond the clock skew allowed).
    """
    found = []
    if differs:
        found.append(
            answer.anomaly(
                mismatch, f"{', '.join(differs)} differ from {query.party} entry {query.index}"
            )
        )
    if answer.party not in query.names(PARTICIPANTS):
        found.append(
            answer.anomaly(
                mismatch,
                f"answered {query.party} entry {query.index}, which did not ask {answer.party}",
            )
        )
    if answer.logged_at + CLOCK_SKEW_SECONDS < query.logged_at:
        found.append(
            answer.anomaly(
                "ANSWER_BEFORE_QUERY",
                f"answered at {answer.logged_at}, before {query.party} logged the query "
                f"at {query.logged_at}",
            )
        )
    return found
