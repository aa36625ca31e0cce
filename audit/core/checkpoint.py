"""Signed checkpoints of a party's log: a C2SP tlog-checkpoint body in a DSSE envelope.

The body is UTF-8 text, each line ending in a newline:

    <origin>                      the party id
    <tree size>                   decimal, no leading zeros
    <root hash>                   standard base64 of the 32-byte RFC 6962 root
    <time>                        Unix seconds, decimal (the one extension line)

Invariants:
- A checkpoint is verified before its body is parsed: the envelope's signature must
  verify under a key the trust registry lists for the checkpoint's party, and the signer,
  the expected origin and the body's origin must be the same party.
- Parsing is strict (exactly four lines, canonical decimals and base64, a 32-byte root),
  so a checkpoint has one byte form and two different bodies never mean the same tree.

Pure: signing and keeping checkpoints of a party's own log is `audit.store.checkpoints`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from audit.core import merkle
from fedscore.errors import InvalidArgument, Unauthenticated
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes, verify_bytes
from keys.keyring import LogKeys
from keys.signing import SigningKey

PAYLOAD_TYPE = "application/vnd.fedscore.checkpoint+text"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_ORIGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


@dataclass(frozen=True)
class Checkpoint:
    """What a party states about its log at one moment: origin, size, root, time."""

    origin: str
    size: int
    root: bytes
    timestamp: int

    def to_bytes(self) -> bytes:
        """The exact body that is signed."""
        if not _ORIGIN.fullmatch(self.origin):
            raise InvalidArgument(f"bad checkpoint origin {self.origin!r}", "BAD_CHECKPOINT")
        if self.size < 0 or self.timestamp < 0 or len(self.root) != merkle.HASH_SIZE:
            raise InvalidArgument("checkpoint size, time or root is invalid", "BAD_CHECKPOINT")
        root = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n{self.timestamp}\n".encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Checkpoint:
        """Parse a body strictly; `InvalidArgument BAD_CHECKPOINT` names what is wrong."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument("checkpoint is not UTF-8 text", "BAD_CHECKPOINT") from exc
        lines = text.split("\n")
        if len(lines) != 5 or lines[4] != "":
            raise InvalidArgument("a checkpoint has exactly four lines", "BAD_CHECKPOINT")
        origin, size, root, timestamp = lines[:4]
        if not _ORIGIN.fullmatch(origin):
            raise InvalidArgument("checkpoint origin is not a party id", "BAD_CHECKPOINT")
        if not (_DECIMAL.fullmatch(size) and _DECIMAL.fullmatch(timestamp)):
            raise InvalidArgument("checkpoint size and time must be decimals", "BAD_CHECKPOINT")
        try:
            root_hash = base64.b64decode(root, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument("checkpoint root is not base64", "BAD_CHECKPOINT") from exc
        checkpoint = cls(origin, int(size), root_hash, int(timestamp))
        if len(root_hash) != merkle.HASH_SIZE or checkpoint.to_bytes() != body:
            raise InvalidArgument("checkpoint is not in canonical form", "BAD_CHECKPOINT")
        return checkpoint

    def sign(self, key: SigningKey) -> Envelope:
        return sign_bytes(PAYLOAD_TYPE, self.to_bytes(), key)

    @classmethod
    def verify(cls, envelope: Envelope, keyring: LogKeys, origin: str) -> Checkpoint:
        """The checkpoint `origin` signed in `envelope`; raise unless it verifies as such."""
        verified = verify_bytes(envelope, PAYLOAD_TYPE, keyring)
        if verified.signer != origin:
            raise Unauthenticated(
                f"checkpoint of {origin!r} is signed by {verified.signer!r}", "WRONG_SIGNER"
            )
        checkpoint = cls.from_bytes(verified.payload)
        if checkpoint.origin != origin:
            raise Unauthenticated(
                f"checkpoint names origin {checkpoint.origin!r}, expected {origin!r}",
                "WRONG_ORIGIN",
            )
        return checkpoint
