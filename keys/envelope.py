"""Signed envelopes (DSSE v1 pre-authentication encoding over protobuf payloads).

Every signed object travels as a `fedscore.v1.Envelope`: payload_type, payload (the exact
serialized bytes), key_id, signature. The signature covers

    PAE(type, body) = b"DSSEv1 " + len(type) + b" " + type + b" " + len(body) + b" " + body

with lengths in ASCII decimal, so a signature made for one payload type can never be
accepted as another, and no bytes are parsed before they verify.

Verification order (each step raises; nothing returns a bool):
1. empty signature or key id        -> Unauthenticated UNSIGNED
2. payload type differs             -> Unauthenticated WRONG_PAYLOAD_TYPE
3. key id not in the given keyring  -> Unauthenticated UNKNOWN_SIGNER
4. signature does not verify        -> Unauthenticated BAD_SIGNATURE
5. only then parse the payload      -> InvalidArgument MALFORMED_PAYLOAD
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]

from fedscore.errors import InvalidArgument, Unauthenticated
from fedscore.v1.envelope_pb2 import Envelope
from keys.keyring import Keyring
from keys.signing import SigningKey

M = TypeVar("M", bound=Message)
P = TypeVar("P")


@dataclass(frozen=True)
class Verified(Generic[P]):
    """A payload whose signature verified, with who signed it and with which key."""

    payload: P
    signer: str
    key_id: str


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of `payload_type` and `payload`."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def sign_bytes(payload_type: str, payload: bytes, key: SigningKey) -> Envelope:
    """An envelope carrying `payload` as-is, signed over PAE(payload_type, payload)."""
    if not payload_type:
        raise InvalidArgument("payload type must not be empty", reason="WRONG_PAYLOAD_TYPE")
    return Envelope(
        payload_type=payload_type,
        payload=payload,
        key_id=key.key_id,
        signature=key.sign(pae(payload_type, payload)),
    )


def sign_message(message: Message, key: SigningKey) -> Envelope:
    """Serialize `message` once and sign it under its full protobuf name."""
    # Deterministic serialization: the same message always yields the same signed bytes.
    payload = message.SerializeToString(deterministic=True)
    return sign_bytes(message.DESCRIPTOR.full_name, payload, key)


def verify_bytes(envelope: Envelope, payload_type: str, keyring: Keyring) -> Verified[bytes]:
    """Verify `envelope` as `payload_type` signed by a key in `keyring`; return the raw bytes."""
    if not envelope.signature or not envelope.key_id:
        raise Unauthenticated(f"{payload_type} envelope is not signed", reason="UNSIGNED")
    if envelope.payload_type != payload_type:
        raise Unauthenticated(
            f"expected payload type {payload_type!r}, got {envelope.payload_type!r}",
            reason="WRONG_PAYLOAD_TYPE",
        )
    signer, verify_key = keyring.lookup(envelope.key_id)
    verify_key.verify(pae(envelope.payload_type, envelope.payload), envelope.signature)
    return Verified(payload=bytes(envelope.payload), signer=signer, key_id=envelope.key_id)


def verify_message(envelope: Envelope, message_cls: type[M], keyring: Keyring) -> Verified[M]:
    """Verify `envelope` as a `message_cls` signed by a key in `keyring`, then parse it."""
    payload_type: str = message_cls.DESCRIPTOR.full_name
    verified = verify_bytes(envelope, payload_type, keyring)
    message = message_cls()
    try:
        message.ParseFromString(verified.payload)
    except DecodeError as exc:
        raise InvalidArgument(
            f"signed payload is not a valid {payload_type}", reason="MALFORMED_PAYLOAD"
        ) from exc
    return Verified(payload=message, signer=verified.signer, key_id=verified.key_id)
