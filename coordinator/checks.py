"""The coordinator's admission checks for a score query (ARCHITECTURE.md step 2).

Plain functions; each raises a `FedscoreError` with a reason and returns nothing or the
value it established. Invariants:
- The relying party's envelope is verified before its payload is parsed, and the signer
  must be the relying party the query names; these request checks live in
  `fedscore.protocol.requests`, because every node repeats them on the request it is forwarded.
- Every check here is stateless or reads only in-memory state (trust, policy,
  revocation list). The persistent checks (use limit, replay) run last, inside the one
  transaction that stores the nonce, so a forged or out-of-scope request never burns a
  nonce or a token use.
- Nothing here sees or keeps a national ID: sealed subjects stay opaque.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from audit.core.fields import PURPOSE, RELYING_PARTY, TOKEN_ID
from fedscore.errors import FailedPrecondition, PermissionDenied
from fedscore.protocol.requests import (
    AuthenticatedRequest,
    authenticate_request,
    check_freshness,
    check_nonce,
    check_relying_party_allowed,
    check_token_scope,
    check_year,
)
from fedscore.protocol.status_list import RevocationState
from fedscore.protocol.tokens import VerifiedToken, verify_token
from fedscore.v1 import consent_pb2, envelope_pb2, query_pb2
from keys.registry import TrustView
from policies.model import Policy, Purpose


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
            RELYING_PARTY: self.relying_party,
            PURPOSE: self.purpose,
            TOKEN_ID: self.token_id,
        }
        return {name: value for name, value in known.items() if value}


# The relying party's request is checked with the same functions every node uses.
AuthenticatedQuery = AuthenticatedRequest
authenticate_query = authenticate_request


@dataclass(frozen=True)
class AdmittedQuery:
    """A score query that passed every stateless check; replay and use limits remain."""

    query: query_pb2.ScoreQuery
    relying_party: str
    # The relying party's signed request, as it signed it: every node is sent these bytes.
    request: envelope_pb2.Envelope = field(repr=False)
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
        return self.purpose.uses_allowed(self.token.token.max_uses)


def policy_for(token: consent_pb2.ConsentToken, policies: Mapping[str, Policy]) -> Policy:
    try:
        return policies[token.policy_hash]
    except KeyError:
        raise FailedPrecondition(
            f"token names policy {token.policy_hash!r}, which this coordinator does not hold",
            reason="UNKNOWN_POLICY",
        ) from None


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
    year = check_year(query, policy, purpose, now)
    return AdmittedQuery(
        query=query,
        relying_party=authenticated.relying_party,
        request=authenticated.envelope,
        token=token,
        policy=policy,
        purpose=purpose,
        year=year,
        sealed_subjects=sealed,
    )
