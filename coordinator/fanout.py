"""What asking the agency nodes means, for both kinds of question: channels, one node's
call, what an answer must be, the failure rule and the secure sum.

A score question travels in a signed batch (`coordinator.dispatch`), a histogram
question on its own to each node (`coordinator.histograms`); both are checked, counted
and summed by the functions here.

Invariants:
- Channels to the agency nodes are opened at start, with mutual TLS, and follow the
  trust registry (`NodeChannels.follow`); a query never opens a connection or reads a file.
- Every participant is asked, concurrently, under one deadline per round trip
  (`call_node`: a node that refuses on the merits is passed on with its code and
  reason; one that is down, late or fails otherwise is unavailable, and its channel is
  replaced).
- An answer counts only if it opens as its kind of `fedscore.protocol.questions` (verified
  under the agencies' keys, naming the agency that signed it), is signed by the agency
  asked and names it (`check_signer`), answers this very question, its id and the hash
  of its exact spec bytes (`check_answer`), and holds one value per item asked
  (`check_items`: per query of a batch, per bin of a histogram). A score batch must also
  answer that very batch (its id and payload hash); a refused item of a batch fails only
  its own query.
- If any node is down, late, refuses or answers something that does not verify, the
  question fails as a whole (`NodeAnswers.raise_for_failure`): no partial total is
  computed, returned or logged; the failure's log entry names the nodes and the reason
  (`NodeAnswers.failure_fields`), never a value.
- Only masked values reach this module; a score's are summed mod 2^64 (`secure_sum`),
  where the pairwise masks cancel, and no single value is ever logged or returned. A
  histogram's answers are shares of masked values, summed per aggregator
  (`coordinator.histograms`, `keys.shares.sum_shares`): no total exists here
  (docs/adr/0019).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from audit.core.entries import LogRef
from audit.core.fields import QUERY_ID, REASON
from fedscore.errors import Code, FedscoreError, Unauthenticated, Unavailable
from fedscore.runtime.rpc import TlsMaterial, call_unary, secure_channel
from fedscore.v1 import query_pb2, trust_pb2
from keys.masks import MODULUS
from keys.registry import TrustView

_log = logging.getLogger(__name__)

NODE_DEADLINE_SECONDS = 5.0

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

V = TypeVar("V")  # what one node answers: a masked value (a score), or one per bin
M = TypeVar("M", bound=Message)


class NodeChannels:
    """One mutual-TLS channel per agency endpoint in the trust registry.

    A channel whose node failed is replaced by a fresh, still idle one: gRPC would
    otherwise retry on its own backoff (up to two minutes), and a node that is back
    would stay unreachable that long. A healthy node's channel is never reopened.
    The registry changing under it (`follow`): a new agency gets a channel, one whose
    endpoint changed a new channel to the new endpoint, and a removed one none; a channel
    left behind is closed after `grace` seconds, so a call already under way finishes.
    """

    def __init__(
        self,
        endpoints: Mapping[str, str],
        open_channel: Callable[[str, str], grpc.aio.Channel],
        grace: float = NODE_DEADLINE_SECONDS,
    ) -> None:
        self._endpoints = dict(endpoints)
        self._open = open_channel
        self._grace = grace
        self._channels = {
            agency: open_channel(agency, endpoint) for agency, endpoint in self._endpoints.items()
        }
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}

    @staticmethod
    def endpoints_of(trust: TrustView) -> dict[str, str]:
        """Agency id -> the endpoint the registry lists for it now."""
        return {
            agency.id: agency.endpoint
            for agency in trust.by_role(trust_pb2.ROLE_AGENCY)
            if agency.endpoint
        }

    @classmethod
    def open(cls, trust: TrustView, tls: TlsMaterial) -> NodeChannels:
        def open_channel(agency_id: str, endpoint: str) -> grpc.aio.Channel:
            return secure_channel(endpoint, tls, server_name=agency_id)

        return cls(cls.endpoints_of(trust), open_channel)

    def get(self, agency_id: str) -> grpc.aio.Channel | None:
        return self._channels.get(agency_id)

    @property
    def endpoints(self) -> dict[str, str]:
        return dict(self._endpoints)

    def follow(self, endpoints: Mapping[str, str]) -> None:
        """Open, move and drop channels to match `endpoints` (agency id -> endpoint)."""
        for agency in [a for a in self._endpoints if endpoints.get(a) != self._endpoints[a]]:
            del self._endpoints[agency]
            channel = self._channels.pop(agency, None)
            if channel is not None:
                self._retire(channel)
            _log.info("channel to agency %s closed", agency)
        for agency, endpoint in endpoints.items():
            if agency not in self._endpoints:
                self._endpoints[agency] = endpoint
                self._channels[agency] = self._open(agency, endpoint)
                _log.info("channel to agency %s opened at %s", agency, endpoint)

    def _retire(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.get_running_loop().create_task(self._close_later(channel))
        self._retiring[task] = channel
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def _close_later(self, channel: grpc.aio.Channel) -> None:
        await asyncio.sleep(self._grace)
        await channel.close()

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
        retiring = list(self._retiring.items())
        self._retiring.clear()
        for task, _ in retiring:
            task.cancel()
        channels += [channel for _, channel in retiring]
        await asyncio.gather(*(channel.close() for channel in channels))


@dataclass(frozen=True)
class LoggedQuery:
    """A question after it was logged: exactly the bytes every node will hash.

    `spec` is a `QuerySpec` (a score) or a `StatisticsSpec` (a histogram); either way
    its exact bytes were logged first, and `promise` says where.
    """

    spec: Any
    spec_bytes: bytes
    query_hash: bytes
    # Where the query was logged; travels to every node (inside a signed batch, or signed).
    promise: query_pb2.LogPromise

    @classmethod
    def at(cls, spec: Any, spec_bytes: bytes, query_hash: bytes, ref: LogRef) -> LoggedQuery:
        """The question `spec` (serialized as `spec_bytes`), logged at `ref` by the
        coordinator the spec names."""
        promise = query_pb2.LogPromise(
            origin=spec.coordinator,
            index=ref.index,
            leaf_hash=ref.leaf_hash,
            query_hash=query_hash,
            logged_at=ref.logged_at,
        )
        return cls(spec=spec, spec_bytes=spec_bytes, query_hash=query_hash, promise=promise)


@dataclass
class NodeAnswers(Generic[V]):
    """How each participant answered one question; masked values only."""

    masked: dict[str, V] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    refused: dict[str, FedscoreError] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not (self.unavailable or self.invalid or self.refused)

    def failure_fields(self, query_id: str, reason: str = "") -> dict[str, object]:
        """The failure's log body ("query_failed", "statistics_failed"): who failed and
        why, never a value."""
        fields: dict[str, object] = {QUERY_ID: query_id, "unavailable": self.unavailable}
        if self.invalid:
            fields["invalid"] = self.invalid
        if self.refused:
            fields["refused"] = {agency: error.reason for agency, error in self.refused.items()}
        if reason:
            fields[REASON] = reason
        return fields

    def raise_for_failure(self) -> None:
        """Raise the one error the asker sees when the question cannot complete."""
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


def score_total(answers: NodeAnswers[int]) -> int:
    """The total of a score question every participant answered, or the one error."""
    answers.raise_for_failure()
    return secure_sum(answers.masked.values())


def check_signer(signer: str, agency_id: str, named: str) -> None:
    """An answer asked of `agency_id` is signed by it and names it."""
    if signer != agency_id or named != agency_id:
        raise Unauthenticated(
            f"answer asked of {agency_id} is signed by {signer}", "SIGNER_MISMATCH"
        )


def check_answer(answer: Any, signer: str, agency_id: str, logged: LoggedQuery) -> None:
    """An answer (`ContributionAnswer` or `StatisticsAnswer`), signed alone or in its
    batch by `signer`, is `agency_id`'s answer to this very question, id and hash."""
    check_signer(signer, agency_id, answer.agency_id)
    if answer.query_id != logged.spec.query_id or answer.query_hash != logged.query_hash:
        raise Unauthenticated(f"answer from {agency_id} is for another query", "QUERY_MISMATCH")


def check_items(answered: int, asked: int, agency_id: str) -> None:
    """One value per item asked, item for item: per query of a batch, per bin of a histogram."""
    if answered != asked:
        raise Unauthenticated(
            f"{agency_id} answered {answered} items of {asked}", "ITEM_COUNT_MISMATCH"
        )


@dataclass(frozen=True)
class NodeReply(Generic[V]):
    """How one node answered one question: masked values, a refusal, or nothing usable."""

    masked: V | None = None
    refusal: FedscoreError | None = None
    invalid: bool = False

    def record(self, agency_id: str, answers: NodeAnswers[V]) -> None:
        if self.masked is not None:
            answers.masked[agency_id] = self.masked
        elif self.refusal is not None:
            answers.refused[agency_id] = self.refusal
        elif self.invalid:
            answers.invalid.append(agency_id)
        else:
            answers.unavailable.append(agency_id)


UNAVAILABLE: NodeReply[Any] = NodeReply()
INVALID: NodeReply[Any] = NodeReply(invalid=True)


async def call_node(
    channels: NodeChannels,
    agency_id: str,
    method: str,
    request: Message | bytes,
    response_type: type[M],
    deadline: float,
) -> M | NodeReply[Any]:
    """One node's response to `request`, or what its failure counts as.

    A refusal on the merits (`REFUSAL_CODES`) is a `NodeReply` carrying it; a node that is
    down, late or fails otherwise is `UNAVAILABLE`, and its channel is replaced.
    """
    channel = channels.get(agency_id)
    if channel is None:
        return UNAVAILABLE
    try:
        return await call_unary(channel, method, request, response_type, deadline)
    except FedscoreError as error:
        if error.code in REFUSAL_CODES:
            return NodeReply(refusal=error)
    except (TimeoutError, grpc.RpcError):
        pass
    await channels.replace(agency_id, channel)
    return UNAVAILABLE
