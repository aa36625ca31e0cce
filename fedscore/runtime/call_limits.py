"""Who is calling, and how many calls each caller may make: the servers' front door.

Invariants:
- A caller is the subject common name of its verified TLS certificate (a participant
  id); `peer_common_name` is the one place it is read.
- Every method a server serves (ours, health and reflection alike) is rate limited per
  caller and per method before it is handled (`fedscore.runtime.ratelimit`): a call over
  the limit is not handled and fails with RESOURCE_EXHAUSTED, reason RATE_LIMITED and a
  RetryInfo saying when a call is allowed again; the server's `on_rate_limited(caller,
  method)` hook counts it, and the call observers (`fedscore.runtime.calls`) are told.
  A stream is limited once, when it opens.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from fedscore.errors import RateLimited
from fedscore.runtime import calls
from fedscore.runtime.ratelimit import CallLimiter
from fedscore.runtime.statuses import status_for


def peer_common_name(context: grpc.aio.ServicerContext) -> str:
    """The subject common name of the caller's verified TLS certificate ('' if none)."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else ""


# Told of every call refused for its rate: (caller, full method name). Must not block.
RateLimitedHook = Callable[[str, str], None]


class PerCallerLimits(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rate-limits every method of a server per (caller, method) before it is handled."""

    def __init__(self, limiter: CallLimiter, on_rate_limited: RateLimitedHook | None) -> None:
        self.limiter = limiter
        self.on_rate_limited = on_rate_limited
        # Wrapped once per method: generic handlers return the same handler every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = (handler, self._limited(handler, method))
            self._wrapped[method] = known
        return known[1]

    async def admit(self, context: grpc.aio.ServicerContext, method: str) -> None:
        """Spend one of the caller's calls of `method`, or end the call RATE_LIMITED."""
        caller = peer_common_name(context)
        try:
            self.limiter.take(caller, method)
        except RateLimited as error:
            if self.on_rate_limited is not None:
                self.on_rate_limited(caller, method)
            if calls.watched():
                code = status_for(error).code.name
                calls.tell(calls.CallOutcome(method, caller, error.reason, code, 0.0))
            await context.abort_with_status(status_for(error))

    def _limited(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        behaviours = {
            kind: self._behaviour(getattr(handler, kind), method)
            for kind in kinds
            if getattr(handler, kind) is not None
        }
        return handler._replace(**behaviours)

    def _behaviour(self, inner: Callable[..., Any], method: str) -> Callable[..., Any]:
        admit = self.admit
        if inspect.isasyncgenfunction(inner):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(context, method)
                async for response in inner(request, context):
                    yield response

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context, method)
            result = inner(request, context)
            return await result if inspect.isawaitable(result) else result

        return call
