"""The agency node's checks on a contribution query (ARCHITECTURE.md "One score query" step 4).

Plain functions; each raises a `FedscoreError` with a reason and returns the value it
established. `admit_signed` runs them in the one fixed order below, so a forged envelope is
refused before anything it carries is believed or parsed. A node checks on its own every
limit it can (docs/adr/0011): nothing here trusts the coordinator beyond its signature.

 1. the envelope verifies under the coordinator keyring (UNSIGNED, WRONG_PAYLOAD_TYPE,
    UNKNOWN_SIGNER, BAD_SIGNATURE);
 2. it is addressed to this agency (WRONG_AGENCY); the spec parses (MALFORMED_MESSAGE) and
    asks a score question (QUESTION_KIND_MISMATCH);
 3. the policy hash is one this node holds (UNKNOWN_POLICY);
 4. it is fresh (QUERY_EXPIRED);
 5. the coordinator's log promise covers exactly these spec bytes (BAD_LOG_PROMISE);
 6. the relying party's own signed request inside the spec is there
    (NO_RELYING_PARTY_REQUEST), verifies under a relying party's key
    (BAD_REQUEST_SIGNATURE), was signed by the party it names (SIGNER_MISMATCH), and names
    this purpose, with a fresh request and nonce (PURPOSE_MISMATCH, REQUEST_EXPIRED,
    BAD_NONCE; `fedscore.protocol.requests`): the coordinator only relays what a relying
    party asked;
 7. the consent token inside that request verifies, is not revoked, and covers this
    purpose, policy, agency and domains, for the relying party that asked, which the purpose
    allows (TOKEN_EXPIRED, CONSENT_REVOKED, STATUS_LIST_STALE, RELYING_PARTY_MISMATCH,
    RELYING_PARTY_NOT_ALLOWED, ...); a sealed subject sent beside it is the token's own
    (SEALED_SUBJECT_MISMATCH);
 8. the participant list is the purpose's full set, never a subset (PARTICIPANT_SET_MISMATCH);
 9. the year is the one the relying party asked (YEAR_MISMATCH), within the purpose's years
    (YEAR_NOT_ALLOWED);
10. in the answer's transaction (`node.claims`): the query id is unused (REPLAYED_QUERY),
    the request nonce unused (REPLAYED_NONCE), and the token has a use left at this node
    (USE_LIMIT_REACHED).

A query inside a `ContributionBatch` runs the same steps: step 1 is the batch envelope's
signature (checked once for all its items), which also covers each item's log promise;
steps 2-10 run for every item on its own (`signed_query`, `admit_signed`,
`check_promise_binding`).

Invariants:
- Only facts from a verified envelope are written into `RefusalNotes`, so a forger cannot
  put a query id or purpose of its choosing into the node's log.
- Nothing here opens the sealed subject or reads a record: a query that fails any check
  never touches personal data. The only sealed subject a node ever opens is its own blob
  inside the registry-signed token (`AdmittedQuery.sealed_subject`), never one the
  coordinator chose: a coordinator can seal any national ID to a node's public key.
- Every check reads in-memory state only; step 10 is the caller's, in its transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from fedscore.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from fedscore.protocol.requests import (
    AuthenticatedRequest,
    authenticate_request,
    check_nonce,
    check_relying_party_allowed,
    check_token_scope,
    requested_year,
)
from fedscore.protocol.requests import (
    check_freshness as check_request_freshness,
)
from fedscore.protocol.status_list import RevocationState
from fedscore.protocol.tokens import VerifiedToken, verify_token
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_SCORE,
    ContributionQuery,
    LogPromise,
    QuerySpec,
)
from keys.envelope import verify_message
from keys.keyring import Keyring
from keys.registry import TrustView
from node.claims import Claim
from policies.model import Policy, Purpose

# Clocks of the coordinator and the node may disagree by this much.
CLOCK_SKEW_SECONDS = 30
# No record predates Unix time; the upper bound keeps the year window a valid datetime.
MIN_YEAR, MAX_YEAR = 1970, 9998


@dataclass
class RefusalNotes:
    """Authenticated facts about a query so far, for the "query_refused" log entry."""

    query_id: str = ""
    purpose: str = ""

    def fields(self) -> dict[str, str]:
        known = {"query_id": self.query_id, "purpose": self.purpose}
        return {name: value for name, value in known.items() if value}


@dataclass(frozen=True)
class SignedQuery:
    """A ContributionQuery the coordinator signed for this agency, with its parsed spec."""

    query: ContributionQuery
    spec: QuerySpec
    query_hash: bytes  # SHA-256 of the exact spec bytes the coordinator logged
    coordinator: str  # participant id of the signer


@dataclass(frozen=True)
class AdmittedQuery:
    """A query that passed every check; the node must now answer it."""

    signed: SignedQuery
    policy: Policy
    purpose: Purpose
    request: AuthenticatedRequest  # the relying party's own signed request
    token: VerifiedToken
    year: int
    promise: LogPromise  # the coordinator's signed word that it logged this query first
    sealed_subject: bytes  # this agency's blob from the registry-signed token

    @property
    def query_id(self) -> str:
        return str(self.signed.spec.query_id)

    @property
    def token_id(self) -> str:
        return str(self.token.token.token_id)

    def claim(self) -> Claim:
        """What answering spends at this node (step 10, `node.claims`)."""
        return Claim(
            query_id=self.query_id,
            nonce_hash=self.request.nonce_hash,
            relying_party=self.request.relying_party,
            token_id=self.token_id,
            max_uses=self.purpose.uses_allowed(self.token.token.max_uses),
        )


@dataclass(frozen=True)
class NodeTrust:
    """What the node trusts, fixed at start: keyrings, policies, revocations, its own id."""

    agency_id: str
    trust: TrustView
    coordinator_keyring: Keyring
    policies: Mapping[str, Policy]  # by content hash
    revocations: RevocationState
    # Relying parties and the citizen portal: whoever may sign a score request.
    request_keyring: Keyring


def authenticate_query(
    envelope: Envelope, coordinator_keyring: Keyring, agency_id: str
) -> SignedQuery:
    """Steps 1-2: the coordinator signed it, it is for this agency, and its spec parses."""
    verified = verify_message(envelope, ContributionQuery, coordinator_keyring)
    return signed_query(verified.payload, verified.signer, agency_id)


def signed_query(query: ContributionQuery, signer: str, agency_id: str) -> SignedQuery:
    """Step 2 for a query whose coordinator signature (its own or its batch's) verified."""
    if query.agency_id != agency_id:
        raise PermissionDenied(
            f"query is addressed to agency {query.agency_id!r}, this is {agency_id!r}",
            reason="WRONG_AGENCY",
        )
    spec = QuerySpec()
    try:
        spec.ParseFromString(query.spec)
    except DecodeError as exc:
        raise InvalidArgument("query spec is not a valid QuerySpec", "MALFORMED_MESSAGE") from exc
    if not spec.query_id:
        raise InvalidArgument("query spec has no query id", reason="MALFORMED_MESSAGE")
    return SignedQuery(
        query=query,
        spec=spec,
        query_hash=hashlib.sha256(query.spec).digest(),
        coordinator=signer,
    )


def policy_named(spec: QuerySpec, policies: Mapping[str, Policy]) -> Policy:
    """Step 3: the policy the query was asked under, if this node holds it."""
    try:
        return policies[spec.policy_hash]
    except KeyError:
        raise FailedPrecondition(
            f"query names policy {spec.policy_hash!r}, which this node does not hold",
            reason="UNKNOWN_POLICY",
        ) from None


def check_freshness(spec: QuerySpec, now: int) -> None:
    """Step 4: not past its expiry, and not issued in the future beyond the clock skew."""
    if now > spec.expires_at:
        raise PermissionDenied(
            f"query expired at {spec.expires_at} (now {now})", reason="QUERY_EXPIRED"
        )
    if spec.issued_at > now + CLOCK_SKEW_SECONDS:
        raise PermissionDenied(
            f"query issued at {spec.issued_at}, in the future of {now}", reason="QUERY_EXPIRED"
        )


def check_log_promise(signed: SignedQuery, coordinator_keyring: Keyring) -> LogPromise:
    """Step 5: the coordinator logged exactly these spec bytes before asking."""
    envelope = signed.query.log_promise
    if not envelope.payload and not envelope.signature:
        raise Unauthenticated("query carries no log promise", reason="BAD_LOG_PROMISE")
    try:
        verified = verify_message(envelope, LogPromise, coordinator_keyring)
    except (Unauthenticated, InvalidArgument) as exc:
        raise Unauthenticated(
            f"log promise does not verify ({exc.reason})", reason="BAD_LOG_PROMISE"
        ) from exc
    return check_promise_binding(verified.payload, signed, verified.signer)


def check_promise_binding(promise: LogPromise, signed: SignedQuery, signer: str) -> LogPromise:
    """Step 5 after the promise's signature (its own or its batch's) verified under `signer`."""
    if promise.query_hash != signed.query_hash:
        raise Unauthenticated("log promise is for another query", reason="BAD_LOG_PROMISE")
    if not promise.origin == signed.spec.coordinator == signed.coordinator == signer:
        raise Unauthenticated(
            "log promise, query spec and signature name different coordinators",
            reason="BAD_LOG_PROMISE",
        )
    return promise


def check_request(spec: QuerySpec, request_keyring: Keyring, now: int) -> AuthenticatedRequest:
    """Step 6: the relying party's own signed request for this very purpose, still fresh."""
    if not spec.request.payload and not spec.request.signature:
        raise Unauthenticated(
            "the spec carries no relying party's request", reason="NO_RELYING_PARTY_REQUEST"
        )
    try:
        request = authenticate_request(spec.request, request_keyring)
    except (Unauthenticated, InvalidArgument) as exc:
        if exc.reason == "SIGNER_MISMATCH":
            raise
        raise Unauthenticated(
            f"the relying party's request does not verify ({exc.reason})",
            reason="BAD_REQUEST_SIGNATURE",
        ) from exc
    if request.query.purpose_id != spec.purpose_id:
        raise PermissionDenied(
            f"the relying party asked for purpose {request.query.purpose_id!r}, the spec for "
            f"{spec.purpose_id!r}",
            reason="PURPOSE_MISMATCH",
        )
    check_nonce(request.query.nonce)
    check_request_freshness(request.query.issued_at, now)
    return request


def check_token(
    spec: QuerySpec,
    request: AuthenticatedRequest,
    policy: Policy,
    agency_id: str,
    trust: TrustView,
    revocations: RevocationState,
    now: int,
) -> VerifiedToken:
    """Step 7: a live, unrevoked token for this purpose, policy, agency, its domains and the
    relying party that asked."""
    verified = verify_token(request.query.token, trust, now)
    token = verified.token
    revocations.check(token, now)
    check_token_scope(token, request.query)
    if token.policy_hash != spec.policy_hash:
        raise PermissionDenied(
            "token was granted under another policy version", reason="POLICY_MISMATCH"
        )
    if agency_id not in token.agencies:
        raise PermissionDenied(
            f"token does not name agency {agency_id!r}", reason="AGENCY_NOT_IN_TOKEN"
        )
    purpose = policy.purpose(spec.purpose_id)
    check_relying_party_allowed(purpose, request.relying_party)
    check_domains(policy, purpose, agency_id, set(token.domains))
    return verified


def own_sealed_subject(token: VerifiedToken, agency_id: str, sent: bytes = b"") -> bytes:
    """This agency's sealed subject blob from the registry-signed token.

    A blob sent beside the token must be that very blob: anyone may seal any national ID to
    a node's public key, so a blob the coordinator chose would let it ask about anyone.
    """
    for sealed in token.token.sealed_subjects:
        if sealed.agency_id == agency_id:
            own = bytes(sealed.blob)
            if sent and sent != own:
                raise PermissionDenied(
                    "the sealed subject sent is not the token's own", "SEALED_SUBJECT_MISMATCH"
                )
            return own
    raise PermissionDenied(
        f"token holds no sealed subject for agency {agency_id!r}", reason="TOKEN_OUT_OF_SCOPE"
    )


def domains_used(policy: Policy, purpose: Purpose, agency_id: str) -> frozenset[str]:
    """Domains of this agency's indicators that count towards `purpose`."""
    key = (policy.content_hash, purpose.id, agency_id)
    used = _DOMAINS_USED.get(key)
    if used is None:
        used = frozenset(
            indicator.domain
            for indicator in policy.indicators_for(agency_id)
            if indicator.domain in purpose.domains
        )
        # A policy is immutable and named by its content hash: computed once per purpose.
        _DOMAINS_USED[key] = used
    return used


_DOMAINS_USED: dict[tuple[str, str, str], frozenset[str]] = {}


def check_domains(policy: Policy, purpose: Purpose, agency_id: str, consented: set[str]) -> None:
    """The citizen consented to every domain this agency would contribute from."""
    missing = domains_used(policy, purpose, agency_id) - consented
    if missing:
        raise PermissionDenied(
            f"token does not cover domains {sorted(missing)} that {agency_id!r} contributes",
            reason="DOMAIN_NOT_IN_TOKEN",
        )


def check_participants(spec: QuerySpec, purpose: Purpose, agency_id: str) -> None:
    """Step 7: exactly the purpose's participant set: a subset would allow differencing."""
    listed = list(spec.participants)
    if len(set(listed)) != len(listed) or set(listed) != set(purpose.participants):
        raise PermissionDenied(
            f"query lists participants {sorted(listed)}, purpose {purpose.id!r} requires "
            f"{sorted(purpose.participants)}",
            reason="PARTICIPANT_SET_MISMATCH",
        )
    if agency_id not in listed:
        raise PermissionDenied(
            f"agency {agency_id!r} is not a participant of purpose {purpose.id!r}",
            reason="PARTICIPANT_SET_MISMATCH",
        )


def check_year(
    spec: QuerySpec, request: AuthenticatedRequest, policy: Policy, purpose: Purpose, now: int
) -> int:
    """Step 9: the year the relying party asked, if the purpose reaches it now."""
    asked = requested_year(request.query, policy)
    if spec.year != asked:
        raise PermissionDenied(
            f"the spec asks about {spec.year}, the relying party about {asked}",
            reason="YEAR_MISMATCH",
        )
    if not MIN_YEAR <= asked <= MAX_YEAR:
        raise InvalidArgument(f"year {asked} cannot hold a score", reason="BAD_YEAR")
    purpose.check_year(asked, policy.current_year(now))
    return asked


def admit_query(
    envelope: Envelope,
    node: NodeTrust,
    now: int,
    notes: RefusalNotes,
) -> AdmittedQuery:
    """Run steps 1-9 in order; fill `notes` with what is authenticated as it is learned."""
    signed = authenticate_query(envelope, node.coordinator_keyring, node.agency_id)
    return admit_signed(
        signed,
        node,
        now,
        notes,
        lambda: check_log_promise(signed, node.coordinator_keyring),
    )


def admit_signed(
    signed: SignedQuery,
    node: NodeTrust,
    now: int,
    notes: RefusalNotes,
    log_promise: Callable[[], LogPromise],
) -> AdmittedQuery:
    """Steps 3-9 for an authenticated query; `log_promise` runs step 5 and returns the promise.

    Step 10 (the claims) is the caller's, inside the transaction that logs the answer.
    """
    spec = signed.spec
    notes.query_id = spec.query_id
    notes.purpose = spec.purpose_id
    if spec.kind != QUESTION_KIND_SCORE:
        raise PermissionDenied(
            "the spec does not ask a score question", reason="QUESTION_KIND_MISMATCH"
        )
    policy = policy_named(spec, node.policies)
    check_freshness(spec, now)
    promise = log_promise()
    request = check_request(spec, node.request_keyring, now)
    token = check_token(spec, request, policy, node.agency_id, node.trust, node.revocations, now)
    sealed = own_sealed_subject(token, node.agency_id, bytes(signed.query.sealed_subject))
    purpose = policy.purpose(spec.purpose_id)
    check_participants(spec, purpose, node.agency_id)
    year = check_year(spec, request, policy, purpose, now)
    return AdmittedQuery(
        signed=signed,
        policy=policy,
        purpose=purpose,
        request=request,
        token=token,
        year=year,
        promise=promise,
        sealed_subject=sealed,
    )
