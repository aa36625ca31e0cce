"""Additive shares mod 2^64 between the two aggregators of a statistics release (ADR 0019).

A node holds one masked value per bin, v = (count + pairwise mask) mod 2^64
(`keys.masks`). It splits each into two shares with c + h = v (mod 2^64): c for the
coordinator, h for the helper aggregator. One of the two is drawn uniformly at random, r;
the other is v - r. Whichever aggregator receives the drawn one, each share alone is
uniformly distributed and independent of v (r is, and v - r is r shifted by a constant),
so neither aggregator's shares say anything about any count; the two together give back
only v, still under the pairwise mask, whose sum over every agency is the federated count.

Randomness: `RandomShares` draws from the operating system (`secrets`). `SeededShares`
derives its draws from a seed (SHAKE-256 of the seed, the agency id and a counter), so a
test can fix what ONE aggregator receives (`drawn_for`) and show that it is byte for byte
the same whatever the counts: the simulation argument, run. Only a test gives a node a
`SeededShares` (`node.server.start(share_source=...)`); `fedscore serve` never does.

Sealing: the helper's shares travel through the coordinator, sealed to the helper's box
key (`seal_shares`: an X25519 SealedBox over LP(label) || LP(query hash) || LP(agency id)
|| the shares, 8 bytes each, big-endian), so they are bound to one question and one node:
`open_shares` refuses a blob sealed for another question or agency (SHARE_MISMATCH), one
that does not open, has no such layout or another number of bins (BAD_SHARE).

Pure: no transport, no clock, no file.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from fedscore.errors import InvalidArgument, PermissionDenied
from keys.box import BoxKeyPair, seal_to
from keys.masks import DIGEST_BYTES, MODULUS

SHARE_BYTES = 8
_SEAL_LABEL = b"fedscore.v1 helper shares"
_SEED_LABEL = b"fedscore.v1 seeded shares"


class Aggregator(Enum):
    """Who receives a share."""

    COORDINATOR = "coordinator"
    HELPER = "helper"


class ShareSource(Protocol):
    """Where a node's drawn shares come from, and which aggregator receives them."""

    @property
    def drawn_for(self) -> Aggregator: ...

    def draw(self, agency_id: str, count: int) -> list[int]:
        """`count` values uniform in [0, 2^64)."""
        ...


def pack(values: Sequence[int]) -> bytes:
    """Each value (mod 2^64) as 8 big-endian bytes."""
    return b"".join((value % MODULUS).to_bytes(SHARE_BYTES, "big") for value in values)


def unpack(raw: bytes) -> list[int]:
    """The values `pack` wrote; `InvalidArgument BAD_SHARE` for a length not a multiple of 8."""
    if len(raw) % SHARE_BYTES:
        raise InvalidArgument(f"{len(raw)} bytes are no whole shares", reason="BAD_SHARE")
    return [
        int.from_bytes(raw[i : i + SHARE_BYTES], "big") for i in range(0, len(raw), SHARE_BYTES)
    ]


@dataclass(frozen=True)
class RandomShares:
    """Production: every draw from the operating system's CSPRNG."""

    drawn_for: Aggregator = Aggregator.COORDINATOR

    def draw(self, agency_id: str, count: int) -> list[int]:
        return unpack(secrets.token_bytes(SHARE_BYTES * count))


class SeededShares:
    """Tests only: the n-th draw of an agency is SHAKE-256(label, seed, agency id, n), so two
    runs over different data hand `drawn_for` the very same shares."""

    def __init__(self, seed: bytes, drawn_for: Aggregator = Aggregator.COORDINATOR) -> None:
        self._seed = bytes(seed)
        self._drawn_for = drawn_for
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def drawn_for(self) -> Aggregator:
        return self._drawn_for

    def draw(self, agency_id: str, count: int) -> list[int]:
        with self._lock:
            n = self._counters.get(agency_id, 0)
            self._counters[agency_id] = n + 1
        stream = hashlib.shake_256(
            _lp(_SEED_LABEL) + _lp(self._seed) + _lp(agency_id.encode()) + _lp(n.to_bytes(8))
        )
        return unpack(stream.digest(SHARE_BYTES * count))


@dataclass(frozen=True)
class Shares:
    """One node's shares of every bin: the coordinator's and the helper's."""

    coordinator: list[int]
    helper: list[int]


def split(values: Sequence[int], source: ShareSource, agency_id: str) -> Shares:
    """Split each value into two additive shares mod 2^64, one of them drawn."""
    drawn = source.draw(agency_id, len(values))
    if len(drawn) != len(values):
        raise InvalidArgument("the share source drew the wrong number of shares", "BAD_SHARE")
    rest = [(value - r) % MODULUS for value, r in zip(values, drawn, strict=True)]
    if source.drawn_for is Aggregator.COORDINATOR:
        return Shares(coordinator=drawn, helper=rest)
    return Shares(coordinator=rest, helper=drawn)


def sum_shares(columns: Iterable[Sequence[int]], width: int) -> list[int]:
    """Per bin, the sum mod 2^64 of every node's share (each a list of `width` values)."""
    sums = [0] * width
    for shares in columns:
        if len(shares) != width:
            raise InvalidArgument(f"{len(shares)} shares for {width} bins", reason="BAD_SHARE")
        sums = [(total + share) % MODULUS for total, share in zip(sums, shares, strict=True)]
    return sums


def as_signed(value: int) -> int:
    """A value mod 2^64 read as a two's-complement 64-bit integer (noise may be negative)."""
    value %= MODULUS
    return value - MODULUS if value >= MODULUS // 2 else value


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _context(query_hash: bytes, agency_id: str) -> bytes:
    if len(query_hash) != DIGEST_BYTES or not agency_id:
        raise InvalidArgument("shares are sealed to a SHA-256 and an agency", "BAD_SHARE")
    return _lp(_SEAL_LABEL) + _lp(query_hash) + _lp(agency_id.encode())


def seal_shares(
    helper_public: bytes, query_hash: bytes, agency_id: str, shares: Sequence[int]
) -> bytes:
    """The helper's shares of one node's answer, readable by the helper alone."""
    return seal_to(helper_public, _context(query_hash, agency_id) + pack(shares))


def open_shares(
    blob: bytes, box: BoxKeyPair, query_hash: bytes, agency_id: str, width: int
) -> list[int]:
    """The shares sealed in `blob` to this helper, for this question and agency, one per bin."""
    try:
        plaintext = box.open_sealed(blob)
    except InvalidArgument as exc:
        raise InvalidArgument("the sealed shares cannot be opened", reason="BAD_SHARE") from exc
    context = _context(query_hash, agency_id)
    if not plaintext.startswith(_lp(_SEAL_LABEL)):
        raise InvalidArgument("the sealed blob holds no shares", reason="BAD_SHARE")
    if not plaintext.startswith(context):
        raise PermissionDenied(
            "the shares were sealed for another question or agency", reason="SHARE_MISMATCH"
        )
    shares = unpack(plaintext[len(context) :])
    if len(shares) != width:
        raise InvalidArgument(f"{len(shares)} shares for {width} bins", reason="BAD_SHARE")
    return shares
