"""Server logs: text or JSON lines, each with the request id that crosses the parties.

A request id travels in gRPC metadata (`x-request-id`). A server takes the caller's (or
makes one when there is none or it is malformed) for the time it handles the call
(`fedscore.runtime.rpc`), and every call it makes meanwhile carries it on, so a relying
party's question, the coordinator's handling of it and the nodes' answers can be found
by one id in every party's log. A batch the coordinator sends for several questions
carries the id of the batch (`batch-<id>`), and the coordinator logs which requests went
into which batch.

Invariants:
- An id is 1-64 characters of [0-9A-Za-z._-]; anything else from a caller is replaced,
  never logged as sent.
- Nothing personal is added to a line: the formatter writes the time, level, logger,
  message, the party and the request id; what goes into a message is the caller's
  responsibility (`tests/test_log_fields.py` guards the audit log, this is the
  operational one).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from fedscore.runtime.calls import OK, CallOutcome, observe_calls

METADATA_KEY = "x-request-id"
REQUEST_ID: ContextVar[str] = ContextVar("fedscore_request_id", default="")
_VALID = re.compile(r"[0-9A-Za-z._-]{1,64}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
FORMATS = ("text", "json")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted(value: str | None) -> str:
    """The caller's id if well formed, else a new one."""
    return value if value and _VALID.fullmatch(value) else new_request_id()


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata carrying the current request id on, or none outside a request."""
    current = REQUEST_ID.get()
    return ((METADATA_KEY, current),) if current else ()


class _RequestId(logging.Filter):
    def __init__(self, party: str) -> None:
        super().__init__()
        self.party = party

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        record.party = self.party
        return True


class TextFormatter(logging.Formatter):
    """Text lines whose time is ISO 8601 with this machine's UTC offset, to the ms."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        moment = datetime.fromtimestamp(record.created).astimezone()
        return moment.isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "party": getattr(record, "party", ""),
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, log_format: str, party: str) -> None:
    """The process's logging: `log_format` "text" or "json", every line with its request id."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestId(party))
    formatter: logging.Formatter = (
        JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    # gRPC's own debug lines (one per loop it loads) say nothing an operator needs.
    logging.getLogger("grpc._cython.cygrpc").setLevel(max(logging.INFO, root.level))


_calls_log = logging.getLogger("fedscore.calls")
# What peers ask on a timer (every trust_refresh_seconds and status-list interval, from
# every peer): answered, a line each at DEBUG; at INFO they would be most of a party's log.
# Refused or failed, they are INFO like every other call.
POLLED_METHODS = frozenset(
    {"/fedscore.v1.TrustService/GetTrust", "/fedscore.v1.ConsentService/GetStatusList"}
)


def call_level(outcome: CallOutcome) -> int:
    """INFO for every call a server handles, but DEBUG for a poll that was answered."""
    routine = outcome.reason == OK and outcome.method in POLLED_METHODS
    return logging.DEBUG if routine else logging.INFO


def _log_call(outcome: CallOutcome) -> None:
    _calls_log.log(
        call_level(outcome),
        "%s from %s: %s in %.1f ms",
        outcome.method,
        outcome.caller or "-",
        outcome.reason,
        outcome.seconds * 1000,
    )


def log_every_call() -> Callable[[], None]:
    """One line per call a server handles: method, caller, outcome, duration (at INFO;
    an answered poll at DEBUG, `call_level`).

    Returns what stops it."""
    return observe_calls(_log_call)
