"""Alembic migrations, run programmatically (no alembic.ini needed at run time).

A `Migrations` value is one migration history: its scripts (an Alembic
environment inside the package, so an installed crossbook can migrate its own
databases), the schema they build, the table that keeps its revision and the
lock that serialises its migrators. The exchange's store has one
(`adapters.sql.migrate.ENGINE_MIGRATIONS`), the wallet service another
(`wallet_service.store.WALLET_MIGRATIONS`); with their own version tables and
lock keys two histories never meet, even in one database.

`upgrade(url, revision, migrations)` brings a database to `revision`; the
history's `env.py` is one call, `run_environment()`, which migrates on the
connection `upgrade` hands it (no URL there; offline SQL scripts are refused).
Each run
is one transaction: on PostgreSQL it first takes an advisory lock
(`lock_key`), on SQLite `BEGIN IMMEDIATE`, so two processes migrating at once
run one after the other.

These functions block: call them from synchronous code or through
`asyncio.to_thread` (on PostgreSQL they run their own event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.pool import NullPool

from crossbook.sql_support.database import DatabaseUrl
from crossbook.sql_support.engines import sqlite_engine

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


def alembic_config(connection: Connection | None, migrations: Migrations) -> Config:
    """An Alembic configuration for a packaged environment (on `connection`, if given)."""
    config = Config()
    config.set_main_option("script_location", str(migrations.script_location))
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = migrations.metadata
    config.attributes["version_table"] = migrations.version_table
    return config


def upgrade(url: str, revision: str, migrations: Migrations) -> None:
    """Migrate the database at `url` up to `revision` ("head": the newest)."""
    run_with_connection(url, lambda connection: _upgrade(connection, revision, migrations))


def current_revision(url: str, migrations: Migrations) -> str | None:
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


def run_environment() -> None:
    """The body of a history's `env.py`: migrate on the connection `alembic_config` passed.

    The connection (in its transaction), the metadata and the version table come
    from `config.attributes`; anything else (a bare `alembic` command) is refused.
    """
    if context.is_offline_mode():
        raise RuntimeError("offline (SQL script) migrations are not supported")
    attributes = context.config.attributes
    connection = attributes.get("connection")
    metadata = attributes.get("target_metadata")
    version_table = attributes.get("version_table")
    if not (
        isinstance(connection, Connection)
        and isinstance(metadata, MetaData)
        and isinstance(version_table, str)
    ):
        raise RuntimeError("run migrations through crossbook.sql_support.migrate")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()


def _upgrade(connection: Connection, revision: str, migrations: Migrations) -> None:
    if connection.dialect.name == "postgresql":
        lock = text("SELECT pg_advisory_xact_lock(:key)")
        connection.execute(lock, {"key": migrations.lock_key})
    command.upgrade(alembic_config(connection, migrations), revision)
