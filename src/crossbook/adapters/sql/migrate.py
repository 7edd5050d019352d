"""Schema migrations, run programmatically (no alembic.ini needed at run time).

`upgrade(url)` brings a database to the newest revision; `SqlStore.open` calls it.
The Alembic environment lives inside the package (`migrations/`), so an installed
crossbook can migrate its own database. Each run is one transaction: on
PostgreSQL it first takes an advisory lock, on SQLite `BEGIN IMMEDIATE`, so two
processes migrating at once run one after the other.

Which migrations run is a `Migrations` value: by default the engine's
(`ENGINE_MIGRATIONS`); another component with a database of its own (the
wallet service) passes its own script location, metadata, version table and
lock key, so the two histories never meet even in one database.

These functions block: call them from synchronous code or through
`asyncio.to_thread` (on PostgreSQL they run their own event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.pool import NullPool

from crossbook.adapters.sql.database import DatabaseUrl
from crossbook.adapters.sql.engines import sqlite_engine
from crossbook.adapters.sql.schema import metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x63726F7373  # pg_advisory_xact_lock key ("cross")
DEFAULT_VERSION_TABLE = "alembic_version"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Migrations:
    """One migration history: its scripts, the schema they build, where the revision is kept.

    The environment (`env.py`) under `script_location` finds the metadata and the
    version table in `config.attributes` ("target_metadata", "version_table").
    """

    script_location: Path
    metadata: MetaData
    version_table: str = DEFAULT_VERSION_TABLE
    lock_key: int = MIGRATION_LOCK_KEY


ENGINE_MIGRATIONS = Migrations(MIGRATIONS_DIR, metadata)


def alembic_config(
    connection: Connection | None = None, migrations: Migrations = ENGINE_MIGRATIONS
) -> Config:
    """An Alembic configuration for a packaged environment (on `connection`, if given)."""
    config = Config()
    config.set_main_option("script_location", str(migrations.script_location))
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = migrations.metadata
    config.attributes["version_table"] = migrations.version_table
    return config


def upgrade(url: str, revision: str = "head", migrations: Migrations = ENGINE_MIGRATIONS) -> None:
    """Migrate the database at `url` up to `revision` (default: the newest)."""
    run_with_connection(url, lambda connection: _upgrade(connection, revision, migrations))


def current_revision(url: str, migrations: Migrations = ENGINE_MIGRATIONS) -> str | None:
    """The revision the database at `url` is at, or None if it was never migrated."""

    def read(connection: Connection) -> str | None:
        context = MigrationContext.configure(
            connection, opts={"version_table": migrations.version_table}
        )
        return context.get_current_revision()

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


def _upgrade(connection: Connection, revision: str, migrations: Migrations) -> None:
    if connection.dialect.name == "postgresql":
        lock = text("SELECT pg_advisory_xact_lock(:key)")
        connection.execute(lock, {"key": migrations.lock_key})
    command.upgrade(alembic_config(connection, migrations), revision)
