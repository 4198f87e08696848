"""page_view_report_index: raw views indexed by (day, path, channel, source, visitor)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 14:40:00.000000

Replaces the (day, path) index with one that also holds the columns the demand report
and the roll-ups read from today's raw views, so they read the index alone (no table row
per view). Every query the old index served uses the new one's (day, path) prefix.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["day", "path", "channel", "source", "visitor"]


def upgrade() -> None:
    with op.batch_alter_table("page_view", schema=None) as batch_op:
        batch_op.create_index("ix_page_view_day_path_source", COLUMNS, unique=False)
        batch_op.drop_index("ix_page_view_day_path")


def downgrade() -> None:
    with op.batch_alter_table("page_view", schema=None) as batch_op:
        batch_op.create_index("ix_page_view_day_path", ["day", "path"], unique=False)
        batch_op.drop_index("ix_page_view_day_path_source")
