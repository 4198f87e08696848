"""orders: store orders and their line items, attributed to restock emails

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 12:51:03.428130
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shop_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("ordered_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("financial_status", sa.String(length=30), nullable=False),
        sa.Column("cancelled_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("created_at", engine.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("external_id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("shop_order", schema=None) as batch_op:
        batch_op.create_index("ix_shop_order_address", ["address"], unique=False)

    op.create_table(
        "order_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=255), nullable=True),
        sa.Column("product_handle", sa.String(length=255), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("campaign_message_id", sa.Integer(), nullable=True),
        sa.Column("attribution", sa.String(length=10), nullable=False),
        sa.Column("attributed_at", engine.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(
            ["campaign_message_id"], ["campaign_message.id"], ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["order_id"], ["shop_order.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id", "position", name="uq_order_line_position"),
    )
    with op.batch_alter_table("order_line", schema=None) as batch_op:
        batch_op.create_index("ix_order_line_campaign", ["campaign_id"], unique=False)
        batch_op.create_index("ix_order_line_product", ["product_handle"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("order_line", schema=None) as batch_op:
        batch_op.drop_index("ix_order_line_product")
        batch_op.drop_index("ix_order_line_campaign")

    op.drop_table("order_line")
    with op.batch_alter_table("shop_order", schema=None) as batch_op:
        batch_op.drop_index("ix_shop_order_address")

    op.drop_table("shop_order")
