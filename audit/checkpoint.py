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
- A party never signs two checkpoints inconsistent with each other. `CheckpointSigner`
  keeps every checkpoint it signs in the party's database and signs a new one only after
  re-hashing every entry added since the last one and proving (RFC 6962 consistency
  proof) that the new tree extends it; a shorter log or a different history is refused
  with LOG_TRUNCATED or LOG_INCONSISTENT, and nothing is signed.
- Checkpoint times never go backwards.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, LargeBinary, Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

from audit import merkle
from audit.log import EventLog
from fedscore.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from fedscore.runtime.db import create_tables
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes, verify_bytes
from keys.keyring import Keyring
from keys.signing import SigningKey

PAYLOAD_TYPE = "application/vnd.fedscore.checkpoint+text"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_ORIGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
# Entries re-hashed per read when a signer checks what was added since its last checkpoint.
_CHECK_CHUNK = 10_000


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
    def verify(cls, envelope: Envelope, keyring: Keyring, origin: str) -> Checkpoint:
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


class SignedCheckpoint(SQLModel, table=True):
    """A checkpoint this party signed, kept so it never signs an inconsistent one."""

    __tablename__ = "audit_checkpoint"

    size: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    root: str
    signed_at: int = Field(sa_type=BigInteger)
    envelope: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


SIGNED_CHECKPOINT: Table = SignedCheckpoint.__table__  # type: ignore[attr-defined]


class CheckpointSigner:
    """Signs checkpoints of one party's log, each consistent with every earlier one."""

    def __init__(
        self, log: EventLog, key: SigningKey, clock: Callable[[], float] = time.time
    ) -> None:
        self.log = log
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()
        create_tables(log.engine, [SIGNED_CHECKPOINT])

    def last(self) -> tuple[Checkpoint, Envelope] | None:
        """The latest checkpoint this party signed, if any."""
        with Session(self.log.engine) as session:
            top = session.execute(select(func.max(SIGNED_CHECKPOINT.c.size))).scalar_one()
            if top is None:
                return None
            row = session.get(SignedCheckpoint, int(top))
            if row is None:  # removed between the two reads
                return None
            envelope = Envelope.FromString(row.envelope)
        return Checkpoint.from_bytes(envelope.payload), envelope

    def sign(self) -> Envelope:
        """A signed checkpoint of the whole committed log (the last one if nothing was added)."""
        with self._lock:
            size = self.log.size()
            last = self.last()
            if last is not None:
                previous, envelope = last
                if size < previous.size:
                    raise FailedPrecondition(
                        f"log has {size} entries but a checkpoint of {previous.size} was "
                        "signed: entries were removed",
                        "LOG_TRUNCATED",
                    )
                if size == previous.size:
                    if self.log.root(size) != previous.root:
                        raise FailedPrecondition(
                            f"log of {size} entries no longer has the root this party signed",
                            "LOG_INCONSISTENT",
                        )
                    return envelope
            start = 0 if last is None else last[0].size
            for lo in range(start, size, _CHECK_CHUNK):
                self.log.entries(lo, min(size, lo + _CHECK_CHUNK))  # re-hashes each entry
            root = self.log.root(size)
            timestamp = int(self._clock())
            if last is not None:
                previous = last[0]
                proof = self.log.consistency_proof(previous.size, size)
                try:
                    merkle.verify_consistency(previous.size, size, previous.root, root, proof)
                except Unauthenticated as exc:
                    raise FailedPrecondition(
                        f"log of {size} entries does not extend the checkpoint of "
                        f"{previous.size} this party signed",
                        "LOG_INCONSISTENT",
                    ) from exc
                timestamp = max(timestamp, previous.timestamp)
            checkpoint = Checkpoint(self.log.origin, size, root, timestamp)
            envelope = checkpoint.sign(self._key)
            row = SignedCheckpoint(
                size=size,
                root=root.hex(),
                signed_at=timestamp,
                envelope=envelope.SerializeToString(),
            )
            try:
                with Session(self.log.engine) as session:
                    session.add(row)
                    session.commit()
            except IntegrityError:
                # Another process signed this size first; its checkpoint stands if it agrees.
                again = self.last()
                if again is None or again[0].size != size or again[0].root != root:
                    raise FailedPrecondition(
                        "a concurrent checkpoint disagrees with this log", "LOG_INCONSISTENT"
                    ) from None
                return again[1]
            return envelope
