"""tracking: page views, running visits, daily roll-ups and visitor salts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 12:17:18.388326
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "page_view",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("ts", engine.db.UTCDateTime(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("medium", sa.String(length=100), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("engine_token", sa.String(length=256), nullable=False),
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("entry", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("page_view", schema=None) as batch_op:
        batch_op.create_index("ix_page_view_day_path", ["day", "path"], unique=False)

    op.create_table(
        "page_view_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("views", sa.Integer(), nullable=False),
        sa.Column("visitors", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "path"),
    )
    op.create_table(
        "page_view_source_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("views", sa.Integer(), nullable=False),
        sa.Column("visitors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "path", "channel", "source"),
    )
    op.create_table(
        "page_visit",
        sa.Column("visitor", sa.String(length=32), nullable=False),
        sa.Column("last_ts", engine.db.UTCDateTime(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("medium", sa.String(length=100), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("engine_token", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("visitor"),
    )
    with op.batch_alter_table("page_visit", schema=None) as batch_op:
        batch_op.create_index("ix_page_visit_last_ts", ["last_ts"], unique=False)

    op.create_table(
        "visitor_salt",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("created_at", engine.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )


def downgrade() -> None:
    op.drop_table("visitor_salt")
    with op.batch_alter_table("page_visit", schema=None) as batch_op:
        batch_op.drop_index("ix_page_visit_last_ts")

    op.drop_table("page_visit")
    op.drop_table("page_view_source_daily")
    op.drop_table("page_view_daily")
    with op.batch_alter_table("page_view", schema=None) as batch_op:
        batch_op.drop_index("ix_page_view_day_path")

    op.drop_table("page_view")
