"""responders as they are: snoozes and the index that finds busy members

Revision ID: 0008_responders
Revises: 0005
Create Date: 2026-12-02

- ``member.snoozed_until``: the member asked for no alerts until then (UTC; null: not
  snoozed). A time in the past means nothing: the snooze ended by itself.
- ``ix_alert_responder_accepted``: every alert ranks "who has accepted a still-open alert"
  (busy members, left out of the ranking); a partial index keeps that lookup small.
- ``member.phone_index``: keyed HMAC of the contact's E.164 number (``crypto.phone_index``),
  so an SMS reply finds its member without decrypting every contact. It needs
  ERN_SECRET_KEY, so rows written before this migration get it at their next contact change.
- ``sms_inbound``: MessageSids already processed, with the reply given (a gateway retry gets
  the same answer and changes nothing). Deleted after ERN_ALERT_RETENTION_DAYS like alerts.
- ``rally``: rally notices by (coordinator, Idempotency-Key) with the number they went to
  (never who); deleted, with their outbox rows, after ERN_ALERT_RETENTION_DAYS.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_responders"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("member", sa.Column("phone_index", sa.LargeBinary(), nullable=True))
    op.create_index("ix_member_phone_index", "member", ["phone_index"])
    op.create_table(
        "sms_inbound",
        sa.Column("message_sid", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("message_sid", name="pk_sms_inbound"),
    )
    op.create_index("ix_sms_inbound_received_at", "sms_inbound", ["received_at"])
    op.create_table(
        "rally",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("coordinator_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["coordinator_id"],
            ["member.id"],
            ondelete="SET NULL",
            name="fk_rally_coordinator_id_member",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rally"),
        sa.UniqueConstraint("coordinator_id", "idempotency_key", name="uq_rally_coordinator_key"),
    )
    op.create_index("ix_rally_created_at", "rally", ["created_at"])
    op.add_column("member", sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_alert_responder_accepted",
        "alert_responder",
        ["member_id"],
        postgresql_where=sa.text("state = 'accepted'"),
    )


def downgrade() -> None:
    op.drop_index("ix_rally_created_at", table_name="rally")
    op.drop_table("rally")
    op.drop_index("ix_sms_inbound_received_at", table_name="sms_inbound")
    op.drop_table("sms_inbound")
    op.drop_index("ix_member_phone_index", table_name="member")
    op.drop_column("member", "phone_index")
    op.drop_index("ix_alert_responder_accepted", table_name="alert_responder")
    op.drop_column("member", "snoozed_until")
