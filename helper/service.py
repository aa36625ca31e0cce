"""`fedscore.v1.HelperService.NoiseShareSum`: the helper aggregator's one method.

Thin: parse the request (`fedscore.runtime.rpc.parse_request`), run `helper.noising` in a
worker thread (opening the sealed shares and the ledger's transaction stay off the event
loop), encode. A refusal of any kind is logged as "statistics_refused" with its reason and
only the authenticated facts, within the caller's allowance (`audit.store.refusals`), and
returned as a gRPC status (`fedscore.runtime.statuses`).
"""

from __future__ import annotations

import asyncio

import grpc.aio
from google.protobuf.message import Message

from audit.core import kinds
from audit.core.fields import REASON
from fedscore.errors import FedscoreError
from fedscore.runtime.rpc import Handler, parse_request, peer_common_name
from fedscore.v1.helper_pb2 import NoiseShareSumRequest, NoiseShareSumResponse
from helper.noising import HelperAggregator, Notes, noise_share_sum

SERVICE_NAME = "fedscore.v1.HelperService"


def helper_handlers(helper: HelperAggregator) -> dict[str, Handler]:
    """The HelperService methods, ready for `fedscore.runtime.rpc.start_server`."""

    async def noise_share_sum_handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        caller = peer_common_name(context)
        notes = Notes()
        try:
            request = parse_request(raw, NoiseShareSumRequest)
            envelope = await asyncio.to_thread(noise_share_sum, helper, request.order, notes)
        except FedscoreError as error:
            helper.refusals.record(
                caller, kinds.STATISTICS_REFUSED, {REASON: error.reason}, notes.fields()
            )
            raise
        return NoiseShareSumResponse(sum=envelope)

    return {"NoiseShareSum": noise_share_sum_handler}
