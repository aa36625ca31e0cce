"""What the relying party asked and what the citizen consented to: steps 6-7 of `node.checks`.

A node answers only a question a relying party asked, under a consent that covers it, and
checks both itself from signed objects inside the spec, never from anything the
coordinator says about them:

- step 6 (`check_request`): the relying party's own signed `ScoreQuery` is in the spec
  (NO_RELYING_PARTY_REQUEST), verifies under a relying party's or the citizen portal's key
  (BAD_REQUEST_SIGNATURE), was signed by the party it names (SIGNER_MISMATCH), asks for
  the spec's purpose (PURPOSE_MISMATCH), and is fresh with a well-formed nonce
  (REQUEST_EXPIRED, BAD_NONCE; `fedscore.protocol.requests`);
- step 7 (`check_token`): the consent token inside that request is signed by the consent
  registry and valid now (UNKNOWN_SIGNER, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID;
  `fedscore.protocol.tokens`), not revoked by the newest status list or notice
  (CONSENT_REVOKED, STATUS_LIST_STALE), granted to the relying party that asked for this
  purpose (RELYING_PARTY_MISMATCH, PURPOSE_MISMATCH), under the spec's policy version
  (POLICY_MISMATCH), naming this agency (AGENCY_NOT_IN_TOKEN) and every domain this agency
  would contribute from (DOMAIN_NOT_IN_TOKEN), for a relying party the purpose allows
  (RELYING_PARTY_NOT_ALLOWED);
- the only sealed subject the node will open is this agency's blob inside that
  registry-signed token (`own_sealed_subject`; TOKEN_OUT_OF_SCOPE if there is none).

Invariants: every check reads in-memory state only (keyrings, the revocation state, the
policy); nothing here opens a sealed subject or reads a record.
"""

from __future__ import annotations

from fedscore.errors import InvalidArgument, PermissionDenied, Unauthenticated
from fedscore.protocol.requests import (
    AuthenticatedRequest,
    authenticate_request,
    check_nonce,
    check_relying_party_allowed,
    check_token_scope,
)
from fedscore.protocol.requests import (
    check_freshness as check_request_freshness,
)
from fedscore.protocol.status_list import RevocationState
from fedscore.protocol.tokens import VerifiedToken, verify_token
from fedscore.v1.query_pb2 import QuerySpec
from keys.keyring import RequesterKeys
from keys.registry import TrustView
from policies.model import Policy, Purpose


def check_request(
    spec: QuerySpec, request_keyring: RequesterKeys, now: int
) -> AuthenticatedRequest:
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


def own_sealed_subject(token: VerifiedToken, agency_id: str) -> bytes:
    """This agency's sealed subject blob from the registry-signed token.

    Anyone may seal any national ID to a node's public key, so a blob the coordinator chose
    would let it ask about anyone: the node opens this one only.
    """
    for sealed in token.token.sealed_subjects:
        if sealed.agency_id == agency_id:
            return bytes(sealed.blob)
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
