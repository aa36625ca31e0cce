"""A `FedscoreError` as a gRPC status or a batch item's refusal, and back again.

Invariants:
- `Code` is numbered as `google.rpc.Code`, so the mapping is by number; an unknown number
  reads as UNKNOWN.
- A status carries the error's message (at most 1,000 characters), a
  `google.rpc.ErrorInfo` whose `reason` is the error's reason, and, for an error with a
  retry hint, a `google.rpc.RetryInfo`; nothing else about the error is sent.
- A refused batch item (`ItemRefusal`) carries what a refused call's status would carry,
  retry hint aside: the caller turns either back into the same error class, code, reason
  and message.
- A transport failure with no reason of ours (the peer is down) reads as PEER_UNAVAILABLE;
  a caller that knows which party it dialled names it (`fedscore.apps.client.channel_to`).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from fedscore.errors import ERROR_DOMAIN, Code, FedscoreError, error_class_for
from fedscore.v1.query_pb2 import ItemRefusal

PEER_UNAVAILABLE = "PEER_UNAVAILABLE"


def status_for(error: FedscoreError) -> grpc.Status:
    """The rich gRPC status that carries `error`'s code, message and reason."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    details = [any_pb2.Any()]
    details[0].Pack(info)
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(error.retry_after_seconds * 1e9))
        details.append(any_pb2.Any())
        details[1].Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=int(error.code), message=error.message[:1000], details=details)
    return rpc_status.to_status(status)


def error_from_rpc(exc: grpc.RpcError) -> FedscoreError:
    """Turn a failed call back into the FedscoreError the server raised."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    reason = code.name if code is not None else "UNKNOWN"
    retry_after: float | None = None
    metadata = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in metadata or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                retry = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    reason = info.reason
                elif detail.Unpack(retry):
                    retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    if code == grpc.StatusCode.UNAVAILABLE and reason == "UNAVAILABLE":
        reason = PEER_UNAVAILABLE
    canonical = Code.of(code.value[0]) if code is not None else Code.UNKNOWN
    error = error_class_for(canonical)(message or reason, reason=reason)
    error.code = canonical
    error.retry_after_seconds = retry_after
    return error


def item_refusal(error: FedscoreError) -> ItemRefusal:
    """One refused item of a batch, carrying what a single call's status would carry."""
    return ItemRefusal(code=int(error.code), reason=error.reason, message=error.message[:1000])


def error_from_refusal(refusal: ItemRefusal) -> FedscoreError:
    """The FedscoreError a refused batch item stands for (the inverse of `item_refusal`)."""
    code = Code.of(refusal.code)
    reason = refusal.reason or code.name
    error = error_class_for(code)(refusal.message or reason, reason=reason)
    error.code = code
    return error
