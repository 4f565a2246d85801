"""alerts: alert (idempotency key, escalation state) and alert_responder (ranked candidates)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "requester_id", UUID(as_uuid=True), sa.ForeignKey("member.id", ondelete="SET NULL")
        ),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("needed", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("location", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
        sa.Column("presence_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exercise", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("ranking", sa.Text(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("next_wave_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True)),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("requester_id", "idempotency_key", name="uq_alert_requester_key"),
        sa.CheckConstraint("kind IN ('personal', 'mass', 'defense')", name="kind"),
        sa.CheckConstraint("status IN ('open', 'fulfilled', 'closed')", name="status"),
        sa.CheckConstraint("ranking IN ('street_network', 'straight_line')", name="ranking"),
        sa.CheckConstraint("needed >= 1", name="needed_positive"),
        sa.CheckConstraint("ST_IsValid(location)", name="location_valid"),
    )
    op.create_index("ix_alert_requester_created", "alert", ["requester_id", "created_at"])
    op.create_index(
        "ix_alert_due",
        "alert",
        ["next_wave_at"],
        postgresql_where=sa.text("status = 'open' AND next_wave_at IS NOT NULL"),
    )
    op.create_index("ix_alert_created_at", "alert", ["created_at"])
    op.create_index("ix_alert_location", "alert", ["location"], postgresql_using="gist")
    op.create_table(
        "alert_responder",
        sa.Column(
            "alert_id",
            UUID(as_uuid=True),
            sa.ForeignKey("alert.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "member_id",
            UUID(as_uuid=True),
            sa.ForeignKey("member.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("eta_s", sa.Float(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("wave", sa.Integer()),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True)),
        sa.Column("responded_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "state IN ('ranked', 'notified', 'accepted', 'declined', 'stood_down', 'exercise')",
            name="state",
        ),
        sa.CheckConstraint("eta_s >= 0", name="eta_nonnegative"),
    )
    op.create_index("ix_alert_responder_member_id", "alert_responder", ["member_id"])


def downgrade() -> None:
    op.drop_table("alert_responder")
    op.drop_table("alert")
