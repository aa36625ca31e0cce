"""Consent-token verification shared by every party that checks a token.

A token is valid only if the consent registry signed exactly these bytes and `now` is
inside its window. Revocation is checked separately (`fedscore.protocol.status_list`), because it
changes after issue while the signature does not.

A token is typically used many times (every privilege check of one person at one
partner), so each registry keyring remembers the tokens whose signature it verified, by
their exact signed bytes (`fedscore.memo`): the signature of the same bytes under the
same keys cannot verify differently the next time. The validity window is checked on
every use, as is revocation by the caller.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

from fedscore.errors import PermissionDenied
from fedscore.memo import BoundedMemo
from fedscore.protocol.signed import open_signed
from fedscore.v1.consent_pb2 import ConsentToken
from fedscore.v1.envelope_pb2 import Envelope
from keys.keyring import RegistryKeys
from keys.registry import TrustView

# Tokens remembered per registry keyring (a few KB each).
VERIFIED_TOKENS_KEPT = 4096


@dataclass(frozen=True)
class VerifiedToken:
    token: ConsentToken
    envelope: Envelope
    digest: bytes  # SHA-256 of the signed payload bytes


# Per keyring (a trust view's keys never change): signed bytes -> (token, payload digest).
# The parsed token is shared between uses: nothing on the query path modifies it.
_verified: weakref.WeakKeyDictionary[RegistryKeys, BoundedMemo[tuple[ConsentToken, bytes]]] = (
    weakref.WeakKeyDictionary()
)


def remembered(keyring: RegistryKeys) -> BoundedMemo[tuple[ConsentToken, bytes]]:
    """The tokens `keyring` verified, by their signed bytes (for operators and tests)."""
    memo = _verified.get(keyring)
    if memo is None:
        memo = _verified.setdefault(keyring, BoundedMemo(VERIFIED_TOKENS_KEPT))
    return memo


def _signed_token(envelope: Envelope, keyring: RegistryKeys) -> tuple[ConsentToken, bytes]:
    """The token the registry signed in `envelope` and its payload digest; raise if unsigned."""
    memo = remembered(keyring)
    key = (envelope.payload_type, envelope.payload, envelope.key_id, envelope.signature)
    known = memo.get(key)
    if known is not None:
        return known
    token = open_signed(envelope, ConsentToken, keyring, RegistryKeys).payload
    verified = (token, hashlib.sha256(envelope.payload).digest())
    memo.put(key, verified)
    return verified


def verify_token(envelope: Envelope, trust: TrustView, now: int) -> VerifiedToken:
    """Verify the registry's signature, then the validity window; raise on any failure."""
    token, digest = _signed_token(envelope, trust.registry_keys())
    if now < token.not_before:
        raise PermissionDenied(
            f"consent token {token.token_id} is not valid before {token.not_before}",
            reason="TOKEN_NOT_YET_VALID",
        )
    if now > token.not_after:
        raise PermissionDenied(
            f"consent token {token.token_id} expired at {token.not_after}",
            reason="TOKEN_EXPIRED",
        )
    return VerifiedToken(token=token, envelope=envelope, digest=digest)
