"""hardening: erased members' counts on alerts (alert.erased_*), per-month purge counts

Revision ID: 0010_hardening
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_hardening"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A member's erasure deletes its alert_responder rows (they name it); the alert keeps how
    # many of them had been notified and had accepted, so counts and statistics survive.
    for column in ("erased_notified", "erased_accepted"):
        op.add_column(
            "alert",
            sa.Column(column, sa.Integer(), nullable=False, server_default=sa.text("0")),
        )
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
    op.drop_column("alert", "erased_accepted")
    op.drop_column("alert", "erased_notified")
