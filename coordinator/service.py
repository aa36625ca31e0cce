"""gRPC handlers of the coordinator: decode, call a plain function, encode.

Errors are mapped to statuses in `fedscore.runtime.rpc` only; handlers catch only to log a
request that could not even be parsed, then re-raise it unchanged. Every refusal is
recorded under the caller's certificate name (`fedscore.runtime.rpc.peer_common_name`): one by
one up to its allowance, then counted into its summary (`audit.store.refusals`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio
from google.protobuf.message import Message

from audit.core import kinds
from audit.core.fields import REASON
from coordinator.batch import score_batch
from coordinator.scoring import Coordinator, answer_score, receive_revocation
from fedscore.errors import FedscoreError
from fedscore.runtime.rpc import BidiStream, Handler, parse_request, peer_common_name
from fedscore.v1 import query_pb2

SERVICE_NAME = "fedscore.v1.CoordinatorService"


class CoordinatorService:
    """The CoordinatorService methods over one started Coordinator."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def score(self, raw: bytes, context: grpc.aio.ServicerContext) -> query_pb2.ScoreResponse:
        caller = peer_common_name(context)
        try:
            request = parse_request(raw, query_pb2.ScoreRequest)
        except FedscoreError as error:
            # Malformed or oversized requests are refusals too, and every refusal is recorded.
            self.coordinator.refusals.record(caller, kinds.SCORE_REFUSED, {REASON: error.reason})
            raise
        return await answer_score(self.coordinator, request, caller)

    async def push_revocation(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> query_pb2.PushRevocationResponse:
        caller = peer_common_name(context)
        try:
            request = parse_request(raw, query_pb2.PushRevocationRequest)
        except FedscoreError as error:
            self.coordinator.refusals.record(
                caller, kinds.REVOCATION_REFUSED, {REASON: error.reason}
            )
            raise
        return receive_revocation(self.coordinator, request, caller)

    def score_batch(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Message]:
        return score_batch(self.coordinator, requests, peer_common_name(context))

    def handlers(self) -> dict[str, dict[str, Handler | BidiStream]]:
        return {
            SERVICE_NAME: {
                "Score": self.score,
                "ScoreBatch": BidiStream(self.score_batch),
                "PushRevocation": self.push_revocation,
            }
        }
