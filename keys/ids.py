"""Key ids: the short name under which a public key is listed and looked up.

Invariant: a key id is derived only from the public key bytes (hex of the first 16
bytes of SHA-256), so anyone holding the key can recompute it and nobody can pick one.
"""

from __future__ import annotations

import hashlib

KEY_ID_BYTES = 16


def key_id(public_key: bytes) -> str:
    """Hex of the first 16 bytes of SHA-256 of `public_key` (32 hex characters)."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES].hex()
