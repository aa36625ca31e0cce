"""The one error hierarchy of fedscore.

Every refusal is a `FedscoreError` carrying a gRPC status code and a machine-readable
reason (an UPPER_SNAKE_CASE string sent as `google.rpc.ErrorInfo.reason`). Only
`fedscore.rpc` turns these into gRPC statuses and back; nothing else maps codes. An
error may carry a retry hint (`retry_after_seconds`), sent as `google.rpc.RetryInfo`.
"""

from __future__ import annotations

import grpc

ERROR_DOMAIN = "fedscore.th"


class FedscoreError(Exception):
    """Base of every error fedscore raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"
    # When asking again may succeed (seconds), if the party said so; None otherwise.
    retry_after_seconds: float | None = None

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidArgument(FedscoreError):
    """Malformed or out-of-range input."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(FedscoreError):
    """A signature, key or certificate does not verify."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "BAD_SIGNATURE"


class PermissionDenied(FedscoreError):
    """Authenticated, but consent or scope does not allow it."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "OUT_OF_SCOPE"


class FailedPrecondition(FedscoreError):
    """The system is not in a state to answer (unknown policy, stale status list)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class AlreadyExists(FedscoreError):
    """A replayed nonce or query id."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "REPLAYED"


class NotFound(FedscoreError):
    """An unknown token, grant or participant."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class Unavailable(FedscoreError):
    """A party that must take part did not answer."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "NODE_UNAVAILABLE"


class ResourceExhausted(FedscoreError):
    """A size or use limit was exceeded."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class RateLimited(ResourceExhausted):
    """A caller called one method faster than its per-caller limit; it may retry later."""

    default_reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PolicyError(InvalidArgument):
    """A policy file is invalid; the message names the field."""

    default_reason = "INVALID_POLICY"


class IngestError(InvalidArgument):
    """An agency export file is rejected as a whole; `problems` lists (row, reason)."""

    default_reason = "INVALID_IMPORT"

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class KeyFileError(Unauthenticated):
    """A key file cannot be opened (wrong passphrase or damaged file)."""

    default_reason = "KEY_FILE"


_BY_CODE: dict[grpc.StatusCode, type[FedscoreError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        FailedPrecondition,
        AlreadyExists,
        NotFound,
        Unavailable,
        ResourceExhausted,
    )
}


def error_class_for(code: grpc.StatusCode) -> type[FedscoreError]:
    """The error class that carries `code`; FedscoreError for codes without one."""
    return _BY_CODE.get(code, FedscoreError)
