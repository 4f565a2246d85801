"""Alembic environment: online migrations against the URL given in code."""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool

import api
from api.database import Base

# Every domain's tables on Base.metadata: each api/<domain>/models.py, found on disk, so a
# new domain needs no line here.
for models in sorted(Path(api.__file__).parent.glob("*/models.py")):
    importlib.import_module(f"api.{models.parent.name}.models")
config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
