"""A party's refusals, logged one by one up to an allowance per caller, then summarised.

Any certificate holder can make a party refuse: without a bound, it could grow that
party's log by thousands of entries a minute (docs/adr/0013-refusal-flooding.md).

Invariants:
- Time is cut into intervals of `interval_seconds`, aligned to multiples of it since the
  epoch (so every caller's intervals share boundaries). Per caller and interval, the
  first `per_interval` refusals are logged one by one, exactly as without this class;
  the rest are only counted, per (kind, reason[, method]), and so are calls refused for
  their rate (`rate_limited`), which are never logged one by one.
- Once an interval has ended, ONE "refusals_summarised" entry per caller that had
  anything counted in it is appended: caller, interval start and end, the total count
  and the counts per kind and reason. Nothing is summarised that was logged one by one,
  so the entries logged plus the summaries' counts are every refusal, each once.
- Summaries are written by `flush`: before every refusal `record` logs, by the task
  `start` runs (just after each interval boundary), and by `stop` (which also closes the
  interval in progress, cut short at that moment). A summary that cannot be written
  stays pending and is tried again; only a crash loses counts: those of the interval in
  progress (and of the one just ended, if its summary was not written yet).
- `allow` and `count` only touch memory, never the database: a writer may call them
  inside its own open transaction (a batch) without waiting on the log's writer lock.
- Entries hold the caller's party id, kinds, reasons and method names only: never a
  national ID, pseudonym, contribution or masked value (the log refuses such keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from audit.core import kinds
from audit.core.entries import LogRef
from audit.core.fields import REASON
from audit.store.log import EventLog
from fedscore.errors import FedscoreError

_log = logging.getLogger(__name__)

# The periodic flush wakes this long after a boundary, so intervals have surely ended.
FLUSH_DELAY_SECONDS = 0.05

Clock = Callable[[], float]


@dataclass(frozen=True)
class RefusalAllowance:
    """How many refusals per caller per interval are logged one by one."""

    per_interval: int
    interval_seconds: float

    def __post_init__(self) -> None:
        if self.per_interval < 0:
            raise ValueError("per_interval must not be negative")
        if not (self.interval_seconds > 0 and math.isfinite(self.interval_seconds)):
            raise ValueError("interval_seconds must be a positive number")

    def interval_start(self, now: float) -> float:
        return math.floor(now / self.interval_seconds) * self.interval_seconds


# 30 per 10 s is 3 refusals a second, sustained, from one caller, each logged in full:
# far above an honest caller (a refusal is an expired, revoked or replayed token), while a
# flood adds at most 30 + 1 entries per caller per 10 s (186 a minute) to the log.
DEFAULT_REFUSAL_ALLOWANCE = RefusalAllowance(per_interval=30, interval_seconds=10.0)

# (kind, reason, method): method is "" except for calls refused for their rate.
TallyKey = tuple[str, str, str]


@dataclass
class _Tally:
    """One caller's refusals in one interval."""

    start: float
    logged: int = 0
    counted: Counter[TallyKey] = field(default_factory=Counter)


@dataclass(frozen=True)
class Summary:
    """What one "refusals_summarised" entry says."""

    caller: str
    start: float
    end: float
    counted: Mapping[TallyKey, int]

    def fields(self, allowance: int) -> dict[str, object]:
        counts: list[dict[str, object]] = []
        for (kind, reason, method), number in sorted(self.counted.items()):
            row: dict[str, object] = {"kind": kind, REASON: reason, "count": number}
            if method:
                row["method"] = method
            counts.append(row)
        return {
            "caller": self.caller,
            "interval_start": _seconds(self.start),
            "interval_end": _seconds(self.end),
            "allowance": allowance,
            "count": sum(self.counted.values()),
            "counts": counts,
        }


def _seconds(value: float) -> int | float:
    """Whole seconds as an int (the usual case), else rounded to the millisecond."""
    return int(value) if value == int(value) else round(value, 3)


class RefusalRecorder:
    """A party's refusal log: one by one up to the allowance, then one summary per interval."""

    def __init__(
        self,
        log: EventLog,
        allowance: RefusalAllowance = DEFAULT_REFUSAL_ALLOWANCE,
        clock: Clock = time.time,
    ) -> None:
        self.log = log
        self.allowance = allowance
        self.clock = clock
        self._lock = threading.Lock()  # the tallies and the pending summaries
        self._writing = threading.Lock()  # one flush at a time, so none is written twice
        self._tallies: dict[str, _Tally] = {}
        self._pending: deque[Summary] = deque()
        self._task: asyncio.Task[None] | None = None

    # --- memory only: safe inside a writer's own transaction -------------------------

    def _tally(self, caller: str, now: float) -> _Tally:
        """The caller's tally for the interval holding `now`; an ended one becomes pending."""
        start = self.allowance.interval_start(now)
        tally = self._tallies.get(caller)
        if tally is not None and tally.start == start:
            return tally
        if tally is not None:
            self._close(caller, tally, tally.start + self.allowance.interval_seconds)
        tally = _Tally(start)
        self._tallies[caller] = tally
        return tally

    def _close(self, caller: str, tally: _Tally, end: float) -> None:
        if tally.counted:
            self._pending.append(Summary(caller, tally.start, end, dict(tally.counted)))

    def allow(self, caller: str) -> bool:
        """Take one of `caller`'s one-by-one entries of this interval: False if none is left.

        True: log the refusal as usual. False: call `count` for it instead.
        """
        with self._lock:
            tally = self._tally(caller, self.clock())
            if tally.logged >= self.allowance.per_interval:
                return False
            tally.logged += 1
            return True

    def count(self, caller: str, kind: str, reason: str, method: str = "", times: int = 1) -> None:
        """Count refusals of `caller` that are not logged one by one (into its summary)."""
        if times <= 0:
            return
        with self._lock:
            self._tally(caller, self.clock()).counted[(kind, reason, method)] += times

    def rate_limited(self, caller: str, method: str) -> None:
        """Count a call refused for its rate.

        The hook `fedscore.runtime.rpc.start_server` takes.
        """
        self.count(caller, kinds.RATE_LIMITED, "RATE_LIMITED", method)

    # --- writing: never inside another transaction on the log's database ---------------

    def record(
        self,
        caller: str,
        kind: str,
        essential: Mapping[str, object],
        facts: Mapping[str, object] | None = None,
    ) -> LogRef | None:
        """Log one refusal (`essential` with `facts`) or, beyond the allowance, count it.

        `essential` must hold the refusal's reason (`REASON`). If the log's field rules refuse one
        of the `facts`, `essential` alone is logged: the refusal is never lost, nor
        changed because a descriptive fact could not be written. Returns where it was
        logged, or None if it was only counted.
        """
        try:
            self.flush()
        except Exception:  # the summaries stay pending; this refusal is still recorded
            _log.exception("%s: refusal summaries not written yet", self.log.origin)
        if not self.allow(caller):
            self.count(caller, kind, str(essential.get(REASON, "")))
            return None
        try:
            return self.log.append_now(kind, {**essential, **(facts or {})})
        except FedscoreError as error:
            if not facts:
                raise
            _log.warning("%s: facts not loggable (%s); logging the rest", kind, error.reason)
            return self.log.append_now(kind, dict(essential))

    def flush(self, *, everything: bool = False) -> list[LogRef]:
        """Write the summary of every ended interval (with `everything`, of all of them)."""
        now = self.clock()
        with self._lock:
            for caller, tally in list(self._tallies.items()):
                end = tally.start + self.allowance.interval_seconds
                if everything or end <= now:
                    self._close(caller, tally, min(end, now))
                    del self._tallies[caller]
        written: list[LogRef] = []
        with self._writing:
            while True:
                with self._lock:
                    if not self._pending:
                        return written
                    summary = self._pending[0]
                written.append(self._write(summary))
                with self._lock:
                    self._pending.popleft()

    def _write(self, summary: Summary) -> LogRef:
        fields = summary.fields(self.allowance.per_interval)
        try:
            return self.log.append_now(kinds.REFUSALS_SUMMARISED, fields)
        except FedscoreError as error:
            # A certificate name the log will not hold (e.g. one with a 13-digit number):
            # the counts are still written, naming the caller by a hash of its name.
            _log.warning("summary caller not loggable (%s); logging its hash", error.reason)
            del fields["caller"]
            fields["caller_sha256"] = hashlib.sha256(summary.caller.encode()).hexdigest()
            return self.log.append_now(kinds.REFUSALS_SUMMARISED, fields)

    def pending(self) -> int:
        """Summaries of ended intervals not written yet."""
        with self._lock:
            return len(self._pending)

    # --- the periodic flush a server runs --------------------------------------------

    def start(self) -> None:
        """Flush just after every interval boundary, in the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        interval = self.allowance.interval_seconds
        while True:
            now = self.clock()
            boundary = self.allowance.interval_start(now) + interval
            await asyncio.sleep(max(boundary - now, 0.0) + FLUSH_DELAY_SECONDS)
            try:
                self.flush()
            except Exception:  # the counts stay pending and are tried again
                _log.exception("%s: refusal summaries not written yet", self.log.origin)

    async def stop(self) -> None:
        """Stop the periodic flush and write every summary, the interval in progress too."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush(everything=True)
