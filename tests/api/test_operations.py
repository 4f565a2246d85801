"""docs/operations.md's service role: it works, but cannot change or remove audit rows."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from tests.paths import REPO

SERVICE_ROLE_SQL = re.search(
    r"```sql\n(CREATE ROLE ern_service.*?)```",
    (REPO / "docs" / "operations.md").read_text(),
    re.S,
)


def _statements(role: str) -> list[str]:
    assert SERVICE_ROLE_SQL is not None, "docs/operations.md lost its role block"
    sql = SERVICE_ROLE_SQL.group(1).replace("ern_service", role)
    sql = sql.replace(" LOGIN PASSWORD 'change me'", " NOLOGIN")
    return [s.strip() for s in sql.split(";") if s.strip()]


class TestServiceRole:
    def test_audit_rows_cannot_be_changed_or_removed_by_it(self, connection: Connection) -> None:
        # Everything below is inside the test's transaction: the role goes with the rollback.
        role = f"ern_service_{uuid.uuid4().hex[:12]}"
        for statement in _statements(role):
            connection.execute(text(statement))
        connection.execute(text(f"SET LOCAL ROLE {role}"))
        member = uuid.uuid4()
        connection.execute(
            text("INSERT INTO member (id, handle) VALUES (:id, :h)"),
            {"id": member, "h": f"svc-{member.hex[:8]}"},
        )
        connection.execute(
            text("UPDATE member SET available = false WHERE id = :id"), {"id": member}
        )
        connection.execute(
            text("INSERT INTO audit_event (actor_id, subject_id, action) VALUES (:a, :a, 'x')"),
            {"a": member},
        )
        assert connection.execute(text("SELECT count(*) FROM audit_event")).scalar_one() >= 1
        for statement in (
            "UPDATE audit_event SET action = 'forged'",
            "DELETE FROM audit_event",
            "TRUNCATE audit_event",
            "ALTER TABLE audit_event DISABLE TRIGGER USER",
            "DROP TABLE audit_event",
        ):
            with (
                pytest.raises(DBAPIError, match=r"permission denied|must be owner"),
                connection.begin_nested(),
            ):
                connection.execute(text(statement))
        connection.execute(text("RESET ROLE"))
