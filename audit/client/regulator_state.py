"""The regulator's memory of what it verified, kept in the regulator's own database.

Invariants:
- For each party: the last checkpoint the regulator verified (as the party signed it)
  and the leaf hash of every entry under it, recomputed by the regulator itself from the
  entry's contents; never a hash the party supplied.
- State only moves forward: a party's record is replaced only by a checkpoint at least as
  large that was proven consistent with it and whose entries all re-hashed to its root,
  and the new leaves are written in the same transaction as the new checkpoint.
- It lives in the regulator party's database (`DIR/orgs/regulator/state.db` unless
  configured otherwise), which no audited party can write: a party that rewrites its own
  history cannot rewrite what the regulator remembers of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, Engine, LargeBinary, Table, delete, select
from sqlmodel import Field, SQLModel

from audit.core.checkpoint import Checkpoint
from fedscore.errors import FailedPrecondition
from fedscore.runtime.db import create_tables
from fedscore.v1.envelope_pb2 import Envelope


class VerifiedCheckpoint(SQLModel, table=True):
    """The last checkpoint of `party` that the regulator verified."""

    __tablename__ = "regulator_checkpoint"

    party: str = Field(primary_key=True)
    size: int = Field(sa_type=BigInteger)
    root: str
    timestamp: int = Field(sa_type=BigInteger)
    verified_at: int = Field(sa_type=BigInteger)
    envelope: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class VerifiedLeaf(SQLModel, table=True):
    """The leaf hash of entry `index` of `party`, as the regulator recomputed it."""

    __tablename__ = "regulator_leaf"

    party: str = Field(primary_key=True)
    index: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    leaf_hash: str


VERIFIED_CHECKPOINT: Table = VerifiedCheckpoint.__table__  # type: ignore[attr-defined]
VERIFIED_LEAF: Table = VerifiedLeaf.__table__  # type: ignore[attr-defined]


class RegulatorState:
    """What the regulator verified before, per party."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, [VERIFIED_CHECKPOINT, VERIFIED_LEAF])

    def checkpoint(self, party: str) -> Checkpoint | None:
        query = select(
            VERIFIED_CHECKPOINT.c.size, VERIFIED_CHECKPOINT.c.root, VERIFIED_CHECKPOINT.c.timestamp
        ).where(VERIFIED_CHECKPOINT.c.party == party)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        size, root, timestamp = row
        return Checkpoint(party, int(size), bytes.fromhex(root), int(timestamp))

    def leaves(self, party: str) -> list[bytes]:
        """The leaf hashes under the party's verified checkpoint, in order."""
        query = (
            select(VERIFIED_LEAF.c.index, VERIFIED_LEAF.c.leaf_hash)
            .where(VERIFIED_LEAF.c.party == party)
            .order_by(VERIFIED_LEAF.c.index)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        if any(int(index) != expected for expected, (index, _) in enumerate(rows)):
            raise FailedPrecondition(
                f"the regulator's own record of {party} has a gap", "REGULATOR_STATE_CORRUPTED"
            )
        return [bytes.fromhex(leaf) for _, leaf in rows]

    def advance(
        self,
        checkpoint: Checkpoint,
        envelope: Envelope,
        leaves: Sequence[bytes],
        verified_at: int,
    ) -> None:
        """Remember `checkpoint` of its origin and the leaves under it, in one transaction."""
        party = checkpoint.origin
        if len(leaves) != checkpoint.size:
            raise FailedPrecondition("leaves do not cover the checkpoint", "BAD_STATE_UPDATE")
        with self.engine.begin() as connection:
            known = connection.execute(
                select(VERIFIED_CHECKPOINT.c.size).where(VERIFIED_CHECKPOINT.c.party == party)
            ).scalar_one_or_none()
            known = 0 if known is None else int(known)
            if checkpoint.size < known:
                raise FailedPrecondition(
                    f"refusing to move {party} back from {known} to {checkpoint.size} entries",
                    "BAD_STATE_UPDATE",
                )
            # Rows at or above `known` can only be left over from an interrupted run.
            connection.execute(
                delete(VERIFIED_LEAF).where(
                    VERIFIED_LEAF.c.party == party, VERIFIED_LEAF.c.index >= known
                )
            )
            new = [
                {"party": party, "index": index, "leaf_hash": leaves[index].hex()}
                for index in range(known, checkpoint.size)
            ]
            if new:
                connection.execute(VERIFIED_LEAF.insert(), new)
            state = {
                "size": checkpoint.size,
                "root": checkpoint.root.hex(),
                "timestamp": checkpoint.timestamp,
                "verified_at": verified_at,
                "envelope": envelope.SerializeToString(),
            }
            connection.execute(
                delete(VERIFIED_CHECKPOINT).where(VERIFIED_CHECKPOINT.c.party == party)
            )
            connection.execute(VERIFIED_CHECKPOINT.insert().values(party=party, **state))
