"""What happened to each call a server handled, for whoever watches: metrics, request logs.

`fedscore.runtime.rpc` tells every observer of each call once it ends: the method, the
caller's certificate name, the outcome's reason ("OK", or the machine-readable reason of
the refusal or error) and how long it took. Observers must be quick and must not raise;
one that raises is logged and the others are still told. Nothing personal is in an
outcome: no request content, only names of parties and methods and reason codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

_log = logging.getLogger(__name__)

OK = "OK"


@dataclass(frozen=True)
class CallOutcome:
    method: str  # "/fedscore.v1.NodeService/ContributeBatch"
    caller: str  # the caller's certificate common name (a participant id), or ""
    reason: str  # "OK", or a reason code such as "CONSENT_REVOKED", "RATE_LIMITED"
    code: str  # the gRPC status code's name
    seconds: float


CallObserver = Callable[[CallOutcome], None]
_observers: list[CallObserver] = []


def observe_calls(observer: CallObserver) -> Callable[[], None]:
    """Tell `observer` of every call from now on; returns what stops it."""
    _observers.append(observer)

    def stop() -> None:
        if observer in _observers:
            _observers.remove(observer)

    return stop


def watched() -> bool:
    return bool(_observers)


def tell(outcome: CallOutcome) -> None:
    for observer in list(_observers):
        try:
            observer(outcome)
        except Exception:
            _log.exception("a call observer failed")
