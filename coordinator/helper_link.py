"""The coordinator's side of the helper aggregator (docs/adr/0019): is it there, and what
does it answer an order.

`HelperLink` is the one way a release reaches the helper: a mutual-TLS channel to the
helper aggregator the trust registry lists (the first by id if it lists several;
`fedscore.runtime.trust_follower.PeerChannel`, following a moved endpoint), its keys, and a
deadline. `ready` asks the helper's gRPC health service before anything is spent
(HELPER_UNAVAILABLE); `noisy_share_sums` sends one signed `NoiseOrder` and returns the
helper's noisy share sums, once they open as a `SignedNoisyShareSum` under the helper's
keys and answer this very order (query id and hash, release id, helper, one value per bin,
the epsilon charged); anything else is HELPER_ANSWER_INVALID.

A failure is `HelperFailure`, which says whether the helper may have charged its ledger:
a refusal on the merits, or a helper that could not be reached, charged nothing (the
coordinator then gives its own reservation back); an answer that came back and does not
check, or a call that was sent and timed out, may have been charged (the coordinator then
keeps its own charge, the safe direction, and the regulator sees the two ledgers agree or
names the difference).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2

from fedscore.errors import Code, FailedPrecondition, FedscoreError, Unavailable
from fedscore.protocol.helper_messages import SignedNoisyShareSum
from fedscore.runtime.rpc import TlsMaterial, call_unary
from fedscore.runtime.trust_follower import PeerChannel
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.helper_pb2 import NoiseOrder, NoiseShareSumRequest, NoiseShareSumResponse
from fedscore.v1.statistics_pb2 import StatisticsSpec
from fedscore.v1.trust_pb2 import Role
from keys.keyring import HelperKeys
from keys.registry import TrustView

NOISE_METHOD = "/fedscore.v1.HelperService/NoiseShareSum"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
HELPER_DEADLINE_SECONDS = 30.0
READY_DEADLINE_SECONDS = 3.0
# A helper reporting one of these refused the order on its merits and charged nothing.
_REFUSALS = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.UNAUTHENTICATED,
        Code.PERMISSION_DENIED,
        Code.FAILED_PRECONDITION,
        Code.RESOURCE_EXHAUSTED,
        Code.ALREADY_EXISTS,
        Code.NOT_FOUND,
    }
)


class HelperFailure(FedscoreError):
    """The helper did not add the noise; `charged` if it may have charged its ledger."""

    def __init__(self, error: FedscoreError, *, charged: bool) -> None:
        super().__init__(error.message, reason=error.reason)
        self.code = error.code
        self.charged = charged


class NoiseStep(Protocol):
    """Who adds the noise to the helper's shares of a release: the helper aggregator
    (`HelperLink`), or, in the benchmark's single-aggregator baseline only, the
    coordinator's own process (bench/stats_bench.py)."""

    @property
    def helper_id(self) -> str: ...

    async def ready(self) -> None: ...

    async def noisy_share_sums(
        self, order: NoiseOrder, signed_order: Envelope, width: int
    ) -> list[int]: ...

    def follow(self, view: TrustView) -> None: ...

    async def close(self) -> None: ...


def helper_listed(view: TrustView) -> bool:
    return any(p.endpoint for p in view.by_role(Role.ROLE_HELPER_AGGREGATOR))


@dataclass
class HelperLink:
    """The helper aggregator the registry lists, as the coordinator reaches it."""

    channel: PeerChannel
    keyring: HelperKeys
    deadline: float = HELPER_DEADLINE_SECONDS

    @classmethod
    def open(
        cls, view: TrustView, tls: TlsMaterial, deadline: float = HELPER_DEADLINE_SECONDS
    ) -> HelperLink:
        """FailedPrecondition NO_HELPER if the registry lists no helper aggregator."""
        channel = PeerChannel(view, Role.ROLE_HELPER_AGGREGATOR, tls, missing_reason="NO_HELPER")
        return cls(channel, view.helper_keys(), deadline)

    @property
    def helper_id(self) -> str:
        return self.channel.party_id

    def follow(self, view: TrustView) -> None:
        self.channel.follow(view)
        self.keyring = view.helper_keys()

    async def close(self) -> None:
        await self.channel.close()

    async def ready(self) -> None:
        """The helper answers SERVING to a health check; HELPER_UNAVAILABLE otherwise."""
        try:
            response = await call_unary(
                self.channel.channel,
                HEALTH_METHOD,
                health_pb2.HealthCheckRequest(service=""),
                health_pb2.HealthCheckResponse,
                READY_DEADLINE_SECONDS,
            )
        except (FedscoreError, grpc.RpcError, TimeoutError) as exc:
            raise Unavailable(
                f"the helper aggregator {self.helper_id} is unavailable ({exc}); nothing was "
                "published and nothing spent",
                reason="HELPER_UNAVAILABLE",
            ) from exc
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unavailable(
                f"the helper aggregator {self.helper_id} is not serving; nothing was "
                "published and nothing spent",
                reason="HELPER_UNAVAILABLE",
            )

    async def noisy_share_sums(
        self, order: NoiseOrder, signed_order: Envelope, width: int
    ) -> list[int]:
        """The helper's noisy share sums for `order`, or a `HelperFailure`."""
        try:
            response = await call_unary(
                self.channel.channel,
                NOISE_METHOD,
                NoiseShareSumRequest(order=signed_order),
                NoiseShareSumResponse,
                self.deadline,
            )
        except FedscoreError as error:
            if error.code in _REFUSALS:
                raise HelperFailure(error, charged=False) from error
            unreached = error.code == Code.UNAVAILABLE
            raise HelperFailure(
                Unavailable(f"the helper aggregator failed: {error.message}", "HELPER_UNAVAILABLE"),
                charged=not unreached,
            ) from error
        try:
            return noisy_sums_of(response.sum, self.keyring, order, width)
        except FedscoreError as error:
            raise HelperFailure(error, charged=True) from error


def noisy_sums_of(
    envelope: Envelope, keyring: HelperKeys, order: NoiseOrder, width: int
) -> list[int]:
    """The noisy share sums of the helper's answer, if it answers this very order."""
    try:
        signed = SignedNoisyShareSum.verify(envelope, keyring)
    except FedscoreError as error:
        raise FailedPrecondition(
            f"the helper's answer does not verify ({error.reason})", "HELPER_ANSWER_INVALID"
        ) from error
    noisy = signed.noisy
    spec = StatisticsSpec.FromString(order.spec)
    query_hash = hashlib.sha256(order.spec).digest()
    expected = (
        order.helper,
        spec.query_id,
        query_hash,
        order.release_id,
        order.epsilon_nano,
        width,
    )
    answered = (
        signed.signer,
        noisy.query_id,
        noisy.query_hash,
        noisy.release_id,
        noisy.epsilon_nano,
        len(noisy.noisy_sums),
    )
    if answered != expected:
        raise FailedPrecondition(
            "the helper's answer is for another order", reason="HELPER_ANSWER_INVALID"
        )
    return [int(value) for value in noisy.noisy_sums]
