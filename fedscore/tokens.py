"""Consent-token verification shared by every party that checks a token.

A token is valid only if the consent registry signed exactly these bytes and `now` is
inside its window. Revocation is checked separately (`fedscore.status`), because it
changes after issue while the signature does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fedscore.errors import PermissionDenied
from fedscore.v1.consent_pb2 import ConsentToken
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Role
from keys.envelope import verify_message
from keys.registry import TrustView


@dataclass(frozen=True)
class VerifiedToken:
    token: ConsentToken
    envelope: Envelope
    digest: bytes  # SHA-256 of the signed payload bytes


def verify_token(envelope: Envelope, trust: TrustView, now: int) -> VerifiedToken:
    """Verify the registry's signature, then the validity window; raise on any failure."""
    verified = verify_message(envelope, ConsentToken, trust.keyring(Role.ROLE_CONSENT_REGISTRY))
    token = verified.payload
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
    return VerifiedToken(
        token=token, envelope=envelope, digest=hashlib.sha256(envelope.payload).digest()
    )
