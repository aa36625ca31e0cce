"""Answering a ContributionBatch: many contribution queries in one round trip.

Invariants:
- The batch envelope verifies under the coordinator keyring and names this agency before
  any item is read; a batch that does not is refused as a whole (and logged once).
- Every item then passes every check a single query passes (`node.checks` steps 2-8) on
  its own; the batch signature stands in for the item's own signature and its log
  promise's. An item that fails a check is refused with its reason and logged as
  "query_refused"; the other items are still answered.
- An item's subject is opened and its records read only after all its checks passed,
  including the replay check against the database and against earlier items of the batch.
- The replay claims of the answered items and one log entry per item ("query_answered"
  or "query_refused") commit in ONE transaction before the answers leave the node; an
  item refused after its claim (a seal that does not open) gives its claim back.
- The answers are signed once, bound to the batch by the SHA-256 of its signed payload;
  an answer carries only the masked value, a refusal only its code, reason and message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc.aio
from google.protobuf.message import Message
from sqlalchemy import bindparam, delete

from fedscore.errors import (
    AlreadyExists,
    FedscoreError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from fedscore.prepared import Cursor
from fedscore.rpc import Handler, item_refusal, parse_request
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    BatchedContributionQuery,
    ContributeBatchRequest,
    ContributeBatchResponse,
    ContributionAnswer,
    ContributionAnswerBatch,
    ContributionBatch,
    ContributionOutcome,
    ContributionQuery,
    LogPromise,
)
from keys.envelope import sign_message, verify_message
from node.answer import contribution_for, masked_contribution, subject_pseudonym
from node.checks import (
    AdmittedQuery,
    RefusalNotes,
    admit_signed,
    check_promise_binding,
    signed_query,
)
from node.service import AgencyNode, answered_fields, log_refusal
from node.store import SEEN_QUERY, as_pseudonym_bytes

# A batch is one transaction and one blocking stretch of the node's event loop.
MAX_BATCH_QUERIES = 256
# Larger than one query's limit (fedscore.rpc.MAX_MESSAGE_BYTES), below the transport's.
BATCH_MESSAGE_BYTES = 3 * 1024 * 1024

_UNCLAIM = delete(SEEN_QUERY).where(SEEN_QUERY.c.query_id == bindparam("id"))


@dataclass
class BatchItem:
    """One query of a batch on its way through the checks; exactly one outcome at the end."""

    notes: RefusalNotes = field(default_factory=RefusalNotes)
    admitted: AdmittedQuery | None = None
    answer: ContributionAnswer | None = None
    refusal: FedscoreError | None = None
    # The query id this item recorded as seen in the batch's transaction ("" if none).
    claimed: str = ""

    @property
    def query_id(self) -> str:
        return self.admitted.query_id if self.admitted is not None else ""

    def refuse(self, error: FedscoreError) -> None:
        self.admitted, self.answer, self.refusal = None, None, error

    def outcome(self) -> ContributionOutcome:
        if self.answer is not None:
            return ContributionOutcome(answer=self.answer)
        assert self.refusal is not None  # every item is answered or refused
        return ContributionOutcome(refusal=item_refusal(self.refusal))

    def log_event(self) -> tuple[str, dict[str, object]]:
        if self.admitted is not None and self.answer is not None:
            return "query_answered", answered_fields(self.admitted)
        assert self.refusal is not None
        return "query_refused", {"reason": self.refusal.reason, **self.notes.fields()}


def authenticate_batch(node: AgencyNode, envelope: Envelope) -> tuple[ContributionBatch, str]:
    """The coordinator signed this batch for this agency; (batch, signer)."""
    verified = verify_message(envelope, ContributionBatch, node.trust.coordinator_keyring)
    batch = verified.payload
    if node.agency_id not in batch.agency_ids:
        raise PermissionDenied(
            f"batch is addressed to agencies {sorted(batch.agency_ids)}, not {node.agency_id!r}",
            reason="WRONG_AGENCY",
        )
    if len(batch.queries) > MAX_BATCH_QUERIES:
        raise InvalidArgument(
            f"batch holds {len(batch.queries)} queries; at most {MAX_BATCH_QUERIES} are allowed",
            reason="BATCH_TOO_LARGE",
        )
    return batch, verified.signer


def _batched_promise(item: BatchedContributionQuery) -> LogPromise:
    if not item.HasField("log_promise"):
        raise Unauthenticated("query carries no log promise", reason="BAD_LOG_PROMISE")
    return item.log_promise


def _admit_item(
    node: AgencyNode,
    agency_id: str,
    signer: str,
    item: BatchedContributionQuery,
    claimed: set[str],
    now: int,
) -> BatchItem:
    """Steps 2-8 for one item; replays against earlier items of this batch are caught here."""
    result = BatchItem()

    def seen_in_batch(query_id: str) -> bool:
        if query_id in claimed:
            return True
        claimed.add(query_id)
        return False

    try:
        query = ContributionQuery(spec=item.spec, agency_id=agency_id)
        signed = signed_query(query, signer, agency_id)
        result.admitted = admit_signed(
            signed,
            node.trust,
            seen_in_batch,
            now,
            result.notes,
            lambda: check_promise_binding(_batched_promise(item), signed, signer),
        )
        # A batch carries no sealed subject: this node's own is in the verified token.
        query.sealed_subject = own_sealed_subject(result.admitted, agency_id)
    except FedscoreError as error:
        result.refuse(error)
    return result


def own_sealed_subject(admitted: AdmittedQuery, agency_id: str) -> bytes:
    """This agency's sealed subject blob from the query's verified consent token."""
    for sealed in admitted.token.token.sealed_subjects:
        if sealed.agency_id == agency_id:
            return bytes(sealed.blob)
    raise PermissionDenied(
        f"token holds no sealed subject for agency {agency_id!r}", reason="TOKEN_OUT_OF_SCOPE"
    )


def _replayed(item: BatchItem, query_id: str) -> None:
    item.refuse(AlreadyExists(f"query {query_id!r} was already answered", "REPLAYED_QUERY"))


def _claim_items(node: AgencyNode, cursor: Cursor, items: Sequence[BatchItem], now: int) -> None:
    """Step 8 against the database for every admitted item, recording its id as it passes.

    One insert-unless-present per admitted id (unique in the batch: replays inside it were
    refused in step 8); an id it did not store was answered before, or concurrently by
    another writer.
    """
    for item in items:
        if item.admitted is None:
            continue
        query_id = item.query_id
        claim = {"query_id": query_id, "seen_at": now}
        if int(cursor.execute(node.seen_insert, claim).rowcount) == 1:
            item.claimed = query_id
        else:
            _replayed(item, query_id)


def _release_unanswered(cursor: Cursor, items: Sequence[BatchItem]) -> None:
    """Drop the claim of an item refused after its claim: it was not answered."""
    for item in items:
        if item.claimed and item.answer is None:
            cursor.execute(_UNCLAIM, {"id": item.claimed})
            item.claimed = ""


def _answer_items(node: AgencyNode, cursor: Cursor, items: Sequence[BatchItem]) -> None:
    """Open each admitted item's subject, read the records of all of them, mask each answer.

    The records of the people asked under one policy and year are read in one statement.
    """
    people: dict[int, bytes] = {}
    asked: dict[tuple[str, int], list[int]] = {}
    for position, item in enumerate(items):
        admitted = item.admitted
        if admitted is None:
            continue
        try:
            person = subject_pseudonym(
                admitted, node.agency_id, node.box, node.pseudonym_key, node.opened_subjects
            )
        except FedscoreError as error:
            item.refuse(error)
            continue
        people[position] = as_pseudonym_bytes(person)
        asked.setdefault((admitted.policy.content_hash, admitted.year), []).append(position)
    for (_, year), positions in asked.items():
        policy = items[positions[0]].admitted.policy  # type: ignore[union-attr]
        held = node.lookup.quantities_of_many(cursor, policy, [people[p] for p in positions], year)
        for position in positions:
            item = items[position]
            admitted = item.admitted
            assert admitted is not None
            try:
                points = contribution_for(admitted, node.agency_id, held.get(people[position], {}))
                item.answer = masked_contribution(admitted, node.agency_id, points, node.mask_seeds)
            except FedscoreError as error:
                item.refuse(error)


def _log_items(node: AgencyNode, cursor: Cursor, items: Sequence[BatchItem], now: int) -> None:
    """One entry per item, in batch order; an item whose entry cannot be written is refused.

    Nothing is written if any body is refused (bodies are checked before the first write),
    so the slow path re-checks item by item: an answer that cannot be logged becomes a
    refusal, and a refusal keeps only its reason (the event itself is always recorded).
    """
    try:
        node.log.append_many(cursor, [item.log_event() for item in items], now=now)
        return
    except InvalidArgument:
        pass
    for item in items:
        kind, fields = item.log_event()
        try:
            node.log.check(kind, fields)
        except InvalidArgument as error:
            if item.answer is not None:
                item.refuse(error)
            item.notes = RefusalNotes()
    node.log.append_many(cursor, [item.log_event() for item in items], now=now)


def contribute_batch(node: AgencyNode, envelope: Envelope) -> ContributeBatchResponse:
    """Check every item of a signed batch, answer or refuse each, and sign the answers once.

    Raises (refusing the whole batch) only if the batch itself does not verify, or if its
    transaction fails.
    """
    now = node.now()
    batch, signer = authenticate_batch(node, envelope)
    claimed: set[str] = set()
    items = [
        _admit_item(node, node.agency_id, signer, query, claimed, now) for query in batch.queries
    ]
    with node.hot.transaction() as cursor:
        _claim_items(node, cursor, items, now)
        _answer_items(node, cursor, items)
        _log_items(node, cursor, items, now)
        _release_unanswered(cursor, items)
    answers = ContributionAnswerBatch(
        batch_id=batch.batch_id,
        agency_id=node.agency_id,
        batch_hash=hashlib.sha256(envelope.payload).digest(),
        outcomes=[item.outcome() for item in items],
    )
    return ContributeBatchResponse(answers=sign_message(answers, node.signing_key))


def batch_handlers(node: AgencyNode) -> dict[str, Handler]:
    """NodeService.ContributeBatch, ready for `fedscore.rpc.start_server`."""

    async def contribute_batch_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        notes = RefusalNotes()
        try:
            request = parse_request(raw, ContributeBatchRequest, BATCH_MESSAGE_BYTES)
            return contribute_batch(node, request.batch)
        except FedscoreError as error:
            # The batch as a whole was refused: one entry, with nothing unauthenticated in it.
            log_refusal(node, error, notes)
            raise

    return {"ContributeBatch": contribute_batch_handler}
