"""hardening: erased members' alert states (erased_response), per-month purge counts

Revision ID: 0010_hardening
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_hardening"
down_revision = "0008_responders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A member's erasure deletes its alert_responder rows (they name it); these rows keep
    # their states without the member, so counts survive. No foreign key to alert: inserting
    # must not lock alert rows (the escalation worker locks an alert, then its members).
    op.create_table(
        "erased_response",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_erased_response"),
    )
    op.create_index("ix_erased_response_alert_id", "erased_response", ["alert_id"])
    # What the retention pass removed, per month raised (alerts by kind, notifications by
    # channel): coordinators' statistics survive the purge.
    op.create_table(
        "purge_count",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("month", "category", "key", name="pk_purge_count"),
    )


def downgrade() -> None:
    op.drop_table("purge_count")
    op.drop_index("ix_erased_response_alert_id", table_name="erased_response")
    op.drop_table("erased_response")
