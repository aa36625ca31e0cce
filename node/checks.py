"""The agency node's checks on a score question (ARCHITECTURE.md "One score query" step 4).

Every score question reaches a node as one item of a `ContributionBatch` the coordinator
signed once (a lone question is a batch of one; there is no other path). Plain functions;
each raises a `FedscoreError` with a reason and returns the value it established. They run
in the one fixed order below, so a forged envelope is refused before anything it carries is
believed or parsed. A node checks on its own every limit it can (docs/adr/0011): nothing
here trusts the coordinator beyond its signature. The steps a histogram question passes
too are `node.question_checks`, called here with a score item's values; what only a score
question has (the relying party's request, the consent token, the years a purpose
reaches) is here and in `node.consent_checks`.

For the batch, once (`authenticate_batch`; a failure refuses the whole batch):
 1. it opens as a `fedscore.protocol.questions.SignedContributionBatch`: the envelope
    verifies under the coordinator's keys (UNSIGNED, WRONG_PAYLOAD_TYPE, UNKNOWN_SIGNER,
    BAD_SIGNATURE), parses (MALFORMED_PAYLOAD), holds at most `MAX_BATCH_QUERIES` items
    (BATCH_TOO_LARGE) and names its id (MALFORMED_MESSAGE); then it is addressed to this
    agency (WRONG_AGENCY). The signature covers every item's spec bytes and its log promise.

For each item on its own (`admit`; a failure refuses that item only):
 2. its spec parses and names a query id (MALFORMED_MESSAGE) and asks a score question
    (QUESTION_KIND_MISMATCH);
 3. the policy hash is one this node holds (UNKNOWN_POLICY);
 4. it is fresh (QUERY_EXPIRED);
 5. its log promise is there and covers exactly these spec bytes, in the log of the
    coordinator that signed the batch and that the spec names (BAD_LOG_PROMISE);
 6. the relying party's own signed request inside the spec is there
    (NO_RELYING_PARTY_REQUEST), verifies under a relying party's key
    (BAD_REQUEST_SIGNATURE), was signed by the party it names (SIGNER_MISMATCH), and names
    this purpose, with a fresh request and nonce (PURPOSE_MISMATCH, REQUEST_EXPIRED,
    BAD_NONCE): the coordinator only relays what a relying party asked (`node.consent_checks`);
 7. the consent token inside that request verifies, is not revoked, and covers this
    purpose, policy, agency and domains, for the relying party that asked, which the purpose
    allows (TOKEN_EXPIRED, CONSENT_REVOKED, STATUS_LIST_STALE, RELYING_PARTY_MISMATCH,
    RELYING_PARTY_NOT_ALLOWED, ...), and holds a sealed subject for this agency
    (TOKEN_OUT_OF_SCOPE) (`node.consent_checks`);
 8. the participant list is the purpose's full set, in any order, never a subset
    (PARTICIPANT_SET_MISMATCH);
 9. the year is the one the relying party asked (YEAR_MISMATCH), one that can hold a score
    (BAD_YEAR), within the purpose's years (YEAR_NOT_ALLOWED);
10. in the batch's transaction (`node.claims`, `node.batch`): the query id is unused
    (REPLAYED_QUERY), the request nonce unused (REPLAYED_NONCE), and the token has a use
    left at this node (USE_LIMIT_REACHED).

Steps 2-5, 8 and the range of step 9 are `node.question_checks`.

Invariants:
- Only facts from a verified batch are written into `RefusalNotes`, so a forger cannot put
  a query id or purpose of its choosing into the node's log.
- Nothing here opens the sealed subject or reads a record: a question that fails any check
  never touches personal data. The only sealed subject a node ever opens is its own blob
  inside the registry-signed token (`AdmittedQuery.sealed_subject`): a coordinator can seal
  any national ID to a node's public key, and a batch item has no field for a blob.
- Every check reads in-memory state only; step 10 is the caller's, in its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedscore.errors import PermissionDenied, Unauthenticated

# The protocol's limit on a batch, named here too: the node's step 1 refuses beyond it.
from fedscore.protocol.questions import SignedContributionBatch
from fedscore.protocol.requests import AuthenticatedRequest, requested_year
from fedscore.protocol.tokens import VerifiedToken
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    QUESTION_KIND_SCORE,
    BatchedContributionQuery,
    LogPromise,
    QuerySpec,
)
from node.claims import Claim
from node.consent_checks import check_request, check_token, own_sealed_subject
from node.question_checks import (
    MAX_YEAR,
    NodeTrust,
    RefusalNotes,
    SignedSpec,
    addressed_to,
    check_freshness,
    check_kind,
    check_participants,
    check_promise,
    check_year_range,
    policy_named,
    signed_spec,
)
from policies.model import Policy, Purpose


@dataclass(frozen=True)
class AdmittedQuery:
    """A question that passed every check; the node must now answer it."""

    signed: SignedSpec[QuerySpec]
    policy: Policy
    purpose: Purpose
    request: AuthenticatedRequest  # the relying party's own signed request
    token: VerifiedToken
    year: int
    promise: LogPromise  # the coordinator's signed word that it logged this question first
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


def authenticate_batch(envelope: Envelope, node: NodeTrust) -> SignedContributionBatch:
    """Step 1: the coordinator signed this batch, within bounds, for this agency."""
    signed = SignedContributionBatch.verify(envelope, node.coordinator_keyring)
    addressed_to(node.agency_id, signed.batch.agency_ids)
    return signed


def check_log_promise(item: BatchedContributionQuery, signed: SignedSpec[QuerySpec]) -> LogPromise:
    """Step 5: the coordinator that signed the batch logged exactly these spec bytes first.

    The batch's signature covers the promise (so it carries no signature of its own); it
    must name this very spec's hash, in the log of the coordinator that signed and that
    the spec names.
    """
    if not item.HasField("log_promise"):
        raise Unauthenticated("query carries no log promise", reason="BAD_LOG_PROMISE")
    promise = item.log_promise
    check_promise(promise.origin, promise.query_hash, signed)
    return promise


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
    check_year_range(asked, MAX_YEAR)  # future years are the purpose's to refuse
    purpose.check_year(asked, policy.current_year(now))
    return asked


def admit(
    item: BatchedContributionQuery,
    coordinator: str,
    node: NodeTrust,
    now: int,
    notes: RefusalNotes,
) -> AdmittedQuery:
    """Steps 2-9 for one item of a batch `coordinator` signed (step 1), in order.

    Fills `notes` with what is authenticated as it is learned. Step 10 (the claims) is the
    caller's, inside the transaction that logs the answer.
    """
    signed = signed_spec(item.spec, QuerySpec, coordinator)
    spec = signed.spec
    notes.query_id = spec.query_id
    notes.purpose = spec.purpose_id
    check_kind(spec.kind, QUESTION_KIND_SCORE)
    policy = policy_named(spec.policy_hash, node.policies)
    check_freshness(spec.issued_at, spec.expires_at, now)
    promise = check_log_promise(item, signed)
    request = check_request(spec, node.request_keyring, now)
    token = check_token(spec, request, policy, node.agency_id, node.trust, node.revocations, now)
    sealed = own_sealed_subject(token, node.agency_id)
    purpose = policy.purpose(spec.purpose_id)
    check_participants(spec.participants, purpose.participants, node.agency_id, in_order=False)
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
