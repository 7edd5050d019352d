"""Schema migrations, run programmatically (no alembic.ini needed at run time).

`upgrade(url)` brings a database to the newest revision; `SqlStore.open` calls it.
The Alembic environment lives inside the package (`migrations/`), so an installed
crossbook can migrate its own database. Each run is one transaction: on
PostgreSQL it first takes an advisory lock, on SQLite `BEGIN IMMEDIATE`, so two
processes migrating at once run one after the other.

These functions block: call them from synchronous code or through
`asyncio.to_thread` (on PostgreSQL they run their own event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.pool import NullPool

from crossbook.adapters.sql.database import DatabaseUrl
from crossbook.adapters.sql.engines import sqlite_engine
from crossbook.adapters.sql.schema import metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x63726F7373  # pg_advisory_xact_lock key ("cross")

T = TypeVar("T")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the packaged environment (on `connection`, if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = metadata
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (default: the newest)."""
    run_with_connection(url, lambda connection: _upgrade(connection, revision))


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at, or None if it was never migrated."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    return run_with_connection(url, read)


def run_with_connection(url: str, work: Callable[[Connection], T]) -> T:
    """Run `work` on a synchronous SQLAlchemy connection in one transaction; return its result."""
    db = DatabaseUrl.parse(url)
    if db.is_sqlite:
        engine = sqlite_engine(db, begin="IMMEDIATE")
        try:
            with engine.begin() as connection:
                return work(connection)
        finally:
            engine.dispose()
    return asyncio.run(_run_postgres(db, work))


async def _run_postgres(db: DatabaseUrl, work: Callable[[Connection], T]) -> T:
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415 (needs greenlet)

    engine = create_async_engine(db.sqlalchemy_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    command.upgrade(alembic_config(connection), revision)
