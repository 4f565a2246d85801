"""groups: buddy-group proposals, published groups with history, members, group texts

Revision ID: 0011_groups
Revises: 0010_hardening
Create Date: 2026-12-03

- ``group_proposal``: a build's answer (the contract body) until it is published.
- ``buddy_group``: published groups; a later publish sets ``retired_at`` on the current ones
  (kept as history).
- ``buddy_group_member``: who is in which group; deleted with the member (erasure).
- ``group_message``: group texts by (group, sender, Idempotency-Key) with the number they
  went to; deleted, with their outbox rows, after ERN_GROUP_MESSAGE_RETENTION_DAYS.
- ``member.share_with_group``: the contact channels a member shows on its group's roster.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011_groups"
down_revision = "0010_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "member",
        sa.Column(
            "share_with_group",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
    )
    op.create_check_constraint(
        "share_with_group_known",
        "member",
        "share_with_group <@ ARRAY['email', 'phone']::text[]",
    )
    op.create_table(
        "group_proposal",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("answer", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["member.id"],
            name="fk_group_proposal_created_by_member",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_group_proposal"),
    )
    op.create_index("ix_group_proposal_created_at", "group_proposal", ["created_at"])
    op.create_table(
        "buddy_group",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("proposal_id", sa.Uuid(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("point_contact_id", sa.Uuid(), nullable=True),
        sa.Column("shared_minutes", sa.Float(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["group_proposal.id"],
            name="fk_buddy_group_proposal_id_group_proposal",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["point_contact_id"],
            ["member.id"],
            name="fk_buddy_group_point_contact_id_member",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_buddy_group"),
    )
    op.create_index("ix_buddy_group_proposal_id", "buddy_group", ["proposal_id"])
    op.create_index("ix_buddy_group_point_contact_id", "buddy_group", ["point_contact_id"])
    op.create_index(
        "ix_buddy_group_current",
        "buddy_group",
        ["retired_at"],
        postgresql_where=sa.text("retired_at IS NULL"),
    )
    op.create_table(
        "buddy_group_member",
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["buddy_group.id"],
            name="fk_buddy_group_member_group_id_buddy_group",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["member.id"],
            name="fk_buddy_group_member_member_id_member",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "member_id", name="pk_buddy_group_member"),
    )
    op.create_index("ix_buddy_group_member_member_id", "buddy_group_member", ["member_id"])
    op.create_table(
        "group_message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=False),
        sa.Column("sender_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["buddy_group.id"],
            name="fk_group_message_group_id_buddy_group",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"],
            ["member.id"],
            name="fk_group_message_sender_id_member",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_group_message"),
        sa.UniqueConstraint(
            "group_id", "sender_id", "idempotency_key", name="uq_group_message_sender_key"
        ),
    )
    op.create_index("ix_group_message_group_created", "group_message", ["group_id", "created_at"])
    op.create_index("ix_group_message_created_at", "group_message", ["created_at"])


def downgrade() -> None:
    op.drop_table("group_message")
    op.drop_table("buddy_group_member")
    op.drop_table("buddy_group")
    op.drop_table("group_proposal")
    op.drop_constraint("share_with_group_known", "member", type_="check")
    op.drop_column("member", "share_with_group")
