"""The notification outbox drained by the delivery worker.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CHANNELS = "'webhook', 'email', 'sms'"
STATES = "'pending', 'sending', 'sent', 'failed', 'cancelled'"


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("message_kind", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("delivery_id", name="uq_outbox_delivery_id"),
        sa.ForeignKeyConstraint(
            ["member_id"], ["member.id"], name="fk_outbox_member_id_member", ondelete="CASCADE"
        ),
        sa.CheckConstraint(f"channel IN ({CHANNELS})", name="ck_outbox_channel_known"),
        sa.CheckConstraint(f"state IN ({STATES})", name="ck_outbox_state_known"),
        sa.CheckConstraint("attempts >= 0", name="ck_outbox_attempts_nonnegative"),
        sa.CheckConstraint(
            "(state = 'sent') = (sent_at IS NOT NULL)", name="ck_outbox_sent_at_iff_sent"
        ),
    )
    op.create_index("ix_outbox_alert_id", "outbox", ["alert_id"])
    op.create_index("ix_outbox_member_id", "outbox", ["member_id"])
    op.create_index(
        "ix_outbox_due",
        "outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("state IN ('pending', 'sending')"),
    )


def downgrade() -> None:
    op.drop_table("outbox")
