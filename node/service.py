"""gRPC handlers of `fedscore.v1.NodeService`, and the plain workflows they call.

Invariants:
- Handlers only parse (`fedscore.runtime.rpc.parse_request`), call `contribute` or
  `notify_revocation`, and encode; errors become gRPC statuses only in `fedscore.runtime.rpc`.
- Every refusal, including a malformed or oversized request, is logged as
  "query_refused" with its reason and only authenticated facts (query id, purpose).
- An answered query's claims (its query id, the relying party's request nonce, one use of
  the token: `node.claims`) and its "query_answered" entry commit in ONE transaction,
  before the answer leaves the node: a concurrent replay loses in the database, and no
  answer exists that the log does not show. A refused query claims nothing.
- The query path's SQL runs as prepared Core statements on the DB-API connection
  (`fedscore.runtime.prepared`), one transaction per query or per batch.
- No log entry holds a national ID, a pseudonym, a contribution or a masked value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc.aio
from google.protobuf.message import Message

from audit.store.log import EventLog
from audit.store.refusals import RefusalRecorder
from fedscore.errors import FedscoreError
from fedscore.memo import BoundedMemo
from fedscore.runtime.budget import PrivacyLedger
from fedscore.runtime.prepared import Cursor, HotConnection
from fedscore.runtime.rpc import Handler, parse_request, peer_common_name
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    ContributeRequest,
    ContributeResponse,
    NotifyRevocationRequest,
    NotifyRevocationResponse,
)
from keys.box import BoxKeyPair
from keys.masks import QuestionKind
from keys.signing import SigningKey
from node.answer import RecordLookup, contribution_for, signed_answer, subject_pseudonym
from node.checks import AdmittedQuery, NodeTrust, RefusalNotes, admit_query
from node.claims import ClaimStatements
from node.store import NodeStore
from policies.model import Policy

_log = logging.getLogger(__name__)

SERVICE_NAME = "fedscore.v1.NodeService"
# Sealed subjects whose pseudonym a node remembers (about 200 bytes each).
OPENED_SUBJECTS_KEPT = 16_384

Clock = Callable[[], float]


@dataclass(frozen=True)
class AgencyNode:
    """Everything the node's workflows need, set up once at start."""

    trust: NodeTrust
    signing_key: SigningKey
    box: BoxKeyPair = field(repr=False)
    pseudonym_key: bytes = field(repr=False)
    mask_seeds: Mapping[str, bytes] = field(repr=False)
    store: NodeStore
    log: EventLog
    # Refusals per caller: one by one up to an allowance, then summarised (audit.store.refusals).
    refusals: RefusalRecorder
    clock: Clock = time.time
    lookup: RecordLookup = field(init=False)
    # The query path's transactions and prepared statements (fedscore.runtime.prepared).
    hot: HotConnection = field(init=False)
    # What answering spends here: query id, request nonce, token use (node.claims).
    claims: ClaimStatements = field(init=False, repr=False)
    # The node's own privacy budget for the histograms it answers (node.statistics).
    ledger: PrivacyLedger = field(init=False, repr=False)
    # Pseudonyms of the sealed subjects already opened here (node.answer.subject_pseudonym).
    opened_subjects: BoundedMemo[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lookup", RecordLookup(self.trust.agency_id))
        object.__setattr__(self, "hot", HotConnection(self.store.engine))
        object.__setattr__(self, "opened_subjects", BoundedMemo(OPENED_SUBJECTS_KEPT))
        object.__setattr__(self, "claims", ClaimStatements(self.store.engine))
        object.__setattr__(self, "ledger", PrivacyLedger(self.store.engine))

    @property
    def agency_id(self) -> str:
        return self.trust.agency_id

    def now(self) -> int:
        return int(self.clock())


def uncertified_indicators(policy: Policy, agency_id: str) -> frozenset[str]:
    """Codes of this agency's indicators that count without certification."""
    return frozenset(
        indicator.code
        for indicator in policy.indicators_for(agency_id)
        if not indicator.requires_certification
    )


def points_for(node: AgencyNode, admitted: AdmittedQuery, cursor: Cursor) -> int:
    """Open the subject and count the year's records: the contribution, never sent as is."""
    person = subject_pseudonym(
        admitted, node.agency_id, node.box, node.pseudonym_key, node.opened_subjects
    )
    held = node.lookup.quantities(cursor, admitted.policy, person, admitted.year)
    return contribution_for(admitted, node.agency_id, held)


def _answer(node: AgencyNode, admitted: AdmittedQuery, cursor: Cursor) -> Envelope:
    """Open the subject, count the year's records and sign the masked answer."""
    points = points_for(node, admitted, cursor)
    return signed_answer(admitted, node.agency_id, points, node.mask_seeds, node.signing_key)


def answered_fields(admitted: AdmittedQuery, kind: QuestionKind) -> dict[str, object]:
    """The "query_answered" log body: the query, who asked, and where it was logged."""
    return {
        "query_id": admitted.query_id,
        "query_hash": admitted.signed.query_hash.hex(),
        "kind": kind.value,
        "purpose": admitted.purpose.id,
        "token_id": admitted.token_id,
        "relying_party": admitted.request.relying_party,
        # One signed request is served by one query only: the regulator checks across logs.
        "request_nonce_hash": admitted.request.nonce_hash.hex(),
        "year": admitted.year,
        # Where the coordinator promised it logged the query: the regulator checks.
        "coordinator": admitted.promise.origin,
        "promise_index": admitted.promise.index,
        "promise_leaf_hash": admitted.promise.leaf_hash.hex(),
    }


def contribute(node: AgencyNode, query: Envelope, notes: RefusalNotes) -> ContributeResponse:
    """Check a contribution query and answer it; raise a FedscoreError to refuse.

    One transaction: the claims (query id, request nonce, token use), the record lookup and
    "query_answered" commit together before the answer is returned; a refusal rolls all of
    it back.
    """
    now = node.now()
    admitted = admit_query(query, node.trust, now, notes)
    with node.hot.transaction() as cursor:
        node.claims.take(cursor, admitted.claim(), now)
        answer = _answer(node, admitted, cursor)
        fields = answered_fields(admitted, QuestionKind.SCORE)
        node.log.append(cursor, "query_answered", fields, now=now)
    return ContributeResponse(answer=answer)


def _append_facts(
    log: EventLog, kind: str, essential: Mapping[str, object], facts: Mapping[str, object]
) -> None:
    """Log `essential` with `facts`; if the log's field rules refuse a fact, log `essential`.

    The event itself (a refusal, a revocation) must never go unrecorded, nor change
    because one of its descriptive facts could not be written.
    """
    try:
        log.append_now(kind, {**essential, **facts})
    except FedscoreError as error:
        _log.warning("%s: facts not loggable (%s); logging the rest", kind, error.reason)
        log.append_now(kind, essential)


def log_refusal(node: AgencyNode, error: FedscoreError, notes: RefusalNotes, caller: str) -> None:
    """Write "query_refused" with the reason and what was authenticated, nothing more.

    Beyond `caller`'s allowance the refusal is counted into its summary instead.
    """
    node.refusals.record(caller, "query_refused", {"reason": error.reason}, notes.fields())


def notify_revocation(node: AgencyNode, request: NotifyRevocationRequest) -> None:
    """Apply a registry-signed revocation at once, then log it."""
    notice = node.trust.revocations.apply_notice(request.notice)
    _append_facts(
        node.log,
        "revocation_received",
        {"status_index": notice.status_index},
        {"token_id": notice.token_id},
    )


def node_handlers(node: AgencyNode) -> dict[str, Handler]:
    """The NodeService methods, ready for `fedscore.runtime.rpc.start_server`."""

    async def contribute_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        notes = RefusalNotes()
        try:
            request = parse_request(raw, ContributeRequest)
            return contribute(node, request.query, notes)
        except FedscoreError as error:
            log_refusal(node, error, notes, peer_common_name(context))
            raise

    async def notify_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            request = parse_request(raw, NotifyRevocationRequest)
            notify_revocation(node, request)
        except FedscoreError as error:
            caller = peer_common_name(context)
            node.refusals.record(caller, "revocation_refused", {"reason": error.reason})
            raise
        return NotifyRevocationResponse(party=node.agency_id)

    return {"Contribute": contribute_handler, "NotifyRevocation": notify_handler}
