"""`fedscore.v1.NodeService.ContributeBatch`: every score question a node answers.

A question always travels in a `ContributionBatch` the coordinator signed once; a lone
question is a batch of one, and there is no other way to ask a node for a score.

Invariants:
- The batch opens as a `fedscore.protocol.questions.SignedContributionBatch` (verified
  under the coordinator's keys, within bounds) and names this agency before any item is
  read (`node.checks` step 1); a batch that does not is refused as a whole (and logged
  once, with its reason only).
- Every item then passes steps 2-10 of `node.checks` on its own (`admit`, then the
  claims); the batch signature covers the item and its log promise. An item that fails
  a check is refused with its reason and logged as "query_refused" (within the caller's
  allowance of refusals; beyond it, counted into the caller's "refusals_summarised"
  entry, `audit.store.refusals`); the others are still answered.
- An item's subject is opened and its records read only after all its checks passed,
  including its claims (query id, request nonce, token use: `node.claims`) against the
  database, where earlier items of the batch already took theirs.
- The claims of the answered items and one log entry per item ("query_answered" or
  "query_refused") commit in ONE transaction before the answers leave the node; an item
  refused after its claims (a seal that does not open) gives them back.
- Each answer's mask is bound to its item's spec hash, as a score asked in a batch
  (docs/adr/0011); the "query_answered" entry names that kind ("score-batch-item").
- The answers are signed once, bound to the batch by the SHA-256 of its signed payload;
  an answer carries only the masked value, a refusal only its code, reason and message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc.aio
from google.protobuf.message import Message

from audit.core import kinds
from audit.core.fields import (
    COORDINATOR,
    PROMISE_INDEX,
    PROMISE_LEAF_HASH,
    PURPOSE,
    QUERY_HASH,
    QUERY_ID,
    REASON,
    RELYING_PARTY,
    REQUEST_NONCE_HASH,
    TOKEN_ID,
    YEAR,
)
from fedscore.errors import FedscoreError, InvalidArgument
from fedscore.runtime import metrics
from fedscore.runtime.prepared import Cursor
from fedscore.runtime.rpc import Handler, parse_request, peer_common_name
from fedscore.runtime.statuses import item_refusal
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    BatchedContributionQuery,
    ContributeBatchRequest,
    ContributeBatchResponse,
    ContributionAnswer,
    ContributionAnswerBatch,
    ContributionOutcome,
)
from keys.envelope import sign_message
from keys.masks import QuestionKind
from node.answer import contribution_for, masked_contribution, subject_pseudonym
from node.checks import AdmittedQuery, admit, authenticate_batch
from node.claims import Claim
from node.question_checks import RefusalNotes
from node.service import AgencyNode, log_refusal
from node.store import as_pseudonym_bytes

# Larger than one query's limit (fedscore.runtime.rpc.MAX_MESSAGE_BYTES), below the transport's.
BATCH_MESSAGE_BYTES = 3 * 1024 * 1024


@dataclass
class BatchItem:
    """One query of a batch on its way through the checks; exactly one outcome at the end."""

    notes: RefusalNotes = field(default_factory=RefusalNotes)
    admitted: AdmittedQuery | None = None
    answer: ContributionAnswer | None = None
    refusal: FedscoreError | None = None
    # What this item claimed in the batch's transaction (node.claims), None if nothing.
    claimed: Claim | None = None

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
            return kinds.QUERY_ANSWERED, answered_fields(self.admitted)
        assert self.refusal is not None
        return kinds.QUERY_REFUSED, {REASON: self.refusal.reason, **self.notes.fields()}


def answered_fields(admitted: AdmittedQuery) -> dict[str, object]:
    """The "query_answered" log body: the question, who asked, and where it was logged."""
    return {
        QUERY_ID: admitted.query_id,
        QUERY_HASH: admitted.signed.query_hash.hex(),
        # The kind of masked answer (keys.masks), which the coordinator's entry does not name.
        "kind": QuestionKind.SCORE_BATCH_ITEM.value,
        PURPOSE: admitted.purpose.id,
        TOKEN_ID: admitted.token_id,
        RELYING_PARTY: admitted.request.relying_party,
        # One signed request is served by one query only: the regulator checks across logs.
        REQUEST_NONCE_HASH: admitted.request.nonce_hash.hex(),
        YEAR: admitted.year,
        # Where the coordinator promised it logged the query: the regulator checks.
        COORDINATOR: admitted.promise.origin,
        PROMISE_INDEX: admitted.promise.index,
        PROMISE_LEAF_HASH: admitted.promise.leaf_hash.hex(),
    }


def _admit_item(
    node: AgencyNode, coordinator: str, item: BatchedContributionQuery, now: int
) -> BatchItem:
    """Steps 2-9 for one item (its claims, step 10, come in `_claim_items`)."""
    result = BatchItem()
    try:
        result.admitted = admit(item, coordinator, node.trust, now, result.notes)
    except FedscoreError as error:
        result.refuse(error)
    return result


def _claim_items(node: AgencyNode, cursor: Cursor, items: Sequence[BatchItem], now: int) -> None:
    """Step 10 for every admitted item, in batch order, in the batch's transaction.

    Each item takes its query id, its request nonce and one use of its token
    (`node.claims`); an id or nonce repeated inside the batch, or answered before, or a
    token with no use left, refuses that item only and leaves nothing claimed for it.
    """
    for item in items:
        if item.admitted is None:
            continue
        claim = item.admitted.claim()
        try:
            node.claims.take(cursor, claim, now)
        except FedscoreError as error:
            item.refuse(error)
        else:
            item.claimed = claim


def _release_unanswered(node: AgencyNode, cursor: Cursor, items: Sequence[BatchItem]) -> None:
    """Give back the claims of an item refused after its claim: it was not answered."""
    for item in items:
        if item.claimed is not None and item.answer is None:
            node.claims.give_back(cursor, item.claimed)
            item.claimed = None


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


def _log_items(
    node: AgencyNode, cursor: Cursor, items: Sequence[BatchItem], now: int, caller: str
) -> list[str]:
    """One entry per item, in batch order; an item whose entry cannot be written is refused.

    A refused item is logged one by one only within `caller`'s allowance of refusals
    (`audit.store.refusals`); the reasons of the others are returned, to be counted into the
    caller's summary once the transaction has committed.

    Nothing is written if any body is refused (bodies are checked before the first write),
    so the slow path re-checks item by item: an answer that cannot be logged becomes a
    refusal, and a refusal keeps only its reason (the event itself is always recorded).
    """
    counted: list[str] = []
    logged: list[BatchItem] = []
    for item in items:
        if item.refusal is not None and not node.refusals.allow(caller):
            counted.append(item.refusal.reason)
        else:
            logged.append(item)
    try:
        node.log.append_many(cursor, [item.log_event() for item in logged], now=now)
        return counted
    except InvalidArgument:
        pass
    for item in logged:
        kind, fields = item.log_event()
        try:
            node.log.check(kind, fields)
        except InvalidArgument as error:
            if item.answer is not None:
                item.refuse(error)
            item.notes = RefusalNotes()
    node.log.append_many(cursor, [item.log_event() for item in logged], now=now)
    return counted


def contribute_batch(
    node: AgencyNode, envelope: Envelope, caller: str = ""
) -> ContributeBatchResponse:
    """Check every item of a signed batch, answer or refuse each, and sign the answers once.

    `caller` is the certificate name of who sent it (its refusals are bounded per caller).
    Raises (refusing the whole batch) only if the batch itself does not verify, or if its
    transaction fails.
    """
    now = node.now()
    signed = authenticate_batch(envelope, node.trust)
    batch = signed.batch
    items = [_admit_item(node, signed.signer, query, now) for query in batch.queries]
    metrics.observe_batch(len(items))
    with node.hot.transaction() as cursor:
        _claim_items(node, cursor, items, now)
        _answer_items(node, cursor, items)
        counted = _log_items(node, cursor, items, now, caller)
        _release_unanswered(node, cursor, items)
    for reason in counted:  # committed: only now do they join the caller's summary
        node.refusals.count(caller, kinds.QUERY_REFUSED, reason)
    answers = ContributionAnswerBatch(
        batch_id=batch.batch_id,
        agency_id=node.agency_id,
        batch_hash=signed.batch_hash,
        outcomes=[item.outcome() for item in items],
    )
    return ContributeBatchResponse(answers=sign_message(answers, node.signing_key))


def batch_handlers(node: AgencyNode) -> dict[str, Handler]:
    """NodeService.ContributeBatch, ready for `fedscore.runtime.rpc.start_server`."""

    async def contribute_batch_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        notes = RefusalNotes()
        try:
            request = parse_request(raw, ContributeBatchRequest, BATCH_MESSAGE_BYTES)
            return contribute_batch(node, request.batch, peer_common_name(context))
        except FedscoreError as error:
            # The batch as a whole was refused: one entry, with nothing unauthenticated in it.
            log_refusal(node, error, notes, peer_common_name(context))
            raise

    return {"ContributeBatch": contribute_batch_handler}
