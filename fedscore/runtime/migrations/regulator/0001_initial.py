"""regulator: the schema as it stood when migrations began (issue 15).

Generated once from the models with Alembic's autogenerate, then frozen: a later change
to a model is a new revision, never an edit of this one.

Revision ID: regulator_0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "regulator_0001"
down_revision = None
branch_labels = None
depends_on = None


def _absent(table: str) -> bool:
    # A database made before migrations existed may hold some of these tables already
    # (its stores created them as they opened it): they are kept, the rest are created.
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _absent("regulator_checkpoint"):
        op.create_table(
            "regulator_checkpoint",
            sa.Column("party", sa.String(), nullable=False),
            sa.Column("size", sa.BigInteger(), nullable=False),
            sa.Column("root", sa.String(), nullable=False),
            sa.Column("timestamp", sa.BigInteger(), nullable=False),
            sa.Column("verified_at", sa.BigInteger(), nullable=False),
            sa.Column("envelope", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("party"),
        )
    if _absent("regulator_leaf"):
        op.create_table(
            "regulator_leaf",
            sa.Column("party", sa.String(), nullable=False),
            sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("leaf_hash", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("party", "index"),
        )


def downgrade() -> None:
    op.drop_table("regulator_leaf")
    op.drop_table("regulator_checkpoint")
