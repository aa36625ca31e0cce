"""The Score workflow: admit, log before act, fan out, sum, release.

Invariants:
- Nothing is sent to any node before the query is in the coordinator's log: the nonce,
  the token use and "query_issued" commit in one transaction, and every node receives
  a log promise signed over that entry together with the exact spec bytes logged.
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

from audit.log import LogRef
from coordinator.checks import AdmittedQuery, RefusalNotes, admit_query, authenticate_query
from coordinator.fanout import (
    NODE_DEADLINE_SECONDS,
    LoggedQuery,
    NodeChannels,
    fan_out,
    secure_sum,
)
from coordinator.release import release_for, set_release
from coordinator.store import CoordinatorStore, QueryIssue
from fedscore.errors import FedscoreError
from fedscore.status import RevocationState
from fedscore.v1 import query_pb2
from keys.envelope import sign_message
from keys.keyring import Keyring
from keys.registry import TrustView
from keys.signing import SigningKey
from policies.model import Policy

# Nodes refuse a query spec older than this, so a logged query cannot be replayed later.
QUERY_LIFETIME_SECONDS = 30


def unix_now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Coordinator:
    """Everything one Score call needs, derived once at start (no per-query file reads)."""

    id: str
    signing_key: SigningKey
    trust: TrustView
    query_keyring: Keyring
    agency_keyring: Keyring
    policies: Mapping[str, Policy]
    revocations: RevocationState
    store: CoordinatorStore
    channels: NodeChannels
    node_deadline: float = NODE_DEADLINE_SECONDS
    clock: Callable[[], int] = field(default=unix_now)


def _admit(
    coordinator: Coordinator, request: query_pb2.ScoreRequest, notes: RefusalNotes, now: int
) -> AdmittedQuery:
    authenticated = authenticate_query(request.query, coordinator.query_keyring)
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
        token=admitted.query.token,
        issued_at=now,
        expires_at=now + QUERY_LIFETIME_SECONDS,
        coordinator=coordinator.id,
    )


def log_promise(coordinator: Coordinator, ref: LogRef, query_hash: bytes) -> query_pb2.LogPromise:
    return query_pb2.LogPromise(
        origin=coordinator.id,
        index=ref.index,
        leaf_hash=ref.leaf_hash,
        query_hash=query_hash,
        logged_at=ref.logged_at,
    )


def issue_query(
    coordinator: Coordinator, admitted: AdmittedQuery, now: int
) -> tuple[LoggedQuery, LogRef]:
    """Log the query (spending nonce and use) and sign the promise the nodes check."""
    spec = build_spec(coordinator, admitted, now)
    # Serialized once: these exact bytes are hashed, logged and sent to every node.
    spec_bytes = spec.SerializeToString()
    query_hash = hashlib.sha256(spec_bytes).digest()
    ref = coordinator.store.issue(
        QueryIssue(
            query_id=spec.query_id,
            query_hash=query_hash,
            nonce=admitted.query.nonce,
            relying_party=admitted.relying_party,
            token_id=admitted.consent.token_id,
            max_uses=admitted.max_uses,
            purpose_id=spec.purpose_id,
            participants=tuple(spec.participants),
            year=spec.year,
            issued_at=spec.issued_at,
            expires_at=spec.expires_at,
        )
    )
    promise = sign_message(log_promise(coordinator, ref, query_hash), coordinator.signing_key)
    logged = LoggedQuery(
        spec=spec,
        spec_bytes=spec_bytes,
        query_hash=query_hash,
        log_promise=promise,
        sealed_subjects=admitted.sealed_subjects,
    )
    return logged, ref


async def answer_score(
    coordinator: Coordinator, request: query_pb2.ScoreRequest
) -> query_pb2.ScoreResponse:
    """Answer one Score request or raise the refusal, logging either way."""
    now = coordinator.clock()
    notes = RefusalNotes()
    try:
        admitted = _admit(coordinator, request, notes, now)
        logged, ref = issue_query(coordinator, admitted, now)
    except FedscoreError as error:
        coordinator.store.refuse({"reason": error.reason, **notes.fields()})
        raise
    query_id = logged.spec.query_id

    try:
        answers = await fan_out(
            logged,
            coordinator.channels,
            coordinator.signing_key,
            coordinator.agency_keyring,
            coordinator.node_deadline,
        )
    except asyncio.CancelledError:
        # The caller went away mid-query; the log still shows how the query ended.
        coordinator.store.finish(
            query_id, "failed", "query_failed", {"query_id": query_id, "reason": "CANCELLED"}
        )
        raise
    try:
        answers.raise_for_failure()
        total = secure_sum(answers.masked.values())
    except FedscoreError as error:
        fields = answers.failure_fields(query_id)
        fields["reason"] = error.reason
        coordinator.store.finish(query_id, "failed", "query_failed", fields)
        raise

    released = release_for(admitted.policy, admitted.purpose, total)
    result = query_pb2.ScoreResult(
        query_id=query_id,
        purpose_id=admitted.purpose.id,
        relying_party=admitted.relying_party,
        token_id=admitted.consent.token_id,
        year=admitted.year,
        policy_hash=admitted.consent.policy_hash,
        request_nonce_hash=hashlib.sha256(admitted.query.nonce).digest(),
        log_index=ref.index,
        issued_at=coordinator.clock(),
    )
    set_release(result, released)
    envelope = sign_message(result, coordinator.signing_key)
    coordinator.store.finish(
        query_id, "released", "result_released", {"query_id": query_id, **released.log_fields()}
    )
    return query_pb2.ScoreResponse(result=envelope)


def receive_revocation(
    coordinator: Coordinator, request: query_pb2.PushRevocationRequest
) -> query_pb2.PushRevocationResponse:
    """Apply a registry-signed revocation notice at once and log that it arrived."""
    try:
        notice = coordinator.revocations.apply_notice(request.notice)
    except FedscoreError as error:
        coordinator.store.log.append_now("revocation_refused", {"reason": error.reason})
        raise
    coordinator.store.log.append_now(
        "revocation_received",
        {
            "token_id": notice.token_id,
            "status_index": notice.status_index,
            "revoked_at": notice.revoked_at,
            "issuer": notice.issuer,
        },
    )
    return query_pb2.PushRevocationResponse(party=coordinator.id)
