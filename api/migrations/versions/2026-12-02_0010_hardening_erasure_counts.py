"""hardening: alert.erased_notified / erased_accepted keep the counts of erased members' rows

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
    # A member's erasure deletes its alert_responder rows (they name it); the alert keeps how
    # many of them had been notified and had accepted, so counts and statistics survive.
    for column in ("erased_notified", "erased_accepted"):
        op.add_column(
            "alert",
            sa.Column(column, sa.Integer(), nullable=False, server_default=sa.text("0")),
        )


def downgrade() -> None:
    op.drop_column("alert", "erased_accepted")
    op.drop_column("alert", "erased_notified")
