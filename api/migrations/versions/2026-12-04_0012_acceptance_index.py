"""acceptance index: a member's answered notifications, for its acceptance record

Revision ID: 0012_acceptance_index
Revises: 0011_groups
Create Date: 2026-12-04

Every personal or defence alert reads its candidates' records (accepted of notified, over 90
days). Most rows of ``alert_responder`` are ``ranked`` (kept in reserve, never asked), and
the record's query visited them all through ``ix_alert_responder_member_id``; this partial
index holds only the answered states, with the alert and the state, so the record is read
from the index alone.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0012_acceptance_index"
down_revision = "0011_groups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_alert_responder_outcome",
        "alert_responder",
        ["member_id", "alert_id"],
        postgresql_include=["state"],
        postgresql_where=text("state IN ('notified', 'accepted', 'declined')"),
    )


def downgrade() -> None:
    op.drop_index("ix_alert_responder_outcome", table_name="alert_responder")
