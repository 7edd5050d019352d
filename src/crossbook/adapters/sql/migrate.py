"""The exchange's schema migrations (run programmatically, see `sql_support.migrate`).

`upgrade(url)` brings a database to the newest revision; `SqlStore.open` calls it.
The Alembic environment lives inside the package (`migrations/`), so an installed
crossbook can migrate its own database. Its history is `ENGINE_MIGRATIONS`
(revision in `alembic_version`); the wallet service keeps another one apart.

These functions block: call them from synchronous code or through
`asyncio.to_thread` (on PostgreSQL they run their own event loop).
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import Connection

from crossbook.adapters.sql.schema import metadata
from crossbook.sql_support import migrate
from crossbook.sql_support.migrate import Migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

ENGINE_MIGRATIONS = Migrations(MIGRATIONS_DIR, metadata)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration of the exchange's migrations (on `connection`, if given)."""
    return migrate.alembic_config(connection, ENGINE_MIGRATIONS)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the exchange's database at `url` up to `revision` (default: the newest)."""
    migrate.upgrade(url, revision, ENGINE_MIGRATIONS)


def current_revision(url: str) -> str | None:
    """The exchange's revision of the database at `url`, or None if it was never migrated."""
    return migrate.current_revision(url, ENGINE_MIGRATIONS)
