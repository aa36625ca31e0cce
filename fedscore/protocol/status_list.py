"""Revocation state: the signed status list plus pushed revocation notices.

Pure: it verifies and applies what it is given; following the registry over the network
is `fedscore.runtime.status_follower`.

Invariants:
- Only the consent registry's key can revoke anything here (its keyring is the only one
  given to `RevocationState`).
- A revocation once seen is never forgotten, even if an older status list arrives.
- A party with no status list fresher than its TTL refuses (fail closed): a revoked
  token is refused within the push latency and never later than the TTL.
"""

from __future__ import annotations

import zlib

from fedscore.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from fedscore.protocol.signed import SignedRevocationNotice, SignedStatusList
from fedscore.v1.consent_pb2 import (
    ConsentToken,
    RevocationNotice,
    StatusList,
)
from fedscore.v1.envelope_pb2 import Envelope
from keys.keyring import RegistryKeys

MIN_STATUS_LIST_BITS = 131_072  # herd privacy: one index among many


def build_status_list(
    issuer: str,
    sequence: int,
    revoked_indexes: set[int],
    size_bits: int,
    ttl_seconds: int,
    now: int,
) -> StatusList:
    """A status list with bit i set for every revoked index i (zlib-compressed)."""
    bits = bytearray((size_bits + 7) // 8)
    for index in revoked_indexes:
        if not 0 <= index < size_bits:
            raise InvalidArgument(f"status index {index} outside list of {size_bits} bits")
        bits[index // 8] |= 0x80 >> (index % 8)
    return StatusList(
        issuer=issuer,
        sequence=sequence,
        issued_at=now,
        ttl_seconds=ttl_seconds,
        size_bits=size_bits,
        compressed_bits=zlib.compress(bytes(bits), 9),
    )


def _bit(bits: bytes, index: int) -> bool:
    return index // 8 < len(bits) and bool(bits[index // 8] & (0x80 >> (index % 8)))


class RevocationState:
    """What one checking party knows about revoked consent tokens."""

    def __init__(self, registry_keys: RegistryKeys) -> None:
        self._keys = registry_keys
        self._bits = b""
        self._sequence = -1
        self._issued_at = 0
        self._ttl = 0
        self._revoked_indexes: set[int] = set()
        self._revoked_tokens: set[str] = set()

    def use_registry_keys(self, registry_keys: RegistryKeys) -> None:
        """Verify lists and notices under `registry_keys` from now on (a new registry
        version); what is known already (revoked tokens, the last list) is kept."""
        self._keys = registry_keys

    @property
    def sequence(self) -> int:
        return self._sequence

    def apply_status_list(self, envelope: Envelope, now: int) -> None:
        """Verify and adopt a signed status list unless an equal or newer one is held."""
        signed = SignedStatusList.verify(envelope, self._keys, now)
        status_list = signed.status_list
        if status_list.sequence < self._sequence:
            return
        self._bits = signed.bits
        self._sequence = status_list.sequence
        self._issued_at = status_list.issued_at
        self._ttl = status_list.ttl_seconds

    def apply_notice(self, envelope: Envelope) -> RevocationNotice:
        """Verify a pushed revocation and apply it at once."""
        notice = SignedRevocationNotice.verify(envelope, self._keys).notice
        self._revoked_indexes.add(notice.status_index)
        self._revoked_tokens.add(notice.token_id)
        return notice

    def fresh_until(self) -> int:
        return self._issued_at + self._ttl if self._sequence >= 0 else 0

    def check(self, token: ConsentToken, now: int) -> None:
        """Raise if the token is revoked, or if this party cannot know (stale list)."""
        if (
            token.token_id in self._revoked_tokens
            or token.status_index in self._revoked_indexes
            or _bit(self._bits, token.status_index)
        ):
            raise PermissionDenied(
                f"consent {token.token_id} was revoked by the citizen", reason="CONSENT_REVOKED"
            )
        if now > self.fresh_until():
            raise FailedPrecondition(
                "no consent status list fresher than its time-to-live; refusing until one arrives",
                reason="STATUS_LIST_STALE",
            )
