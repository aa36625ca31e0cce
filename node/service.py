"""The agency node's state (`AgencyNode`), and `fedscore.v1.NodeService.NotifyRevocation`.

Score questions are served by `node.batch` (`NodeService.ContributeBatch`), statistics
questions by `node.statistics`; both work on the `AgencyNode` set up here once at start.

Invariants:
- Handlers only parse (`fedscore.runtime.rpc.parse_request`), call plain functions, and
  encode; errors become gRPC statuses only in `fedscore.runtime.rpc`.
- Every refusal, including a malformed or oversized request, is logged with its reason and
  only authenticated facts ("query_refused": query id, purpose; "revocation_refused"),
  within the caller's allowance (`audit.store.refusals`); beyond it, counted into the
  caller's summary.
- A registry-signed revocation applies at once, before it is logged; the entry names the
  token id only if the log's field rules accept it, and is written either way.
- No log entry holds a national ID, a pseudonym, a contribution or a masked value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc.aio
from google.protobuf.message import Message

from audit.core import kinds
from audit.core.fields import REASON, TOKEN_ID
from audit.store.log import EventLog
from audit.store.refusals import RefusalRecorder
from fedscore.errors import FedscoreError
from fedscore.memo import BoundedMemo
from fedscore.runtime.budget import PrivacyLedger
from fedscore.runtime.prepared import HotConnection
from fedscore.runtime.rpc import Handler, parse_request, peer_common_name
from fedscore.v1.query_pb2 import NotifyRevocationRequest, NotifyRevocationResponse
from keys.box import BoxKeyPair
from keys.shares import RandomShares, ShareSource
from keys.signing import SigningKey
from node.answer import RecordLookup
from node.claims import ClaimStatements
from node.question_checks import NodeTrust, RefusalNotes
from node.store import NodeStore
from policies.model import Policy

_log = logging.getLogger(__name__)

SERVICE_NAME = "fedscore.v1.NodeService"
# Sealed subjects whose pseudonym a node remembers (about 200 bytes each).
OPENED_SUBJECTS_KEPT = 16_384

Clock = Callable[[], float]


@dataclass(frozen=True)
class AgencyNode:
    """Everything the node's workflows need, set up once at start.

    What follows the trust registry (`trust`, `signing_key`, `box`, `mask_seeds`) is
    replaced whole by `follow`, told by the party's `LiveTrust` (`node.server`); every
    workflow reads it per request. Nothing else ever changes.
    """

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
    # Where a histogram's shares are drawn from (keys.shares): the operating system's CSPRNG;
    # a test may fix one aggregator's shares with a seed (keys.shares.SeededShares).
    share_source: ShareSource = field(default_factory=RandomShares, repr=False)
    lookup: RecordLookup = field(init=False)
    # The score path's transactions and prepared statements (fedscore.runtime.prepared).
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

    def follow(
        self,
        trust: NodeTrust,
        signing_key: SigningKey,
        box: BoxKeyPair,
        mask_seeds: Mapping[str, bytes],
    ) -> None:
        """Swap what follows the trust registry, each whole (one event-loop step: no
        request sees half of it)."""
        if trust.agency_id != self.agency_id:
            raise ValueError("a node's trust must stay its own agency's")
        object.__setattr__(self, "trust", trust)
        object.__setattr__(self, "signing_key", signing_key)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "mask_seeds", mask_seeds)

    def now(self) -> int:
        return int(self.clock())


def uncertified_indicators(policy: Policy, agency_id: str) -> frozenset[str]:
    """Codes of this agency's indicators that count without certification."""
    return frozenset(
        indicator.code
        for indicator in policy.indicators_for(agency_id)
        if not indicator.requires_certification
    )


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
    node.refusals.record(caller, kinds.QUERY_REFUSED, {REASON: error.reason}, notes.fields())


def notify_revocation(node: AgencyNode, request: NotifyRevocationRequest) -> None:
    """Apply a registry-signed revocation at once, then log it."""
    notice = node.trust.revocations.apply_notice(request.notice)
    _append_facts(
        node.log,
        kinds.REVOCATION_RECEIVED,
        {"status_index": notice.status_index},
        {TOKEN_ID: notice.token_id},
    )


def revocation_handlers(node: AgencyNode) -> dict[str, Handler]:
    """NodeService.NotifyRevocation, ready for `fedscore.runtime.rpc.start_server`."""

    async def notify_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            request = parse_request(raw, NotifyRevocationRequest)
            notify_revocation(node, request)
        except FedscoreError as error:
            caller = peer_common_name(context)
            node.refusals.record(caller, kinds.REVOCATION_REFUSED, {REASON: error.reason})
            raise
        return NotifyRevocationResponse(party=node.agency_id)

    return {"NotifyRevocation": notify_handler}
