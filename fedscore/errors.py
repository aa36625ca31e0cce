"""The one error hierarchy of fedscore.

Every refusal is a `FedscoreError` carrying a canonical status `Code` (the numbers of
`google.rpc.Code`, which gRPC uses on the wire) and a machine-readable reason (an
UPPER_SNAKE_CASE string sent as `google.rpc.ErrorInfo.reason`). This module imports no
transport: the leaves (`keys/`, `policies/`, `audit/` core) raise these errors without
depending on gRPC. Only `fedscore.runtime.rpc` turns them into gRPC statuses and back. An
error may carry a retry hint (`retry_after_seconds`), sent as `google.rpc.RetryInfo`.
"""

from __future__ import annotations

import enum

ERROR_DOMAIN = "fedscore.th"


class Code(enum.IntEnum):
    """Canonical status codes, numbered as `google.rpc.Code`."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def of(cls, number: int) -> Code:
        """The code numbered `number`; UNKNOWN for a number outside the canonical set."""
        try:
            return cls(number)
        except ValueError:
            return cls.UNKNOWN


class FedscoreError(Exception):
    """Base of every error fedscore raises on purpose."""

    code: Code = Code.INTERNAL
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

    code = Code.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(FedscoreError):
    """A signature, key or certificate does not verify."""

    code = Code.UNAUTHENTICATED
    default_reason = "BAD_SIGNATURE"


class PermissionDenied(FedscoreError):
    """Authenticated, but consent or scope does not allow it."""

    code = Code.PERMISSION_DENIED
    default_reason = "OUT_OF_SCOPE"


class FailedPrecondition(FedscoreError):
    """The system is not in a state to answer (unknown policy, stale status list)."""

    code = Code.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class AlreadyExists(FedscoreError):
    """A replayed nonce or query id."""

    code = Code.ALREADY_EXISTS
    default_reason = "REPLAYED"


class NotFound(FedscoreError):
    """An unknown token, grant or participant."""

    code = Code.NOT_FOUND
    default_reason = "NOT_FOUND"


class Unavailable(FedscoreError):
    """A party that must take part did not answer."""

    code = Code.UNAVAILABLE
    default_reason = "NODE_UNAVAILABLE"


class ResourceExhausted(FedscoreError):
    """A size or use limit was exceeded."""

    code = Code.RESOURCE_EXHAUSTED
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


_BY_CODE: dict[Code, type[FedscoreError]] = {
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


def error_class_for(code: Code) -> type[FedscoreError]:
    """The error class that carries `code`; FedscoreError for codes without one."""
    return _BY_CODE.get(code, FedscoreError)
