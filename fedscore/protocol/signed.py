"""One type per kind of signed object the consent protocol carries, and one way to open it.

Each type has one constructor, `verify`, that (1) checks the envelope under the keyring of
the one kind of party that may sign it — the keyring's type says whose keys it holds
(`keys.keyring`), so passing another party's keys is a type error, and a runtime error
for untyped callers —, (2) only then parses the payload, and (3) checks the invariants of
the parsed message; each step raises, none returns a bool. What a caller holds is
therefore always a verified, parsed and checked object, never bytes it might forget to
verify (in the manner of sigstore-python's `Bundle`).

Kinds here: the consent registry's status list, revocation notice and receipt, and the
coordinator's score result. Consent tokens are `fedscore.protocol.tokens`, a relying
party's request `fedscore.protocol.requests`, the questions and answers between the
coordinator and the nodes `fedscore.protocol.questions`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Self, TypeVar

from google.protobuf.message import Message

from fedscore.errors import InvalidArgument
from fedscore.v1.consent_pb2 import ConsentReceipt, RevocationNotice, StatusList
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ScoreResult
from keys.envelope import Verified, verify_message
from keys.keyring import CoordinatorKeys, Keyring, RegistryKeys

M = TypeVar("M", bound=Message)

# How far ahead of a checker's clock a signer's clock may run.
CLOCK_SKEW_SECONDS = 30
RECEIPT_GRANTED = "granted"
RECEIPT_REVOKED = "revoked"
RECEIPT_EVENTS = (RECEIPT_GRANTED, RECEIPT_REVOKED)


def open_signed(
    envelope: Envelope, message_cls: type[M], keys: Keyring, whose: type[Keyring]
) -> Verified[M]:
    """Verify `envelope` under `keys`, which must be `whose` keys, then parse it."""
    if not isinstance(keys, whose):
        raise TypeError(
            f"a {message_cls.DESCRIPTOR.full_name} verifies only under {whose.__name__}, "
            f"not {type(keys).__name__}"
        )
    return verify_message(envelope, message_cls, keys)


def _refuse_unless(condition: bool, what: str, reason: str) -> None:
    if not condition:
        raise InvalidArgument(what, reason=reason)


@dataclass(frozen=True)
class SignedStatusList:
    """The consent registry's list of revoked status indexes, decompressed."""

    status_list: StatusList
    bits: bytes
    signer: str

    @classmethod
    def verify(cls, envelope: Envelope, keys: RegistryKeys, now: int) -> Self:
        verified = open_signed(envelope, StatusList, keys, RegistryKeys)
        status_list = verified.payload
        _refuse_unless(
            status_list.issued_at <= now + CLOCK_SKEW_SECONDS,
            "status list issued in the future",
            "BAD_STATUS_LIST",
        )
        _refuse_unless(
            status_list.issuer == verified.signer,
            f"status list names issuer {status_list.issuer!r} but {verified.signer} signed it",
            "BAD_STATUS_LIST",
        )
        try:
            bits = zlib.decompress(status_list.compressed_bits)
        except zlib.error as exc:
            raise InvalidArgument("status list bits do not decompress", "BAD_STATUS_LIST") from exc
        _refuse_unless(
            len(bits) * 8 >= status_list.size_bits,
            f"status list holds {len(bits) * 8} bits, fewer than its {status_list.size_bits}",
            "BAD_STATUS_LIST",
        )
        return cls(status_list, bits, verified.signer)


@dataclass(frozen=True)
class SignedRevocationNotice:
    """The consent registry's word that one token is revoked, pushed as it happens."""

    notice: RevocationNotice
    signer: str

    @classmethod
    def verify(cls, envelope: Envelope, keys: RegistryKeys) -> Self:
        verified = open_signed(envelope, RevocationNotice, keys, RegistryKeys)
        notice = verified.payload
        _refuse_unless(bool(notice.token_id), "revocation notice names no token", "BAD_NOTICE")
        _refuse_unless(
            notice.issuer == verified.signer,
            f"revocation notice names issuer {notice.issuer!r} but {verified.signer} signed it",
            "BAD_NOTICE",
        )
        return cls(notice, verified.signer)


@dataclass(frozen=True)
class SignedReceipt:
    """What a citizen keeps of a grant or a withdrawal, signed by the consent registry."""

    receipt: ConsentReceipt
    envelope: Envelope
    signer: str

    @classmethod
    def verify(cls, envelope: Envelope, keys: RegistryKeys) -> Self:
        verified = open_signed(envelope, ConsentReceipt, keys, RegistryKeys)
        receipt = verified.payload
        _refuse_unless(
            bool(receipt.token_id and receipt.receipt_id),
            "receipt names no token or has no id",
            "BAD_RECEIPT",
        )
        _refuse_unless(
            receipt.event in RECEIPT_EVENTS,
            f"receipt event {receipt.event!r} is not one of {', '.join(RECEIPT_EVENTS)}",
            "BAD_RECEIPT",
        )
        return cls(receipt, envelope, verified.signer)


@dataclass(frozen=True)
class SignedScoreResult:
    """The coordinator's signed answer to a relying party's request: one release."""

    result: ScoreResult
    signer: str

    @classmethod
    def verify(cls, envelope: Envelope, keys: CoordinatorKeys) -> Self:
        verified = open_signed(envelope, ScoreResult, keys, CoordinatorKeys)
        result = verified.payload
        _refuse_unless(
            bool(result.query_id) and result.WhichOneof("release") is not None,
            "the coordinator's result names no query or releases nothing",
            "BAD_RESULT",
        )
        return cls(result, verified.signer)
