"""campaigns: restock campaigns, their waves, one message per person, provider events

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 12:50:40.797564
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_handle", sa.String(length=255), nullable=False),
        sa.Column("skus", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=20), nullable=False),
        sa.Column("created_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("next_wave_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("pages_built_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("started_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("finished_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("approval_sent_at", engine.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_product_handle", ["product_handle"], unique=False)
        batch_op.create_index("ix_campaign_status_due", ["status", "next_wave_at"], unique=False)

    op.create_table(
        "campaign_wave",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("people", sa.Integer(), nullable=False),
        sa.Column("created_at", engine.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "number", name="uq_campaign_wave_number"),
    )

    op.create_table(
        "campaign_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("signup_ids", sa.JSON(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("leased_until", engine.db.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", engine.db.UTCDateTime(), nullable=False),
        sa.Column("sent_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("delivery", sa.String(length=20), nullable=False),
        sa.Column("delivered_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("opened_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("clicked_at", engine.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "subscriber_id", name="uq_campaign_message_person"),
        sa.UniqueConstraint("message_id"),
    )
    with op.batch_alter_table("campaign_message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_campaign_message_campaign_status", ["campaign_id", "status"], unique=False
        )
        batch_op.create_index(
            "ix_campaign_message_due", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "provider_event",
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=30), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", engine.db.UTCDateTime(), nullable=True),
        sa.Column("received_at", engine.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("provider_event", schema=None) as batch_op:
        batch_op.create_index("ix_provider_event_message", ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("provider_event", schema=None) as batch_op:
        batch_op.drop_index("ix_provider_event_message")
    op.drop_table("provider_event")
    with op.batch_alter_table("campaign_message", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_message_due")
        batch_op.drop_index("ix_campaign_message_campaign_status")
    op.drop_table("campaign_message")
    op.drop_table("campaign_wave")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_status_due")
        batch_op.drop_index("ix_campaign_product_handle")
    op.drop_table("campaign")
