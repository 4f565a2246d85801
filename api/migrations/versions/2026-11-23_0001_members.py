"""Members with zones and routes, API tokens, and the append-only audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROLES = "'responder', 'defense', 'coordinator'"
FIELD_ROLES = "'responder', 'defense'"
MODES = "'walk', 'bike', 'drive'"
DAYS = "'mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'"


# Names are final (op.f): the naming convention would otherwise prefix "ck_<table>_" twice.


def _schedule_checks(geom: str) -> list[sa.CheckConstraint]:
    return [
        sa.CheckConstraint(f"ST_IsValid({geom})", name=f"{geom}_valid"),
        sa.CheckConstraint(f"days <@ ARRAY[{DAYS}]::text[]", name="days_known"),
        sa.CheckConstraint("cardinality(days) > 0", name="days_nonempty"),
        sa.CheckConstraint("start_time <> end_time", name="window_nonempty"),
    ]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table(
        "member",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("handle", sa.Text(), nullable=False),
        sa.Column(
            "roles", sa.ARRAY(sa.Text()), nullable=False, server_default=sa.text("'{}'::text[]")
        ),
        sa.Column("mode", sa.Text(), nullable=False, server_default="walk"),
        sa.Column("speed_mps", sa.Float(), nullable=True),
        sa.Column("home_zone", Geometry("POLYGON", srid=4326, spatial_index=False), nullable=True),
        sa.Column("available", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("quiet_start", sa.Time(), nullable=True),
        sa.Column("quiet_end", sa.Time(), nullable=True),
        sa.Column("contact_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="pk_member"),
        sa.UniqueConstraint("handle", name="uq_member_handle"),
        sa.CheckConstraint(f"roles <@ ARRAY[{ROLES}]::text[]", name=op.f("ck_member_roles_known")),
        sa.CheckConstraint(f"mode IN ({MODES})", name=op.f("ck_member_mode_known")),
        sa.CheckConstraint(
            "speed_mps IS NULL OR speed_mps > 0", name=op.f("ck_member_speed_positive")
        ),
        sa.CheckConstraint(
            f"home_zone IS NOT NULL OR NOT (roles && ARRAY[{FIELD_ROLES}]::text[])",
            name=op.f("ck_member_home_zone_for_field_roles"),
        ),
        sa.CheckConstraint(
            "home_zone IS NULL OR ST_IsValid(home_zone)", name=op.f("ck_member_home_zone_valid")
        ),
        sa.CheckConstraint(
            "(quiet_start IS NULL) = (quiet_end IS NULL)", name=op.f("ck_member_quiet_pair")
        ),
        sa.CheckConstraint(
            "quiet_start IS NULL OR quiet_start <> quiet_end", name=op.f("ck_member_quiet_nonempty")
        ),
    )
    op.create_index("ix_member_home_zone", "member", ["home_zone"], postgresql_using="gist")

    op.create_table(
        "member_zone",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("area", Geometry("POLYGON", srid=4326, spatial_index=False), nullable=False),
        sa.Column("days", sa.ARRAY(sa.Text()), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=False),
        sa.Column("end_time", sa.Time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_member_zone"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["member.id"],
            ondelete="CASCADE",
            name="fk_member_zone_member_id_member",
        ),
        *[
            sa.CheckConstraint(c.sqltext, name=op.f(f"ck_member_zone_{c.name}"))
            for c in _schedule_checks("area")
        ],
    )
    op.create_index("ix_member_zone_member_id", "member_zone", ["member_id"])
    op.create_index("ix_member_zone_area", "member_zone", ["area"], postgresql_using="gist")

    op.create_table(
        "member_route",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("path", Geometry("LINESTRING", srid=4326, spatial_index=False), nullable=False),
        sa.Column("days", sa.ARRAY(sa.Text()), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=False),
        sa.Column("end_time", sa.Time(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_member_route"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["member.id"],
            ondelete="CASCADE",
            name="fk_member_route_member_id_member",
        ),
        *[
            sa.CheckConstraint(c.sqltext, name=op.f(f"ck_member_route_{c.name}"))
            for c in _schedule_checks("path")
        ],
        sa.CheckConstraint(
            f"mode IS NULL OR mode IN ({MODES})", name=op.f("ck_member_route_mode_known")
        ),
    )
    op.create_index("ix_member_route_member_id", "member_route", ["member_id"])
    op.create_index("ix_member_route_path", "member_route", ["path"], postgresql_using="gist")

    op.create_table(
        "api_token",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("member_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_token"),
        sa.UniqueConstraint("token_hash", name="uq_api_token_token_hash"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["member.id"],
            ondelete="CASCADE",
            name="fk_api_token_member_id_member",
        ),
    )
    op.create_index("ix_api_token_member_id", "api_token", ["member_id"])

    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_audit_event"),
    )
    op.create_index("ix_audit_event_actor_id", "audit_event", ["actor_id"])
    op.create_index("ix_audit_event_subject_id", "audit_event", ["subject_id"])
    # The audit trail is append-only: the database itself refuses UPDATE, DELETE and TRUNCATE.
    op.execute(
        """
        CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON audit_event "
        "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
    )


def downgrade() -> None:
    op.drop_table("audit_event")
    op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    op.drop_table("api_token")
    op.drop_table("member_route")
    op.drop_table("member_zone")
    op.drop_table("member")
