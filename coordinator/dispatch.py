"""Batching: the queries waiting for one participant set leave as one signed batch.

Invariants:
- Queries travel in a `ContributionBatch` signed once by the coordinator and sent to every
  participant alike (one query alone is a batch of one); it carries each query's exact
  logged spec bytes and its log promise, so the coordinator's one signature covers both.
  Each node takes its own sealed subject from the token inside the spec.
- While a batch is out to a set (`MAX_BATCHES_IN_FLIGHT`), new queries wait and leave
  together in the next one, which therefore grows with the load; a batch holds at most
  `MAX_BATCH_QUERIES` queries and `MAX_BATCH_BYTES` bytes.
- Each node's answer batch opens as a `SignedContributionAnswerBatch`
  (`fedscore.protocol.questions`, under the agencies' keys), is checked as
  `coordinator.fanout` says for every answer (signed by the agency asked, item for item,
  each item answering its query's id and hash), and must answer this very batch (its id
  and the SHA-256 of its payload) before any of its items counts; a refused item fails
  only its own query.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import deque

from coordinator.fanout import (
    INVALID,
    NODE_DEADLINE_SECONDS,
    REFUSAL_CODES,
    UNAVAILABLE,
    LoggedQuery,
    NodeAnswers,
    NodeChannels,
    NodeReply,
    call_node,
    check_answer,
    check_items,
    check_signer,
)
from fedscore.errors import FedscoreError, Unauthenticated
from fedscore.protocol.questions import SignedContributionAnswerBatch
from fedscore.runtime import logs, metrics
from fedscore.runtime.statuses import error_from_refusal
from fedscore.v1 import query_pb2
from keys.envelope import sign_message
from keys.keyring import AgencyKeys
from keys.signing import SigningKey

_log = logging.getLogger(__name__)

CONTRIBUTE_BATCH_METHOD = "/fedscore.v1.NodeService/ContributeBatch"
# Batches out to a participant set at once; more queries wait and go in the next batch,
# which therefore grows with the load. A full batch may leave while another is out.
MAX_BATCHES_IN_FLIGHT = 1
MAX_FULL_BATCHES_IN_FLIGHT = 2
# Per batch: within the node's limits (node.batch), with room for the envelope.
MAX_BATCH_QUERIES = 128
MAX_BATCH_BYTES = 2 * 1024 * 1024


def _batched(logged: LoggedQuery) -> query_pb2.BatchedContributionQuery:
    return query_pb2.BatchedContributionQuery(spec=logged.spec_bytes, log_promise=logged.promise)


def _weight(logged: LoggedQuery) -> int:
    """Roughly the bytes one query adds to a batch."""
    return len(logged.spec_bytes) + 256


Waiting = tuple[LoggedQuery, "asyncio.Future[NodeAnswers[int]]"]


class BatchDispatcher:
    """Sends the queries waiting for one participant set as one signed batch per round trip.

    Every node of the set receives the same batch, signed once; each answers it with its
    own signed answer batch. While a batch is out (MAX_BATCHES_IN_FLIGHT per set), new
    queries wait and leave together with every query that gathered meanwhile, so the
    batch grows with the load; a query asked while none is out leaves at the end of the
    current event-loop step (with whatever was asked in the same step), so one query alone
    is a batch of one, sent at once.
    """

    def __init__(
        self,
        channels: NodeChannels,
        signing_key: SigningKey,
        agency_keyring: AgencyKeys,
        deadline: float = NODE_DEADLINE_SECONDS,
        max_in_flight: int = MAX_BATCHES_IN_FLIGHT,
    ) -> None:
        self.channels = channels
        self.signing_key = signing_key
        self.agency_keyring = agency_keyring
        self.deadline = deadline
        self.max_in_flight = max_in_flight
        self._pending: dict[tuple[str, ...], deque[Waiting]] = {}
        self._in_flight: dict[tuple[str, ...], int] = {}
        self._scheduled: set[tuple[str, ...]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Counters for operators and benchmarks: batches sent, and queries in them.
        self.batches_sent = 0
        self.queries_sent = 0
        # The request id (fedscore.runtime.logs) each waiting question came with.
        self._request_ids: dict[asyncio.Future[NodeAnswers[int]], str] = {}

    def ask(self, logged: LoggedQuery) -> asyncio.Future[NodeAnswers[int]]:
        """How every participant answered `logged`, once its batch came back."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[NodeAnswers[int]] = loop.create_future()
        group = tuple(logged.spec.participants)
        self._pending.setdefault(group, deque()).append((logged, future))
        self._request_ids[future] = logs.REQUEST_ID.get()
        future.add_done_callback(self._request_ids.pop)
        self._schedule(loop, group)
        return future

    def _may_send(self, group: tuple[str, ...]) -> bool:
        """Another batch may leave: a slot is free, or a full batch waits (keep nodes busy)."""
        limit = self.max_in_flight
        if len(self._pending.get(group, ())) >= MAX_BATCH_QUERIES:
            limit = max(limit, MAX_FULL_BATCHES_IN_FLIGHT)
        return self._in_flight.get(group, 0) < limit

    def _schedule(self, loop: asyncio.AbstractEventLoop, group: tuple[str, ...]) -> None:
        if group in self._scheduled or not self._may_send(group):
            return
        self._scheduled.add(group)
        loop.call_soon(self._flush, loop, group)

    def _flush(self, loop: asyncio.AbstractEventLoop, group: tuple[str, ...]) -> None:
        self._scheduled.discard(group)
        pending = self._pending.get(group, deque())
        while pending and self._may_send(group):
            take: list[Waiting] = []
            size = 0
            while pending and len(take) < MAX_BATCH_QUERIES:
                logged, future = pending[0]
                if take and size + _weight(logged) > MAX_BATCH_BYTES:
                    break
                pending.popleft()
                if not future.done():  # a caller that went away is not asked for
                    take.append((logged, future))
                    size += _weight(logged)
            if not take:
                continue
            self._in_flight[group] = self._in_flight.get(group, 0) + 1
            task = loop.create_task(self._send(loop, group, take))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(
        self, loop: asyncio.AbstractEventLoop, group: tuple[str, ...], take: list[Waiting]
    ) -> None:
        answers: list[NodeAnswers[int]] = [NodeAnswers() for _ in take]
        batch_id = secrets.token_hex(16)
        # The batch travels under its own request id; which requests it carries is logged.
        logs.REQUEST_ID.set(f"batch-{batch_id}")
        carried = [self._request_ids.get(future, "") for _, future in take]
        _log.debug("batch %s carries requests %s", batch_id, ",".join(carried))
        try:
            await self._round_trip(group, [logged for logged, _ in take], answers, batch_id)
        except Exception:
            _log.exception("contribution batch failed")
            answers = [NodeAnswers(unavailable=list(group)) for _ in take]
        except BaseException:
            for _, future in take:
                future.cancel()
            raise
        finally:
            self._in_flight[group] -= 1
            if self._pending.get(group):
                self._schedule(loop, group)
        for (_, future), answered in zip(take, answers, strict=True):
            if not future.done():
                future.set_result(answered)

    async def _round_trip(
        self,
        group: tuple[str, ...],
        queries: list[LoggedQuery],
        answers: list[NodeAnswers[int]],
        batch_id: str,
    ) -> None:
        batch = query_pb2.ContributionBatch(
            batch_id=batch_id,
            agency_ids=list(group),
            issued_at=int(time.time()),
            queries=[_batched(logged) for logged in queries],
        )
        envelope = sign_message(batch, self.signing_key)
        # Serialized once, sent to every node of the set.
        request = query_pb2.ContributeBatchRequest(batch=envelope).SerializeToString()
        self.batches_sent += 1
        self.queries_sent += len(queries)
        metrics.observe_batch(len(queries))
        batch_hash = hashlib.sha256(envelope.payload).digest()
        replies = await asyncio.gather(
            *(self._ask_node(agency, request, batch, batch_hash, queries) for agency in group)
        )
        # Recorded in the participant order, whatever order the nodes answered in.
        for agency, node_replies in zip(group, replies, strict=True):
            for reply, answered in zip(node_replies, answers, strict=True):
                reply.record(agency, answered)

    async def _ask_node(
        self,
        agency_id: str,
        request: bytes,
        batch: query_pb2.ContributionBatch,
        batch_hash: bytes,
        queries: list[LoggedQuery],
    ) -> list[NodeReply[int]]:
        response = await call_node(
            self.channels,
            agency_id,
            CONTRIBUTE_BATCH_METHOD,
            request,
            query_pb2.ContributeBatchResponse,
            self.deadline,
        )
        if isinstance(response, NodeReply):  # the whole batch refused, or no answer
            return [response] * len(queries)
        try:
            signed = SignedContributionAnswerBatch.verify(response.answers, self.agency_keyring)
            return batch_replies(signed, agency_id, batch, batch_hash, queries)
        except FedscoreError:
            return [INVALID] * len(queries)


def batch_replies(
    signed: SignedContributionAnswerBatch,
    agency_id: str,
    batch: query_pb2.ContributionBatch,
    batch_hash: bytes,
    queries: list[LoggedQuery],
) -> list[NodeReply[int]]:
    """Each query's reply from `agency_id`'s opened answer batch, if it answers this very
    batch (signed by the agency asked, its id and payload hash, one outcome per query);
    raises if the answer batch as a whole does not. An item that is no answer to its own
    query is INVALID, for that query only."""
    answers = signed.answers
    check_signer(signed.signer, agency_id, answers.agency_id)
    if answers.batch_id != batch.batch_id or answers.batch_hash != batch_hash:
        raise Unauthenticated(f"{agency_id} answered another batch", "BATCH_MISMATCH")
    check_items(len(answers.outcomes), len(queries), agency_id)
    replies: list[NodeReply[int]] = []
    for logged, outcome in zip(queries, answers.outcomes, strict=True):
        kind = outcome.WhichOneof("outcome")
        if kind == "answer":
            try:
                check_answer(outcome.answer, signed.signer, agency_id, logged)
            except FedscoreError:
                replies.append(INVALID)
            else:
                replies.append(NodeReply(masked=int(outcome.answer.masked_value)))
        elif kind == "refusal":
            refusal = error_from_refusal(outcome.refusal)
            refused = refusal.code in REFUSAL_CODES
            replies.append(NodeReply(refusal=refusal) if refused else UNAVAILABLE)
        else:
            replies.append(INVALID)
    return replies


async def fan_out(logged: LoggedQuery, dispatcher: BatchDispatcher) -> NodeAnswers[int]:
    """Ask every participant at once and collect what each one answered.

    Queries asked in the same moment share one signed batch (`BatchDispatcher`).
    """
    return await dispatcher.ask(logged)
