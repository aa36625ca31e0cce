"""A bounded memo: results of a pure function of exact bytes, kept for the most recent keys.

Used where the query path would otherwise repeat expensive work on the same bytes (a
consent token used many times, a sealed subject opened again): the value stored is what
the work computed, so a hit returns exactly what a miss would have.

Invariants:
- At most `capacity` entries; the least recently used is dropped first.
- Only successful results are stored: a caller stores after its work succeeded, so a
  failure is always recomputed (and fails again).
- Safe to use from several threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class BoundedMemo(Generic[V]):
    """Key -> value for the `capacity` most recently used keys."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a memo needs room for at least one entry")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        # Counters for operators and benchmarks.
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def values(self) -> list[V]:
        """A snapshot of the values kept, least recently used first."""
        with self._lock:
            return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
