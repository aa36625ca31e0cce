"""Admission and rotation requests: what an organisation sends the federation authority.

A request names the participant, its role, its endpoint, its public keys and a CSR for
its TLS key; nothing in it is secret. It is signed with the signing key it asks to have
listed (proof that the organisation holds it) and, for a rotation, endorsed by the key
it replaces (proof that the current holder asks for the change).

Invariants:
- The signing key that verifies the request is the one the request names. Reading that
  key needs the payload parsed first; nothing else in it is used before both signatures
  (and the CSR's own signature and subject) have verified.
- Every problem is `InvalidArgument` or `Unauthenticated` with reason `BAD_REQUEST`
  (or `BAD_CSR` from `keys.tls`); nothing returns a bool.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from fedscore.errors import InvalidArgument, Unauthenticated
from fedscore.v1.trust_pb2 import AdmissionRequest, KeyRequest, Role
from keys.envelope import sign_message, verify_message
from keys.keyring import Keyring
from keys.signing import SigningKey, VerifyKey
from keys.tls import csr_public_key_pem, issue_from_csr


def make_request(
    request: AdmissionRequest, key: SigningKey, replaces: SigningKey | None = None
) -> KeyRequest:
    """`request` signed by `key` (which it must name) and, for a rotation, by `replaces`."""
    if bytes(request.signing_public_key) != key.verify_key.encode():
        raise InvalidArgument("a request must name the key that signs it", reason="BAD_REQUEST")
    signed = KeyRequest(request=sign_message(request, key))
    if replaces is not None:
        if bytes(request.replaces_signing_public_key) != replaces.verify_key.encode():
            raise InvalidArgument("a rotation must name the key it replaces", reason="BAD_REQUEST")
        signed.endorsement.CopyFrom(sign_message(request, replaces))
    return signed


def read_request(raw: bytes) -> KeyRequest:
    """A request file's bytes as a `KeyRequest` (`BAD_REQUEST` if they are not one)."""
    signed = KeyRequest()
    try:
        signed.ParseFromString(raw)
    except DecodeError as exc:
        raise InvalidArgument("not a fedscore admission request", reason="BAD_REQUEST") from exc
    if not signed.request.payload:
        raise InvalidArgument("not a fedscore admission request", reason="BAD_REQUEST")
    return signed


def _claimed(signed: KeyRequest) -> AdmissionRequest:
    claimed = AdmissionRequest()
    try:
        claimed.ParseFromString(bytes(signed.request.payload))
    except DecodeError as exc:
        raise InvalidArgument("request payload is malformed", reason="BAD_REQUEST") from exc
    return claimed


def _verify_by(signed_part: object, key_bytes: bytes, who: str) -> AdmissionRequest:
    try:
        key = VerifyKey.from_bytes(key_bytes)
    except InvalidArgument as exc:
        raise InvalidArgument(f"the {who} key is malformed", reason="BAD_REQUEST") from exc
    keyring = Keyring.of({who: key}, purpose=f"admission request ({who} key)")
    try:
        return verify_message(signed_part, AdmissionRequest, keyring).payload  # type: ignore[arg-type]
    except Unauthenticated as exc:
        raise Unauthenticated(
            f"the request is not signed by its {who} key ({exc.reason})", reason="BAD_REQUEST"
        ) from exc


def verify_request(signed: KeyRequest, *, rotation: bool = False) -> AdmissionRequest:
    """The request, once its signatures and CSR verified (see the module's invariants)."""
    claimed = _claimed(signed)
    request = _verify_by(signed.request, bytes(claimed.signing_public_key), "new")
    if rotation or request.replaces_signing_public_key:
        if not request.replaces_signing_public_key or not signed.endorsement.payload:
            raise InvalidArgument(
                "a rotation request must name and be endorsed by the key it replaces",
                reason="BAD_REQUEST",
            )
        endorsed = _verify_by(
            signed.endorsement, bytes(request.replaces_signing_public_key), "current"
        )
        if endorsed != request:
            raise Unauthenticated("the endorsement is of another request", reason="BAD_REQUEST")
    if request.role == Role.ROLE_UNSPECIFIED or request.role not in Role.values():
        raise InvalidArgument("the request names no known role", reason="BAD_REQUEST")
    if len(request.box_public_key) not in (0, 32):
        raise InvalidArgument("the request's box key is malformed", reason="BAD_REQUEST")
    csr_public_key_pem(bytes(request.csr_pem))
    return request


def certificate_for(
    request: AdmissionRequest, ca_key_pem: bytes, ca_cert_pem: bytes, hosts: list[str]
) -> bytes:
    """The TLS certificate the authority issues for a verified request."""
    return issue_from_csr(
        ca_key_pem, ca_cert_pem, bytes(request.csr_pem), request.participant_id, hosts
    )
