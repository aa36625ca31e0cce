"""The steps of checking a question the coordinator signed, shared by every party that
checks one: an agency node (a score or a histogram question, `node.question_checks`) and
the helper aggregator (the histogram question it adds noise for, `helper.noising`).

Each step raises one reason with one code, whoever calls it:
- `signed_spec`: the spec bytes parse and name a query id (MALFORMED_MESSAGE);
- `check_kind`: the spec asks the kind of question this path answers (QUESTION_KIND_MISMATCH);
- `policy_named`: the policy hash is one this party holds (UNKNOWN_POLICY);
- `check_freshness`: not expired, not issued beyond the clock skew in the future
  (QUERY_EXPIRED);
- `verified_promise`: a log promise signed on its own opens under the coordinator's keys
  (BAD_LOG_PROMISE, whatever is wrong with it);
- `check_promise`: the coordinator's promise names these very spec bytes, in the log of
  the coordinator the spec names, and every signature vouching for it is that
  coordinator's (BAD_LOG_PROMISE);
- `release_asked`: a release of the policy that agency nodes compute
  (UNKNOWN_RELEASE), asked with exactly its contribution bound
  (CONTRIBUTION_BOUND_NOT_ALLOWED);
- `check_participant_list`: the full participant set required, never a subset, in its
  order when it has one (PARTICIPANT_SET_MISMATCH);
- `check_year_range`: a year records can hold, from MIN_YEAR to a kind's latest (BAD_YEAR);
- `helper_named`: a histogram question names a helper aggregator the registry lists now,
  with a box key to seal its shares to (HELPER_NOT_LISTED).

Invariants: every step reads in-memory values only; none reads a record, a file or a
database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError

from fedscore.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from fedscore.protocol.questions import SignedLogPromise
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import QuestionKind
from fedscore.v1.statistics_pb2 import StatisticsSpec
from fedscore.v1.trust_pb2 import Role
from keys.keyring import CoordinatorKeys
from keys.registry import TrustView
from policies.model import Policy
from policies.statistics import ReleaseDefinition

# Clocks of the coordinator and a checking party may disagree by this much.
CLOCK_SKEW_SECONDS = 30
# No record predates Unix time; the upper bound keeps the year window a valid datetime.
MIN_YEAR, MAX_YEAR = 1970, 9998

Spec = TypeVar("Spec")  # QuerySpec or StatisticsSpec


@dataclass(frozen=True)
class SignedSpec(Generic[Spec]):
    """The spec of a question the coordinator signed: parsed, with its exact bytes' hash."""

    spec: Spec
    query_hash: bytes  # SHA-256 of the exact spec bytes the coordinator logged
    coordinator: str  # participant id of the signer


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
    """The policy the question was asked under, if this party holds it."""
    try:
        return policies[policy_hash]
    except KeyError:
        raise FailedPrecondition(
            f"the question names policy {policy_hash!r}, which this party does not hold",
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


def verified_promise(envelope: Envelope, keyring: CoordinatorKeys) -> SignedLogPromise:
    """A histogram question's promise is an envelope of its own, not covered by the
    question's signature; whatever is wrong with it, the reason is BAD_LOG_PROMISE."""
    if not envelope.payload and not envelope.signature:
        raise Unauthenticated("query carries no log promise", reason="BAD_LOG_PROMISE")
    try:
        return SignedLogPromise.verify(envelope, keyring)
    except (Unauthenticated, InvalidArgument) as exc:
        raise Unauthenticated(
            f"log promise does not verify ({exc.reason})", reason="BAD_LOG_PROMISE"
        ) from exc


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


def release_asked(spec: StatisticsSpec, policy: Policy) -> ReleaseDefinition:
    """A release nodes compute, asked with exactly the bound the policy sets."""
    definition = policy.statistics_rules.release(spec.release)
    if not definition.node_side:
        raise PermissionDenied(
            f"release {spec.release!r} is not computed by agency nodes", "UNKNOWN_RELEASE"
        )
    if spec.contribution_bound != definition.contribution_bound:
        raise PermissionDenied(
            f"release {definition.name!r} bounds each person to "
            f"{definition.contribution_bound}, the query asks for {spec.contribution_bound}",
            reason="CONTRIBUTION_BOUND_NOT_ALLOWED",
        )
    return definition


def check_participant_list(
    listed: Sequence[str], required: Sequence[str], *, in_order: bool
) -> None:
    """Exactly the participant set required (in its order if `in_order`).

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


def check_year_range(year: int, latest: int) -> None:
    """A year records can hold: from MIN_YEAR up to `latest` (what the kind allows)."""
    if not MIN_YEAR <= year <= latest:
        raise InvalidArgument(
            f"year {year} is not between {MIN_YEAR} and {latest}", reason="BAD_YEAR"
        )


def helper_named(helper_id: str, view: TrustView) -> bytes:
    """The box key of the helper aggregator a histogram question names, if the registry
    lists `helper_id` as one now; HELPER_NOT_LISTED otherwise (an empty name, another
    role, the coordinator itself, a participant with no box key)."""
    listed = {p.id: p for p in view.by_role(Role.ROLE_HELPER_AGGREGATOR)}
    helper = listed.get(helper_id)
    if helper is None or not helper.box_public_key:
        raise PermissionDenied(
            f"the question names {helper_id!r} as its helper, which the registry does not list "
            "as a helper aggregator",
            reason="HELPER_NOT_LISTED",
        )
    return bytes(helper.box_public_key)
