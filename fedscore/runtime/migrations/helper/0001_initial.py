"""helper: the helper aggregator's schema as it was first made (issue 18, docs/adr/0019).

Written from the models (its log, its privacy ledger, the releases it noised), then
frozen: a later change to a model is a new revision, never an edit of this one.

Revision ID: helper_0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "helper_0001"
down_revision = None
branch_labels = None
depends_on = None


def _absent(table: str) -> bool:
    # A database its stores made before it was migrated may hold some of these tables
    # already: they are kept, the rest are created.
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _absent("audit_checkpoint"):
        op.create_table(
            "audit_checkpoint",
            sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("root", sa.String(), nullable=False),
            sa.Column("signed_at", sa.BigInteger(), nullable=False),
            sa.Column("envelope", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("size"),
        )
    if _absent("audit_entry"):
        op.create_table(
            "audit_entry",
            sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("kind", sa.String(), nullable=False),
            sa.Column("body", sa.String(), nullable=False),
            sa.Column("leaf_hash", sa.String(), nullable=False),
            sa.Column("logged_at", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("index"),
        )
    if _absent("helper_noised"):
        op.create_table(
            "helper_noised",
            sa.Column("query_id", sa.String(), nullable=False),
            sa.Column("release_id", sa.String(), nullable=False),
            sa.Column("noised_at", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("query_id"),
        )
        op.create_index(
            op.f("ix_helper_noised_release_id"), "helper_noised", ["release_id"], unique=False
        )
    if _absent("privacy_budget"):
        op.create_table(
            "privacy_budget",
            sa.Column("budget_key", sa.String(), nullable=False),
            sa.Column("dataset", sa.String(), nullable=False),
            sa.Column("year", sa.Integer(), nullable=False),
            sa.Column("spent_nano", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("budget_key"),
        )
    if _absent("privacy_spend"):
        op.create_table(
            "privacy_spend",
            sa.Column("release_id", sa.String(), nullable=False),
            sa.Column("release", sa.String(), nullable=False),
            sa.Column("dataset", sa.String(), nullable=False),
            sa.Column("year", sa.Integer(), nullable=False),
            sa.Column("spent_nano", sa.BigInteger(), nullable=False),
            sa.Column("spent_at", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("release_id"),
        )
        op.create_index(
            op.f("ix_privacy_spend_dataset"), "privacy_spend", ["dataset"], unique=False
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_privacy_spend_dataset"), table_name="privacy_spend")
    op.drop_table("privacy_spend")
    op.drop_table("privacy_budget")
    op.drop_index(op.f("ix_helper_noised_release_id"), table_name="helper_noised")
    op.drop_table("helper_noised")
    op.drop_table("audit_entry")
    op.drop_table("audit_checkpoint")
