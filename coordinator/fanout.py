"""Fan-out of logged queries to every participant, and the secure sum of the answers.

Invariants:
- Channels to the agency nodes are opened once, at start, with mutual TLS; a query
  never opens a connection or reads a file.
- Every participant of the purpose is asked, concurrently, under one deadline per round
  trip. If any node is down, late or answers something that does not verify, the query
  fails as a whole: no partial total is computed, returned or logged.
- Queries travel in a `ContributionBatch` signed once by the coordinator and sent to every
  participant alike (one query alone is a batch of one); it carries each query's exact
  logged spec bytes and its log promise, so the coordinator's one signature covers both.
  Each node takes its own sealed subject from the token inside the spec.
- An answer counts only if the node's answer batch verifies under the agency keyring,
  is signed by the agency asked, answers this very batch (id and SHA-256 of its
  payload) item for item, and the item names this query's id and hash. A refused item
  fails only its own query.
- Only masked values reach this module; they are summed mod 2^64, where the pairwise
  masks cancel, and no single value is ever logged or returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import grpc
import grpc.aio

from fedscore.errors import Code, FedscoreError, Unauthenticated, Unavailable
from fedscore.runtime.rpc import TlsMaterial, call_unary, error_from_refusal, secure_channel
from fedscore.v1 import envelope_pb2, query_pb2, trust_pb2
from keys.envelope import sign_message, verify_message
from keys.keyring import Keyring
from keys.masks import MODULUS
from keys.registry import TrustView
from keys.signing import SigningKey

_log = logging.getLogger(__name__)

NODE_DEADLINE_SECONDS = 5.0
CONTRIBUTE_BATCH_METHOD = "/fedscore.v1.NodeService/ContributeBatch"
# Batches out to a participant set at once; more queries wait and go in the next batch,
# which therefore grows with the load. A full batch may leave while another is out.
MAX_BATCHES_IN_FLIGHT = 1
MAX_FULL_BATCHES_IN_FLIGHT = 2
# Per batch: within the node's limits (node.batch), with room for the envelope.
MAX_BATCH_QUERIES = 128
MAX_BATCH_BYTES = 2 * 1024 * 1024

# A node reporting one of these has refused the query on its merits; its reason is
# passed on. Any other failure (down, late, internal) makes the node unavailable.
REFUSAL_CODES = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.UNAUTHENTICATED,
        Code.PERMISSION_DENIED,
        Code.FAILED_PRECONDITION,
        Code.ALREADY_EXISTS,
        Code.NOT_FOUND,
        Code.RESOURCE_EXHAUSTED,
    }
)


class NodeChannels:
    """One mutual-TLS channel per agency endpoint in the trust registry.

    A channel whose node failed is replaced by a fresh, still idle one: gRPC would
    otherwise retry on its own backoff (up to two minutes), and a node that is back
    would stay unreachable that long. A healthy node's channel is never reopened.
    """

    def __init__(
        self, endpoints: Mapping[str, str], open_channel: Callable[[str, str], grpc.aio.Channel]
    ) -> None:
        self._endpoints = dict(endpoints)
        self._open = open_channel
        self._channels = {
            agency: open_channel(agency, endpoint) for agency, endpoint in self._endpoints.items()
        }

    @classmethod
    def open(cls, trust: TrustView, tls: TlsMaterial) -> NodeChannels:
        def open_channel(agency_id: str, endpoint: str) -> grpc.aio.Channel:
            return secure_channel(endpoint, tls, server_name=agency_id)

        endpoints = {
            agency.id: agency.endpoint
            for agency in trust.by_role(trust_pb2.ROLE_AGENCY)
            if agency.endpoint
        }
        return cls(endpoints, open_channel)

    def get(self, agency_id: str) -> grpc.aio.Channel | None:
        return self._channels.get(agency_id)

    async def replace(self, agency_id: str, failed: grpc.aio.Channel) -> None:
        """Swap `failed` for a new channel, unless a concurrent query already did."""
        current = self._channels.get(agency_id)
        if current is None or current is not failed:
            return
        self._channels[agency_id] = self._open(agency_id, self._endpoints[agency_id])
        await current.close()

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        await asyncio.gather(*(channel.close() for channel in channels))


@dataclass(frozen=True)
class LoggedQuery:
    """A query after it was logged: exactly the bytes every node will hash."""

    spec: query_pb2.QuerySpec
    spec_bytes: bytes
    query_hash: bytes
    # Where the query was logged; travels inside the signed batch to every node.
    promise: query_pb2.LogPromise


@dataclass
class NodeAnswers:
    """How each participant answered one query; masked values only."""

    masked: dict[str, int] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    refused: dict[str, FedscoreError] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not (self.unavailable or self.invalid or self.refused)

    def failure_fields(self, query_id: str) -> dict[str, object]:
        """The "query_failed" log body: who failed and why, never a value."""
        fields: dict[str, object] = {"query_id": query_id, "unavailable": self.unavailable}
        if self.invalid:
            fields["invalid"] = self.invalid
        if self.refused:
            fields["refused"] = {agency: error.reason for agency, error in self.refused.items()}
        return fields

    def raise_for_failure(self) -> None:
        """Raise the one error the relying party sees when the query cannot complete."""
        if self.unavailable:
            raise Unavailable(
                f"agency nodes did not answer: {', '.join(self.unavailable)}",
                reason="NODE_UNAVAILABLE",
            )
        if self.invalid:
            raise Unavailable(
                f"agency nodes sent answers that do not verify: {', '.join(self.invalid)}",
                reason="NODE_ANSWER_INVALID",
            )
        for agency, error in self.refused.items():
            passed_on = type(error)(f"agency {agency} refused: {error.message}", error.reason)
            passed_on.code = error.code
            raise passed_on


def secure_sum(masked_values: Iterable[int]) -> int:
    """Sum masked answers mod 2^64; the pairwise masks cancel and leave the total.

    Contributions are non-negative and far below 2^63, so a sum in the upper half means
    the masks did not cancel (a node used a different participant set or seed).
    """
    total = sum(masked_values) % MODULUS
    if total >= MODULUS // 2:
        raise FedscoreError("the masked answers do not add up", reason="MASKS_DID_NOT_CANCEL")
    return total


def check_answer(
    answer: query_pb2.ContributionAnswer, signer: str, agency_id: str, logged: LoggedQuery
) -> int:
    """The masked value of an answer signed (alone or in its batch) by `signer`."""
    if signer != agency_id or answer.agency_id != agency_id:
        raise Unauthenticated(
            f"answer asked of {agency_id} is signed by {signer}", "SIGNER_MISMATCH"
        )
    if answer.query_id != logged.spec.query_id or answer.query_hash != logged.query_hash:
        raise Unauthenticated(f"answer from {agency_id} is for another query", "QUERY_MISMATCH")
    return int(answer.masked_value)


def verify_answer(
    envelope: envelope_pb2.Envelope, agency_id: str, logged: LoggedQuery, keyring: Keyring
) -> int:
    """The masked value of a verified answer from `agency_id` to this very query."""
    verified = verify_message(envelope, query_pb2.ContributionAnswer, keyring)
    return check_answer(verified.payload, verified.signer, agency_id, logged)


@dataclass(frozen=True)
class NodeReply:
    """How one node answered one query: a masked value, a refusal, or nothing usable."""

    masked: int | None = None
    refusal: FedscoreError | None = None
    invalid: bool = False

    def record(self, agency_id: str, answers: NodeAnswers) -> None:
        if self.masked is not None:
            answers.masked[agency_id] = self.masked
        elif self.refusal is not None:
            answers.refused[agency_id] = self.refusal
        elif self.invalid:
            answers.invalid.append(agency_id)
        else:
            answers.unavailable.append(agency_id)


UNAVAILABLE = NodeReply()
INVALID = NodeReply(invalid=True)


def _batched(logged: LoggedQuery) -> query_pb2.BatchedContributionQuery:
    return query_pb2.BatchedContributionQuery(spec=logged.spec_bytes, log_promise=logged.promise)


def _weight(logged: LoggedQuery) -> int:
    """Roughly the bytes one query adds to a batch."""
    return len(logged.spec_bytes) + 256


Waiting = tuple[LoggedQuery, "asyncio.Future[NodeAnswers]"]


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
        agency_keyring: Keyring,
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

    def ask(self, logged: LoggedQuery) -> asyncio.Future[NodeAnswers]:
        """How every participant answered `logged`, once its batch came back."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[NodeAnswers] = loop.create_future()
        group = tuple(logged.spec.participants)
        self._pending.setdefault(group, deque()).append((logged, future))
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
        answers = [NodeAnswers() for _ in take]
        try:
            await self._round_trip(group, [logged for logged, _ in take], answers)
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
        self, group: tuple[str, ...], queries: list[LoggedQuery], answers: list[NodeAnswers]
    ) -> None:
        batch = query_pb2.ContributionBatch(
            batch_id=secrets.token_hex(16),
            agency_ids=list(group),
            issued_at=int(time.time()),
            queries=[_batched(logged) for logged in queries],
        )
        envelope = sign_message(batch, self.signing_key)
        # Serialized once, sent to every node of the set.
        request = query_pb2.ContributeBatchRequest(batch=envelope).SerializeToString()
        self.batches_sent += 1
        self.queries_sent += len(queries)
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
    ) -> list[NodeReply]:
        everyone = len(queries)
        channel = self.channels.get(agency_id)
        if channel is None:
            return [UNAVAILABLE] * everyone
        try:
            response = await call_unary(
                channel,
                CONTRIBUTE_BATCH_METHOD,
                request,
                query_pb2.ContributeBatchResponse,
                self.deadline,
            )
        except FedscoreError as error:
            if error.code in REFUSAL_CODES:
                return [NodeReply(refusal=error)] * everyone
        except (TimeoutError, grpc.RpcError):
            pass
        else:
            return self._replies(agency_id, batch, batch_hash, queries, response.answers)
        await self.channels.replace(agency_id, channel)
        return [UNAVAILABLE] * everyone

    def _replies(
        self,
        agency_id: str,
        batch: query_pb2.ContributionBatch,
        batch_hash: bytes,
        queries: list[LoggedQuery],
        envelope: envelope_pb2.Envelope,
    ) -> list[NodeReply]:
        """Each query's reply from a batch answer that verifies and answers this very batch."""
        try:
            verified = verify_message(
                envelope, query_pb2.ContributionAnswerBatch, self.agency_keyring
            )
        except FedscoreError:
            return [INVALID] * len(queries)
        answers = verified.payload
        if (
            verified.signer != agency_id
            or answers.agency_id != agency_id
            or answers.batch_id != batch.batch_id
            or answers.batch_hash != batch_hash
            or len(answers.outcomes) != len(queries)
        ):
            return [INVALID] * len(queries)
        replies = []
        for logged, outcome in zip(queries, answers.outcomes, strict=True):
            kind = outcome.WhichOneof("outcome")
            if kind == "answer":
                try:
                    masked = check_answer(outcome.answer, verified.signer, agency_id, logged)
                except FedscoreError:
                    replies.append(INVALID)
                else:
                    replies.append(NodeReply(masked=masked))
            elif kind == "refusal":
                refusal = error_from_refusal(outcome.refusal)
                refused = refusal.code in REFUSAL_CODES
                replies.append(NodeReply(refusal=refusal) if refused else UNAVAILABLE)
            else:
                replies.append(INVALID)
        return replies


async def fan_out(logged: LoggedQuery, dispatcher: BatchDispatcher) -> NodeAnswers:
    """Ask every participant at once and collect what each one answered.

    Queries asked in the same moment share one signed batch (`BatchDispatcher`).
    """
    return await dispatcher.ask(logged)
