"""The Score workflow: admit, log before act, fan out, sum, release.

Invariants:
- Nothing is sent to any node before the query is in the coordinator's log: the nonce,
  the token use and "query_issued" commit in one transaction, and every node receives
  a log promise naming that entry, with the exact spec bytes logged, in a batch the
  coordinator signs.
- A refusal before that point is logged as "score_refused" with only authenticated
  facts; a failure after it as "query_failed" naming the nodes, never with a partial
  total; a success as "result_released" with only what the purpose releases.
- The coordinator handles masked values and one total; it never holds a national ID,
  a pseudonym or a per-agency contribution.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from audit.core import kinds
from audit.core.entries import LogRef
from audit.core.fields import QUERY_ID, REASON, REVOKED_AT, TOKEN_ID
from audit.store.refusals import RefusalRecorder
from coordinator.checks import AdmittedQuery, RefusalNotes, admit_query, authenticate_query
from coordinator.dispatch import BatchDispatcher, fan_out
from coordinator.fanout import NODE_DEADLINE_SECONDS, LoggedQuery, NodeChannels, score_total
from coordinator.release import Released, release_for, set_release
from coordinator.store import OUTCOME_FAILED, OUTCOME_RELEASED, CoordinatorStore, QueryIssue
from fedscore.errors import FedscoreError
from fedscore.protocol.requests import nonce_hash
from fedscore.protocol.status_list import RevocationState
from fedscore.v1 import envelope_pb2, query_pb2
from keys.envelope import sign_message
from keys.keyring import AgencyKeys, RequesterKeys
from keys.registry import TrustView
from keys.signing import SigningKey
from policies.model import Policy

# Nodes refuse a query spec older than this, so a logged query cannot be replayed later.
QUERY_LIFETIME_SECONDS = 30


def unix_now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Coordinator:
    """Everything one Score call needs, derived at start (no per-query file reads).

    What follows the trust registry (the view and its keyrings, the policies, the signing
    key, the channels) is replaced whole by `follow` when the party's `LiveTrust` changes
    (`coordinator.server`); every call reads it per request.
    """

    id: str
    signing_key: SigningKey
    trust: TrustView
    query_keyring: RequesterKeys
    agency_keyring: AgencyKeys
    policies: Mapping[str, Policy]
    revocations: RevocationState
    store: CoordinatorStore
    channels: NodeChannels
    # Refusals per caller: one by one up to an allowance, then summarised (audit.store.refusals).
    refusals: RefusalRecorder
    node_deadline: float = NODE_DEADLINE_SECONDS
    clock: Callable[[], int] = field(default=unix_now)

    @cached_property
    def dispatcher(self) -> BatchDispatcher:
        """Batches the queries bound for each node (created on first use, then kept)."""
        return BatchDispatcher(
            self.channels, self.signing_key, self.agency_keyring, self.node_deadline
        )

    def follow(
        self, trust: TrustView, policies: Mapping[str, Policy], signing_key: SigningKey
    ) -> None:
        """Swap in what `trust` lists now, each whole: keyrings, policies (every one still
        held, so tokens issued under an older one verify), the signing key, the channels."""
        object.__setattr__(self, "trust", trust)
        object.__setattr__(self, "query_keyring", trust.requester_keys())
        object.__setattr__(self, "agency_keyring", trust.agency_keys())
        object.__setattr__(self, "policies", dict(policies))
        object.__setattr__(self, "signing_key", signing_key)
        self.dispatcher.signing_key = signing_key
        self.dispatcher.agency_keyring = self.agency_keyring
        self.channels.follow(NodeChannels.endpoints_of(trust))


def admit(
    coordinator: Coordinator, query: envelope_pb2.Envelope, notes: RefusalNotes, now: int
) -> AdmittedQuery:
    """Every check of a signed ScoreQuery that needs no database (see coordinator.checks)."""
    authenticated = authenticate_query(query, coordinator.query_keyring)
    return admit_query(
        authenticated,
        trust=coordinator.trust,
        revocations=coordinator.revocations,
        policies=coordinator.policies,
        now=now,
        notes=notes,
    )


def build_spec(coordinator: Coordinator, admitted: AdmittedQuery, now: int) -> query_pb2.QuerySpec:
    """The query every node is asked, over the purpose's full participant set."""
    return query_pb2.QuerySpec(
        query_id=secrets.token_hex(16),
        purpose_id=admitted.purpose.id,
        policy_hash=admitted.consent.policy_hash,
        year=admitted.year,
        participants=list(admitted.purpose.participants),
        issued_at=now,
        expires_at=now + QUERY_LIFETIME_SECONDS,
        coordinator=coordinator.id,
        # The relying party's own signed request, byte for byte: every node checks it.
        request=admitted.request,
        kind=query_pb2.QUESTION_KIND_SCORE,
    )


@dataclass(frozen=True)
class PreparedQuery:
    """An admitted query and the spec every node will be asked, not logged yet."""

    admitted: AdmittedQuery
    spec: query_pb2.QuerySpec
    # Serialized once: these exact bytes are hashed, logged and sent to every node.
    spec_bytes: bytes
    query_hash: bytes

    @property
    def query_id(self) -> str:
        return str(self.spec.query_id)

    def issue(self) -> QueryIssue:
        """What logging this query records (and spends: its nonce and one token use)."""
        admitted, spec = self.admitted, self.spec
        return QueryIssue(
            query_id=spec.query_id,
            query_hash=self.query_hash,
            nonce=admitted.query.nonce,
            relying_party=admitted.relying_party,
            request_nonce_hash=nonce_hash(admitted.query.nonce),
            token_id=admitted.consent.token_id,
            max_uses=admitted.max_uses,
            purpose_id=spec.purpose_id,
            participants=tuple(spec.participants),
            year=spec.year,
            issued_at=spec.issued_at,
            expires_at=spec.expires_at,
        )

    def logged(self, ref: LogRef) -> LoggedQuery:
        """The query as the nodes receive it, with its promise: logged at `ref`."""
        return LoggedQuery.at(self.spec, self.spec_bytes, self.query_hash, ref)


def prepare_query(coordinator: Coordinator, admitted: AdmittedQuery, now: int) -> PreparedQuery:
    spec = build_spec(coordinator, admitted, now)
    spec_bytes = spec.SerializeToString()
    return PreparedQuery(admitted, spec, spec_bytes, hashlib.sha256(spec_bytes).digest())


def issue_query(
    coordinator: Coordinator, admitted: AdmittedQuery, now: int
) -> tuple[LoggedQuery, LogRef]:
    """Log the query (spending nonce and use): what the nodes are sent, and where it is logged."""
    prepared = prepare_query(coordinator, admitted, now)
    ref = coordinator.store.issue(prepared.issue())
    return prepared.logged(ref), ref


def score_result(
    coordinator: Coordinator, admitted: AdmittedQuery, query_id: str, log_index: int, total: int
) -> tuple[query_pb2.ScoreResult, Released]:
    """The result to sign for `total`: only what the purpose releases, bound to the request."""
    released = release_for(admitted.policy, admitted.purpose, total)
    result = query_pb2.ScoreResult(
        query_id=query_id,
        purpose_id=admitted.purpose.id,
        relying_party=admitted.relying_party,
        token_id=admitted.consent.token_id,
        year=admitted.year,
        policy_hash=admitted.consent.policy_hash,
        request_nonce_hash=hashlib.sha256(admitted.query.nonce).digest(),
        log_index=log_index,
        issued_at=coordinator.clock(),
    )
    set_release(result, released)
    return result, released


async def answer_score(
    coordinator: Coordinator, request: query_pb2.ScoreRequest, caller: str
) -> query_pb2.ScoreResponse:
    """Answer one Score request or raise the refusal, logging either way.

    `caller` is the certificate name of who sent it: beyond its allowance of refusals
    (`audit.store.refusals`), a refusal is counted into its summary instead of logged alone.
    """
    now = coordinator.clock()
    notes = RefusalNotes()
    try:
        admitted = admit(coordinator, request.query, notes, now)
        logged, ref = issue_query(coordinator, admitted, now)
    except FedscoreError as error:
        coordinator.refusals.record(
            caller, kinds.SCORE_REFUSED, {REASON: error.reason}, notes.fields()
        )
        raise
    query_id = logged.spec.query_id

    try:
        answers = await fan_out(logged, coordinator.dispatcher)
    except asyncio.CancelledError:
        # The caller went away mid-query; the log still shows how the query ended.
        coordinator.store.finish(
            query_id, OUTCOME_FAILED, kinds.QUERY_FAILED, {QUERY_ID: query_id, REASON: "CANCELLED"}
        )
        raise
    try:
        total = score_total(answers)
    except FedscoreError as error:
        fields = answers.failure_fields(query_id, error.reason)
        coordinator.store.finish(query_id, OUTCOME_FAILED, kinds.QUERY_FAILED, fields)
        raise

    result, released = score_result(coordinator, admitted, query_id, ref.index, total)
    envelope = sign_message(result, coordinator.signing_key)
    coordinator.store.finish(
        query_id,
        OUTCOME_RELEASED,
        kinds.RESULT_RELEASED,
        {QUERY_ID: query_id, **released.log_fields()},
    )
    return query_pb2.ScoreResponse(result=envelope)


def receive_revocation(
    coordinator: Coordinator, request: query_pb2.PushRevocationRequest, caller: str
) -> query_pb2.PushRevocationResponse:
    """Apply a registry-signed revocation notice at once and log that it arrived."""
    try:
        notice = coordinator.revocations.apply_notice(request.notice)
    except FedscoreError as error:
        coordinator.refusals.record(caller, kinds.REVOCATION_REFUSED, {REASON: error.reason})
        raise
    coordinator.store.log.append_now(
        kinds.REVOCATION_RECEIVED,
        {
            TOKEN_ID: notice.token_id,
            "status_index": notice.status_index,
            REVOKED_AT: notice.revoked_at,
            "issuer": notice.issuer,
        },
    )
    return query_pb2.PushRevocationResponse(party=coordinator.id)
