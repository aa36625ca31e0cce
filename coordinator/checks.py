"""The coordinator's admission checks for a score query (ARCHITECTURE.md step 2).

Plain functions; each raises a `FedscoreError` with a reason and returns nothing or the
value it established. Invariants:
- The relying party's envelope is verified before its payload is parsed, and the signer
  must be the relying party the query names.
- Every check here is stateless or reads only in-memory state (trust, policy,
  revocation list). The persistent checks (use limit, replay) run last, inside the one
  transaction that stores the nonce, so a forged or out-of-scope request never burns a
  nonce or a token use.
- Nothing here sees or keeps a national ID: sealed subjects stay opaque.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedscore.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from fedscore.status import RevocationState
from fedscore.tokens import VerifiedToken, verify_token
from fedscore.v1 import consent_pb2, envelope_pb2, query_pb2
from keys.envelope import verify_message
from keys.keyring import Keyring
from keys.registry import TrustView
from policies.model import Policy, Purpose

MIN_NONCE_BYTES = 16
# A request is fresh for five minutes either side of the coordinator's clock.
FRESHNESS_SECONDS = 300
# No record can predate Unix time, so no earlier year can hold a score.
MIN_YEAR = 1970


@dataclass
class RefusalNotes:
    """What has been authenticated so far, for the "score_refused" log entry.

    Only facts that passed a signature check are noted, so a forger cannot write
    someone else's name into the coordinator's log.
    """

    relying_party: str = ""
    purpose: str = ""
    token_id: str = ""

    def fields(self) -> dict[str, str]:
        known = {
            "relying_party": self.relying_party,
            "purpose": self.purpose,
            "token_id": self.token_id,
        }
        return {name: value for name, value in known.items() if value}


@dataclass(frozen=True)
class AuthenticatedQuery:
    """A ScoreQuery whose envelope verified and whose signer is the named relying party."""

    query: query_pb2.ScoreQuery
    relying_party: str


@dataclass(frozen=True)
class AdmittedQuery:
    """A score query that passed every stateless check; replay and use limits remain."""

    query: query_pb2.ScoreQuery
    relying_party: str
    token: VerifiedToken
    policy: Policy
    purpose: Purpose
    year: int
    sealed_subjects: Mapping[str, bytes] = field(repr=False)

    @property
    def consent(self) -> consent_pb2.ConsentToken:
        return self.token.token

    @property
    def max_uses(self) -> int:
        return effective_max_uses(self.token.token.max_uses, self.purpose.max_uses)


def authenticate_query(envelope: envelope_pb2.Envelope, keyring: Keyring) -> AuthenticatedQuery:
    """Verify the relying party's signature, then that it signed in its own name."""
    verified = verify_message(envelope, query_pb2.ScoreQuery, keyring)
    query = verified.payload
    if query.relying_party != verified.signer:
        raise Unauthenticated(
            f"query names relying party {query.relying_party!r} but is signed by "
            f"{verified.signer!r}",
            reason="SIGNER_MISMATCH",
        )
    return AuthenticatedQuery(query=query, relying_party=verified.signer)


def check_nonce(nonce: bytes) -> None:
    if len(nonce) < MIN_NONCE_BYTES:
        raise InvalidArgument(
            f"nonce has {len(nonce)} bytes; at least {MIN_NONCE_BYTES} are required",
            reason="BAD_NONCE",
        )


def check_freshness(issued_at: int, now: int) -> None:
    if abs(now - issued_at) > FRESHNESS_SECONDS:
        raise PermissionDenied(
            f"query issued at {issued_at} is outside {FRESHNESS_SECONDS} s of {now}",
            reason="REQUEST_EXPIRED",
        )


def check_token_scope(token: consent_pb2.ConsentToken, query: query_pb2.ScoreQuery) -> None:
    """The token must be for the purpose asked and held by the relying party asking."""
    if token.purpose_id != query.purpose_id:
        raise PermissionDenied(
            f"token is for purpose {token.purpose_id!r}, query asks for {query.purpose_id!r}",
            reason="PURPOSE_MISMATCH",
        )
    if token.relying_party != query.relying_party:
        raise PermissionDenied(
            f"token was granted to {token.relying_party!r}, not {query.relying_party!r}",
            reason="RELYING_PARTY_MISMATCH",
        )


def policy_for(token: consent_pb2.ConsentToken, policies: Mapping[str, Policy]) -> Policy:
    try:
        return policies[token.policy_hash]
    except KeyError:
        raise FailedPrecondition(
            f"token names policy {token.policy_hash!r}, which this coordinator does not hold",
            reason="UNKNOWN_POLICY",
        ) from None


def check_relying_party_allowed(purpose: Purpose, relying_party: str) -> None:
    if relying_party not in purpose.relying_parties:
        raise PermissionDenied(
            f"relying party {relying_party!r} is not allowed for purpose {purpose.id!r}",
            reason="RELYING_PARTY_NOT_ALLOWED",
        )


def sealed_subjects_for(purpose: Purpose, token: consent_pb2.ConsentToken) -> dict[str, bytes]:
    """Every participant of the purpose must be inside the token and have its sealed blob.

    Asking a subset would let differences between answers reveal one agency's part.
    """
    blobs = {sealed.agency_id: bytes(sealed.blob) for sealed in token.sealed_subjects}
    agencies = set(token.agencies)
    missing = [p for p in purpose.participants if p not in agencies or p not in blobs]
    if missing:
        raise PermissionDenied(
            f"token does not cover participants {sorted(missing)} of purpose {purpose.id!r}",
            reason="TOKEN_OUT_OF_SCOPE",
        )
    return {agency: blobs[agency] for agency in purpose.participants}


def check_use_limit(uses_so_far: int, max_uses: int) -> None:
    """`max_uses` 0 means no limit beyond the token's validity window."""
    if max_uses and uses_so_far >= max_uses:
        raise ResourceExhausted(
            f"token has been used {uses_so_far} of {max_uses} times",
            reason="USE_LIMIT_REACHED",
        )


def effective_max_uses(token_max_uses: int, purpose_max_uses: int) -> int:
    """The tighter of the token's and the purpose's use limits (0 = no limit)."""
    limits = [limit for limit in (token_max_uses, purpose_max_uses) if limit > 0]
    return min(limits) if limits else 0


def check_replay(already_seen: bool) -> None:
    if already_seen:
        raise AlreadyExists("this request nonce was already accepted", reason="REPLAYED_NONCE")


def resolve_year(year: int, policy: Policy, now: int) -> int:
    """0 means the current year in Asia/Bangkok; a future or pre-1970 year is refused."""
    current = policy.current_year(now)
    if year == 0:
        return current
    if year < MIN_YEAR or year > current:
        raise InvalidArgument(
            f"year {year} is not between {MIN_YEAR} and the current year {current}",
            reason="BAD_YEAR",
        )
    return year


def admit_query(
    authenticated: AuthenticatedQuery,
    *,
    trust: TrustView,
    revocations: RevocationState,
    policies: Mapping[str, Policy],
    now: int,
    notes: RefusalNotes,
) -> AdmittedQuery:
    """Run every stateless check in order, noting what is known for a refusal entry."""
    query = authenticated.query
    notes.relying_party = authenticated.relying_party
    notes.purpose = query.purpose_id
    check_nonce(query.nonce)
    check_freshness(query.issued_at, now)
    token = verify_token(query.token, trust, now)
    notes.token_id = token.token.token_id
    revocations.check(token.token, now)
    check_token_scope(token.token, query)
    policy = policy_for(token.token, policies)
    purpose = policy.purpose(query.purpose_id)
    check_relying_party_allowed(purpose, authenticated.relying_party)
    sealed = sealed_subjects_for(purpose, token.token)
    year = resolve_year(query.year, policy, now)
    return AdmittedQuery(
        query=query,
        relying_party=authenticated.relying_party,
        token=token,
        policy=policy,
        purpose=purpose,
        year=year,
        sealed_subjects=sealed,
    )
