"""waitlist

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 11:53:51.347928
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_text",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", engine.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "rate_limit",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("window_start", engine.db.UTCDateTime(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("rate_limit", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rate_limit_window_start"), ["window_start"], unique=False
        )

    op.create_table(
        "subscriber",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("token_key", sa.String(length=32), nullable=False),
        sa.Column("created_at", engine.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    op.create_table(
        "suppression",
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("created_at", engine.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("address_hash"),
    )
    op.create_table(
        "waitlist_signup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("product_handle", sa.String(length=255), nullable=False),
        sa.Column("sku", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("left_reason", sa.String(length=20), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("signed_up_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("pending_since", engine.db.UTCDateTime(), nullable=False),
        sa.Column("confirmed_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("left_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("confirmation_sent_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("consent_version", sa.String(length=64), nullable=False),
        sa.Column("consent_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column("client_hash", sa.String(length=64), nullable=True),
        sa.Column("page", sa.String(length=2000), nullable=False),
        sa.Column("referrer", sa.String(length=2000), nullable=False),
        sa.Column("utm", sa.JSON(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("medium", sa.String(length=100), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_id", "product_handle", "sku", name="uq_signup_target"),
    )
    with op.batch_alter_table("waitlist_signup", schema=None) as batch_op:
        batch_op.create_index("ix_signup_pending", ["status", "pending_since"], unique=False)
        batch_op.create_index(
            "ix_signup_waiting", ["product_handle", "sku", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("waitlist_signup", schema=None) as batch_op:
        batch_op.drop_index("ix_signup_waiting")
        batch_op.drop_index("ix_signup_pending")

    op.drop_table("waitlist_signup")
    op.drop_table("suppression")
    op.drop_table("subscriber")
    with op.batch_alter_table("rate_limit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rate_limit_window_start"))

    op.drop_table("rate_limit")
    op.drop_table("consent_text")
