"""consent-registry: the schema as it stood when migrations began (issue 15).

Generated once from the models with Alembic's autogenerate, then frozen: a later change
to a model is a new revision, never an edit of this one.

Revision ID: consent_registry_0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "consent_registry_0001"
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
    if _absent("consent_grant"):
        op.create_table(
            "consent_grant",
            sa.Column("token_id", sa.String(), nullable=False),
            sa.Column("citizen_key", sa.String(), nullable=False),
            sa.Column("purpose_id", sa.String(), nullable=False),
            sa.Column("relying_party", sa.String(), nullable=False),
            sa.Column("not_before", sa.Integer(), nullable=False),
            sa.Column("not_after", sa.Integer(), nullable=False),
            sa.Column("max_uses", sa.Integer(), nullable=False),
            sa.Column("status_index", sa.Integer(), nullable=False),
            sa.Column("granted_at", sa.Integer(), nullable=False),
            sa.Column("revoked_at", sa.Integer(), nullable=True),
            sa.Column("token_envelope", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("token_id"),
            sa.UniqueConstraint("status_index"),
        )
        op.create_index(
            op.f("ix_consent_grant_citizen_key"), "consent_grant", ["citizen_key"], unique=False
        )
    if _absent("consent_status_list"):
        op.create_table(
            "consent_status_list",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("sequence", sa.Integer(), nullable=False),
            sa.Column("signed_sequence", sa.Integer(), nullable=False),
            sa.Column("signed_at", sa.Integer(), nullable=False),
            sa.Column("signed_ttl", sa.Integer(), nullable=False),
            sa.Column("signed_envelope", sa.LargeBinary(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )


def downgrade() -> None:
    op.drop_table("consent_status_list")
    op.drop_index(op.f("ix_consent_grant_citizen_key"), table_name="consent_grant")
    op.drop_table("consent_grant")
    op.drop_table("audit_entry")
    op.drop_table("audit_checkpoint")
