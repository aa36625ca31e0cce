"""The protocol steps every question passes at an agency node, score or statistics.

A node is asked two kinds of question, and both are the same protocol: a spec the
coordinator logged before asking (its exact bytes' SHA-256 is the query hash every
participant masks under, docs/adr/0011), sent under the coordinator's signature with a
log promise naming that hash. `node.checks` admits a score question (an item of a signed
`ContributionBatch`), `node.statistics` a histogram question (a signed `StatisticsQuery`);
each calls the steps below with the values it holds, in this order, and each step raises
the same reason and code for both:

- `addressed_to`: the signed question names this agency (WRONG_AGENCY);
- `signed_spec`: the spec bytes parse and name a query id (MALFORMED_MESSAGE);
- `check_kind`: the spec asks the kind of question this path answers (QUESTION_KIND_MISMATCH);
- `policy_named`: the policy hash is one this node holds (UNKNOWN_POLICY);
- `check_freshness`: not expired, not issued beyond the clock skew in the future
  (QUERY_EXPIRED);
- `check_promise`: the coordinator's promise names these very spec bytes, in the log of
  the coordinator the spec names and every signature vouching for it is that
  coordinator's (BAD_LOG_PROMISE);
- `check_participants`: the full participant set the policy requires, never a subset, and
  this agency in it (PARTICIPANT_SET_MISMATCH);
- `check_year_range`: a year records can hold, from MIN_YEAR to a kind's latest (BAD_YEAR);
- `check_unanswered`: the query id was not answered here before (REPLAYED_QUERY), read
  before any record is counted; the claim that decides it is written in the answer's
  transaction, in the one `seen_query` table, so score and histogram questions share one
  space of query ids.

Where the two kinds differ, they differ on purpose, and the caller says so explicitly:
- Signature: a score question is an item of a batch signed once; its promise travels
  unsigned inside it, covered by the batch's signature (ADR 0009). A histogram question
  is signed per node and its promise is a separately signed envelope
  (`node.statistics.verified_promise`), whose signer `check_promise` also requires to be
  the coordinator.
- Consent: a score question carries the relying party's signed request and the citizen's
  consent token (`node.consent_checks`); a histogram counts everyone and carries neither.
  Instead it names a release the policy defines, with its contribution bound, and is paid
  from the node's own privacy budget before any record is counted (BUDGET_EXHAUSTED).
- Participants: a score asks the purpose's set, in any order (`in_order=False`); a
  histogram asks every agency of the policy, in policy order (`in_order=True`): the
  release's bins are laid out and summed over exactly that list.
- Year: a score asks the year the relying party asked (YEAR_MISMATCH), within the
  purpose's years (YEAR_NOT_ALLOWED), so its range check only bounds it to a valid
  datetime (MAX_YEAR); a histogram may ask any year that has begun (latest = this year).
- Replay: a score item's query id is claimed with its request nonce and a token use, all
  or none, in its batch's transaction (`node.claims`), which is its replay check; a
  histogram, whose count may be long, is checked here first and claimed
  (`ClaimStatements.claim_query_id`) in the transaction that charges the budget and logs it.

Invariants: every step reads in-memory state only, except `check_unanswered` (one read);
none opens a sealed subject or reads a record. Only facts the coordinator's signature
authenticated go into `RefusalNotes`, so a forger cannot put a query id, purpose or
release of its choosing into the node's log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError

from audit.core.fields import PURPOSE, QUERY_ID, RELEASE
from fedscore.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from fedscore.protocol.status_list import RevocationState
from fedscore.v1.query_pb2 import QuestionKind
from keys.keyring import CoordinatorKeys, RequesterKeys
from keys.registry import TrustView
from node.store import NodeStore
from policies.model import Policy

# Clocks of the coordinator and the node may disagree by this much.
CLOCK_SKEW_SECONDS = 30
# No record predates Unix time; the upper bound keeps the year window a valid datetime.
MIN_YEAR, MAX_YEAR = 1970, 9998

Spec = TypeVar("Spec")  # QuerySpec or StatisticsSpec


@dataclass(frozen=True)
class NodeTrust:
    """What the node trusts now: keyrings, policies, revocations, its own id.

    Made whole from one registry view (`of`) and replaced whole when the registry or the
    policy changes (`node.server`), so a question is checked under one view throughout.
    """

    agency_id: str
    trust: TrustView
    coordinator_keyring: CoordinatorKeys
    # Every policy accepted and still admissible, by content hash: a consent token names
    # the one it was issued under, which may be older than the newest.
    policies: Mapping[str, Policy]
    revocations: RevocationState
    # Relying parties and the citizen portal: whoever may sign a score request.
    request_keyring: RequesterKeys

    @classmethod
    def of(
        cls,
        agency_id: str,
        view: TrustView,
        policies: Mapping[str, Policy],
        revocations: RevocationState,
    ) -> NodeTrust:
        """What the node trusts under `view`: its keyrings, valid at the view's time."""
        return cls(
            agency_id=agency_id,
            trust=view,
            coordinator_keyring=view.coordinator_keys(),
            policies=dict(policies),
            revocations=revocations,
            request_keyring=view.requester_keys(),
        )


@dataclass
class RefusalNotes:
    """Authenticated facts about a question so far, for its refusal's log entry.

    A score question names a purpose, a histogram question a release; each fills only its own.
    """

    query_id: str = ""
    purpose: str = ""
    release: str = ""

    def fields(self) -> dict[str, str]:
        known = {QUERY_ID: self.query_id, PURPOSE: self.purpose, RELEASE: self.release}
        return {name: value for name, value in known.items() if value}


@dataclass(frozen=True)
class SignedSpec(Generic[Spec]):
    """The spec of a question the coordinator signed: parsed, with its exact bytes' hash."""

    spec: Spec
    query_hash: bytes  # SHA-256 of the exact spec bytes the coordinator logged
    coordinator: str  # participant id of the signer


def addressed_to(agency_id: str, addressed: Collection[str]) -> None:
    """The signed question is addressed to this agency."""
    if agency_id not in addressed:
        raise PermissionDenied(
            f"the question is addressed to {sorted(addressed)}, not {agency_id!r}",
            reason="WRONG_AGENCY",
        )


def signed_spec(spec_bytes: bytes, spec_type: type[Spec], coordinator: str) -> SignedSpec[Spec]:
    """The spec bytes of a question `coordinator` signed, parsed as `spec_type`."""
    parsed: Any = spec_type()
    try:
        parsed.ParseFromString(spec_bytes)
    except DecodeError as exc:
        raise InvalidArgument(
            f"the spec is not a valid {spec_type.__name__}", reason="MALFORMED_MESSAGE"
        ) from exc
    if not parsed.query_id:
        raise InvalidArgument("the spec has no query id", reason="MALFORMED_MESSAGE")
    return SignedSpec(parsed, hashlib.sha256(spec_bytes).digest(), coordinator)


def check_kind(kind: int, expected: int) -> None:
    """The spec asks the kind of question this path answers (a score, or a histogram)."""
    if kind != expected:
        raise PermissionDenied(
            f"the spec does not ask a {QuestionKind.Name(expected)} question",
            reason="QUESTION_KIND_MISMATCH",
        )


def policy_named(policy_hash: str, policies: Mapping[str, Policy]) -> Policy:
    """The policy the question was asked under, if this node holds it."""
    try:
        return policies[policy_hash]
    except KeyError:
        raise FailedPrecondition(
            f"the question names policy {policy_hash!r}, which this node does not hold",
            reason="UNKNOWN_POLICY",
        ) from None


def check_freshness(issued_at: int, expires_at: int, now: int) -> None:
    """Not past its expiry, and not issued in the future beyond the clock skew."""
    if now > expires_at:
        raise PermissionDenied(
            f"the question expired at {expires_at} (now {now})", reason="QUERY_EXPIRED"
        )
    if issued_at > now + CLOCK_SKEW_SECONDS:
        raise PermissionDenied(
            f"the question was issued at {issued_at}, in the future of {now}",
            reason="QUERY_EXPIRED",
        )


def check_promise(
    origin: str, promised_hash: bytes, signed: SignedSpec[Any], *vouching: str
) -> None:
    """The coordinator logged exactly these spec bytes first, in its own log.

    `origin` and `promised_hash` are the promise's; `signed.spec.coordinator` names the
    coordinator, `signed.coordinator` signed the question, and every further signer in
    `vouching` (a promise signed on its own) must be that same coordinator.
    """
    if promised_hash != signed.query_hash:
        raise Unauthenticated("the log promise is for another question", reason="BAD_LOG_PROMISE")
    if {origin, signed.spec.coordinator, *vouching} != {signed.coordinator}:
        raise Unauthenticated(
            "the log promise, the spec and the signatures name different coordinators",
            reason="BAD_LOG_PROMISE",
        )


def check_participants(
    listed: Sequence[str], required: Sequence[str], agency_id: str, *, in_order: bool
) -> None:
    """Exactly the participant set required (in its order if `in_order`), this agency in it.

    A subset would let the coordinator difference two sums; a duplicate is never the set.
    """
    if in_order:
        exact = tuple(listed) == tuple(required)
    else:
        exact = len(set(listed)) == len(listed) and set(listed) == set(required)
    if not exact:
        raise PermissionDenied(
            f"the question lists participants {list(listed)}, the policy requires "
            f"{list(required)}" + (" in this order" if in_order else ""),
            reason="PARTICIPANT_SET_MISMATCH",
        )
    if agency_id not in listed:
        raise PermissionDenied(
            f"agency {agency_id!r} is not a participant", reason="PARTICIPANT_SET_MISMATCH"
        )


def check_year_range(year: int, latest: int) -> None:
    """A year records can hold: from MIN_YEAR up to `latest` (what the kind allows)."""
    if not MIN_YEAR <= year <= latest:
        raise InvalidArgument(
            f"year {year} is not between {MIN_YEAR} and {latest}", reason="BAD_YEAR"
        )


def check_unanswered(store: NodeStore, query_id: str) -> None:
    """The query id was not answered here before (a read; the claim decides, later)."""
    if store.has_seen_query(query_id):
        raise AlreadyExists(f"query {query_id!r} was already answered", reason="REPLAYED_QUERY")
