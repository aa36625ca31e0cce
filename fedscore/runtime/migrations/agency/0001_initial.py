"""agency: the schema as it stood when migrations began (issue 15).

Generated once from the models with Alembic's autogenerate, then frozen: a later change
to a model is a new revision, never an edit of this one.

Revision ID: agency_0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "agency_0001"
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
    if _absent("import_batch"):
        op.create_table(
            "import_batch",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("file_sha256", sa.String(), nullable=False),
            sa.Column("filename", sa.String(), nullable=False),
            sa.Column("row_count", sa.Integer(), nullable=False),
            sa.Column("new_records", sa.Integer(), nullable=False),
            sa.Column("imported_at", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("file_sha256"),
        )
    if _absent("node_request_nonce"):
        op.create_table(
            "node_request_nonce",
            sa.Column("nonce_hash", sa.LargeBinary(), nullable=False),
            sa.Column("relying_party", sa.String(), nullable=False),
            sa.Column("accepted_at", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("nonce_hash"),
        )
    if _absent("node_token_use"):
        op.create_table(
            "node_token_use",
            sa.Column("token_id", sa.String(), nullable=False),
            sa.Column("uses", sa.Integer(), nullable=False),
            sa.Column("last_used_at", sa.BigInteger(), nullable=False),
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
    if _absent("seen_query"):
        op.create_table(
            "seen_query",
            sa.Column("query_id", sa.String(), nullable=False),
            sa.Column("seen_at", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("query_id"),
        )
    if _absent("behaviour_record"):
        op.create_table(
            "behaviour_record",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("record_key", sa.LargeBinary(), nullable=False),
            sa.Column("pseudonym", sa.LargeBinary(), nullable=False),
            sa.Column("indicator", sa.String(), nullable=False),
            sa.Column("occurred_at", sa.BigInteger(), nullable=False),
            sa.Column("quantity", sa.Integer(), nullable=False),
            sa.Column("certifier", sa.String(), nullable=False),
            sa.Column("certified", sa.Boolean(), nullable=False),
            sa.Column("import_id", sa.Integer(), nullable=False),
            sa.ForeignKeyConstraint(
                ["import_id"],
                ["import_batch.id"],
            ),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("record_key"),
        )
        op.create_index(
            "ix_behaviour_record_pseudonym_time",
            "behaviour_record",
            ["pseudonym", "occurred_at"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_index("ix_behaviour_record_pseudonym_time", table_name="behaviour_record")
    op.drop_table("behaviour_record")
    op.drop_table("seen_query")
    op.drop_index(op.f("ix_privacy_spend_dataset"), table_name="privacy_spend")
    op.drop_table("privacy_spend")
    op.drop_table("privacy_budget")
    op.drop_table("node_token_use")
    op.drop_table("node_request_nonce")
    op.drop_table("import_batch")
    op.drop_table("audit_entry")
    op.drop_table("audit_checkpoint")
