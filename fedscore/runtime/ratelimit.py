"""Per-caller rate limits: one token bucket per (caller, full method name).

Invariants:
- A caller is the common name of its verified mutual-TLS certificate (its party id), so
  only a certificate holder has a bucket, and one caller's calls never spend another's.
- A bucket starts full (`burst` tokens), refills at `calls_per_second` up to `burst`, and
  a call takes one token; a call that finds less than one is refused with
  `RateLimited`, whose `retry_after_seconds` is when the next token is back, rounded up
  to the millisecond (a caller that waits exactly that long finds one).
- Time comes from an injected monotonic clock; nothing here sleeps, does I/O or holds
  global state. The limiter is used from the server's event loop only.
- Memory is bounded: callers are certificate holders and methods are the registered
  ones; buckets that have refilled completely are forgotten (a new bucket is full too),
  so dropping them changes no decision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fedscore.errors import RateLimited

MonotonicClock = Callable[[], float]

# Buckets kept before the full ones are swept out (a sweep is O(buckets), so rare).
SWEEP_ABOVE_BUCKETS = 4_096


@dataclass(frozen=True)
class RateLimits:
    """How fast one caller may call one method: a sustained rate and a burst."""

    calls_per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.calls_per_second > 0 and math.isfinite(self.calls_per_second)):
            raise ValueError("calls_per_second must be a positive number")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")


# Twice an honest caller's peak: a relying party's Score calls reach ~1,000/s under
# `make bench` (813/s measured, docs/scaling.md) and the national peak is ~1,000/s in all;
# a ScoreBatch stream counts once, however many queries it carries.
DEFAULT_RATE_LIMITS = RateLimits(calls_per_second=2_000.0, burst=4_000)


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; `take` spends one if there is one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float) -> float:
        """Spend one token: 0.0 if there was one, else the seconds until one is back."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class CallLimiter:
    """One `TokenBucket` per (caller, method) under one `RateLimits`."""

    def __init__(self, limits: RateLimits, clock: MonotonicClock = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def take(self, caller: str, method: str) -> None:
        """Spend one of `caller`'s calls of `method`, or raise `RateLimited` with the wait."""
        now = self.clock()
        key = (caller, method)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= SWEEP_ABOVE_BUCKETS:
                self._sweep(now)
            bucket = TokenBucket(self.limits.calls_per_second, self.limits.burst, now)
            self._buckets[key] = bucket
        wait = bucket.take(now)
        if wait > 0.0:
            retry_after = math.ceil(wait * 1000.0) / 1000.0
            raise RateLimited(
                f"{caller or '(no certificate name)'} called {method} more than "
                f"{self.limits.calls_per_second:g} times a second (burst "
                f"{self.limits.burst}); retry in {retry_after:.3f} s",
                retry_after_seconds=retry_after,
            )

    def _sweep(self, now: float) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if not b.full(now)}

    def __len__(self) -> int:
        return len(self._buckets)
