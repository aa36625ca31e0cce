"""The one place where gRPC meets fedscore: server factory, channels, request parsing.

Invariants:
- Every server uses mutual TLS with the federation CA; there is no insecure port.
- Handlers receive raw request bytes and parse them here, so a malformed or oversized
  message becomes a logged `InvalidArgument`/`ResourceExhausted` in our own code
  instead of a framework error that nobody records.
- A `FedscoreError` raised by a handler becomes a gRPC status with a
  `google.rpc.ErrorInfo` detail whose `reason` is the error's reason; nothing else is
  sent to the caller. Any other exception is reported as INTERNAL without details.
  An error with a retry hint also carries a `google.rpc.RetryInfo` detail, and
  `error_from_rpc` gives it back as `retry_after_seconds` (`fedscore.runtime.statuses`).
- Every call of ours that ends, however it ends (answered, refused, failed, or
  abandoned by its caller: CANCELLED), tells the call observers (`fedscore.runtime.calls`)
  once: method, caller, reason, duration; a server's log writes one line of it.
- Every method a server serves (ours, health and reflection alike) is rate limited per
  caller (its certificate's common name) and per method before it is handled
  (`fedscore.runtime.call_limits`): a call over the limit is not handled and fails with
  RESOURCE_EXHAUSTED, reason RATE_LIMITED and a RetryInfo saying when a call is allowed
  again; the server's `on_rate_limited(caller, method)` hook counts it (each party's
  refusal summary, `audit.store.refusals`), it is never logged one by one. A stream is
  limited once, when it opens: its messages are bounded by the stream's own handler
  (each item is checked, refused and summarised like a single call), not by this limiter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fedscore.errors import (
    Code,
    FailedPrecondition,
    FedscoreError,
    InvalidArgument,
    ResourceExhausted,
)
from fedscore.runtime import calls, logs
from fedscore.runtime.call_limits import PerCallerLimits
from fedscore.runtime.call_limits import RateLimitedHook as RateLimitedHook
from fedscore.runtime.call_limits import peer_common_name as peer_common_name
from fedscore.runtime.ratelimit import DEFAULT_RATE_LIMITS, CallLimiter, RateLimits
from fedscore.runtime.statuses import error_from_rpc, status_for

_log = logging.getLogger(__name__)

# Our own limit, checked in our code so the refusal is logged. The transport limit is
# larger so such messages reach the handler at all.
MAX_MESSAGE_BYTES = 256 * 1024
TRANSPORT_MAX_BYTES = 4 * 1024 * 1024

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes for one party's mutual TLS: the federation CA, its certificate and key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", TRANSPORT_MAX_BYTES),
        ("grpc.max_send_message_length", TRANSPORT_MAX_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def parse_request(raw: bytes, message_type: type[M], limit: int = MAX_MESSAGE_BYTES) -> M:
    """Parse request bytes, refusing oversized (over `limit`) or malformed messages."""
    if len(raw) > limit:
        raise ResourceExhausted(
            f"message of {len(raw)} bytes exceeds the limit of {limit}",
            reason="MESSAGE_TOO_LARGE",
        )
    message: M = message_type()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise InvalidArgument(
            f"request is not a valid {message_type.DESCRIPTOR.full_name}",
            reason="MALFORMED_MESSAGE",
        ) from exc
    return message


Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]
# How a call the caller abandoned (cancelled, or its deadline passed) is told and logged.
CANCELLED = FedscoreError("the caller cancelled the call", reason="CANCELLED")
CANCELLED.code = Code.CANCELLED


def _told(method: str, context: grpc.aio.ServicerContext, started: float, error: Any) -> None:
    """Tell the call observers (`fedscore.runtime.calls`) how a call ended."""
    if not calls.watched():
        return
    reason = calls.OK if error is None else error.reason
    code = "OK" if error is None else status_for(error).code.name
    elapsed = time.perf_counter() - started
    calls.tell(calls.CallOutcome(method, peer_common_name(context), reason, code, elapsed))


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's request id (`fedscore.runtime.logs`), or a new one."""
    sent = dict(context.invocation_metadata() or ()).get(logs.METADATA_KEY)
    return logs.accepted(sent if isinstance(sent, str) else None)


def unary(handler: Handler, method: str = "") -> grpc.RpcMethodHandler:
    """Register `handler` (raw bytes in, message out) with error mapping."""

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        started = time.perf_counter()
        logs.REQUEST_ID.set(_request_id(context))
        try:
            response = await handler(raw, context)
        except asyncio.CancelledError:  # the caller went away or its deadline passed
            _told(method, context, started, CANCELLED)
            raise
        except FedscoreError as error:
            _told(method, context, started, error)
            await context.abort_with_status(status_for(error))
            raise AssertionError("unreachable") from error
        except Exception as exc:
            _log.exception("internal error in handler")
            internal = FedscoreError("internal error", reason="INTERNAL")
            _told(method, context, started, internal)
            await context.abort_with_status(status_for(internal))
            raise AssertionError("unreachable") from exc
        _told(method, context, started, None)
        return response

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=None,
        response_serializer=lambda message: message.SerializeToString(),
    )


StreamHandler = Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], AsyncIterator[Message]]


@dataclass(frozen=True)
class BidiStream:
    """A bidirectional-streaming method: raw request bytes in, messages out, as they come."""

    handler: StreamHandler


def bidi_stream(method: BidiStream, name: str = "") -> grpc.RpcMethodHandler:
    """Register a streaming handler; a FedscoreError it raises ends the stream with its status."""

    async def call(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Message]:
        started = time.perf_counter()
        logs.REQUEST_ID.set(_request_id(context))
        try:
            async for response in method.handler(requests, context):
                yield response
        except asyncio.CancelledError:
            _told(name, context, started, CANCELLED)
            raise
        except FedscoreError as error:
            _told(name, context, started, error)
            await context.abort_with_status(status_for(error))
            return
        except Exception:
            _log.exception("internal error in stream handler")
            internal = FedscoreError("internal error", reason="INTERNAL")
            _told(name, context, started, internal)
            await context.abort_with_status(status_for(internal))
            return
        _told(name, context, started, None)

    return grpc.stream_stream_rpc_method_handler(
        call,
        request_deserializer=None,
        response_serializer=lambda message: message.SerializeToString(),
    )


def _method_handler(method: Handler | BidiStream, name: str = "") -> grpc.RpcMethodHandler:
    return bidi_stream(method, name) if isinstance(method, BidiStream) else unary(method, name)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    # The services it serves (health and reflection aside), whose health a party reports.
    services: tuple[str, ...] = ()

    async def stop(self, grace: float = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(
    tls: TlsMaterial,
    bind: str,
    services: Mapping[str, Mapping[str, Handler | BidiStream]],
    *,
    rate_limits: RateLimits | None = DEFAULT_RATE_LIMITS,
    on_rate_limited: RateLimitedHook | None = None,
) -> RunningServer:
    """Start an aio gRPC server with mutual TLS, health and reflection.

    `services` maps a full service name (e.g. "fedscore.v1.NodeService") to its methods:
    unary handlers, or `BidiStream` for a bidirectional-streaming method.
    Every method is limited to `rate_limits` per caller (None: no limit, for baselines
    that are not fedscore parties); `on_rate_limited` is told of each call refused so.
    Health is SERVING only once every service is registered and the port is bound.
    """
    interceptors = (
        [PerCallerLimits(CallLimiter(rate_limits), on_rate_limited)] if rate_limits else []
    )
    options = [*_options(), ("grpc.so_reuseport", 0)]  # a taken port fails: runtime/listen.py
    server = grpc.aio.server(options=options, interceptors=interceptors)
    for service_name, methods in services.items():
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    service_name,
                    {
                        name: _method_handler(fn, f"/{service_name}/{name}")
                        for name, fn in methods.items()
                    },
                ),
            )
        )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*services.keys(), health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    credentials = grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem, require_client_auth=True
    )
    try:
        port = server.add_secure_port(bind, credentials)
    except RuntimeError:  # grpcio raises where older versions returned 0
        port = 0
    if port == 0:
        raise FailedPrecondition(
            f"cannot listen on {bind}: the address is in use or not this machine's; "
            "stop what holds it or choose another with --bind HOST:PORT",
            "ADDRESS_IN_USE",
        )
    await server.start()
    for service_name in [*services.keys(), ""]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, port=port, health=health_servicer, services=tuple(services))


def endpoint_addresses(endpoint: str) -> list[str]:
    """The addresses of an endpoint: one, or the replicas listed "host:port,host:port"."""
    return [address.strip() for address in endpoint.split(",") if address.strip()]


def secure_channel(target: str, tls: TlsMaterial, server_name: str) -> grpc.aio.Channel:
    """An aio channel with mutual TLS; `server_name` is the peer's party id (its cert CN/SAN).

    A target listing several addresses (a party's replicas, by IP address) is one channel
    that spreads calls over them with gRPC's own `round_robin` and stops using a replica
    that is down.
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
    )
    options = [*_options(), ("grpc.ssl_target_name_override", server_name)]
    addresses = endpoint_addresses(target)
    if len(addresses) > 1:
        target = "ipv4:" + ",".join(addresses)
        options.append(("grpc.lb_policy_name", "round_robin"))
    return grpc.aio.secure_channel(target, credentials, options=options)


def _serialized(request: Message | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


async def call_unary(
    channel: grpc.aio.Channel,
    method: str,
    request: Message | bytes,
    response_type: type[M],
    timeout: float,
) -> M:
    """Call `method` ("/pkg.Service/Method"), raising the server's FedscoreError on failure.

    `request` may be given already serialized (one request sent to several parties).
    """
    stub = channel.unary_unary(
        method, request_serializer=_serialized, response_deserializer=response_type.FromString
    )
    try:
        return await stub(  # type: ignore[no-any-return]
            request, timeout=timeout, metadata=logs.outgoing_metadata()
        )
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc


def open_stream(
    channel: grpc.aio.Channel, method: str, response_type: type[M], timeout: float
) -> grpc.aio.StreamStreamCall:
    """Open a bidirectional stream: write messages to it, read `response_type` messages."""
    stub = channel.stream_stream(
        method,
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    return stub(timeout=timeout, metadata=logs.outgoing_metadata())


async def stream_responses(call: grpc.aio.StreamStreamCall) -> AsyncIterator[Any]:
    """The responses of a stream; a failed stream raises the server's FedscoreError."""
    try:
        async for response in call:
            yield response
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
