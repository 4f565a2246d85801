"""Map page fixtures: the members factory of the API tests."""

from __future__ import annotations

from tests.api.conftest import make_member  # noqa: F401  (fixture, reused)
