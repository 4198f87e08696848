"""scheduler

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 12:16:05.909193
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_lock",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("lease_until", engine.db.UTCDateTime(), nullable=True),
        sa.Column("last_started_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("last_finished_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "scheduler_heartbeat",
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("started_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("beat_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("stopped_at", engine.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("owner"),
    )


def downgrade() -> None:
    op.drop_table("scheduler_heartbeat")
    op.drop_table("job_lock")
