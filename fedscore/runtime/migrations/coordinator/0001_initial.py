"""coordinator: the schema as it stood when migrations began (issue 15).

Generated once from the models with Alembic's autogenerate, then frozen: a later change
to a model is a new revision, never an edit of this one.

Revision ID: coordinator_0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "coordinator_0001"
down_revision = None
branch_labels = None
depends_on = None


def _absent(table: str) -> bool:
    # A database made before migrations existed may hold some of these tables already
    # (its stores created them as they opened it): they are kept, the rest are created.
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
    if _absent("coordinator_nonce"):
        op.create_table(
            "coordinator_nonce",
            sa.Column("nonce_hash", sa.String(length=64), nullable=False),
            sa.Column("relying_party", sa.String(), nullable=False),
            sa.Column("accepted_at", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("nonce_hash"),
        )
    if _absent("coordinator_query"):
        op.create_table(
            "coordinator_query",
            sa.Column("query_id", sa.String(), nullable=False),
            sa.Column("query_hash", sa.String(), nullable=False),
            sa.Column("token_id", sa.String(), nullable=False),
            sa.Column("purpose_id", sa.String(), nullable=False),
            sa.Column("relying_party", sa.String(), nullable=False),
            sa.Column("year", sa.Integer(), nullable=False),
            sa.Column("log_index", sa.Integer(), nullable=False),
            sa.Column("issued_at", sa.Integer(), nullable=False),
            sa.Column("expires_at", sa.Integer(), nullable=False),
            sa.Column("outcome", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("query_id"),
        )
        op.create_index(
            op.f("ix_coordinator_query_token_id"), "coordinator_query", ["token_id"], unique=False
        )
    if _absent("coordinator_token_use"):
        op.create_table(
            "coordinator_token_use",
            sa.Column("token_id", sa.String(), nullable=False),
            sa.Column("uses", sa.Integer(), nullable=False),
            sa.Column("last_used_at", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("token_id"),
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
    op.drop_table("coordinator_token_use")
    op.drop_index(op.f("ix_coordinator_query_token_id"), table_name="coordinator_query")
    op.drop_table("coordinator_query")
    op.drop_table("coordinator_nonce")
    op.drop_table("audit_entry")
    op.drop_table("audit_checkpoint")
