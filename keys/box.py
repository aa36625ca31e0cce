"""X25519 box keys (PyNaCl): sealing to an agency, and pairwise seeds between nodes.

Invariants:
- `shared_seed(peer, info)` is X25519(own, peer) fed through HKDF-SHA256 with `info`, so
  both ends derive the same 32 bytes, and different `info` strings give unrelated seeds.
  A peer key that yields the all-zero shared secret (a low-order point) is refused.
- `open_sealed` raises `InvalidArgument("BAD_SEAL")` for anything it cannot open; it
  never returns partial plaintext.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.public
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedscore.errors import InvalidArgument

KEY_BYTES = 32
SEED_BYTES = 32
# Fixed HKDF salt: separates our derivations from any other use of the same X25519 keys.
_HKDF_SALT = b"fedscore.v1 box shared seed"


def _public_key(public: bytes) -> nacl.public.PublicKey:
    if len(public) != KEY_BYTES:
        raise InvalidArgument(
            f"an X25519 public key is {KEY_BYTES} bytes, got {len(public)}", reason="BAD_KEY"
        )
    return nacl.public.PublicKey(bytes(public))


class BoxKeyPair:
    """An X25519 key pair used for sealed boxes and pairwise mask seeds."""

    __slots__ = ("_private",)

    def __init__(self, private: nacl.public.PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> BoxKeyPair:
        return cls(nacl.public.PrivateKey.generate())

    @classmethod
    def from_private(cls, raw: bytes) -> BoxKeyPair:
        if len(raw) != KEY_BYTES:
            raise InvalidArgument(
                f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}", reason="BAD_KEY"
            )
        return cls(nacl.public.PrivateKey(bytes(raw)))

    @property
    def private_bytes(self) -> bytes:
        return bytes(self._private)

    @property
    def public_bytes(self) -> bytes:
        return bytes(self._private.public_key)

    def open_sealed(self, blob: bytes) -> bytes:
        """Open a SealedBox addressed to this key; `InvalidArgument("BAD_SEAL")` otherwise."""
        try:
            return bytes(nacl.public.SealedBox(self._private).decrypt(blob))
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise InvalidArgument(
                "sealed blob cannot be opened with this key", reason="BAD_SEAL"
            ) from exc

    def shared_seed(self, peer_public: bytes, info: bytes) -> bytes:
        """32 bytes both ends derive: HKDF-SHA256(X25519(own, peer), info)."""
        peer = _public_key(peer_public)
        try:
            shared = nacl.bindings.crypto_scalarmult(self.private_bytes, bytes(peer))
        except (nacl.exceptions.CryptoError, RuntimeError) as exc:
            raise InvalidArgument(
                "peer box key gives no shared secret (low-order point)", reason="BAD_KEY"
            ) from exc
        if shared == bytes(KEY_BYTES):
            raise InvalidArgument(
                "peer box key gives no shared secret (low-order point)", reason="BAD_KEY"
            )
        hkdf = HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=_HKDF_SALT, info=info)
        return hkdf.derive(shared)

    def __repr__(self) -> str:
        return f"BoxKeyPair(public={self.public_bytes.hex()[:16]}...)"


def seal_to(public: bytes, plaintext: bytes) -> bytes:
    """Encrypt `plaintext` so only the holder of `public`'s private key can read it."""
    return bytes(nacl.public.SealedBox(_public_key(public)).encrypt(plaintext))
