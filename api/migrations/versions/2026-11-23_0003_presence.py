"""presence: member_location (opt-in live locations) and presence_version (cache token + triggers)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TRACKED = ("member", "member_zone", "member_route")

# A fresh random token per statement that writes a tracked table. Random rather than a
# counter: a rolled-back writer restores the old token, and the next writer must not
# produce a token some process already cached for the rolled-back contents.
BUMP = """
CREATE FUNCTION presence_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE presence_version SET token = gen_random_uuid(), changed_at = now() WHERE id = 1;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "member_location",
        sa.Column(
            "member_id",
            UUID(as_uuid=True),
            sa.ForeignKey(
                "member.id", ondelete="CASCADE", name="fk_member_location_member_id_member"
            ),
            primary_key=True,
        ),
        sa.Column("location", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ST_IsValid(location)", name="ck_member_location_location_valid"),
        sa.CheckConstraint(
            "expires_at > updated_at", name="ck_member_location_expires_after_update"
        ),
        sa.PrimaryKeyConstraint("member_id", name="pk_member_location"),
    )
    op.create_index("ix_member_location_expires_at", "member_location", ["expires_at"])
    op.create_table(
        "presence_version",
        sa.Column("id", sa.SmallInteger(), primary_key=True),
        sa.Column("token", UUID(as_uuid=True), nullable=False),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("id = 1", name="ck_presence_version_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_presence_version"),
    )
    op.execute("INSERT INTO presence_version (id, token) VALUES (1, gen_random_uuid())")
    op.execute(BUMP)
    for table in TRACKED:
        op.execute(
            f"CREATE TRIGGER {table}_presence_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION presence_bump()"
        )


def downgrade() -> None:
    for table in TRACKED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_presence_bump ON {table}")
    op.execute("DROP FUNCTION IF EXISTS presence_bump()")
    op.drop_table("presence_version")
    op.drop_index("ix_member_location_expires_at", table_name="member_location")
    op.drop_table("member_location")
