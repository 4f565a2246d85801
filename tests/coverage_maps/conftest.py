"""Coverage fixtures: the presence fixtures (members around chosen nodes) and a fresh cache."""

from __future__ import annotations

import pytest

from api.coverage.cache import clear_cache
from tests.api.conftest import coordinator, make_member, responder  # noqa: F401  (fixtures)
from tests.presence.conftest import add_member, node_box  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """Each test starts without cached presence or coverage (the token would also tell)."""
    from api.presence.cache import invalidate_presence

    invalidate_presence()
    clear_cache()
