"""responders as they are: snoozes and the index that finds busy members

Revision ID: 0008_responders
Revises: 0005
Create Date: 2026-12-02

- ``member.snoozed_until``: the member asked for no alerts until then (UTC; null: not
  snoozed). A time in the past means nothing: the snooze ended by itself.
- ``ix_alert_responder_accepted``: every alert ranks "who has accepted a still-open alert"
  (busy members, left out of the ranking); a partial index keeps that lookup small.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_responders"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("member", sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_alert_responder_accepted",
        "alert_responder",
        ["member_id"],
        postgresql_where=sa.text("state = 'accepted'"),
    )


def downgrade() -> None:
    op.drop_index("ix_alert_responder_accepted", table_name="alert_responder")
    op.drop_column("member", "snoozed_until")
