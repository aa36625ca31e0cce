"""Sealed subjects: a national ID readable only by one agency, and only for one token.

The consent registry seals a `fedscore.v1.SubjectSeal` (token id, agency id, national ID)
to each participating agency's box key with a SealedBox. The coordinator forwards the
blob without being able to read it.

Invariants:
- `open_subject` returns the national ID only if the blob opens with this agency's key
  AND the token id and agency id inside equal the ones the caller expects; a blob copied
  into another token, or to another agency, is refused (`PermissionDenied SEAL_MISMATCH`).
- A blob that does not open or does not parse is `InvalidArgument BAD_SEAL`.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from fedscore.errors import InvalidArgument, PermissionDenied
from fedscore.v1.consent_pb2 import SubjectSeal
from keys.box import BoxKeyPair, seal_to
from keys.national_id import validate_national_id


def seal_subject(
    token_id: str, agency_id: str, national_id: str, agency_box_public: bytes
) -> bytes:
    """Seal the (validated) national ID to one agency, bound to `token_id` and `agency_id`."""
    if not token_id or not agency_id:
        raise InvalidArgument("a seal needs a token id and an agency id", reason="BAD_SEAL")
    seal = SubjectSeal(
        token_id=token_id,
        agency_id=agency_id,
        national_id=validate_national_id(national_id),
    )
    return seal_to(agency_box_public, seal.SerializeToString(deterministic=True))


def open_subject(blob: bytes, box: BoxKeyPair, token_id: str, agency_id: str) -> str:
    """The national ID sealed in `blob` for this agency and token."""
    plaintext = box.open_sealed(blob)
    seal = SubjectSeal()
    try:
        seal.ParseFromString(plaintext)
    except DecodeError as exc:
        raise InvalidArgument("sealed subject does not parse", reason="BAD_SEAL") from exc
    if seal.token_id != token_id:
        raise PermissionDenied("sealed subject belongs to another token", reason="SEAL_MISMATCH")
    if seal.agency_id != agency_id:
        raise PermissionDenied(
            "sealed subject is addressed to another agency", reason="SEAL_MISMATCH"
        )
    try:
        return validate_national_id(seal.national_id)
    except InvalidArgument as exc:
        raise InvalidArgument("sealed subject holds no valid ID", reason="BAD_SEAL") from exc
