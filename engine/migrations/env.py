"""Alembic environment: runs migrations on the engine handed over by ``engine.db``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import engine.models  # noqa: F401  (registers every table on Base.metadata)
from engine.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Run migrations online, on the configured engine."""
    connectable = config.attributes.get("engine") or create_engine(
        config.get_main_option("sqlalchemy.url") or ""
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
