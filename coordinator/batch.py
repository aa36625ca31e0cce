"""ScoreBatch: many signed score queries on one stream, for a relying party holding many consents.

Invariants:
- Every request of the stream is the same signed ScoreQuery a single Score call carries
  (its own nonce, its own token) and passes every check a single query passes: the
  relying party's signature, the token's, revocation, purpose, relying party, freshness,
  replay and the use limit. A refused query never fails another.
- Log before act, per query: the queries of a chunk are logged ("query_issued", or
  "score_refused" with only authenticated facts, within the stream's caller's allowance
  of refusals, beyond which a refusal is counted into its "refusals_summarised" entry:
  `audit.store.refusals`) in ONE transaction that commits before any node is asked about
  them; each outcome ("result_released" or "query_failed")
  commits before its response is written to the stream.
- Queries reach the nodes through the coordinator's one `BatchDispatcher`: one batch
  signed once per round trip for every query waiting, each item checked by every node.
- Each answered query gets its own ScoreResult signed by the coordinator and bound to its
  request nonce, as a single Score call does; a refused one gets its status code and
  reason. Each outcome carries its query's position in the stream (`sequence`);
  outcomes are written as chunks complete, not in request order.
- A stream message that cannot be parsed (its queries cannot even be counted) is logged
  as "score_refused" and ends the stream with its status; queries answered before stand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from audit.core import kinds
from audit.core.fields import QUERY_ID, REASON
from coordinator.checks import RefusalNotes
from coordinator.fanout import NodeAnswers, score_total
from coordinator.scoring import Coordinator, PreparedQuery, admit, prepare_query, score_result
from coordinator.store import OUTCOME_FAILED, OUTCOME_RELEASED, Finish, QueryIssue, Refused
from fedscore.errors import FedscoreError
from fedscore.runtime.rpc import parse_request
from fedscore.runtime.statuses import item_refusal
from fedscore.v1 import query_pb2
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_message

# Requests admitted and logged together in one transaction.
CHUNK_QUERIES = 64
# Chunks whose queries are with the nodes at once; the stream's reading waits beyond that.
CHUNKS_IN_FLIGHT = 8
# One stream message may carry this much (many queries, each about 1.5 KB).
BATCH_MESSAGE_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class _Request:
    """One request of the stream on its way: admitted (with its spec) or refused."""

    sequence: int
    prepared: PreparedQuery | None = None
    refused: Refused | None = None

    def entry(self) -> QueryIssue | Refused:
        if self.prepared is not None:
            return self.prepared.issue()
        assert self.refused is not None
        return self.refused


Asked = tuple[int, PreparedQuery, "asyncio.Future[NodeAnswers[int]]", int]


def _refusal(sequence: int, error: FedscoreError) -> query_pb2.ScoreBatchOutcome:
    return query_pb2.ScoreBatchOutcome(sequence=sequence, refusal=item_refusal(error))


class ScoreBatchRun:
    """One ScoreBatch stream: reads its queries, admits and logs them by chunk, answers each."""

    def __init__(self, coordinator: Coordinator, caller: str = "") -> None:
        self.coordinator = coordinator
        # Who opened the stream (its certificate name): its refusals are bounded per caller.
        self.caller = caller
        # Bounded: a client that stops reading stops the chunks, and so the stream's reading.
        self.responses: asyncio.Queue[query_pb2.ScoreBatchResponse] = asyncio.Queue(
            CHUNKS_IN_FLIGHT + 2
        )
        self._slots = asyncio.Semaphore(CHUNKS_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    def _prepare(self, sequence: int, query: Envelope, now: int) -> _Request:
        """Every stateless check of one query; a refusal keeps only authenticated facts."""
        notes = RefusalNotes()
        try:
            admitted = admit(self.coordinator, query, notes, now)
        except FedscoreError as error:
            return _Request(sequence, refused=Refused(error, notes.fields()))
        return _Request(sequence, prepared=prepare_query(self.coordinator, admitted, now))

    def admit_chunk(
        self, chunk: Sequence[tuple[int, Envelope]]
    ) -> tuple[list[Asked], query_pb2.ScoreBatchResponse | None]:
        """Check and log a chunk in one transaction, then ask the nodes about what was issued.

        Returns what was asked, as (sequence, query, the nodes' answers to come, log index
        of its "query_issued"), and the response refusing the rest (its entries committed).
        """
        coordinator = self.coordinator
        now = coordinator.clock()
        requests = [self._prepare(sequence, query, now) for sequence, query in chunk]
        refusals = coordinator.refusals
        allowed: list[bool] = []

        def may_log() -> bool:
            allowed.append(refusals.allow(self.caller))
            return allowed[-1]

        with coordinator.store.hot.transaction() as cursor:
            outcomes = coordinator.store.issue_batch(
                cursor, [request.entry() for request in requests], may_log
            )
        # Committed: the refusals beyond the caller's allowance join its summary now, in order.
        unlogged = iter(allowed)
        asked: list[Asked] = []
        refused = []
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, FedscoreError):
                if not next(unlogged):
                    refusals.count(self.caller, kinds.SCORE_REFUSED, outcome.reason)
                refused.append(_refusal(request.sequence, outcome))
                continue
            assert request.prepared is not None  # issue_batch refuses every Refused entry
            future = coordinator.dispatcher.ask(request.prepared.logged(outcome))
            asked.append((request.sequence, request.prepared, future, outcome.index))
        return asked, query_pb2.ScoreBatchResponse(outcomes=refused) if refused else None

    async def finish_chunk(self, asked: list[Asked]) -> None:
        """Sum, release, log every outcome in one transaction, then answer each query."""
        coordinator = self.coordinator
        try:
            answers = await asyncio.gather(*(future for _, _, future, _ in asked))
        except asyncio.CancelledError:
            # The stream went away mid-chunk; the log still shows how each query ended.
            cancelled = [
                Finish(prepared.query_id, OUTCOME_FAILED, kinds.QUERY_FAILED, _cancelled(prepared))
                for _, prepared, _, _ in asked
            ]
            with coordinator.store.hot.transaction() as cursor:
                coordinator.store.finish_batch(cursor, cancelled)
            raise
        finishes: list[Finish] = []
        responses: list[query_pb2.ScoreBatchOutcome] = []
        for (sequence, prepared, _, log_index), answered in zip(asked, answers, strict=True):
            query_id = prepared.query_id
            try:
                total = score_total(answered)
            except FedscoreError as error:
                fields = answered.failure_fields(query_id, error.reason)
                finishes.append(Finish(query_id, OUTCOME_FAILED, kinds.QUERY_FAILED, fields))
                responses.append(_refusal(sequence, error))
                continue
            result, released = score_result(
                coordinator, prepared.admitted, query_id, log_index, total
            )
            fields = {QUERY_ID: query_id, **released.log_fields()}
            finishes.append(Finish(query_id, OUTCOME_RELEASED, kinds.RESULT_RELEASED, fields))
            envelope = sign_message(result, coordinator.signing_key)
            responses.append(query_pb2.ScoreBatchOutcome(sequence=sequence, result=envelope))
        with coordinator.store.hot.transaction() as cursor:
            coordinator.store.finish_batch(cursor, finishes)
        await self.responses.put(query_pb2.ScoreBatchResponse(outcomes=responses))

    async def _finish_and_free(self, asked: list[Asked]) -> None:
        try:
            await self.finish_chunk(asked)
        finally:
            self._slots.release()

    def _queries_in(self, raw: bytes) -> Sequence[Envelope]:
        """The queries of one stream message; one that does not parse ends the stream."""
        try:
            request = parse_request(raw, query_pb2.ScoreBatchRequest, BATCH_MESSAGE_BYTES)
        except FedscoreError as error:
            # Its queries cannot even be counted: logged once, and the stream ends with it.
            self.coordinator.refusals.record(
                self.caller, kinds.SCORE_REFUSED, {REASON: error.reason}
            )
            raise
        return list(request.queries)

    async def run(self, requests: AsyncIterator[bytes]) -> None:
        """Read the whole stream chunk by chunk; return once every query was answered."""
        incoming: asyncio.Queue[tuple[int, Envelope] | None] = asyncio.Queue(CHUNK_QUERIES * 4)

        failure: list[Exception] = []

        async def read() -> None:
            sequence = 0
            try:
                async for raw in requests:
                    for query in self._queries_in(raw):
                        await incoming.put((sequence, query))
                        sequence += 1
            except Exception as error:  # a bad message, or the client broke the stream off
                failure.append(error)
            await incoming.put(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            ended = False
            while not ended:
                first = await incoming.get()
                if first is None:
                    break
                await self._slots.acquire()
                chunk = [first]
                while len(chunk) < CHUNK_QUERIES and not incoming.empty():
                    item = incoming.get_nowait()
                    if item is None:
                        ended = True
                        break
                    chunk.append(item)
                try:
                    asked, refusals = self.admit_chunk(chunk)
                    if refusals is not None:
                        await self.responses.put(refusals)
                except BaseException:
                    self._slots.release()
                    raise
                task = asyncio.get_running_loop().create_task(self._finish_and_free(asked))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await reader
            # Queries read before a failure are still answered; then the stream ends with it.
            await asyncio.gather(*self._tasks)
            if failure:
                raise failure[0]
        finally:
            reader.cancel()
            for task in self._tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, *self._tasks, return_exceptions=True)


def _cancelled(prepared: PreparedQuery) -> dict[str, object]:
    return {QUERY_ID: prepared.query_id, REASON: "CANCELLED"}


async def score_batch(
    coordinator: Coordinator, requests: AsyncIterator[bytes], caller: str = ""
) -> AsyncIterator[query_pb2.ScoreBatchResponse]:
    """Answer every query of a ScoreBatch stream; responses as their chunks complete."""
    loop = asyncio.get_running_loop()
    run = ScoreBatchRun(coordinator, caller)
    task = loop.create_task(run.run(requests))
    getter: asyncio.Task[query_pb2.ScoreBatchResponse] | None = None
    try:
        while True:
            getter = loop.create_task(run.responses.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                break  # the run ended: what it queued last is drained below
            yield getter.result()
        getter.cancel()
        while not run.responses.empty():
            yield run.responses.get_nowait()
        await task  # re-raises what ended the run, if anything did
    finally:
        if getter is not None:
            getter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
