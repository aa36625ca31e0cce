"""Fan-out of logged queries to every participant, and the secure sum of the answers.

Invariants:
- Channels to the agency nodes are opened once, at start, with mutual TLS; a query
  never opens a connection or reads a file.
- Every participant of the purpose is asked, concurrently, under one deadline per round
  trip. If any node is down, late or answers something that does not verify, the query
  fails as a whole: no partial total is computed, returned or logged.
- Queries travel in signed batches (`coordinator.dispatch`).
- An answer counts only if the node's answer batch verifies under the agency keyring,
  is signed by the agency asked, answers this very batch (id and SHA-256 of its
  payload) item for item, and the item names this query's id and hash. A refused item
  fails only its own query.
- Only masked values reach this module; they are summed mod 2^64, where the pairwise
  masks cancel, and no single value is ever logged or returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import grpc
import grpc.aio

from fedscore.errors import Code, FedscoreError, Unauthenticated, Unavailable
from fedscore.runtime.rpc import TlsMaterial, secure_channel
from fedscore.v1 import envelope_pb2, query_pb2, trust_pb2
from keys.envelope import verify_message
from keys.keyring import Keyring
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
