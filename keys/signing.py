"""Ed25519 signing and verify keys (PyNaCl), as small typed classes.

Invariants:
- `VerifyKey.verify` raises `Unauthenticated("BAD_SIGNATURE")`; it never returns a bool,
  so a forgotten check cannot pass silently.
- A key's id is `keys.ids.key_id` of its 32 public bytes; the private seed never leaves
  this object except through `.seed`, which only the key file code should read.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing

from fedscore.errors import InvalidArgument, Unauthenticated
from keys.ids import key_id

KEY_BYTES = 32
SIGNATURE_BYTES = 64


class VerifyKey:
    """An Ed25519 public key that verifies detached signatures."""

    __slots__ = ("_key",)

    def __init__(self, key: nacl.signing.VerifyKey) -> None:
        self._key = key

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        if len(raw) != KEY_BYTES:
            raise InvalidArgument(
                f"an Ed25519 verify key is {KEY_BYTES} bytes, got {len(raw)}", reason="BAD_KEY"
            )
        return cls(nacl.signing.VerifyKey(bytes(raw)))

    def encode(self) -> bytes:
        return bytes(self._key)

    @property
    def key_id(self) -> str:
        return key_id(self.encode())

    def verify(self, data: bytes, signature: bytes) -> None:
        """Raise `Unauthenticated("BAD_SIGNATURE")` unless `signature` is valid over `data`."""
        if len(signature) != SIGNATURE_BYTES:
            raise Unauthenticated(
                f"signature is {len(signature)} bytes, expected {SIGNATURE_BYTES}",
                reason="BAD_SIGNATURE",
            )
        try:
            self._key.verify(data, signature)
        except nacl.exceptions.BadSignatureError as exc:
            raise Unauthenticated(
                f"signature does not verify under key {self.key_id}", reason="BAD_SIGNATURE"
            ) from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and self.encode() == other.encode()

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        return f"VerifyKey({self.key_id})"


class SigningKey:
    """An Ed25519 private key. Deterministic: one seed, one key, one signature per message."""

    __slots__ = ("_key", "_key_id")

    def __init__(self, key: nacl.signing.SigningKey) -> None:
        self._key = key
        # Every envelope names the key id: derived once, not per signature.
        self._key_id = key_id(bytes(key.verify_key))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != KEY_BYTES:
            raise InvalidArgument(
                f"an Ed25519 seed is {KEY_BYTES} bytes, got {len(seed)}", reason="BAD_KEY"
            )
        return cls(nacl.signing.SigningKey(bytes(seed)))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self._key.verify_key)

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, data: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature over `data`."""
        return bytes(self._key.sign(data).signature)

    def __repr__(self) -> str:
        # Never print the seed.
        return f"SigningKey({self.key_id})"
