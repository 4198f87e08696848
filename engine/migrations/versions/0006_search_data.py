"""search data: imported Search Console tables (pages, queries) and their rows

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 12:49:07.858726
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "search_dataset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("search_type", sa.String(length=20), nullable=False),
        sa.Column("date_from", sa.Date(), nullable=False),
        sa.Column("date_to", sa.Date(), nullable=False),
        sa.Column("filename", sa.String(length=500), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("imported_at", engine.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "kind", "search_type", "date_from", "date_to", name="uq_search_dataset"
        ),
    )
    with op.batch_alter_table("search_dataset", schema=None) as batch_op:
        batch_op.create_index("ix_search_dataset_range", ["date_from", "date_to"], unique=False)

    op.create_table(
        "search_row",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=2000), nullable=False),
        sa.Column("product_handle", sa.String(length=255), nullable=True),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("impressions", sa.Integer(), nullable=False),
        sa.Column("position", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["search_dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("search_row", schema=None) as batch_op:
        batch_op.create_index("ix_search_row_dataset", ["dataset_id"], unique=False)
        batch_op.create_index("ix_search_row_product", ["product_handle"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("search_row", schema=None) as batch_op:
        batch_op.drop_index("ix_search_row_product")
        batch_op.drop_index("ix_search_row_dataset")

    op.drop_table("search_row")
    with op.batch_alter_table("search_dataset", schema=None) as batch_op:
        batch_op.drop_index("ix_search_dataset_range")

    op.drop_table("search_dataset")
