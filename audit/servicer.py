"""`fedscore.v1.AuditService`: one implementation served by the registry, nodes and coordinator.

Invariants:
- The caller is who its verified mutual-TLS certificate names (CN = party id), checked
  before the request is parsed. Checkpoints, entries and proofs are served only to a
  participant with ROLE_REGULATOR; access history only to ROLE_CITIZEN_PORTAL, and only
  for the token named in a consent receipt that verifies under the consent registry's key.
- Access history holds only entries about that token: entries naming its token id, and
  entries naming the id of a query this party logged for that token. Each comes with an
  inclusion proof in the tree of a checkpoint signed in the same call.
- Entries are served exactly as stored, never checked or repaired here: the regulator
  and the citizen recompute every leaf hash and decide what is wrong.
- Checkpoints come only from `CheckpointSigner` (never two inconsistent ones). A
  background task signs one every `CHECKPOINT_INTERVAL_SECONDS` when the log grew, one
  at start and one at stop; a refusal (tampered log) is reported in the party's output
  and the party keeps serving, so the regulator can see what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc.aio
from google.protobuf.message import Message

from audit.core.checkpoint import Checkpoint
from audit.core.contract import MAX_ENTRIES_PER_PAGE, SERVICE_NAME
from audit.core.entries import LogEntry
from audit.core.fields import QUERY_ID, TOKEN_ID
from audit.store.checkpoints import CheckpointSigner
from audit.store.log import EventLog
from fedscore.errors import FedscoreError, InvalidArgument, NotFound, PermissionDenied
from fedscore.protocol.signed import SignedReceipt
from fedscore.runtime.party import Party
from fedscore.runtime.rpc import Handler, parse_request, peer_common_name
from fedscore.v1.audit_pb2 import (
    AccessRecord,
    AuditEntry,
    GetAccessHistoryRequest,
    GetAccessHistoryResponse,
    GetCheckpointRequest,
    GetCheckpointResponse,
    GetConsistencyProofRequest,
    GetConsistencyProofResponse,
    GetEntriesRequest,
    GetEntriesResponse,
    GetInclusionProofRequest,
    GetInclusionProofResponse,
)
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Role
from keys.registry import TrustView

_log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_SECONDS = 10.0
MAX_HISTORY_RECORDS = 2_000


def require_role(trust: TrustView, caller_id: str, role: Role, what: str) -> None:
    """Raise `PermissionDenied CALLER_NOT_ALLOWED` unless `caller_id` has `role` now."""
    try:
        caller = trust.participant(caller_id)
    except NotFound:
        caller = None
    if caller is None or caller.role != role:
        raise PermissionDenied(
            f"{what} is served only to the {Role.Name(role)}; "
            f"{caller_id or '(no certificate name)'} may not ask",
            reason="CALLER_NOT_ALLOWED",
        )


def wire_entry(entry: LogEntry) -> AuditEntry:
    return AuditEntry(
        index=entry.index,
        kind=entry.kind,
        body=entry.body,
        logged_at=entry.logged_at,
        leaf_hash=entry.leaf_hash,
    )


def entries_page(log: EventLog, start: int, end: int) -> GetEntriesResponse:
    """Stored rows start <= index < end (at most one page), and the party's current size."""
    if end < start:
        raise InvalidArgument(f"bad entry range [{start}, {end})", "BAD_RANGE")
    end = min(end, start + MAX_ENTRIES_PER_PAGE)
    rows = log.stored_entries(start, end)
    return GetEntriesResponse(entries=[wire_entry(e) for e in rows], log_size=log.size())


def receipt_token_id(trust: TrustView, receipt: Envelope) -> str:
    """The token id of a consent receipt the registry signed; raise if it does not verify."""
    return str(SignedReceipt.verify(receipt, trust.registry_keys()).receipt.token_id)


def entries_about_token(log: EventLog, token_id: str) -> list[LogEntry]:
    """Entries naming `token_id`, and those naming a query id that one of them names."""
    naming = log.entries_naming(TOKEN_ID, [token_id], MAX_HISTORY_RECORDS)
    query_ids = sorted({q for e in naming if isinstance(q := _field(e, QUERY_ID), str) and q})
    linked = log.entries_naming(QUERY_ID, query_ids, MAX_HISTORY_RECORDS)
    by_index = {e.index: e for e in [*naming, *linked]}
    return [by_index[i] for i in sorted(by_index)][:MAX_HISTORY_RECORDS]


def _field(entry: LogEntry, name: str) -> object:
    try:
        fields = entry.fields
    except ValueError:
        return None
    return fields.get(name) if isinstance(fields, dict) else None


def access_history(
    log: EventLog, signer: CheckpointSigner, trust: TrustView, receipt: Envelope
) -> GetAccessHistoryResponse:
    """The entries about the receipt's token, each proven in a freshly signed checkpoint."""
    token_id = receipt_token_id(trust, receipt)
    envelope = signer.sign()
    checkpoint = Checkpoint.from_bytes(envelope.payload)
    records = [
        AccessRecord(
            entry=wire_entry(entry),
            inclusion_proof=log.inclusion_proof(entry.index, checkpoint.size),
        )
        for entry in entries_about_token(log, token_id)
        if entry.index < checkpoint.size
    ]
    return GetAccessHistoryResponse(checkpoint=envelope, records=records)


class AuditService:
    """The AuditService methods over one party's log and checkpoint signer."""

    def __init__(self, log: EventLog, signer: CheckpointSigner, trust: TrustView) -> None:
        self.log = log
        self.signer = signer
        self.trust = trust

    def _regulator(self, context: grpc.aio.ServicerContext, what: str) -> None:
        require_role(self.trust, peer_common_name(context), Role.ROLE_REGULATOR, what)

    async def get_checkpoint(self, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        self._regulator(context, "a checkpoint")
        parse_request(raw, GetCheckpointRequest)
        return GetCheckpointResponse(checkpoint=self.signer.sign())

    async def get_entries(self, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        self._regulator(context, "log entries")
        request = parse_request(raw, GetEntriesRequest)
        return entries_page(self.log, request.start, request.end)

    async def get_inclusion_proof(self, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        self._regulator(context, "an inclusion proof")
        request = parse_request(raw, GetInclusionProofRequest)
        proof = self.log.inclusion_proof(request.index, request.tree_size)
        return GetInclusionProofResponse(proof=proof)

    async def get_consistency_proof(self, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        self._regulator(context, "a consistency proof")
        request = parse_request(raw, GetConsistencyProofRequest)
        proof = self.log.consistency_proof(request.first_size, request.second_size)
        return GetConsistencyProofResponse(proof=proof)

    async def get_access_history(self, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        require_role(
            self.trust, peer_common_name(context), Role.ROLE_CITIZEN_PORTAL, "access history"
        )
        request = parse_request(raw, GetAccessHistoryRequest)
        return access_history(self.log, self.signer, self.trust, request.receipt)

    def handlers(self) -> dict[str, Handler]:
        return {
            "GetCheckpoint": self.get_checkpoint,
            "GetEntries": self.get_entries,
            "GetInclusionProof": self.get_inclusion_proof,
            "GetConsistencyProof": self.get_consistency_proof,
            "GetAccessHistory": self.get_access_history,
        }


def _sign_or_warn(signer: CheckpointSigner) -> None:
    try:
        signer.sign()
    except FedscoreError as error:
        _log.warning("%s: no checkpoint signed: %s", signer.log.origin, error)


async def _sign_periodically(signer: CheckpointSigner, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        _sign_or_warn(signer)


@dataclass
class AuditEndpoint:
    """A party's audit service and its checkpoint signer, started with its server."""

    service: AuditService
    task: asyncio.Task[None]

    @property
    def signer(self) -> CheckpointSigner:
        return self.service.signer

    def services(self) -> dict[str, dict[str, Handler]]:
        """The mapping `fedscore.runtime.rpc.start_server` takes, for this one service."""
        return {SERVICE_NAME: self.service.handlers()}

    async def stop(self) -> None:
        """Stop the background signer and sign a last checkpoint of what was logged."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        _sign_or_warn(self.signer)


def start_audit(
    party: Party, log: EventLog, *, interval: float = CHECKPOINT_INTERVAL_SECONDS
) -> AuditEndpoint:
    """Open the signer over `log`, sign a first checkpoint, and sign on in the background.

    Must be called with an event loop running (from a server's `start`).
    """
    signer = CheckpointSigner(log, party.signing_key)
    _sign_or_warn(signer)
    task = asyncio.get_running_loop().create_task(_sign_periodically(signer, interval))
    return AuditEndpoint(service=AuditService(log, signer, party.trust), task=task)
