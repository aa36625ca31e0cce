"""A party signs checkpoints of its own log, each consistent with every earlier one.

Invariants:
- A party never signs two checkpoints inconsistent with each other. `CheckpointSigner`
  keeps every checkpoint it signs in the party's database and signs a new one only after
  re-hashing every entry added since the last one and proving (RFC 6962 consistency
  proof) that the new tree extends it; a shorter log or a different history is refused
  with LOG_TRUNCATED or LOG_INCONSISTENT, and nothing is signed.
- Checkpoint times never go backwards.

The checkpoint's format and its verification are `audit.core.checkpoint`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import BigInteger, Column, LargeBinary, Table, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from audit.core import merkle
from audit.core.checkpoint import Checkpoint
from audit.store.log import EventLog
from fedscore.errors import FailedPrecondition, Unauthenticated
from fedscore.runtime.db import create_tables
from fedscore.v1.envelope_pb2 import Envelope
from keys.signing import SigningKey

# Entries re-hashed per read when a signer checks what was added since its last checkpoint.
_CHECK_CHUNK = 10_000


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

    def use_key(self, key: SigningKey) -> None:
        """Sign the next checkpoints with `key` (the party's key was rotated)."""
        self._key = key

    def last(self) -> tuple[Checkpoint, Envelope] | None:
        """The latest checkpoint this party signed, if any."""
        newest = select(SIGNED_CHECKPOINT.c.envelope).order_by(SIGNED_CHECKPOINT.c.size.desc())
        with self.log.engine.connect() as connection:
            stored = connection.execute(newest.limit(1)).scalar_one_or_none()
        if stored is None:
            return None
        envelope = Envelope.FromString(stored)
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
            row = {
                "size": size,
                "root": root.hex(),
                "signed_at": timestamp,
                "envelope": envelope.SerializeToString(),
            }
            try:
                with self.log.engine.begin() as connection:
                    connection.execute(SIGNED_CHECKPOINT.insert().values(row))
            except IntegrityError:
                # Another process signed this size first; its checkpoint stands if it agrees.
                again = self.last()
                if again is None or again[0].size != size or again[0].root != root:
                    raise FailedPrecondition(
                        "a concurrent checkpoint disagrees with this log", "LOG_INCONSISTENT"
                    ) from None
                return again[1]
            return envelope
